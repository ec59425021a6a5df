import math
import threading
import time

import numpy as np

from streamrec.config import ClipConfig
from streamrec.ringbuffer import FramesGone, RingBuffer
from streamrec.sampling import fast_offsets, slow_positions
from streamrec.scheduler import Scheduler, StreamSchedule

CLIP = ClipConfig(num_frames=8, sampling_rate=2, alpha=4, short_side=4, crop_size=4)  # span 16


def filled_ring(frames: int, fps: float = 30.0, capacity: int = 40) -> RingBuffer:
    ring = RingBuffer(capacity, 4, 4)
    for i in range(frames):
        ring.write(np.full((4, 4, 3), i % 256, np.uint8), capture_time=1000.0 + i / fps, media_time=i / fps)
    return ring


def frame_ids(view, name="fast"):
    return view.inputs[name][:, 0, 0, 0].tolist()


def test_offline_schedule_serves_every_hop_with_reference_indices():
    ring = filled_ring(40, capacity=64)
    schedule = StreamSchedule("s", ring, CLIP, fps=30.0, hop_frames=4, offline=True, live_clock=False)
    ends = []
    while (view := schedule.take()) is not None:
        ends.append(view.end_index)
        start = view.end_index - CLIP.span + 1
        assert frame_ids(view) == (start + fast_offsets(CLIP)).tolist()
        assert frame_ids(view, "slow") == (start + fast_offsets(CLIP)[slow_positions(CLIP)]).tolist()
    assert ends == [15, 19, 23, 27, 31, 35, 39]
    assert schedule.hops_skipped == 0


def test_live_schedule_takes_the_newest_frames_and_counts_skipped_hops():
    ring = filled_ring(16)
    schedule = StreamSchedule("s", ring, CLIP, fps=30.0, hop_frames=4, offline=False, live_clock=True)
    assert schedule.take().end_index == 15
    for i in range(16, 30):  # 14 more frames while the engine was busy: hops at 19, 23 and 27 fell due
        ring.write(np.full((4, 4, 3), i, np.uint8), 1000.0 + i / 30, i / 30)
    view = schedule.take()
    # One view, cut from the newest frames, serves them late; the other two are counted skipped.
    assert view.end_index == 29 and view.hops_skipped == 2
    assert view.clip_end - view.clip_start == (fast_offsets(CLIP)[-1]) / 30  # seconds since the first frame
    assert schedule.take() is None  # the next hop, on the stream's grid (frame 31), is not due yet
    for i in range(30, 32):
        ring.write(np.full((4, 4, 3), i, np.uint8), 1000.0 + i / 30, i / 30)
    assert schedule.take().end_index == 31  # a late view did not shift the stream's phase


def test_schedule_at_15_fps_picks_frames_by_time():
    ring = filled_ring(30, fps=15.0)
    schedule = StreamSchedule("s", ring, CLIP, fps=15.0, hop_frames=4, offline=True, live_clock=False)
    view = schedule.take()
    # Offsets 0, 2, ..., 12, 15 at 30 fps are 15/30 s; at 15 fps each wanted time rounds down to
    # its own source frame, and the reference's wider last step (12 -> 15) skips one.
    end = view.end_index
    assert frame_ids(view) == list(range(end - 8, end - 1)) + [end]


def test_scheduler_batches_streams_round_robin():
    rings = [filled_ring(20) for _ in range(3)]  # past every stream's staggered first view
    scheduler = Scheduler(max_batch=2, max_wait_s=0.0)
    for i, ring in enumerate(rings):
        scheduler.add(StreamSchedule(f"s{i}", ring, CLIP, 30.0, hop_frames=4, offline=False, live_clock=True))
    first = scheduler.next_batch(timeout=0.1)
    assert [v.stream_id for v in first.views] == ["s0", "s1"]
    assert first.inputs["fast"].shape == (2, 8, 4, 4, 3) and first.inputs["slow"].shape == (2, 2, 4, 4, 3)
    expected = [frame_ids(view) for view in first.views]
    assert [row[:, 0, 0, 0].tolist() for row in first.inputs["fast"]] == expected  # each view cut into its row
    scheduler.release(first)
    # The stream left out of the full batch is served first next time, not starved; released arrays
    # take its view, overwritten with its own frames.
    second = scheduler.next_batch(timeout=0.1)
    assert [v.stream_id for v in second.views] == ["s2"] and second.arrays["fast"] is first.arrays["fast"]
    end = second.views[0].end_index
    assert second.inputs["fast"][0, :, 0, 0, 0].tolist() == (end - CLIP.span + 1 + fast_offsets(CLIP)).tolist()
    assert second.inputs["slow"][0, :, 0, 0, 0].tolist() == \
        (end - CLIP.span + 1 + fast_offsets(CLIP)[slow_positions(CLIP)]).tolist()
    assert scheduler.next_batch(timeout=0.05) is None


def test_live_streams_started_together_fall_due_on_different_frames():
    """Ten cameras fed in lockstep: with hop 4, at most ceil(10 / 4) views fall due on any one frame."""
    rings = [RingBuffer(40, 4, 4) for _ in range(10)]
    scheduler = Scheduler(max_batch=16, max_wait_s=0.0)
    for i, ring in enumerate(rings):
        scheduler.add(StreamSchedule(f"s{i}", ring, CLIP, 30.0, hop_frames=4, offline=False, live_clock=True))
    due_per_frame = []
    for i in range(60):
        for ring in rings:
            ring.write(np.full((4, 4, 3), i, np.uint8), 1000.0 + i / 30, i / 30)
        batch = scheduler.next_batch(timeout=0.0)
        due_per_frame.append(len(batch.views) if batch else 0)
    assert sum(due_per_frame) >= 10 * (60 - 16 - 3) // 4  # every stream keeps its hop
    assert max(due_per_frame) == 3 and sorted(set(due_per_frame[20:])) == [2, 3]
    # Offline files are not staggered: their views are at the reference positions.
    offline = StreamSchedule("file", filled_ring(16), CLIP, 30.0, hop_frames=4, offline=True, live_clock=False)
    scheduler.add(offline)
    assert offline.take().end_index == CLIP.span - 1


def live_ring(frames: int, fps: float = 30.0) -> RingBuffer:
    """A ring whose newest of ``frames`` frames was captured just now."""
    ring = RingBuffer(64, 4, 4)
    now = time.monotonic()
    for i in range(frames):
        ring.write(np.full((4, 4, 3), i, np.uint8), now - (frames - 1 - i) / fps, i / fps)
    return ring


def test_partial_batch_waits_only_for_views_that_are_coming():
    scheduler = Scheduler(max_batch=4, max_wait_s=0.3)
    due_now = StreamSchedule("due", live_ring(16), CLIP, 30.0, hop_frames=4, offline=False, live_clock=True)
    far = StreamSchedule("far", RingBuffer(64, 4, 4), CLIP, 30.0, hop_frames=4, offline=False, live_clock=True)
    scheduler.add(due_now)
    scheduler.add(far)
    far.ring = live_ring(2)  # its first view needs 14+ more frames: about half a second away
    start = time.monotonic()
    assert [v.stream_id for v in scheduler.next_batch(timeout=1.0).views] == ["due"]
    assert time.monotonic() - start < 0.2  # not held for the whole 0.3 s max wait

    soon = StreamSchedule("soon", RingBuffer(64, 4, 4), CLIP, 30.0, hop_frames=4, offline=False, live_clock=True)
    scheduler.add(soon)
    soon.ring = live_ring(soon.next_end)  # one frame short of its first view
    due_now.ring = live_ring(due_now.next_end + 1)
    writer = threading.Timer(0.05, lambda: soon.ring.write(np.zeros((4, 4, 3), np.uint8), time.monotonic(), 1.0))
    writer.start()
    assert sorted(v.stream_id for v in scheduler.next_batch(timeout=1.0).views) == ["due", "soon"]  # waited for it
    writer.join()


def test_a_stream_overwritten_while_asked_about_is_not_waited_for(monkeypatch):
    """If a whole buffer is written between reading the head and its time, the stream is far
    ahead of this thread: it counts as not coming, and the batch goes without error."""
    scheduler = Scheduler(max_batch=4, max_wait_s=0.3)
    due_now = StreamSchedule("due", live_ring(16), CLIP, 30.0, hop_frames=4, offline=False, live_clock=True)
    racing = StreamSchedule("racing", live_ring(15), CLIP, 30.0, hop_frames=4, offline=False, live_clock=True)
    scheduler.add(due_now)
    scheduler.add(racing)

    def overwritten(indices):
        raise FramesGone("overwritten")

    monkeypatch.setattr(racing.ring, "read_times", overwritten)
    assert racing.expected_due_time() == -math.inf
    start = time.monotonic()
    assert [v.stream_id for v in scheduler.next_batch(timeout=1.0).views] == ["due"]
    assert time.monotonic() - start < 0.2


def test_a_wait_for_views_gives_up_when_the_pipeline_asks():
    """The pipeline's sign that an engine call ended ends a wait, for a first view or for a
    batch to fill, at once: the call's results are not held up behind it."""
    scheduler = Scheduler(max_batch=4, max_wait_s=1.0)
    due_now = StreamSchedule("due", live_ring(16), CLIP, 30.0, hop_frames=4, offline=False, live_clock=True)
    soon = StreamSchedule("soon", RingBuffer(64, 4, 4), CLIP, 30.0, hop_frames=4, offline=False, live_clock=True)
    scheduler.add(soon)
    soon.ring = live_ring(soon.next_end)  # one frame short of its first view: a batch would wait for it
    give_up = threading.Event()

    def call_ends():
        give_up.set()
        scheduler.notify()

    threading.Timer(0.05, call_ends).start()
    start = time.monotonic()
    assert scheduler.next_batch(timeout=2.0, give_up=give_up) is None  # nothing due: it would wait 2 s
    assert time.monotonic() - start < 0.5

    scheduler.add(due_now)
    due_now.ring = live_ring(due_now.next_end + 1)
    give_up.clear()
    threading.Timer(0.05, call_ends).start()
    start = time.monotonic()
    assert [v.stream_id for v in scheduler.next_batch(timeout=2.0, give_up=give_up).views] == ["due"]
    assert time.monotonic() - start < 0.5  # not the 1 s max wait for "soon"
    assert scheduler.next_batch(timeout=0.0, give_up=give_up) is None  # already set: no wait at all


def test_a_batch_for_one_of_several_free_slots_takes_its_share_without_waiting_to_fill():
    """Three views due, two engine slots free: the pipeline asks for two views at most, and gets
    them at once although another stream's view is coming within the max wait."""
    scheduler = Scheduler(max_batch=4, max_wait_s=1.0)
    for name in ("a", "b", "c"):
        scheduler.add(StreamSchedule(name, live_ring(16), CLIP, 30.0, hop_frames=4, offline=False, live_clock=True))
    soon = StreamSchedule("soon", RingBuffer(64, 4, 4), CLIP, 30.0, hop_frames=4, offline=False, live_clock=True)
    scheduler.add(soon)
    soon.ring = live_ring(soon.next_end)  # one frame short of its first view: a full batch would wait for it
    for schedule in scheduler.schedules[:3]:  # the stagger delayed them: make each one due now
        schedule.ring = live_ring(schedule.next_end + 1)
    assert scheduler.views_due() == 3
    start = time.monotonic()
    first = scheduler.next_batch(timeout=1.0, max_views=2)
    assert len(first.views) == 2 and time.monotonic() - start < 0.2  # not held for the view to come
    start = time.monotonic()
    assert len(scheduler.next_batch(timeout=1.0, max_views=2).views) == 1 and scheduler.views_due() == 0
    assert time.monotonic() - start < 0.2  # below its cap, and still not held for the view to come
