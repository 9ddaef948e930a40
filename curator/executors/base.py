"""The executor interface and its registry."""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from tqdm import tqdm

from curator.errors import CuratorError

# name -> ("module:Class", what to install when the import fails)
EXECUTORS: dict[str, tuple[str, str | None]] = {
    "serial": ("curator.executors.serial:SerialExecutor", None),
    "local": ("curator.executors.local:LocalExecutor", None),
    "ray": ("curator.executors.ray:RayExecutor", "pip install 'curator[ray]' (or: pip install ray)"),
}


@dataclass(frozen=True)
class UnitFailure:
    """A unit that raised or whose worker died: the unit fails alone, the run goes on."""

    unit: str
    error: str  # one line: exception type and message, or how the worker died


def default_workers() -> int:
    """All cores this process may use (the affinity mask, not the machine's count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


class Executor:
    """Runs ``fn(unit)`` for every unit and yields ``(index, result | UnitFailure)`` as units finish.

    Results come back in completion order; callers commit each unit on its own, so
    order never changes what is written. At most ``window`` units are in flight,
    which bounds memory by the unit, never by the number of units.
    """

    name: ClassVar[str]

    def __init__(self, workers: int | None = None, **options: Any):
        workers = default_workers() if workers is None else workers
        if workers < 1:
            raise CuratorError(f"--workers must be at least 1 (got {workers})")
        self.workers = workers

    @property
    def window(self) -> int:
        return 2 * self.workers

    def imap(self, fn: Callable[[Any], Any], units: Sequence[Any]) -> Iterator[tuple[int, Any]]:
        raise NotImplementedError

    def map(
        self,
        fn: Callable[[Any], Any],
        units: Sequence[Any],
        *,
        desc: str = "units",
        progress: bool = True,
        weight: Callable[[Any], int] | None = None,
    ) -> Iterator[tuple[int, Any]]:
        """``imap`` with a progress bar counting units (or ``weight(unit)``, e.g. files per unit)."""
        total = sum(weight(u) for u in units) if weight else len(units)
        with tqdm(total=total, desc=desc, unit="file" if weight else "unit", disable=None if progress else True) as bar:
            for i, result in self.imap(fn, units):
                bar.update(weight(units[i]) if weight else 1)
                yield i, result

    def close(self) -> None:
        """Release workers (idempotent)."""

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def make_executor(name: str = "local", workers: int | None = None, **options: Any) -> Executor:
    """An executor by registry name; a missing optional dependency is one clear error."""
    if name not in EXECUTORS:
        raise CuratorError(f"unknown executor '{name}' (choose from {', '.join(EXECUTORS)})")
    target, hint = EXECUTORS[name]
    module_name, _, cls_name = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise CuratorError(f"the {name} executor needs {exc.name or 'a missing package'}: {hint}") from None
    return getattr(module, cls_name)(workers=workers, **options)
