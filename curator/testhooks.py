"""Kill points for the kill tests: a process SIGKILLs itself at a named point of its writes.

``CURATOR_TEST_KILL_AT=<event>:<glob>:<n>`` (unset in every real run) makes the process
that reaches the point send itself SIGKILL, so a test can land a kill exactly where a
power cut or the OOM killer could, in a real child process, every time:

- ``commit:<glob>:<n>`` — right after the n-th corpus file matching ``glob`` (relative
  to the corpus root, fnmatch) appeared under its final name;
- ``write:<glob>:<n>`` — once ``n`` bytes have gone into files matching ``glob`` that
  are not committed yet (a local ``.tmp-*`` file half written; on S3 a multipart
  upload with its first parts on the server and no object yet).

Every write of a corpus goes through :mod:`curator.storage`, which calls :func:`reached`;
no stage needs a hook of its own. Without the variable a call costs one dict lookup.
The point kills the process that reaches it: with a process pool, a write done in a
worker kills that worker (a crash the executor isolates), not the command; kill a
whole command at a point its main process reaches (``--executor serial``, or a stage
that writes in-process: index, caption, instruct).
"""

from __future__ import annotations

import functools
import os
import signal
from fnmatch import fnmatchcase

from curator.errors import CuratorError

KILL_ENV = "CURATOR_TEST_KILL_AT"
EVENTS = ("commit", "write")
_counts: dict[str, int] = {}


@functools.cache
def _plan(value: str) -> tuple[str, str, int]:
    event, _, rest = value.partition(":")
    pattern, _, n = rest.rpartition(":")
    if event not in EVENTS or not pattern or not n.isdigit() or int(n) < 1:
        raise CuratorError(f"{KILL_ENV}={value!r}: expected <commit|write>:<glob>:<n>, e.g. commit:index/*:1")
    return event, pattern, int(n)


def reached(event: str, rel: str, amount: int = 1) -> None:
    """Count ``amount`` (files or bytes) of ``event`` on corpus file ``rel``; SIGKILL self at the planned point."""
    value = os.environ.get(KILL_ENV)
    if not value:
        return
    planned, pattern, n = _plan(value)
    if event != planned or not fnmatchcase(rel, pattern):
        return
    _counts[event] = _counts.get(event, 0) + amount
    if _counts[event] >= n:
        os.kill(os.getpid(), signal.SIGKILL)
