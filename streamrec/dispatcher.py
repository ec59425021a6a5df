"""The engine dispatcher: the one place that waits, and the owner of the engine's slots.

The pipeline's thread asks `EngineDispatcher.ended_calls` for finished work, the way
PySlowFast's demo loop puts tasks and gets results. Inside, the dispatcher keeps the engine
fed from the `Scheduler` and sleeps on one condition variable that three things signal: a
frame written (only while a slot is free and it is waiting for views), an engine call ended,
and `stop`.

Slots: ``engine.parallel_calls`` calls run in the engine at once. With one slot free, what is
due may be held until the scheduler's fill deadline for a fuller batch, but never once a call
has ended: views that waited behind a call go at once. With several free,
what is due is shared out between them and not held: two calls of one view each, side by
side, end sooner than one call of both. With every slot busy and a full batch due
(saturation), one more batch is cut and queued behind them, so the engine goes straight on
to it instead of waiting for this thread to wake up and cut it.

Ended calls are handed back in the order their batches were cut, whichever call ends first,
so each stream's results are published in order. One look starts at most one call a slot: an
engine that ends its calls as fast as they are cut (a fast accelerator, many streams) would
otherwise keep this thread cutting, with nothing published and every ended call held, for as
long as views come due.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable

from streamrec.backends import Engine
from streamrec.scheduler import Batch, Scheduler


@dataclass
class EngineCall:
    """A batch handed to the engine, and what the call makes of it, to come (the logits; in
    per-person mode, each clip's scored boxes: `streamrec.persons.PersonStage`)."""

    batch: Batch
    output: Future

    def done(self) -> bool:
        return self.output.done()


class EngineDispatcher:
    def __init__(self, engine: Engine, scheduler: Scheduler, work: Callable[[Batch], Any] | None = None):
        self.engine = engine
        self.scheduler = scheduler
        self.work = work or (lambda batch: engine.infer(batch.inputs))  # one engine call's job
        self.slots = engine.parallel_calls
        self._workers = ThreadPoolExecutor(max_workers=self.slots, thread_name_prefix="engine")
        self._in_flight: deque[EngineCall] = deque()  # oldest first: running, queued, and ended but not handed back
        # RLock: `stop` may run in a signal handler on the thread that holds it.
        self._news = threading.Condition(threading.RLock())
        self._pending = False  # something happened since the dispatcher last looked
        self._wants_frames = True  # a slot is free: a new frame may make a view due
        self._stopping = False
        self._calls_ended = 0  # counted by the workers; `_feed` notes which it has seen
        self._calls_ended_seen = 0

    # ------------------------------------------------------------------ signals, from any thread

    def frame_written(self) -> None:
        """A capture thread wrote a frame. Only wakes the dispatcher while a frame can matter."""
        if self._wants_frames:
            self._signal()

    def stop(self) -> None:
        """End any wait at once; `ended_calls` returns from then on without waiting."""
        self._stopping = True
        self._signal()

    def _call_ended(self, _: Future) -> None:
        self._calls_ended += 1
        self._signal()

    def _signal(self) -> None:
        with self._news:
            self._pending = True
            self._news.notify_all()

    # ------------------------------------------------------------------ the caller's side

    @property
    def idle(self) -> bool:
        """No call is running, queued or waiting to be handed back."""
        return not self._in_flight

    def in_flight(self, stream_id: str) -> bool:
        """A view of this stream is in a call not yet handed back."""
        return any(view.stream_id == stream_id for call in self._in_flight for view in call.batch.views)

    def ended_calls(self, timeout: float) -> list[EngineCall]:
        """Keep the engine fed; return the calls that have ended, oldest first, as soon as the
        oldest has (waiting at most ``timeout`` seconds; [] if none did, or on `stop`)."""
        deadline = time.monotonic() + timeout
        while True:
            self._pending = False  # before looking: news after this point ends the wait below
            hold_until = self._feed()  # on the scheduler's clock
            ended = self._pop_ended()
            left = deadline - time.monotonic()
            if ended or self._stopping or left <= 0:
                return ended
            self._wait(min(left, hold_until - self.scheduler.clock()))

    def drain(self) -> list[EngineCall]:
        """Every call still in flight, oldest first, once each has ended (at shutdown: their views
        were cut, so their events are owed); then the engine's workers are shut down."""
        calls = list(self._in_flight)
        self._in_flight.clear()
        for call in calls:
            call.output.exception()  # waits for the call; its error, if any, stays for the caller
            self.scheduler.release(call.batch)
        self._workers.shutdown()
        return calls

    # ------------------------------------------------------------------ internals

    def _unfinished(self) -> int:
        return sum(not call.done() for call in self._in_flight)

    def _feed(self) -> float:
        """Start what is due in the free slots (and queue a full batch behind busy ones); returns
        when to look again for a batch being held to fill (inf: when news arrives)."""
        call_ended, self._calls_ended_seen = self._calls_ended != self._calls_ended_seen, self._calls_ended
        started = 0
        while started < self.slots and (free := self.slots - self._unfinished()) > 0:
            due = self.scheduler.due()
            if not due:
                break
            if free >= 2:
                batch = self.scheduler.cut(max_views=math.ceil(due / free))  # shared out, never held
            else:
                hold_until = None if call_ended else self.scheduler.fill_deadline()
                if hold_until is not None:
                    self._wants_frames = True
                    return hold_until
                batch = self.scheduler.cut()
            if batch is None:
                break
            self._submit(batch)
            started += 1
        unfinished = self._unfinished()
        if unfinished == self.slots and self.scheduler.due() >= self.scheduler.max_batch:
            batch = self.scheduler.cut()
            if batch is not None:
                self._submit(batch)
        self._wants_frames = self._unfinished() < self.slots
        return math.inf

    def _submit(self, batch: Batch) -> None:
        """Hand a batch to an engine worker: it starts at once if a slot is free (this returns once
        it is under way), else it queues behind the calls in the engine."""
        started = threading.Event()

        def call() -> Any:
            started.set()
            return self.work(batch)

        slot_free = self._unfinished() < self.slots
        output = self._workers.submit(call)
        output.add_done_callback(self._call_ended)
        self._in_flight.append(EngineCall(batch, output))
        if slot_free:
            # Hold back until the worker is in the engine: otherwise this thread's Python work (it
            # holds the GIL) would run first and delay the call instead of overlapping it.
            started.wait()

    def _pop_ended(self) -> list[EngineCall]:
        ended = []
        while self._in_flight and self._in_flight[0].done():
            call = self._in_flight.popleft()
            self.scheduler.release(call.batch)  # the call is over: its arrays can take new views
            ended.append(call)
        return ended

    def _wait(self, seconds: float) -> None:
        with self._news:
            if not self._pending and not self._stopping:
                self._news.wait(seconds)
