import numpy as np
import pytest

from streamrec.config import ClipConfig
from streamrec.sampling import fast_offsets, indices_by_time, slow_positions, split_pathways

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
