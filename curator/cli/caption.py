"""`curator caption`."""

from __future__ import annotations

from pathlib import Path

import click

from curator.cli import main, summaries
from curator.cli.options import OUT, QUIET, RECIPE


@main.command()
@OUT
@RECIPE
@click.option("--dry-run", is_flag=True, help="Print triplets, planned calls and estimated tokens; call nothing.")
@QUIET
def caption(out: str, recipe_path: Path | None, dry_run: bool, quiet: bool) -> None:
    """Write captions for label-only images, per unique (label, anatomy, modality) triplet.

    Settings come from the recipe's [caption] table: --recipe, else the recipe the
    corpus was built with (its recipe.json), else defaults. With
    OPENAI_BASE_URL (or caption.base_url) set, an LLM at that OpenAI-compatible
    endpoint writes them (key from OPENAI_API_KEY, model from caption.model or
    CURATOR_LLM_MODEL); without it, the offline templates do. Answers are cached in
    the corpus: a re-run calls nothing, a killed run resumes.

    \b
    Example:
      curator caption --out shards/demo --recipe recipes/demo.toml --dry-run
      OPENAI_BASE_URL=http://localhost:8000/v1 CURATOR_LLM_MODEL=qwen2.5-7b-instruct \\
        curator caption --out shards/demo --recipe recipes/demo.toml
    """
    from curator.config import CaptionSettings, load_recipe
    from curator.provenance import RECIPE_FILE, stored_recipe
    from curator.stages.caption import plan_captions, run_caption
    from curator.storage import Corpus, writer_lock

    corpus = Corpus(out)
    recipe = load_recipe(recipe_path) if recipe_path else stored_recipe(corpus)
    if recipe and not recipe_path:
        click.echo(f"recipe: '{recipe.name}', the one this corpus was built with ({RECIPE_FILE})", err=True)
    settings = recipe.caption if recipe else CaptionSettings()
    plan = plan_captions(corpus, settings, resolve_model=not dry_run)
    summaries.print_caption_plan(plan, dry_run)
    if not dry_run:
        with writer_lock(corpus, "caption"):
            summaries.print_caption(run_caption(corpus, settings, progress=not quiet, plan=plan))
