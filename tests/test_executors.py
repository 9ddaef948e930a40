"""The executor seam: every backend runs the same units to the same results; a unit fails alone."""

import math
import time

import pytest
from executor_units import crash_on_seven, square_or_fail

from curator.errors import CuratorError
from curator.executors import UnitFailure, make_executor


def results(executor, fn, units):
    with executor:
        return dict(executor.map(fn, units, progress=False))


@pytest.mark.parametrize("name", ["serial", "local"])
def test_backends_agree_and_failures_stay_with_their_unit(name):
    units = [3, -1, 4, 1, 5]
    out = results(make_executor(name, workers=2), square_or_fail, units)
    assert {i: v for i, v in out.items() if not isinstance(v, UnitFailure)} == {0: 9, 2: 16, 3: 1, 4: 25}
    assert out[1] == UnitFailure("1", "ValueError: negative unit -1")


def test_a_worker_that_crashes_costs_only_its_unit():
    units = list(range(12))
    out = results(make_executor("local", workers=2), crash_on_seven, units)
    assert isinstance(out[7], UnitFailure) and "died" in out[7].error
    assert {i: v for i, v in out.items() if i != 7} == {i: i * i for i in units if i != 7}


def test_a_worker_dying_while_the_caller_is_busy_costs_only_its_unit():
    """The pool can break between a wait and the next submit (the caller was committing a result)."""
    out = {}
    with make_executor("local", workers=2) as executor:
        for i, value in executor.imap(crash_on_seven, list(range(12))):
            out[i] = value
            time.sleep(0.5)  # a slow consumer: unit 7's worker dies meanwhile (failed with BrokenProcessPool)
    assert isinstance(out[7], UnitFailure) and "died" in out[7].error
    assert {i: v for i, v in out.items() if i != 7} == {i: i * i for i in range(12) if i != 7}


@pytest.mark.slow
def test_ray_local_mode_gives_the_same_results():
    units = [4.0, 9.0, -1.0, 16.0]
    out = results(make_executor("ray", workers=2), math.sqrt, units)
    assert out[0] == 2.0 and out[1] == 3.0 and out[3] == 4.0
    assert isinstance(out[2], UnitFailure) and "math domain error" in out[2].error


def test_bad_worker_counts_and_names_are_one_clear_error():
    with pytest.raises(CuratorError, match="--workers must be at least 1"):
        make_executor("local", workers=0)
    with pytest.raises(CuratorError, match="unknown executor 'spark'"):
        make_executor("spark")


@pytest.mark.slow
def test_unreachable_ray_address_is_one_clear_error():
    with pytest.raises(CuratorError, match="cannot connect to Ray at 127.0.0.1:1"):
        make_executor("ray", workers=1, ray_address="127.0.0.1:1")
