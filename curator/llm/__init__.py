"""Caption generators and their parts.

- ``prompts``: versioned prompt files and their rendering into chat messages
- ``client``: the OpenAI-compatible chat client (retries, backoff, caps, accounting)
- ``captioner``: one (triplet, language) job: ask, validate, re-ask for what is missing
- ``validate``: the checks every caption must pass, whatever wrote it
- ``cache``: content-addressed answers stored in the corpus
- ``offline``: the deterministic template generator (``generator=template``)
"""
