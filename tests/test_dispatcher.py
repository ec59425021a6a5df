"""The engine dispatcher with an engine whose calls end when the test says so.

Every wait here is for something the test makes happen (a call ending, a frame, stop); a wait
that should not happen would last a minute (a 60 s hold, a 30 s timeout), so a failing case
shows as a thread still waiting after 10 s, not as a timing threshold."""

import threading
import time
from types import SimpleNamespace

import numpy as np

from streamrec.dispatcher import EngineDispatcher
from streamrec.ringbuffer import RingBuffer
from streamrec.scheduler import Scheduler
from test_scheduler import FakeClock, filled_ring, live, newest_at, write_frames

PATIENCE_S = 10.0  # how long the test waits for something that should happen at once


class GatedEngine:
    """Each call blocks until the test opens its gate; notes the streams each batch held."""

    name, device, max_batch = "gated", "cpu", 4

    def __init__(self, parallel_calls: int):
        self.parallel_calls = parallel_calls
        self.batch_sizes: list[int] = []
        self.gates: list[threading.Event] = []
        self._started = threading.Condition()

    def infer(self, inputs):
        size = len(inputs["fast"])
        gate = threading.Event()
        with self._started:
            self.batch_sizes.append(size)
            self.gates.append(gate)
            self._started.notify_all()
        assert gate.wait(60), "the test never ended this call"
        return np.zeros((size, 3), np.float32)

    def wait_started(self, calls: int) -> bool:
        with self._started:
            return self._started.wait_for(lambda: len(self.gates) >= calls, PATIENCE_S)

    def end(self, call: int) -> None:
        self.gates[call].set()


def in_thread(function, *args):
    """Run ``function(*args)`` in a thread; returns (thread, results list)."""
    results = []
    thread = threading.Thread(target=lambda: results.append(function(*args)), daemon=True)
    thread.start()
    return thread, results


def collect(dispatcher, calls: int) -> list:
    """Ended calls, asked for until ``calls`` of them have come back (or PATIENCE_S has passed)."""
    ended, give_up = [], time.monotonic() + PATIENCE_S
    while len(ended) < calls and time.monotonic() < give_up:
        ended += dispatcher.ended_calls(timeout=1.0)
    return ended


def stream_ids(call):
    return [view.stream_id for view in call.batch.views]


def setup(parallel_calls: int, max_batch: int = 4, max_wait_s: float = 60.0):
    clock = FakeClock()
    scheduler = Scheduler(max_batch=max_batch, max_wait_s=max_wait_s, clock=clock)
    engine = GatedEngine(parallel_calls)
    return clock, scheduler, engine, EngineDispatcher(engine, scheduler)


def test_what_is_due_is_shared_between_free_slots_without_holding():
    """Two free slots, three views due and more coming within the 60 s hold: the first slot takes
    its share at once (two views, not all three); the last free slot may hold its view for a
    fuller batch, until a call ends."""
    clock, scheduler, engine, dispatcher = setup(parallel_calls=2)
    for name in "abc":
        scheduler.add(live(name, filled_ring(20)))
    assert dispatcher.ended_calls(timeout=0) == []
    assert engine.batch_sizes == [2] and scheduler.due() == 1 and scheduler.fill_deadline() is not None
    thread, results = in_thread(dispatcher.ended_calls, 30)
    engine.end(0)
    thread.join(PATIENCE_S)
    assert [stream_ids(call) for call in results[0]] == [["a", "b"]]
    assert engine.wait_started(2) and engine.batch_sizes == [2, 1]
    engine.end(1)


def test_a_batch_held_for_more_views_goes_as_soon_as_a_call_ends():
    """Two slots, one busy; "b" is due and "c" one frame away, so "b" is held for a fuller batch,
    up to 60 s. The busy call ends: "b" goes at once, without waiting for "c"."""
    clock, scheduler, engine, dispatcher = setup(parallel_calls=2)
    a, b, c = (live(name, RingBuffer(64, 4, 4)) for name in "abc")
    for schedule in (a, b, c):
        scheduler.add(schedule)
    newest_at(a.ring, a.next_end + 1, clock.now)
    assert dispatcher.ended_calls(timeout=0) == [] and engine.batch_sizes == [1]  # "a" alone: nothing coming
    newest_at(b.ring, b.next_end + 1, clock.now)
    newest_at(c.ring, c.next_end, clock.now)
    assert scheduler.fill_deadline() is not None  # "b" is worth holding for "c" ...
    thread, results = in_thread(dispatcher.ended_calls, 30)
    engine.end(0)  # ... until a call ends
    thread.join(PATIENCE_S)
    assert not thread.is_alive() and [stream_ids(call) for call in results[0]] == [["a"]]
    assert engine.wait_started(2) and engine.batch_sizes == [1, 1]
    engine.end(1)


def test_at_saturation_a_full_batch_waits_behind_the_busy_engine():
    """One slot, batch of 2, four streams due: one batch runs and the next is cut and queued
    behind it, so the engine goes on to it without the dispatcher being asked again."""
    clock, scheduler, engine, dispatcher = setup(parallel_calls=1, max_batch=2)
    for name in "abcd":
        scheduler.add(live(name, filled_ring(20)))
    assert dispatcher.ended_calls(timeout=0) == []
    assert scheduler.due() == 0  # both batches cut
    engine.end(0)
    assert engine.wait_started(2) and engine.batch_sizes == [2, 2]
    engine.end(1)
    assert [stream_ids(call) for call in collect(dispatcher, 2)] == [["a", "b"], ["c", "d"]]


def test_ended_calls_come_back_in_the_order_they_were_cut():
    clock, scheduler, engine, dispatcher = setup(parallel_calls=2, max_wait_s=0.0)
    for name in "ab":
        scheduler.add(live(name, filled_ring(20)))
    dispatcher.ended_calls(timeout=0)
    assert engine.batch_sizes == [1, 1]
    engine.end(1)  # the later call ends first: nothing is handed back until the earlier one has
    assert dispatcher.ended_calls(timeout=0.2) == []
    engine.end(0)
    assert [stream_ids(call) for call in collect(dispatcher, 2)] == [["a"], ["b"]]


def test_a_frame_wakes_a_waiting_dispatcher_and_stop_ends_any_wait():
    clock, scheduler, engine, dispatcher = setup(parallel_calls=1)
    schedule = live("a", RingBuffer(64, 4, 4))
    scheduler.add(schedule)
    thread, results = in_thread(dispatcher.ended_calls, 30)
    write_frames(schedule.ring, 0, schedule.next_end + 1)
    dispatcher.frame_written()
    assert engine.wait_started(1)  # the wait ended with the frame, not at its 30 s timeout
    engine.end(0)
    thread.join(PATIENCE_S)
    assert [stream_ids(call) for call in results[0]] == [["a"]]

    thread, results = in_thread(dispatcher.ended_calls, 30)  # nothing due: it would wait 30 s
    dispatcher.stop()
    thread.join(PATIENCE_S)
    assert not thread.is_alive() and results == [[]]


class InstantEngine:
    """Ends every call as soon as it starts."""

    name, device, max_batch, parallel_calls = "instant", "cpu", 4, 1

    def __init__(self):
        self.calls = 0

    def infer(self, inputs):
        self.calls += 1
        return np.zeros((len(inputs["fast"]), 3), np.float32)


class EverDue:
    """A scheduler with a view always due, as when streams bring views faster than this thread
    cuts them: each cut is a batch of one blank view."""

    max_batch = 1

    def due(self) -> int:
        return 1

    def cut(self, max_views=None):
        return SimpleNamespace(inputs={"fast": np.zeros((1, 4), np.uint8)}, views=[])

    def fill_deadline(self) -> None:
        return None  # nothing is held for a fuller batch

    def release(self, batch) -> None:
        pass

    def clock(self) -> float:
        return time.monotonic()


def test_an_engine_as_fast_as_the_cutting_does_not_keep_the_dispatcher_from_handing_calls_back():
    """Calls end as soon as they start and a view is always due: each look still starts no more
    calls than there are slots and hands back what ended, so results get published (and their
    arrays released) instead of piling up while this thread cuts."""
    engine = InstantEngine()
    dispatcher = EngineDispatcher(engine, EverDue())
    thread, results = in_thread(collect, dispatcher, 3)
    thread.join(PATIENCE_S)
    assert not thread.is_alive(), "the dispatcher kept cutting and never handed a call back"
    assert len(results[0]) >= 3 and engine.calls <= len(results[0]) + 2
