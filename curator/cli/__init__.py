"""The ``curator`` command: a thin layer over the library.

Library code raises CuratorError (and kin) for user mistakes; this package turns
them into one line on stderr and exit code 1. One module per command group;
``summaries`` prints the stage reports.
"""

from __future__ import annotations

import logging
import sys

import click

from curator import __version__
from curator.errors import CuratorError


class CuratorGroup(click.Group):
    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except CuratorError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(1)
        except OSError as exc:
            # --out on a file, a read-only or vanished folder, a full disk: the user's to fix,
            # so one line; -vv shows the traceback for a developer.
            if ctx.params.get("verbose", 0) >= 2:
                raise
            click.echo(f"error: {exc.strerror or exc}: {exc.filename or ''}".rstrip(": "), err=True)
            sys.exit(1)


@click.group(cls=CuratorGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="curator")
@click.option("-v", "--verbose", count=True, help="More log output (-v info, -vv debug).")
def main(verbose: int) -> None:
    """Build a traceable medical image-text corpus: ingest -> index -> caption -> shard.

    \b
    Example:
      curator demo-data data/demo
      curator build --recipe recipes/demo.toml --out shards/demo
      curator trace demo_chexpert-0123456789abcdef --out shards/demo
    """
    level = logging.WARNING - 10 * verbose
    logging.basicConfig(
        level=max(level, logging.DEBUG), format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )


# Each module registers its commands on ``main``; imported last because they import ``main``.
from curator.cli import audit, build, caption, export, export_hf, ingest, shard, sources  # noqa: E402, F401

from curator.cli import export_llava, instruct  # noqa: E402, F401  # isort: skip
