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
@click.option("--registry", type=click.Path(path_type=Path), metavar="DIR", help="Extra folder of source cards.")
@click.option("--modality", help="Only cards of this modality (e.g. CT, MRI, ultrasound; case-insensitive).")
@click.option("--access", type=click.Choice(["open", "credentialed", "on-request"]), help="Only this access class.")
@click.option("--adapter", "adapter_name", metavar="NAME", help="Only cards read by this adapter.")
def sources_list(registry: Path | None, modality: str | None, access: str | None, adapter_name: str | None) -> None:
    """Show the cards as a table: id, licence, access, modality, anatomy, adapter, name.

    \b
    Example:
      curator sources list
      curator sources list --modality CT --access open
      curator sources list --adapter nifti_volumes
    """
    from curator.registry import ADAPTERS, load_registry, registries
    from curator.vocab import canonical_modality

    if adapter_name and adapter_name not in ADAPTERS:
        raise CuratorError(f"unknown adapter '{adapter_name}' (known: {', '.join(sorted(ADAPTERS))})")
    cards: dict = {}
    for folder in reversed(registries(registry)):
        cards.update(load_registry(folder))
    want = canonical_modality(modality).lower() if modality else None
    chosen = [
        c
        for c in sorted(cards.values(), key=lambda c: c.id)
        if (want is None or (canonical_modality(c.modality) or "").lower() == want)
        and (access is None or c.access == access)
        and (adapter_name is None or c.adapter.name == adapter_name)
    ]
    rows = [("ID", "LICENCE", "ACCESS", "MODALITY", "ANATOMY", "ADAPTER", "NAME")]
    rows += [(c.id, c.license, c.access, c.modality, c.anatomy, c.adapter.name, c.name) for c in chosen]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    for r in rows:
        click.echo("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=False)) + "  " + r[-1])
    click.echo(f"{len(chosen)} of {len(cards)} card(s)")


@sources.command("adapters")
@click.argument("names", nargs=-1)
@click.option("--markdown", is_flag=True, help="Print the reference as Markdown (the README's adapter section).")
def sources_adapters(names: tuple[str, ...], markdown: bool) -> None:
    """Every adapter and its parameters (type, default, meaning), read from its pydantic model.

    \b
    Example:
      curator sources adapters
      curator sources adapters class_folders label_csv
      curator sources adapters --markdown > adapters.md
    """
    from curator.registry import ADAPTERS, adapter_parameters, adapter_summary, adapters_markdown

    unknown = [n for n in names if n not in ADAPTERS]
    if unknown:
        raise CuratorError(f"unknown adapter(s) {', '.join(unknown)} (known: {', '.join(sorted(ADAPTERS))})")
    if markdown:
        click.echo(adapters_markdown(), nl=False)
        return
    from curator.registry import load_registry

    cards = load_registry()
    for name in names or sorted(ADAPTERS):
        click.echo(f"{name}: {adapter_summary(name)}")
        examples = sorted(c.id for c in cards.values() if c.adapter.name == name and not c.id.startswith("demo_"))
        if examples:
            click.echo(f"  example cards: {', '.join(examples[:8])}{' ...' if len(examples) > 8 else ''}")
        for param, kind, default, desc in adapter_parameters(name):
            click.echo(f"  {param:<22} {kind:<34} default {default}")
            if desc:
                click.echo(f"  {'':<22} {desc}")
        click.echo("")


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
