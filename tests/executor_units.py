"""Unit functions for the executor tests (a module, so spawned workers can import them)."""

import ctypes
import os

from curator.config import IngestSettings


def square_or_fail(n: int) -> int:
    if n < 0:
        raise ValueError(f"negative unit {n}")
    return n * n


def crash_on_seven(n: int) -> int:
    if n == 7:
        ctypes.string_at(0)  # a segfault, as a broken C decoder would cause
    return os.getpid() and n * n


def write_unit(unit) -> dict:
    """A unit's work: write its part, fail for a poisoned payload."""
    from pathlib import Path

    out, value = unit.payload
    if value < 0:
        raise ValueError("poisoned unit")
    Path(out, f"{unit.id}.txt").write_text(str(value * value))
    return {"value": value}


def ingest_unit_crashing_on_second(unit) -> dict:
    """Ingest's unit work, but the worker of the source's second unit dies (a decoder segfault)."""
    from curator.stages.ingest.work import ingest_unit

    if unit.id.endswith("-000001"):
        ctypes.string_at(0)
    return ingest_unit(unit)


class FourItemUnits(IngestSettings):
    """Ingest settings whose units hold four items, so a demo source has several."""

    unit_items: int = 4
