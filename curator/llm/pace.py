"""Adaptive pace: how many requests to keep in flight, learnt from the endpoint's answers.

A one-slot llama.cpp or Ollama server queues what it cannot serve; a request sent
into that queue waits behind the others, and with eight in flight and 10-20 s a
reply the last one waits past any sane timeout, is abandoned while the server still
works on it, and is sent again. So the pace starts at one request, and:

- grows while replies come back as fast as the fastest recent one (a slow start,
  +1 a reply, until the first sign of congestion; then +1 a round trip), and only
  while a reply with one more queued before it would still finish in half the timeout;
- shrinks when latency rises (a round trip's replies, by their median, slower than
  ``CONGESTED`` x the fastest recent reply of the same size: they waited in the
  server's queue) to the share the latency says the endpoint serves, and halves on a
  timeout, a 429 or a 5xx;
- pauses every new request for a ``Retry-After`` the endpoint asks for.

One decrease per round trip (TCP's rule): answers to requests sent before the last
decrease do not count again. A request's clock starts when it leaves, never while it
waits here for a slot, so a timeout measures the endpoint, not this queue.

The client's own stalls are not the endpoint's queue. On a loaded machine (other
processes on the cores, a GIL-bound thread, a CPU-bound step in the event loop) a
reply that has arrived waits unread until the loop runs again, and its latency rises
though the endpoint queued nothing; the pace used to read that as congestion and
back off to one request. A probe task wakes every ``PROBE`` seconds and adds how
late it woke; a reply is judged by its latency net of the stall it waited out
before it was read (the one just ended, never earlier ones: subtracting every stall
of the flight made a loaded test machine back off more, not less, because a stall
during the wait delays nothing). Only replies read without a stall set the fastest
recent reply, the yardstick. A real queue still shows: its wait is in the net
latency. Timeouts, 429s and 5xx count as before; the raw latency stays in the stats
and the timeout advice.
"""

from __future__ import annotations

import asyncio
import math
import statistics
import time
from collections import deque
from dataclasses import dataclass, field

HEALTHY = 1.4  # a reply within 1.4x the fastest recent one of its size: the endpoint was not queueing it
CONGESTED = 1.8  # a round of replies slower than 1.8x: they waited behind others
SLACK = 0.05  # seconds of network and scheduling noise no endpoint queue is made of
WINDOW = 32  # recent replies the fastest is taken over (a window, so a faster past is forgotten)
HEADROOM = 0.5  # grow only while one more queued reply would still finish in half the timeout
PROBE = 0.01  # seconds between the stall probe's wake-ups (100 cheap wake-ups a second)
# a wake-up later than this is a stall; less is scheduling noise on a busy machine, which
# summed over a flight would mark every reply as stalled
STALL_MIN = 0.02
RECENT = 0.03  # a stall that ended this recently may still be what a reply read now waited out


@dataclass
class Ticket:
    sent: float
    epoch: int
    in_flight: int


class StallProbe:
    """How long this process's event loop could not run, and when.

    ``delay()`` is the stall a reply read now waited out: the one in progress (the probe
    has not woken since it began) or the last one, if it ended a moment ago. A stall
    that ended earlier delayed nothing read now: the loop ran after it, and a reply
    already there would have been read then.
    """

    def __init__(self, interval: float = PROBE):
        self.interval = interval
        self._due: float | None = None
        self._last_end = 0.0
        self._last_len = 0.0
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        if self._task is None:
            self._due = time.monotonic() + self.interval
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            now = time.monotonic()
            late = now - self._due
            if late > STALL_MIN:
                self._last_end, self._last_len = now, late
            self._due = now + self.interval

    def delay(self) -> float:
        if self._due is None:
            return 0.0
        now = time.monotonic()
        late = now - self._due
        if late > STALL_MIN:
            return late
        return self._last_len if now - self._last_end <= RECENT else 0.0

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None


@dataclass
class PaceStats:
    """What the pace found, for the summary and the next run's settings."""

    mode: str
    ceiling: int
    limit: float
    max_in_flight: int = 0
    backoffs: int = 0
    timeouts: int = 0
    overloaded: int = 0  # 429 and 5xx
    latencies: list[float] = field(default_factory=list)
    limits: list[int] = field(default_factory=list)  # the limit when each reply arrived

    @property
    def median_latency(self) -> float | None:
        return statistics.median(self.latencies) if self.latencies else None

    @property
    def p95_latency(self) -> float | None:
        if not self.latencies:
            return None
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, math.ceil(0.95 * len(ordered)) - 1)]

    @property
    def sustained(self) -> int:
        """The concurrency the run settled at: the median limit over its second half."""
        tail = self.limits[len(self.limits) // 2 :] or [int(self.limit)]
        return max(1, int(statistics.median(tail)))

    def advice(self) -> dict:
        """Settings for the next run against this endpoint: the pace it sustained, and a timeout
        three times its slowest reply (whole seconds), so a slow reply is never abandoned."""
        worst = max(self.latencies) if self.latencies else None
        return {"concurrency": self.sustained, "timeout": float(math.ceil(3 * worst)) if worst else None}


class Pace:
    """Hands out request slots; ``done`` tells it how each request went."""

    def __init__(self, ceiling: int, timeout: float, start: int = 1, adaptive: bool = True):
        self.ceiling = ceiling
        self.timeout = timeout
        self.adaptive = adaptive
        self.limit = float(min(ceiling, start) if adaptive else ceiling)
        self.in_flight = 0
        self.waiting = 0
        self.epoch = 0
        self.slow_start = True
        self.recent: dict[int, deque[float]] = {}  # clean replies' latencies, per size: the yardstick
        self.net: dict[int, deque[float]] = {}  # every reply's latency net of this process's stalls
        self.paused_until = 0.0
        self.stats = PaceStats("adaptive" if adaptive else "fixed", ceiling, self.limit)
        self._wake = asyncio.Event()
        self.probe = StallProbe()

    def close(self) -> None:
        """Stop the stall probe (the client calls this when it closes)."""
        self.probe.stop()

    async def slot(self) -> Ticket:
        """Wait until no Retry-After pause is on and the limit has room; the request leaves now."""
        if self.adaptive:
            self.probe.start()
        self.waiting += 1
        try:
            while True:
                pause = self.paused_until - time.monotonic()
                if pause <= 0 and self.in_flight < max(1, int(self.limit)):
                    break
                wake = self._wake
                try:
                    await asyncio.wait_for(wake.wait(), pause if pause > 0 else None)
                except TimeoutError:
                    pass
        finally:
            self.waiting -= 1
        self.in_flight += 1
        self.stats.max_in_flight = max(self.stats.max_in_flight, self.in_flight)
        return Ticket(time.monotonic(), self.epoch, self.in_flight)

    def done(self, ticket: Ticket, outcome: str, size: int = 0, retry_after: float | None = None) -> float:
        """Record a request's end (``ok``, ``timeout``, ``overloaded`` or ``error``); its latency.

        ``size``: the request's class (captions asked for). Latencies are compared within a
        class only, so a short re-ask never makes a full request look queued. Synchronous, so
        it runs even when the request was cancelled."""
        latency = time.monotonic() - ticket.sent
        self.in_flight -= 1
        if outcome == "ok":
            self.stats.latencies.append(latency)
            # this process's own stalls during the flight are not the endpoint's queue
            stalled = min(latency, self.probe.delay())
            self._ok(ticket, latency, size, stalled)
        elif outcome in ("timeout", "overloaded"):
            if outcome == "timeout":
                self.stats.timeouts += 1
            else:
                self.stats.overloaded += 1
            self._decrease(ticket, self.limit / 2)
        if retry_after:
            self.paused_until = max(self.paused_until, time.monotonic() + retry_after)
        self.stats.limit = self.limit
        self.stats.limits.append(int(self.limit))
        # wake every waiter: each re-checks the limit and the pause
        self._wake.set()
        self._wake = asyncio.Event()
        return latency

    def _ok(self, ticket: Ticket, latency: float, size: int, stalled: float = 0.0) -> None:
        recent = self.recent.setdefault(size, deque(maxlen=WINDOW))
        net = self.net.setdefault(size, deque(maxlen=WINDOW))
        if stalled <= SLACK:  # read without a stall of this process in its flight
            recent.append(latency)
        latency -= stalled
        net.append(latency)
        if not self.adaptive:
            return
        fastest = min(recent) if recent else min(net)  # no clean reply yet: the net ones
        # the median of the last round trip's replies of this size: one slow reply is noise, a
        # round of them is a queue
        last = list(net)[-max(3, int(self.limit)) :]
        typical = statistics.median(last)
        if len(last) >= 3 and typical > CONGESTED * fastest + SLACK:
            # they queued behind others: keep the share of the limit the endpoint got through at full speed
            self._decrease(ticket, self.limit * max(0.5, HEALTHY * fastest / typical))
            return
        # one more request queued behind this one (the worst case: a one-slot server) must still fit
        fits = latency + fastest <= HEADROOM * self.timeout
        # grow only when more is wanted: requests wait for a slot, or this one shared the whole limit
        used = self.waiting > 0 or ticket.in_flight >= int(self.limit)
        if latency <= HEALTHY * fastest + SLACK and fits and used and self.limit < self.ceiling:
            self.limit = min(self.ceiling, self.limit + (1 if self.slow_start else 1 / self.limit))

    def _decrease(self, ticket: Ticket, to: float) -> None:
        if not self.adaptive or ticket.epoch != self.epoch:
            return  # sent before the last decrease: that decrease already answered it
        self.limit = max(1.0, to)
        self.slow_start = False
        self.epoch += 1
        self.stats.backoffs += 1
