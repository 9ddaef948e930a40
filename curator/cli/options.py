"""Options shared by several commands, and small parsing helpers."""

from __future__ import annotations

import json
from pathlib import Path

import click

OUT = click.option(
    "--out",
    "out",
    required=True,
    metavar="DIR",
    help="Corpus directory: a local path or any fsspec URL (s3://bucket/prefix; credentials and endpoint from "
    "AWS_* variables or fsspec config).",
)
RECIPE = click.option(
    "--recipe", "recipe_path", type=click.Path(path_type=Path), metavar="FILE", help="Build recipe (TOML)."
)
QUIET = click.option("--quiet", "-q", is_flag=True, help="No progress bars.")


def key_values(pairs: tuple[str, ...], flag: str) -> dict:
    """``KEY=VALUE`` options; VALUE is parsed as JSON when it parses (lists, numbers), else kept as text."""
    out: dict = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise click.UsageError(f"{flag} expects KEY=VALUE, got '{pair}'")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out
