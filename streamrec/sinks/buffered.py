"""`BrokerSink`: the buffer and the sender thread every message-broker sink shares.

``write`` only appends to a bounded buffer and returns: the pipeline never waits for a broker.
A thread of the sink's own connects, sends the buffer in batches and takes an event out only
once the broker has confirmed it (at least once: a batch cut off by a lost connection is sent
again after reconnecting, so a consumer de-duplicates by ``event_id``). While the broker is
unreachable events wait, up to ``buffer`` of them plus the batch being sent; past that the
oldest waiting event is dropped and counted. At the end of a run `close` gives what waits
``flush_s`` seconds to leave; what cannot is counted as dropped too.

A broker sink implements `connect`, `send` and `disconnect`, called on the sender thread only.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import threading
import time

from streamrec.events import Event
from streamrec.sinks import SinkURL

log = logging.getLogger("streamrec.sinks")

RETRY_FIRST_S = 0.1  # the first reconnect waits this long, each next one twice as long ...
RETRY_MAX_S = 2.0  # ... up to this
CONNECT_TIMEOUT_S = 3.0  # a broker that has not answered a connect by then counts as down
ACK_TIMEOUT_S = 5.0  # a batch not confirmed by then counts as lost with the connection


@dataclasses.dataclass(frozen=True)
class SinkStats:
    """A broker sink's figures so far."""

    delivered: int  # events the broker confirmed
    dropped: int  # events given up: the buffer overflowed, or they were still waiting at the end of the run
    waiting: int  # events held now, the batch being sent included
    connected: bool
    reconnects: int  # connections made after a lost one


class BrokerSink:
    """A sink that sends every event to a message broker from its own thread (see the module)."""

    batch_size = 100  # events sent before waiting for the broker's confirmations

    def __init__(self, url: SinkURL):
        self.url = url
        self.capacity: int = url.options["buffer"]
        self.flush_s: float = url.options["flush_s"]
        self._waiting: collections.deque[Event] = collections.deque()
        self._sending = 0  # events in the batch the sender thread holds
        self._lock = threading.Condition()
        self._closing_at: float | None = None
        self.delivered = self.dropped = self.reconnects = 0
        self.connected = False
        self._ever_connected = False
        self._down_since: float | None = None  # when the broker was last found unreachable
        self._overflowing = False  # dropping since the buffer last had room (logged once)
        self._thread = threading.Thread(target=self._run, name=f"sink-{url.scheme}", daemon=True)
        self._thread.start()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url.shown})"

    # ----------------------------------------------------------------- the broker's side (overridden)

    def connect(self) -> None:
        """Open a connection, or raise (any exception: the broker is unreachable)."""
        raise NotImplementedError

    def send(self, batch: list[Event]) -> int:
        """Send ``batch`` and return how many of its first events the broker confirmed; fewer
        than all, or an exception, means the connection is lost."""
        raise NotImplementedError

    def disconnect(self) -> None:
        """Drop the connection quietly (the broker may be gone already)."""

    # ----------------------------------------------------------------- the pipeline's side

    def write(self, event: Event) -> None:
        with self._lock:
            self._waiting.append(event)
            self._trim()
            self._lock.notify()

    def stats(self) -> SinkStats:
        with self._lock:
            return SinkStats(self.delivered, self.dropped, len(self._waiting) + self._sending, self.connected,
                             self.reconnects)

    def close(self) -> None:
        """Give waiting events up to ``flush_s`` seconds to leave, then stop and report."""
        with self._lock:
            if self._closing_at is None:
                self._closing_at = time.monotonic()
            self._lock.notify_all()
        self._thread.join(self.flush_s + CONNECT_TIMEOUT_S + ACK_TIMEOUT_S)
        with self._lock:
            stuck = len(self._waiting) + self._sending if self._thread.is_alive() else 0
            self.dropped += stuck
            self._waiting.clear()
            self._sending = 0
            stats = SinkStats(self.delivered, self.dropped, 0, self.connected, self.reconnects)
        if stats.dropped:
            log.warning("sink %s: %d events delivered, %d dropped (the buffer of %d overflowed, or the broker was "
                        "unreachable at the end)", self.url.shown, stats.delivered, stats.dropped, self.capacity)
        else:
            log.info("sink %s: %d events delivered", self.url.shown, stats.delivered)

    # ----------------------------------------------------------------- the sender thread

    def _trim(self) -> None:
        """Drop the oldest waiting events past the capacity (the lock held)."""
        excess = len(self._waiting) - self.capacity
        if excess <= 0:
            self._overflowing = False
            return
        for _ in range(excess):
            self._waiting.popleft()
        self.dropped += excess
        if not self._overflowing:
            self._overflowing = True
            log.warning("sink %s: %d events waiting for the broker, the most it holds (?buffer=); dropping the "
                        "oldest", self.url.shown, self.capacity)

    def _give_up(self) -> bool:
        """Closing and out of time, or nothing left (the lock held)."""
        if self._closing_at is None:
            return False
        return not self._waiting or time.monotonic() >= self._closing_at + self.flush_s

    def _run(self) -> None:
        retry_s = RETRY_FIRST_S
        while True:
            with self._lock:
                while not self._waiting and self._closing_at is None:
                    self._lock.wait()
                if self._give_up():
                    self.dropped += len(self._waiting)
                    self._waiting.clear()
                    self.connected = False
                    break
            if not self.connected:  # no batch is held meanwhile: every waiting event stays in the buffer
                if not self._open():
                    self._pause(retry_s)
                    retry_s = min(2 * retry_s, RETRY_MAX_S)
                    continue
                retry_s = RETRY_FIRST_S
            with self._lock:
                batch = [self._waiting.popleft() for _ in range(min(self.batch_size, len(self._waiting)))]
                self._sending = len(batch)
            try:
                sent = self.send(batch)
            except Exception as exc:  # the client library's own errors: the broker is gone
                sent, reason = 0, exc
            else:
                reason = "it did not confirm every event sent" if sent < len(batch) else None
            with self._lock:
                self.delivered += sent
            self._put_back(batch[sent:])
            if reason is not None:
                self._lost(reason)
        self._close_connection()

    def _open(self) -> bool:
        try:
            self.connect()
        except Exception as exc:
            self._close_connection()
            if self._down_since is None:
                self._down_since = time.monotonic()
                log.warning("sink %s: cannot reach the broker (%s); holding up to %d events and retrying",
                            self.url.shown, _reason(exc), self.capacity)
            return False
        with self._lock:
            self.connected = True
            if self._ever_connected:
                self.reconnects += 1
            waiting = len(self._waiting) + self._sending
        if self._down_since is not None:
            log.info("sink %s: connected after %.1f s; %d events waiting", self.url.shown,
                     time.monotonic() - self._down_since, waiting)
        elif not self._ever_connected:
            log.info("sink %s: connected", self.url.shown)
        self._ever_connected, self._down_since = True, None
        return True

    def _lost(self, reason: object) -> None:
        with self._lock:
            self.connected = False
        self._down_since = time.monotonic()
        log.warning("sink %s: lost the broker (%s); holding up to %d events and reconnecting", self.url.shown,
                    _reason(reason), self.capacity)
        self._close_connection()

    def _close_connection(self) -> None:
        try:
            self.disconnect()
        except Exception:  # a connection already gone may fail to close; nothing is lost by that
            pass

    def _put_back(self, unsent: list[Event]) -> None:
        """Return the unsent part of a batch to the front of the buffer, oldest first."""
        with self._lock:
            self._waiting.extendleft(reversed(unsent))
            self._sending = 0
            self._trim()

    def _pause(self, seconds: float) -> None:
        """Wait before reconnecting; the end of a run cuts the wait short at its deadline."""
        deadline = time.monotonic() + seconds
        with self._lock:
            while True:
                if self._closing_at is not None:
                    deadline = min(deadline, self._closing_at + self.flush_s)
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return
                self._lock.wait(remaining)


def _reason(error: object) -> str:
    """An error in one line, for the log."""
    text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return text[:200]
