"""`curator export`: write what trainers' own loaders read, from a built corpus.

Each format registers its subcommand on the ``export`` group from its own module
(``export_<format>.py``), imported in ``curator/cli/__init__.py``.
"""

from __future__ import annotations

from curator.cli import main


@main.group()
def export() -> None:
    """Export a built corpus for a trainer's loader (one subcommand per format).

    \b
    Example:
      curator export --help
    """
