import numpy as np
import pytest

from streamrec.config import ClipConfig
from streamrec.sampling import (clip_indices, clip_window, fast_offsets, hop_frames, indices_by_time, slow_positions,
                                split_pathways)

SLOWFAST_8X8 = ClipConfig(num_frames=32, sampling_rate=2, alpha=4)
SLOWFAST_4X16 = ClipConfig(num_frames=32, sampling_rate=2, alpha=8)


def reference_indices(num_frames: int, sampling_rate: int, alpha: int) -> tuple[list[int], list[int]]:
    """PySlowFast at the training rate: temporal_sampling over the span, then pack_pathway_output."""
    span = num_frames * sampling_rate
    fast = [int(v) for v in np.linspace(0, span - 1, num_frames)]
    slow_pos = [int(v) for v in np.linspace(0, num_frames - 1, num_frames // alpha)]
    return fast, [fast[p] for p in slow_pos]


@pytest.mark.parametrize("clip", [SLOWFAST_8X8, SLOWFAST_4X16], ids=["8x8", "4x16"])
def test_indices_match_reference_formula(clip):
    fast, slow = reference_indices(clip.num_frames, clip.sampling_rate, clip.alpha)
    assert fast_offsets(clip).tolist() == fast
    assert fast_offsets(clip)[slow_positions(clip)].tolist() == slow
    assert len(slow) == clip.num_frames // clip.alpha


def test_slow_frames_spread_over_the_whole_span():
    # Fast offsets are 0, 2, ..., 60, 63; slow positions floor(linspace(0, 31, 8)) = 0,4,8,13,17,22,26,31.
    assert fast_offsets(SLOWFAST_8X8)[slow_positions(SLOWFAST_8X8)].tolist() == [0, 8, 16, 26, 34, 44, 52, 63]
    assert fast_offsets(SLOWFAST_4X16)[slow_positions(SLOWFAST_4X16)].tolist() == [0, 20, 40, 63]


def test_split_pathways_takes_slow_frames_from_the_fast_ones():
    fast = np.arange(32)[:, None, None, None] * np.ones((1, 2, 2, 3), np.uint8)
    views = split_pathways(SLOWFAST_8X8, fast)
    assert views["slow"][:, 0, 0, 0].tolist() == slow_positions(SLOWFAST_8X8).tolist()
    assert views["fast"] is fast
    assert set(split_pathways(ClipConfig(num_frames=8, sampling_rate=8), fast)) == {"frames"}


def test_time_sampling_at_training_rate_equals_index_sampling():
    times = np.arange(64) / 30.0
    assert indices_by_time(SLOWFAST_8X8, times, times[-1]).tolist() == fast_offsets(SLOWFAST_8X8).tolist()


@pytest.mark.parametrize("fps", [15.0, 60.0])
def test_time_sampling_covers_the_same_seconds_at_other_rates(fps):
    clip = SLOWFAST_8X8
    times = np.arange(200) / fps
    end = times[-1]
    picked = indices_by_time(clip, times, end)
    wanted = end - (clip.span - 1 - fast_offsets(clip)) / clip.train_fps
    # Every pick is the latest frame at or before its wanted time.
    assert np.all(times[picked] <= wanted + 1e-3) and np.all(wanted - times[picked] < 1 / fps)
    assert times[picked[-1]] == end
    assert (times[picked[-1]] - times[picked[0]]) == pytest.approx((clip.span - 1) / 30.0, abs=1 / fps)
    if fps == 60.0:  # the reference's 2-frame steps (and final 3-frame step) at 30 fps, in time
        assert np.diff(picked).tolist() == [4] * 30 + [6]
    else:  # half the training rate: consecutive source frames, and the reference's wider last step
        assert np.diff(picked).tolist() == [1] * 30 + [2]


def latest_at_or_before(times: list[float], wanted: float, tolerance: float = 1e-3) -> int:
    """Written out on its own: the last frame whose time is at or before ``wanted`` (a frame within
    ``tolerance`` after it counts as on it), or the first frame if none is."""
    picked = 0
    for index, time in enumerate(times):
        if time <= wanted + tolerance:
            picked = index
    return picked


@pytest.mark.parametrize("fps", [20.0, 24.0, 60.0])
def test_time_sampling_of_jittered_timestamps_matches_the_rule_written_out(fps):
    """Camera timestamps carry rounding and jitter; a frame stamped a fraction of a millisecond
    after a wanted time is the frame for it. Checked against the rule written out in a loop, for
    every clip end of a 300-frame stream."""
    clip = SLOWFAST_8X8
    rng = np.random.default_rng(int(fps))
    times = np.arange(300) / fps + rng.uniform(-4e-4, 4e-4, 300)
    steps = [(clip.span - 1 - offset) / clip.train_fps for offset in fast_offsets(clip).tolist()]
    checked = 0
    for end in range(64, 300):
        expected = [latest_at_or_before(times[: end + 1].tolist(), times[end] - step) for step in steps]
        assert indices_by_time(clip, times[: end + 1], times[end]).tolist() == expected, f"clip ending at {end}"
        checked += 1
    assert checked == 236


def test_clip_indices_by_index_at_the_training_rate_and_by_time_elsewhere():
    clip = ClipConfig(num_frames=8, sampling_rate=2)  # span 16
    times = np.arange(100) / 30.0
    # At the training rate: the reference offsets 0, 2, ..., 12, 15 before the end; times are not read.
    assert clip_indices(clip, 30.0, 40, 25, lambda _: pytest.fail("read times")).tolist() == \
        [25, 27, 29, 31, 33, 35, 37, 40]
    assert clip_indices(clip, 30.2, 40, 25, lambda i: times[i]).tolist() == [25, 27, 29, 31, 33, 35, 37, 40]
    # Too little history for a full span: by time from the first frame there is (clamped to it).
    assert clip_indices(clip, 30.0, 10, 0, lambda i: times[i]).tolist() == [0, 0, 0, 1, 3, 5, 7, 10]
    # At 15 fps: by time, the same seconds.
    at_15 = np.arange(100) / 15.0
    assert clip_indices(clip, 15.0, 40, 31, lambda i: at_15[i]).tolist() == [32, 33, 34, 35, 36, 37, 38, 40]
    assert clip_window(clip, 30.0) == 16 and clip_window(clip, 15.0) == 10 and clip_window(clip, 60.0) == 32


def test_hop_frames_the_stream_then_seconds_then_frames():
    from streamrec.config import PipelineConfig

    assert hop_frames(PipelineConfig(hop_frames=8), 30.0) == 8
    assert hop_frames(PipelineConfig(hop_frames=8, hop_seconds=0.5), 30.0) == 15
    assert hop_frames(PipelineConfig(hop_frames=8, hop_seconds=0.5), 25.0) == 12  # round(12.5), banker's
    assert hop_frames(PipelineConfig(hop_frames=8, hop_seconds=0.01), 30.0) == 1  # never below one frame
    assert hop_frames(PipelineConfig(hop_frames=8, hop_seconds=0.5), 30.0, stream_hop_frames=4) == 4
