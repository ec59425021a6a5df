"""The scheduler on its own: which frames each view takes, round-robin batches, stagger, and when a
partial batch is worth holding. No thread and no sleep: the scheduler is told the time by a fake
clock, and frames are written with the capture times a camera would have given them."""

import math

import numpy as np
import pytest

from streamrec.config import ClipConfig
from streamrec.ringbuffer import FramesGone, RingBuffer
from streamrec.scheduler import Scheduler, StreamSchedule

CLIP = ClipConfig(num_frames=8, sampling_rate=2, alpha=4, short_side=4, crop_size=4)  # span 16
# PySlowFast's offsets for this clip, worked out by hand: floor(linspace(0, 15, 8)) for Fast, and
# of those, positions floor(linspace(0, 7, 2)) = 0 and 7 for Slow.
FAST_OFFSETS = [0, 2, 4, 6, 8, 10, 12, 15]
SLOW_OFFSETS = [0, 15]
T0 = 1000.0  # capture clock of the first frame


class FakeClock:
    def __init__(self, now: float = T0):
        self.now = now

    def __call__(self) -> float:
        return self.now


def write_frames(ring: RingBuffer, first: int, count: int, fps: float = 30.0, capture_start: float = T0) -> None:
    """Frames ``first .. first + count - 1``; each frame's pixels hold its index (mod 256)."""
    for i in range(first, first + count):
        ring.write(np.full(ring.frame_shape, i % 256, np.uint8), capture_start + i / fps, i / fps)


def filled_ring(frames: int, fps: float = 30.0, capacity: int = 40) -> RingBuffer:
    ring = RingBuffer(capacity, 4, 4)
    write_frames(ring, 0, frames, fps)
    return ring


def live(stream_id: str, ring: RingBuffer, hop: int = 4, fps: float = 30.0) -> StreamSchedule:
    return StreamSchedule(stream_id, ring, CLIP, fps, hop_frames=hop, offline=False, live_clock=True)


def frame_ids(view, name="fast"):
    return view.inputs[name][:, 0, 0, 0].tolist()


# --------------------------------------------------------------------------- one stream


def test_offline_schedule_serves_every_hop_with_reference_indices():
    ring = filled_ring(40, capacity=64)
    schedule = StreamSchedule("s", ring, CLIP, fps=30.0, hop_frames=4, offline=True, live_clock=False)
    views = []
    while (view := schedule.take()) is not None:
        views.append(view)
    assert [v.end_index for v in views] == [15, 19, 23, 27, 31, 35, 39]
    assert frame_ids(views[0]) == FAST_OFFSETS and frame_ids(views[0], "slow") == SLOW_OFFSETS
    assert frame_ids(views[1]) == [4, 6, 8, 10, 12, 14, 16, 19] and frame_ids(views[1], "slow") == [4, 19]
    assert frame_ids(views[-1]) == [24, 26, 28, 30, 32, 34, 36, 39]
    assert schedule.hops_skipped == 0 and schedule.views == 7


def test_live_schedule_takes_the_newest_frames_and_counts_skipped_hops():
    ring = filled_ring(16)
    schedule = live("s", ring)
    assert schedule.take().end_index == 15
    write_frames(ring, 16, 14)  # 14 more frames while the engine was busy: hops at 19, 23 and 27 fell due
    view = schedule.take()
    # One view, cut from the newest frames, serves them late; the other two are counted skipped.
    assert view.end_index == 29 and view.hops_skipped == 2 and schedule.hops_skipped == 2
    assert frame_ids(view) == [14, 16, 18, 20, 22, 24, 26, 29]
    assert view.clip_start == pytest.approx(14 / 30) and view.clip_end == pytest.approx(29 / 30)  # since frame 0
    assert schedule.take() is None  # the next hop, on the stream's grid (frame 31), is not due yet
    write_frames(ring, 30, 2)
    assert schedule.take().end_index == 31  # a late view did not shift the stream's phase


def test_schedule_at_15_fps_picks_frames_by_time():
    ring = filled_ring(30, fps=15.0)
    schedule = StreamSchedule("s", ring, CLIP, fps=15.0, hop_frames=4, offline=True, live_clock=False)
    view = schedule.take()
    # Offsets 0, 2, ..., 12, 15 at 30 fps are 15/30 s; at 15 fps each wanted time rounds down to
    # its own source frame, and the reference's wider last step (12 -> 15) skips one.
    assert view.end_index == 9 and frame_ids(view) == [1, 2, 3, 4, 5, 6, 7, 9]


@pytest.mark.parametrize("fps", [20.0, 24.0, 60.0])
def test_live_schedule_picks_jittered_frames_on_the_wanted_times(fps):
    """A camera's capture times jitter by a fraction of a millisecond. Each wanted time
    (end - (15 - offset) / 30 s) takes the last frame stamped at or before it, a frame stamped
    within a millisecond after it counting as on it: the rule written out here, frame by frame."""
    rng = np.random.default_rng(int(fps))
    ring = RingBuffer(200, 4, 4)
    stamps = T0 + np.arange(150) / fps + rng.uniform(-4e-4, 4e-4, 150)
    for i, stamp in enumerate(stamps):
        ring.write(np.full((4, 4, 3), i, np.uint8), float(stamp), i / fps)
    # Offline (every hop served) with hop 1, so every clip end is cut in turn; by capture time, as a camera.
    schedule = StreamSchedule("s", ring, CLIP, fps, hop_frames=1, offline=True, live_clock=True)
    checked = 0
    while (view := schedule.take()) is not None:
        end = view.end_index
        expected = []
        for offset in FAST_OFFSETS:
            wanted = stamps[end] - (15 - offset) / 30.0
            expected.append(max(i for i in range(end + 1) if i == 0 or stamps[i] <= wanted + 1e-3))
        assert frame_ids(view) == [i % 256 for i in expected], f"view ending at frame {end}"
        checked += 1
    assert checked == 150 - schedule.window + 1


def test_hops_due_counts_from_the_first_full_window_and_the_stagger():
    schedule = StreamSchedule("s", RingBuffer(64, 4, 4), ClipConfig(num_frames=32, sampling_rate=1, short_side=4,
                                                                     crop_size=4), 30.0, hop_frames=8, offline=False,
                              live_clock=True)
    assert [schedule.hops_due(f) for f in (31, 32, 47, 48)] == [0, 1, 2, 3]
    schedule.stagger(3)
    assert [schedule.hops_due(f) for f in (34, 35, 42, 43)] == [0, 1, 1, 2]


# --------------------------------------------------------------------------- across streams


def test_scheduler_batches_streams_round_robin():
    rings = [filled_ring(20) for _ in range(3)]  # past every stream's staggered first view
    scheduler = Scheduler(max_batch=2, max_wait_s=0.0, clock=FakeClock())
    for i, ring in enumerate(rings):
        scheduler.add(live(f"s{i}", ring))
    assert scheduler.due() == 3
    first = scheduler.cut()
    assert [v.stream_id for v in first.views] == ["s0", "s1"]
    assert first.inputs["fast"].shape == (2, 8, 4, 4, 3) and first.inputs["slow"].shape == (2, 2, 4, 4, 3)
    assert [row[:, 0, 0, 0].tolist() for row in first.inputs["fast"]] == [[4, 6, 8, 10, 12, 14, 16, 19]] * 2
    scheduler.release(first)
    # The stream left out of the full batch is served first next time, not starved; released arrays
    # take its view, overwritten with its own frames.
    second = scheduler.cut()
    assert [v.stream_id for v in second.views] == ["s2"] and second.arrays["fast"] is first.arrays["fast"]
    assert second.inputs["fast"][0, :, 0, 0, 0].tolist() == [4, 6, 8, 10, 12, 14, 16, 19]
    assert second.inputs["slow"][0, :, 0, 0, 0].tolist() == [4, 19]
    assert scheduler.due() == 0 and scheduler.cut() is None


def test_live_streams_started_together_fall_due_on_different_frames():
    """Ten cameras fed in lockstep: with hop 4, at most ceil(10 / 4) views fall due on any one frame."""
    rings = [RingBuffer(40, 4, 4) for _ in range(10)]
    scheduler = Scheduler(max_batch=16, max_wait_s=0.0, clock=FakeClock())
    for i, ring in enumerate(rings):
        scheduler.add(live(f"s{i}", ring))
    assert sorted(s.phase for s in scheduler.schedules) == [0, 0, 0, 1, 1, 1, 2, 2, 3, 3]
    due_per_frame = []
    for i in range(60):
        for ring in rings:
            write_frames(ring, i, 1)
        batch = scheduler.cut()
        due_per_frame.append(len(batch.views) if batch else 0)
    # Each stream every 4 frames from frame 15 + its phase up to frame 59: 12 views at phase 0, 11 at 1 to 3.
    assert sum(due_per_frame) == 3 * 12 + 7 * 11
    assert max(due_per_frame) == 3 and sorted(set(due_per_frame[20:])) == [2, 3]
    # Offline files are not staggered: their views are at the reference positions.
    offline = StreamSchedule("file", filled_ring(16), CLIP, 30.0, hop_frames=4, offline=True, live_clock=False)
    scheduler.add(offline)
    assert offline.phase == 0 and offline.take().end_index == 15


# --------------------------------------------------------------------------- holding a partial batch


def newest_at(ring: RingBuffer, frames: int, now: float, fps: float = 30.0) -> RingBuffer:
    """Write ``frames`` frames into an empty ``ring``, the newest captured at ``now``."""
    write_frames(ring, 0, frames, fps, capture_start=now - (frames - 1) / fps)
    return ring


def test_a_partial_batch_is_held_only_for_views_that_are_coming():
    clock = FakeClock()
    scheduler = Scheduler(max_batch=4, max_wait_s=0.3, clock=clock)
    due_now, far = live("due", RingBuffer(64, 4, 4)), live("far", RingBuffer(64, 4, 4))
    scheduler.add(due_now)
    scheduler.add(far)
    newest_at(due_now.ring, due_now.next_end + 1, clock.now)
    newest_at(far.ring, 2, clock.now)  # its first view needs 14+ more frames: about half a second away
    assert scheduler.due() == 1 and scheduler.fill_deadline() is None  # nothing comes within 0.3 s: cut now
    assert [v.stream_id for v in scheduler.cut().views] == ["due"]

    soon = live("soon", RingBuffer(64, 4, 4))
    scheduler.add(soon)
    newest_at(soon.ring, soon.next_end, clock.now)  # one frame short of its first view, due in 1/30 s
    write_frames(due_now.ring, due_now.next_end + 1 - 4, 4, capture_start=clock.now - due_now.next_end / 30)
    assert scheduler.due() == 1
    assert scheduler.fill_deadline() == pytest.approx(clock.now + 0.3)  # worth holding for "soon"
    clock.now += 0.02
    assert scheduler.fill_deadline() == pytest.approx(clock.now - 0.02 + 0.3)  # from when first held, not now
    write_frames(soon.ring, soon.next_end, 1, capture_start=clock.now - soon.next_end / 30)
    assert scheduler.due() == 2 and scheduler.fill_deadline() is None  # "far" is not due by the deadline
    assert sorted(v.stream_id for v in scheduler.cut().views) == ["due", "soon"]


def test_a_held_batch_goes_at_its_deadline_or_when_full():
    clock = FakeClock()
    scheduler = Scheduler(max_batch=2, max_wait_s=0.05, clock=clock)
    a, b, c = (live(name, RingBuffer(64, 4, 4)) for name in "abc")
    for schedule in (a, b, c):
        scheduler.add(schedule)
    newest_at(a.ring, a.next_end + 1, clock.now)
    newest_at(b.ring, b.next_end, clock.now)  # due with its next frame
    assert scheduler.fill_deadline() == pytest.approx(clock.now + 0.05)
    clock.now += 0.05
    assert scheduler.fill_deadline() is None  # held long enough
    assert [v.stream_id for v in scheduler.cut().views] == ["a"]
    # Two due with a batch of two: full, nothing to hold for, although "c" is coming.
    newest_at(c.ring, c.next_end, clock.now)
    write_frames(b.ring, b.next_end, 1, capture_start=clock.now - b.next_end / 30)
    write_frames(a.ring, a.ring.head, 4, capture_start=clock.now - a.ring.head / 30)
    assert scheduler.due() == 2 and scheduler.fill_deadline() is None


def test_an_offline_file_is_always_worth_holding_for():
    """A file is read as fast as the engine takes it: its next view may come any moment."""
    clock = FakeClock()
    scheduler = Scheduler(max_batch=4, max_wait_s=0.3, clock=clock)
    due_now = live("due", RingBuffer(64, 4, 4))
    scheduler.add(due_now)
    scheduler.add(StreamSchedule("file", RingBuffer(64, 4, 4), CLIP, 30.0, hop_frames=4, offline=True,
                                 live_clock=False))
    newest_at(due_now.ring, due_now.next_end + 1, clock.now)
    assert scheduler.fill_deadline() == pytest.approx(clock.now + 0.3)


def test_a_stream_overwritten_while_asked_about_is_not_waited_for(monkeypatch):
    """If a whole buffer is written between reading the head and its time, the stream is far
    ahead of the reader: it counts as not coming, and the batch goes without error."""
    clock = FakeClock()
    scheduler = Scheduler(max_batch=4, max_wait_s=0.3, clock=clock)
    due_now, racing = live("due", RingBuffer(64, 4, 4)), live("racing", RingBuffer(64, 4, 4))
    scheduler.add(due_now)
    scheduler.add(racing)
    newest_at(due_now.ring, due_now.next_end + 1, clock.now)
    newest_at(racing.ring, racing.next_end, clock.now)  # one frame short: it would be worth holding for
    assert scheduler.fill_deadline() is not None

    def overwritten(indices):
        raise FramesGone("overwritten")

    monkeypatch.setattr(racing.ring, "read_times", overwritten)
    assert racing.expected_due_time() == -math.inf
    assert scheduler.due() == 1 and scheduler.fill_deadline() is None
    assert [v.stream_id for v in scheduler.cut().views] == ["due"]


def test_a_cap_below_the_batch_size_takes_its_share_round_robin():
    """The dispatcher's share of what is due for one of several free engine slots."""
    scheduler = Scheduler(max_batch=4, max_wait_s=1.0, clock=FakeClock())
    for name in ("a", "b", "c"):
        scheduler.add(live(name, filled_ring(20)))
    assert scheduler.due() == 3
    first = scheduler.cut(max_views=2)
    assert [v.stream_id for v in first.views] == ["a", "b"]
    assert [v.stream_id for v in scheduler.cut(max_views=2).views] == ["c"] and scheduler.due() == 0


# --------------------------------------------------------------------------- breaks in a stream


def test_no_clip_spans_a_break_and_the_window_refills_after_it():
    """Frames 0..19, then the source broke off (a reopen, a gap) and frames 20.. follow: the view
    due at frame 23 would reach back across the break, so none is cut; the next needs a whole
    window after it (frame 35), and carries the clip time of the last frame before the break."""
    ring = RingBuffer(64, 4, 4)
    schedule = StreamSchedule("s", ring, CLIP, fps=30.0, hop_frames=4, offline=True, live_clock=False)
    write_frames(ring, 0, 20)
    assert [schedule.take().end_index for _ in range(2)] == [15, 19]
    for i in range(20, 40):
        ring.write(np.full((4, 4, 3), i, np.uint8), T0 + i / 30, 10.0 + i / 30, new_segment=(i == 20))
    assert schedule.due() and schedule.take() is None  # frames 8..23 hold the break: no view
    assert schedule.gaps == 1 and schedule.next_end == 35
    views = []
    while (view := schedule.take()) is not None:
        views.append(view)
    assert [v.end_index for v in views] == [35, 39]
    assert frame_ids(views[0]) == [20, 22, 24, 26, 28, 30, 32, 35]  # all after the break
    assert views[0].follows_gap is not None and views[0].follows_gap.last_frame_at == pytest.approx(19 / 30)
    assert views[1].follows_gap is None
    # Hops asked for: 2 before the break (15, 19), then from the refilled window: 35, 39.
    assert schedule.hops_due(40) == 4


def test_a_live_stream_after_a_reopen_waits_for_a_whole_window_of_new_frames():
    ring = RingBuffer(64, 4, 4)
    schedule = live("cam", ring)
    write_frames(ring, 0, 16)
    assert schedule.take().end_index == 15
    ring.write(np.full((4, 4, 3), 16, np.uint8), T0 + 9.0, 9.0, new_segment=True)  # back after 8.5 s
    write_frames(ring, 17, 10, capture_start=T0 + 9.0 - 16 / 30)
    assert schedule.take() is None and schedule.next_end == 16 + 15
    write_frames(ring, 27, 5, capture_start=T0 + 9.0 - 16 / 30)
    view = schedule.take()
    assert view.end_index == 31 and frame_ids(view)[0] == 16
    assert view.follows_gap.last_frame_at == pytest.approx(15 / 30)
    assert view.clip_end - view.clip_start == pytest.approx(15 / 30)
