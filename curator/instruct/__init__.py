"""Instruction data: each image's annotations become training entries for every task they support.

- ``templates``: the versioned bilingual question/answer templates (``prompts/instruct/``)
- ``boxes``: the one normalised box convention every grounding entry uses
- ``tasks``: one small builder per task family, over one sample at a time
- ``mixtures``: task-family shares of a named mixture, and a sample's entries in it
- ``stats``: tasks and entries per image (IMAX's measure), by source and overall
"""
