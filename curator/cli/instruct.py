"""`curator instruct`."""

from __future__ import annotations

from pathlib import Path

from curator.cli import main, summaries
from curator.cli.options import OUT, QUIET, RECIPE


@main.command()
@OUT
@RECIPE
@QUIET
def instruct(out: str, recipe_path: Path | None, quiet: bool) -> None:
    """Write instruction entries for every kept image: captioning, report, classification, VQA, grounding.

    All of an image's tasks are built together from its labels, boxes, reports, VQA
    pairs, captions and metadata, with the versioned templates in prompts/instruct/
    (English and Chinese). Settings come from the recipe's [instruct] table, or
    defaults without one. A re-run with unchanged inputs changes nothing.

    \b
    Example:
      curator instruct --out shards/demo --recipe recipes/demo.toml
      curator query "SELECT task, form, count(*) FROM instructions GROUP BY ALL" --out shards/demo
    """
    from curator.config import CaptionSettings, InstructSettings, load_recipe
    from curator.stages.index import require_current_index
    from curator.stages.instruct import run_instruct
    from curator.storage import Corpus, writer_lock

    recipe = load_recipe(recipe_path) if recipe_path else None
    settings = (recipe.instruct if recipe else None) or InstructSettings(seed=recipe.seed if recipe else 0)
    corpus = Corpus(out)
    require_current_index(corpus)  # before the lock, which would make a folder for a corpus that is not there
    with writer_lock(corpus, "instruct"):
        result = run_instruct(corpus, settings, progress=not quiet, llm=recipe.caption if recipe else CaptionSettings())
    summaries.print_instruct(result)
