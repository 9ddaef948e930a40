"""Units one after another in this process: the reference the other backends must match byte for byte."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

from curator.errors import CuratorError
from curator.executors.base import Executor, Prepare, UnitFailure, one_line, prepared_call


class SerialExecutor(Executor):
    name = "serial"

    def __init__(self, workers: int | None = None, **options: Any):
        super().__init__(1 if workers is None else workers, **options)

    def imap(
        self, fn: Callable[[Any], Any], units: Sequence[Any], prepare: Prepare | None = None
    ) -> Iterator[tuple[int, Any]]:
        for i, unit in enumerate(units):
            try:
                yield i, prepared_call(prepare, fn, unit)
            except CuratorError:
                raise  # a user mistake (bad card) stops the run with one line, as elsewhere
            except Exception as exc:  # noqa: BLE001 - a unit fails alone, with its error kept
                yield i, UnitFailure(str(getattr(unit, "id", i)), one_line(exc))
