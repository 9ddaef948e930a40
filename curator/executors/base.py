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


@dataclass(frozen=True)
class Prepare:
    """What a worker process does once, before its first unit: imports, process settings.

    A stage's work pays its imports (pyarrow and the pandas probe pyarrow makes on its
    first conversion, decoders, codecs: ~0.3-0.7 s a process) in whichever unit a
    worker runs first; a worker recycled by the pool pays them again. Named here, they
    are paid once a process, and ``Executor.start`` lets every worker pay them while
    the driver walks its plan. ``fn`` is a module-level function (so it pickles as a
    name) and idempotent; ``args`` are small and hashable.
    """

    fn: Callable[..., None]
    args: tuple = ()

    @property
    def key(self) -> tuple:
        return (self.fn.__module__, self.fn.__qualname__, self.args)


_prepared: set[tuple] = set()  # keys of the Prepare this process has run


def prepared_call(prepare: Prepare | None, fn: Callable[[Any], Any], unit: Any) -> Any:
    """``fn(unit)``, after ``prepare`` if this process has not run it yet (what every backend's workers call)."""
    if prepare is not None and prepare.key not in _prepared:
        prepare.fn(*prepare.args)
        _prepared.add(prepare.key)
    return fn(unit)


def ready(_: Any = None) -> None:
    """The task ``Executor.start`` sends each worker: nothing but its ``Prepare``."""


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
        self._warmed: set = set()  # the keys start() was called with

    @property
    def window(self) -> int:
        return 2 * self.workers

    def start(self, prepare: Prepare | None = None) -> None:
        """Start the workers now and have each run ``prepare``, without waiting for them.

        Their start-up (process spawn, imports) then overlaps what the caller does next
        (ingest: walking the plan) instead of delaying the first units. Calling it is never
        needed for correctness: ``imap`` with the same ``prepare`` runs it where it has not run.
        Once per ``prepare`` and executor: a build's many sources do not send it again.
        """
        key = prepare.key if prepare is not None else None
        if key in self._warmed:
            return
        self._warmed.add(key)
        self._start(prepare)

    def _start(self, prepare: Prepare | None) -> None:
        """The backend's part of ``start`` (serial: nothing, the first unit prepares)."""

    def imap(
        self, fn: Callable[[Any], Any], units: Sequence[Any], prepare: Prepare | None = None
    ) -> Iterator[tuple[int, Any]]:
        raise NotImplementedError

    def map(
        self,
        fn: Callable[[Any], Any],
        units: Sequence[Any],
        *,
        desc: str = "units",
        progress: bool = True,
        weight: Callable[[Any], int] | None = None,
        prepare: Prepare | None = None,
    ) -> Iterator[tuple[int, Any]]:
        """``imap`` with a progress bar counting units (or ``weight(unit)``, e.g. files per unit)."""
        total = sum(weight(u) for u in units) if weight else len(units)
        with tqdm(total=total, desc=desc, unit="file" if weight else "unit", disable=None if progress else True) as bar:
            for i, result in self.imap(fn, units, prepare):
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
