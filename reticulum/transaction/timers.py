"""RFC 3261 §17 timer values (Table 4) and the timer queues the transaction layer runs them on.

Timers of the same duration fire in the order they were started, so the layer keeps them in
one FIFO queue per duration (Timer J, L, M, ... each make one queue; the retransmission
intervals a few more) with a single clock call for the head of each queue, rather than one
clock call per timer: tens of thousands of lingering transactions cost one small object each.
"""
from __future__ import annotations

from collections import deque
from typing import Any, Callable, Deque, Dict, Optional

__all__ = ["Timers", "Timer", "TimerQueues"]


class Timers:
    """RFC 3261 Table 4 timer values, derived from T1, T2 and T4 (config ``[timers]``).

    ``a``, ``e``, ``g`` are the first retransmission intervals; ``b``, ``f``, ``h``, ``l``, ``m``
    the 64*T1 timeouts; ``d(reliable)``, ``i(reliable)``, ``j(reliable)``, ``k(reliable)`` are
    zero on reliable transports.
    """

    __slots__ = ("t1", "t2", "t4")

    D_UNRELIABLE = 32.0

    def __init__(self, t1: float = 0.5, t2: float = 4.0, t4: float = 5.0):
        if not (t1 > 0 and t2 > 0 and t4 > 0):
            raise ValueError("timer values must be positive")
        if t2 < t1:
            raise ValueError("T2 must not be smaller than T1")
        self.t1 = float(t1)
        self.t2 = float(t2)
        self.t4 = float(t4)

    def __repr__(self) -> str:
        return "Timers(t1=%r, t2=%r, t4=%r)" % (self.t1, self.t2, self.t4)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Timers):
            return NotImplemented
        return (self.t1, self.t2, self.t4) == (other.t1, other.t2, other.t4)

    def __hash__(self) -> int:
        return hash((self.t1, self.t2, self.t4))

    @property
    def a(self) -> float:
        return self.t1

    @property
    def e(self) -> float:
        return self.t1

    @property
    def g(self) -> float:
        return self.t1

    @property
    def b(self) -> float:
        return 64 * self.t1

    @property
    def f(self) -> float:
        return 64 * self.t1

    @property
    def h(self) -> float:
        return 64 * self.t1

    @property
    def l(self) -> float:  # noqa: E743 - the RFC's name
        return 64 * self.t1

    @property
    def m(self) -> float:
        return 64 * self.t1

    @property
    def unanswered(self) -> float:
        """How long a non-INVITE server transaction waits for its TU's final response (twice
        Timer F: the client has given up long before)."""
        return 128 * self.t1

    def d(self, reliable: bool = False) -> float:
        return 0.0 if reliable else self.D_UNRELIABLE

    def i(self, reliable: bool = False) -> float:
        return 0.0 if reliable else self.t4

    def j(self, reliable: bool = False) -> float:
        return 0.0 if reliable else 64 * self.t1

    def k(self, reliable: bool = False) -> float:
        return 0.0 if reliable else self.t4


class Timer:
    """One started timer: ``active()`` and ``cancel()`` as a clock's delayed call has."""

    __slots__ = ("when", "func", "queue")

    def __init__(self, when: float, func: Callable[[], Any], queue: "_TimerQueue"):
        self.when = when
        self.func: Optional[Callable[[], Any]] = func
        self.queue: Optional[_TimerQueue] = queue

    def active(self) -> bool:
        return self.func is not None

    def cancel(self) -> None:
        if self.func is not None:
            self.func = None
            queue = self.queue
            self.queue = None
            if queue is not None:
                queue.cancelled(self)


class _TimerQueue:
    """The started timers of one duration, in firing order, and the clock call for the
    first of them."""

    __slots__ = ("clock", "delay", "entries", "live", "call", "running")

    def __init__(self, clock: Any, delay: float):
        self.clock = clock
        self.delay = delay
        self.entries: Deque[Timer] = deque()
        self.live = 0
        self.call: Any = None
        self.running = False

    def start(self, func: Callable[[], Any]) -> Timer:
        timer = Timer(self.clock.seconds() + self.delay, func, self)
        self.entries.append(timer)
        self.live += 1
        if self.call is None and not self.running:
            self.call = self.clock.callLater(self.delay, self._run)
        return timer

    def cancelled(self, timer: Timer) -> None:
        self.live -= 1
        entries = self.entries
        if not self.live:
            entries.clear()
            call = self.call
            if call is not None:
                self.call = None
                call.cancel()
            return
        # A timer cancelled right after it was started (a transaction answered at once) is
        # the newest one: take it off now rather than when its time comes.
        while entries and entries[-1].func is None:
            entries.pop()

    def _run(self) -> None:
        self.call = None
        self.running = True
        entries = self.entries
        try:
            now = self.clock.seconds()
            while entries:
                timer = entries[0]
                func = timer.func
                if func is not None and timer.when > now:
                    break
                entries.popleft()
                if func is not None:
                    timer.func = None
                    timer.queue = None
                    self.live -= 1
                    func()
        finally:
            self.running = False
            while entries and entries[0].func is None:
                entries.popleft()
            if entries and self.call is None:
                self.call = self.clock.callLater(
                    max(0.0, entries[0].when - self.clock.seconds()), self._run)


class TimerQueues:
    """Every started timer of one clock, one queue per duration.

    The clock is ``twisted.internet.interfaces.IReactorTime``-shaped: ``seconds()`` and
    ``callLater(delay, f)`` returning an object with ``cancel()``."""

    __slots__ = ("clock", "_queues")

    def __init__(self, clock: Any):
        self.clock = clock
        self._queues: Dict[float, _TimerQueue] = {}  # duration -> its started timers

    def later(self, delay: float, func: Callable[[], Any]) -> Timer:
        """Start a timer: ``func()`` runs after ``delay`` seconds of the clock unless the
        returned timer is cancelled first."""
        queue = self._queues.get(delay)
        if queue is None:
            queue = self._queues[delay] = _TimerQueue(self.clock, delay)
        return queue.start(func)
