"""Unit and prepare functions for the worker-preparation tests (a module, so spawned workers import them)."""

import os
import sys

PREPARED: list[str] = []  # this process's prepare calls


def mark_prepared(label: str) -> None:
    PREPARED.append(label)


def fail_to_prepare() -> None:
    raise ImportError("no module named 'a_missing_codec'")


def report(n: int) -> tuple[int, list[str]]:
    """What a unit saw: its process, and the prepare calls that process had made before it."""
    return os.getpid(), list(PREPARED)


def modules_a_unit_imports(unit) -> list[str]:
    """Run ingest's unit work and return the packages it imported that the process did not have."""
    from curator.stages.ingest.work import ingest_unit

    before = {name.partition(".")[0] for name in sys.modules}
    ingest_unit(unit)
    return sorted({name.partition(".")[0] for name in sys.modules} - before)
