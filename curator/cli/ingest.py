"""`curator ingest`."""

from __future__ import annotations

from pathlib import Path

import click

from curator.cli import main, summaries
from curator.cli.options import OUT, QUIET, executor_options, key_values, open_executor


@main.command()
@click.option("--source", "source_id", metavar="ID", help="Source card id (see `curator sources list`).")
@click.option(
    "--adapter",
    "adapter_name",
    metavar="NAME",
    help="Run a generic adapter without a card (class_folders, label_csv, image_text, image_report, ...).",
)
@click.option(
    "--root",
    required=True,
    type=click.Path(path_type=Path),
    metavar="DIR",
    help="The dataset folder as downloaded and unpacked.",
)
@OUT
@click.option("--registry", type=click.Path(path_type=Path), metavar="DIR", help="Folder of source cards.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed for split assignment.")
@click.option(
    "--id",
    "adhoc_id",
    metavar="ID",
    help="With --adapter: source id (default: <adapter>_<hash of the root path>, never the folder name, "
    "which may identify a patient).",
)
@click.option("--name", help="With --adapter: dataset name.")
@click.option("--modality", help="With --adapter: default modality (e.g. X-ray, CT, MRI).")
@click.option("--anatomy", help="With --adapter: default anatomy (e.g. chest).")
@click.option("--department", help="With --adapter: clinical department (e.g. radiology).")
@click.option("--license", "license_", metavar="SPDX", help="With --adapter: SPDX id or LicenseRef-… .")
@click.option("--access", type=click.Choice(["open", "credentialed", "on-request"]), help="With --adapter.")
@click.option(
    "--param",
    "params",
    multiple=True,
    metavar="KEY=VALUE",
    help="Adapter parameter (overrides the card's with --source).",
)
@click.option(
    "--image",
    "image",
    multiple=True,
    metavar="KEY=VALUE",
    help="Image policy field (overrides the card's with --source).",
)
@executor_options
@QUIET
def ingest(
    source_id, adapter_name, root, out, registry, seed, adhoc_id, name, modality, anatomy, department, license_,
    access, params, image, workers, executor_name, ray_address, quiet,
) -> None:  # fmt: skip
    """Index one source into a corpus: images, annotations, rejects.

    Give a card with --source, or run a generic adapter with --adapter and the
    card's fields as options (unset licence/access default to
    LicenseRef-unspecified / on-request). --param values are JSON or text; with
    --source they override the card's parameters (unknown keys are errors).

    \b
    Example:
      curator ingest --source demo_chexpert --root data/demo/chexpert --out shards/demo
      curator ingest --source demo_chexpert --root data/demo/chexpert --out shards/demo --workers 8
      curator ingest --source nih_chestxray14 --root data/nih --out shards/x --param 'csv=["Data_Entry_2017.csv"]'
      curator ingest --adapter class_folders --root data/kaggle_xray --out shards/x \\
          --modality X-ray --anatomy chest --license CC-BY-4.0 --access open --param 'levels=["split","label"]'
    """
    import sys

    from curator.config import IngestSettings
    from curator.registry import adhoc_card, find_card, override_card
    from curator.stages.ingest import ingest_source
    from curator.storage import Corpus, scratch_dir, writer_lock

    if bool(source_id) == bool(adapter_name):
        raise click.UsageError("give exactly one of --source ID or --adapter NAME")
    settings = IngestSettings(seed=seed)
    described = {
        "--id": adhoc_id, "--name": name, "--modality": modality, "--anatomy": anatomy,
        "--department": department, "--license": license_, "--access": access,
    }  # fmt: skip
    given = [flag for flag, value in described.items() if value is not None]
    if source_id and given:
        # the card describes the source: a silently ignored option would mislabel every sample
        raise click.UsageError(f"{', '.join(given)} only apply with --adapter; with --source the card says this")
    if source_id:
        card, path = find_card(source_id, registry)
        card = override_card(card, key_values(params, "--param"), key_values(image, "--image"), "--param/--image")
    else:
        card = adhoc_card(
            adapter_name,
            root,
            source_id=adhoc_id,
            name=name,
            modality=modality,
            anatomy=anatomy,
            department=department,
            license=license_,
            access=access,
            params=key_values(params, "--param"),
            image=key_values(image, "--image"),
        )
    corpus = Corpus(out)
    # the corpus's scratch, not the system temp dir: what a killed run leaves there, the next run removes
    with open_executor(executor_name, workers, ray_address) as executor, scratch_dir(corpus, "card") as tmp:
        if not source_id:
            # the card's exact content is what the ingest fingerprint hashes
            path = Path(tmp) / f"{card.id}.json"
            path.write_text(card.model_dump_json(indent=2))
        with writer_lock(corpus, "ingest"):
            result = ingest_source(corpus, card, path, root, settings, progress=not quiet, executor=executor)
    summaries.print_ingest([result])
    if result.failed:
        sys.exit(1)
