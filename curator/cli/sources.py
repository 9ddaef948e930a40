"""`curator sources list|validate`."""

from __future__ import annotations

from pathlib import Path

import click

from curator.cli import main
from curator.errors import CuratorError


@main.group()
def sources() -> None:
    """List and validate source cards.

    \b
    Example:
      curator sources list
      curator sources validate
    """


@sources.command("list")
@click.option("--registry", type=click.Path(path_type=Path), metavar="DIR", help="Folder of source cards.")
def sources_list(registry: Path | None) -> None:
    """Show every card as a table: id, licence, access, modality, adapter.

    \b
    Example:
      curator sources list
    """
    from curator.registry import load_registry

    cards = load_registry(registry)
    rows = [("ID", "LICENCE", "ACCESS", "MODALITY", "ANATOMY", "ADAPTER", "NAME")]
    rows += [(c.id, c.license, c.access, c.modality, c.anatomy, c.adapter.name, c.name) for c in cards.values()]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    for r in rows:
        click.echo("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=False)) + "  " + r[-1])


@sources.command("validate")
@click.argument("cards", nargs=-1, type=click.Path(path_type=Path))
@click.option("--registry", type=click.Path(path_type=Path), metavar="DIR", help="Folder of source cards.")
def sources_validate(cards: tuple[Path, ...], registry: Path | None) -> None:
    """Validate cards (all in the registry, or the files given); exit 1 if any is invalid.

    \b
    Example:
      curator sources validate
      curator sources validate source_registry/demo_chexpert.toml
    """
    from curator.registry import card_paths, load_card

    paths = list(cards) or card_paths(registry)
    if not paths:
        raise CuratorError(f"no cards (*.toml) in {registry or 'the registry'}")
    bad = 0
    for path in paths:
        try:
            card = load_card(path)
            click.echo(f"ok       {card.id}")
        except CuratorError as exc:
            bad += 1
            click.echo(f"invalid  {exc}")
    if bad:
        raise CuratorError(f"{bad} of {len(paths)} card(s) invalid")
