"""One seam for per-unit work: serial, a local process pool, or Ray.

Every stage that does per-item work cuts it into deterministic *units* (see
``curator.units``) and hands a picklable function and the units to an executor.
The executor only runs them: skipping finished units, committing and counting
live in ``curator.units``, once for every stage and every backend (datatrove
repeats that logic per executor; we do not).

Backends are named in a lazy registry (``name -> "module:Class"`` plus an
install hint, as fsspec does), so Ray is imported only when asked for.
"""

from curator.executors.base import EXECUTORS, Executor, Prepare, UnitFailure, default_workers, make_executor

__all__ = ["EXECUTORS", "Executor", "Prepare", "UnitFailure", "default_workers", "make_executor"]
