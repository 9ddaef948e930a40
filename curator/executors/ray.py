"""Ray: the same units on a cluster (``ray start --head`` here, ``ray start --address`` elsewhere).

Workers must see the sources and the corpus at the same paths (a shared file
system) or use object storage for ``--out``. Without ``--ray-address`` Ray starts
a local instance on loopback and stops it on ``close``; with one, it joins that
cluster and leaves it running. Tasks are not retried by Ray (``max_retries=0``):
a failed unit is reported and redone by the next run, like on every backend.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import ray

from curator.errors import CuratorError
from curator.executors.base import Executor, Prepare, UnitFailure, one_line, prepared_call, ready


class RayExecutor(Executor):
    name = "ray"

    def __init__(self, workers: int | None = None, ray_address: str | None = None, **options: Any):
        super().__init__(workers, **options)
        self._started = False
        if not ray.is_initialized():
            if ray_address:
                _check_reachable(ray_address)
            try:
                if ray_address:
                    ray.init(address=ray_address, log_to_driver=False, logging_level="ERROR")
                else:
                    ray.init(
                        num_cpus=self.workers,
                        include_dashboard=False,
                        log_to_driver=False,
                        logging_level="ERROR",
                        _node_ip_address="127.0.0.1",
                    )
            except (ConnectionError, RuntimeError, ValueError) as exc:
                where = ray_address or "a local Ray instance"
                raise CuratorError(f"cannot connect to Ray at {where}: {one_line(exc)}") from None
            self._started = True
        if ray_address:
            # on a cluster, keep every CPU busy: the window follows the cluster's size
            self.workers = max(self.workers, int(ray.cluster_resources().get("CPU", self.workers)))
        self._starting: list[Any] = []  # start()'s tasks: never waited for, only dropped
        # one remote function for every map: each new one is pickled and exported to the cluster again
        self._remote = ray.remote(max_retries=0)(_call)

    def _start(self, prepare: Prepare | None) -> None:
        # one task a CPU: Ray starts (or reuses) a worker process for each, which then runs prepare
        self._starting = [self._remote.remote(prepare, ready, None) for _ in range(self.workers)]

    def imap(
        self, fn: Callable[[Any], Any], units: Sequence[Any], prepare: Prepare | None = None
    ) -> Iterator[tuple[int, Any]]:
        remote = self._remote
        todo = iter(range(len(units)))
        running: dict[Any, int] = {}

        def fill() -> None:
            while len(running) < self.window:
                i = next(todo, None)
                if i is None:
                    return
                running[remote.remote(prepare, fn, units[i])] = i

        fill()
        while running:
            done, _ = ray.wait(list(running), num_returns=1)
            for ref in done:
                i = running.pop(ref)
                try:
                    yield i, ray.get(ref)
                except ray.exceptions.RayTaskError as exc:
                    cause = exc.cause if isinstance(exc.cause, BaseException) else exc
                    if isinstance(cause, CuratorError):
                        raise cause from None
                    yield i, UnitFailure(str(getattr(units[i], "id", i)), one_line(cause))
                except ray.exceptions.RayError as exc:  # worker died, node lost, object lost
                    yield i, UnitFailure(str(getattr(units[i], "id", i)), one_line(exc))
            fill()

    def close(self) -> None:
        self._starting.clear()
        if self._started and ray.is_initialized():
            ray.shutdown()
            self._started = False


def _call(prepare: Prepare | None, fn: Callable[[Any], Any], unit: Any) -> Any:
    # Ray decorates only Python functions; wrapping lets any picklable callable be a unit's work
    return prepared_call(prepare, fn, unit)


def _check_reachable(address: str) -> None:
    """Fail in seconds with one line, where ``ray.init`` would retry an unreachable GCS for minutes."""
    if address == "auto" or "://" in address:
        return  # the cluster's own discovery (auto) or Ray Client: Ray reports those itself
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host or address, int(port or 6379)), timeout=5):
            pass
    except (OSError, ValueError) as exc:
        raise CuratorError(f"cannot connect to Ray at {address}: {exc.strerror or exc}") from None
