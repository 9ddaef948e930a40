"""Recycled local-pool workers are replaced: CPython's max_tasks_per_child deadlock (gh-115634) cannot hang it."""

import subprocess
import sys

from executor_units import square_or_fail

from curator.executors import local, make_executor

# The upstream reproduction, on the pool class LocalExecutor uses: one worker, retired every
# second task, ten tasks queued at once. CPython's own pool hangs after two (3.11 to 3.15.0b3).
BACKLOG = """
import multiprocessing
from curator.executors.local import _RecyclingPool

if __name__ == "__main__":
    with _RecyclingPool(1, mp_context=multiprocessing.get_context("spawn"), max_tasks_per_child=2) as pool:
        print(sum(f.result() for f in [pool.submit(abs, -i) for i in range(10)]))
"""


def test_a_backlog_outlives_its_retiring_workers(tmp_path):
    script = tmp_path / "backlog.py"
    script.write_text(BACKLOG)
    # a hang is a failure here, not a stuck suite: the child is killed after the timeout
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "45"


def test_recycled_workers_run_every_unit(monkeypatch):
    monkeypatch.setattr(local, "TASKS_PER_CHILD", 2)
    with make_executor("local", workers=2) as executor:
        for _ in range(3):  # several maps on one pool, as the header pass and then the units
            out = dict(executor.map(square_or_fail, list(range(9)), progress=False))
            assert out == {i: i * i for i in range(9)}
