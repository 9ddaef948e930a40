"""A local process pool (img2dataset's multiprocessing distributor, with crash isolation).

*spawn*, not fork: a forked child inherits s3fs's event-loop thread and DuckDB's
threads and can deadlock or crash (seen with s3fs). ``max_tasks_per_child`` recycles
workers so memory that C decoders hold (GDCM, OpenJPEG) is returned.

A worker that dies (a decoder segfault, the OOM killer) breaks the whole pool in
``concurrent.futures``; the units that were in flight are then re-run one at a
time in a fresh one-worker pool, so only the unit that kills its worker again is
reported failed, and the rest of the run goes on.
"""

from __future__ import annotations

import functools
import multiprocessing
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from curator.errors import CuratorError
from curator.executors.base import Executor, Prepare, UnitFailure, one_line, prepared_call, ready

# A recycled worker costs ~1 s of its time (spawn, imports, the stage's Prepare: the pool's
# start-up figure in `python -m bench ingest`). Retired every 32 tasks (header batches and
# units both count), the workers of the 768-slice bench (64-slice units) sat idle 28% of
# the time after their first unit; every 128 tasks, 2.4%. With 256-item units that was ~3%
# and is now under 1%, and a worker still returns what C decoders hold every 128 tasks.
TASKS_PER_CHILD = 128
# How often an idle worker checks that the process that started it is still there.
PARENT_POLL_SECONDS = 0.5


def _exit_with_parent() -> None:
    """Pool initializer: a worker whose parent is gone (SIGKILL, the OOM killer) exits.

    Without it an idle worker waits on its call queue forever: a killed build left its
    workers running, holding their memory, until someone killed them by hand.
    """
    import os
    import threading
    import time

    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(PARENT_POLL_SECONDS)
        os._exit(1)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


class _RecyclingPool(ProcessPoolExecutor):
    """A spawn pool whose workers, retired at ``max_tasks_per_child``, are always replaced.

    CPython 3.11 to 3.15.0b3 (gh-115634, fixed upstream by replacing dead workers without
    the idle semaphore) replaces a retired worker only when its idle semaphore holds no
    token, but the semaphore counts finished tasks, not idle workers: a stale token left
    a pool with no worker and its queued units waiting forever. Seen here: the 768-slice
    bench hung once both workers of a pool reached their 32nd task. This is that fix: the
    manager thread, the only caller after a worker exits, replaces it whenever the pool
    is below its size; ``submit`` keeps the on-demand spawning of the base class.
    """

    def _adjust_process_count(self) -> None:
        if threading.current_thread() is self._executor_manager_thread:
            if len(self._processes) < self._max_workers:
                self._spawn_process()
            return
        super()._adjust_process_count()


class LocalExecutor(Executor):
    name = "local"

    def __init__(self, workers: int | None = None, **options: Any):
        super().__init__(workers, **options)
        self._pool: ProcessPoolExecutor | None = None
        self._starting: list[Future] = []  # start()'s tasks: never waited for, only dropped

    def _new_pool(self, workers: int) -> ProcessPoolExecutor:
        return _RecyclingPool(
            max_workers=workers,
            mp_context=multiprocessing.get_context("spawn"),
            max_tasks_per_child=TASKS_PER_CHILD,
            initializer=_exit_with_parent,
        )

    def _start(self, prepare: Prepare | None) -> None:
        # A spawn pool starts a process per submit while none is idle, so a fresh pool gets one
        # task a worker; a warm one's idle workers each take one (a task lasts long enough).
        if self._pool is None:
            self._pool = self._new_pool(self.workers)
        self._starting = [f for f in self._starting if not f.done()]
        try:
            self._starting += [self._pool.submit(prepared_call, prepare, ready, None) for _ in range(self.workers)]
        except BrokenProcessPool:
            pass  # imap replaces a broken pool at its first submit

    def imap(
        self, fn: Callable[[Any], Any], units: Sequence[Any], prepare: Prepare | None = None
    ) -> Iterator[tuple[int, Any]]:
        if self._pool is None:
            self._pool = self._new_pool(self.workers)
        if prepare is not None:
            fn = functools.partial(prepared_call, prepare, fn)
        todo = iter(range(len(units)))
        unsent: list[int] = []  # refused by a pool that broke after the last wait: never ran, sent again
        running: dict[Future, int] = {}
        suspects: list[int] = []

        def fill() -> None:
            while len(running) < self.window:
                i = unsent.pop(0) if unsent else next(todo, None)
                if i is None:
                    return
                try:
                    running[self._pool.submit(fn, units[i])] = i
                except BrokenProcessPool:
                    # a worker died after the last wait returned: the futures in flight will say
                    # so; with none in flight, nothing will, so the pool is replaced here
                    unsent.insert(0, i)
                    if running:
                        return
                    self._pool.shutdown(wait=False, cancel_futures=True)
                    self._pool = self._new_pool(self.workers)

        fill()
        while running:
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            broken = False
            for fut in done:
                i = running.pop(fut)
                try:
                    yield i, fut.result()
                except BrokenProcessPool:
                    suspects.append(i)
                    broken = True
                except CuratorError:
                    raise
                except Exception as exc:  # noqa: BLE001 - a unit fails alone
                    yield i, UnitFailure(_unit_id(units[i], i), one_line(exc))
            if broken:
                # every unit in flight is a suspect: the pool cannot say which one killed it
                suspects.extend(running.values())
                running.clear()
                self._pool.shutdown(wait=False, cancel_futures=True)
                self._pool = self._new_pool(self.workers)
                for i in sorted(suspects):
                    yield i, self._isolated(fn, units[i], i)
                suspects.clear()
            fill()

    def _isolated(self, fn: Callable[[Any], Any], unit: Any, i: int) -> Any:
        pool = self._new_pool(1)
        try:
            return pool.submit(fn, unit).result()
        except BrokenProcessPool:
            return UnitFailure(_unit_id(unit, i), "worker process died (crash or out-of-memory kill)")
        except CuratorError:
            raise
        except Exception as exc:  # noqa: BLE001
            return UnitFailure(_unit_id(unit, i), one_line(exc))
        finally:
            pool.shutdown(wait=False, cancel_futures=True)

    def close(self) -> None:
        self._starting.clear()
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None


def _unit_id(unit: Any, i: int) -> str:
    return str(getattr(unit, "id", i))
