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


def executor_options(fn):
    """``--workers``, ``--executor``, ``--ray-address``: where per-unit work runs (see curator.executors)."""
    fn = click.option(
        "--ray-address",
        metavar="HOST:PORT",
        help="With --executor ray: a running cluster (`ray start --head` prints it); default: a local Ray on loopback.",
    )(fn)
    fn = click.option(
        "--executor",
        "executor_name",
        type=click.Choice(["serial", "local", "ray"]),
        default="local",
        show_default=True,
        help="serial (this process), local (a process pool), ray (a Ray cluster).",
    )(fn)
    return click.option(
        "--workers",
        type=int,
        metavar="N",
        help="Worker processes (default: every core this process may use; on Ray, the cluster's CPUs).",
    )(fn)


def open_executor(name: str, workers: int | None, ray_address: str | None):
    """The executor the options name; a bad count, a missing Ray or an unreachable address raise CuratorError."""
    from curator.errors import CuratorError
    from curator.executors import make_executor

    if ray_address and name != "ray":
        raise CuratorError("--ray-address needs --executor ray")
    return make_executor(name, workers, **({"ray_address": ray_address} if ray_address else {}))


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
