import numpy as np
import pytest

from streamrec.config import ClassThreshold, PostprocessConfig
from streamrec.postprocess import ActionTracker

LABELS = ["idle", "wave", "jump"]


def logits_for(probs):
    return np.log(np.asarray(probs, np.float64))


def run(tracker, sequence):
    out = []
    for t, probs in enumerate(sequence):
        out += [(t, c.type, c.label) for c in tracker.update(logits_for(probs), float(t))]
    return out


def test_hysteresis_starts_above_enter_and_ends_only_below_exit():
    tracker = ActionTracker(LABELS, PostprocessConfig(smoothing_hops=1, enter_threshold=0.6, exit_threshold=0.4,
                                                      background_labels=("idle",)))
    wave = lambda p: [1 - p, p, 1e-9]  # noqa: E731
    sequence = [wave(0.5), wave(0.65), wave(0.55), wave(0.45), wave(0.62), wave(0.39), wave(0.5)]
    # Starts at 0.65, survives the dips to 0.55 and 0.45 (above exit), ends at 0.39, and 0.5 does not restart it.
    assert run(tracker, sequence) == [(1, "action_start", "wave"), (5, "action_end", "wave")]


def test_background_label_never_starts_an_action_and_close_ends_open_ones():
    tracker = ActionTracker(LABELS, PostprocessConfig(smoothing_hops=1, background_labels=("idle",)))
    assert run(tracker, [[0.98, 0.01, 0.01]]) == []
    tracker.update(logits_for([0.1, 0.1, 0.8]), 1.0)
    ends = tracker.close()
    assert [(c.type, c.label, c.started_at) for c in ends] == [("action_end", "jump", 1.0)]
    assert tracker.close() == []


def test_smoothing_averages_the_last_hops():
    tracker = ActionTracker(LABELS, PostprocessConfig(smoothing_hops=3, enter_threshold=0.6, exit_threshold=0.4,
                                                      background_labels=("idle",)))
    low, high = [0.8, 0.2, 1e-9], [0.1, 0.9, 1e-9]
    # A lone spike to 0.9 among 0.2s averages to 0.43: no event. Two high hops after a low one
    # average (0.2 + 0.9 + 0.9) / 3 = 0.67: the action starts on the second.
    assert run(tracker, [low, high, low, low, high, high]) == [(5, "action_start", "wave")]
    assert tracker.scores[1] == pytest.approx((0.2 + 0.9 + 0.9) / 3)


def test_per_class_thresholds_and_top_k():
    config = PostprocessConfig(smoothing_hops=1, thresholds={"jump": ClassThreshold(enter=0.3, exit=0.2)}, top_k=2)
    tracker = ActionTracker(LABELS, config)
    assert run(tracker, [[0.5, 0.15, 0.35]]) == [(0, "action_start", "jump")]
    assert tracker.top_k() == [["idle", 0.5], ["jump", 0.35]]


# Boundary scores: softmax gives exactly 0.5 for two equal logits beside a -1000 (exp underflows to
# 0.0) and exactly 1/3 for three equal logits, so each threshold can be met with equality in float64.
EXACTLY_HALF, EXACTLY_THIRD = np.array([0.0, 0.0, -1000.0]), np.array([0.0, 0.0, 0.0])


def test_a_score_exactly_at_enter_starts_the_action():
    tracker = ActionTracker(LABELS, PostprocessConfig(smoothing_hops=1, enter_threshold=0.5, exit_threshold=0.25,
                                                      background_labels=("idle",)))
    assert tracker.update(np.array([0.0, -1e-6, -1000.0]), 10.0) == []  # wave just below enter
    starts = tracker.update(EXACTLY_HALF, 11.0)
    assert tracker.scores[1] == 0.5
    assert [(c.type, c.label, c.started_at) for c in starts] == [("action_start", "wave", 11.0)]


def test_a_score_exactly_at_exit_keeps_the_action_and_just_below_ends_it():
    tracker = ActionTracker(LABELS, PostprocessConfig(smoothing_hops=1, enter_threshold=0.5, exit_threshold=1 / 3,
                                                      background_labels=("idle",)))
    starts = tracker.update(np.array([-1000.0, 0.0, -1000.0]), 10.0)  # wave 1.0
    assert [(c.type, c.label, c.started_at) for c in starts] == [("action_start", "wave", 10.0)]
    assert tracker.update(EXACTLY_THIRD, 11.0) == []
    assert tracker.scores[1] == 1 / 3
    ends = tracker.update(np.array([0.0, -1e-6, 0.0]), 12.0)  # wave just below exit
    # The end names the start of the segment it closes, not the hop that ended it.
    assert [(c.type, c.label, c.started_at) for c in ends] == [("action_end", "wave", 10.0)]


def test_an_action_onset_is_the_mean_start_of_the_clips_its_smoothed_score_averaged():
    """Smoothing over three hops raises an action about a hop after the hops' own scores rose; the
    onset takes that lag back, and the end names the same onset as the start."""
    tracker = ActionTracker(LABELS, PostprocessConfig(smoothing_hops=3, enter_threshold=0.6, exit_threshold=0.4,
                                                      background_labels=("idle",)))
    low, high = [0.8, 0.2, 1e-9], [0.1, 0.9, 1e-9]
    changes = []
    for hop, probs in enumerate([low, low, high, high, low, low, low]):
        clip_start = 2.0 * hop  # clips of 3 s every 2 s
        changes += tracker.update(logits_for(probs), clip_start + 3.0, clip_start)
    start, end = changes
    # Raised by the clip starting at 6 s (mean of 0.2, 0.9, 0.9 = 0.67), which averaged the clips
    # starting at 2, 4 and 6 s: onset 4 s, one hop earlier than the raising clip's own start.
    assert (start.type, start.started_at, start.onset) == ("action_start", 9.0, 4.0)
    assert (end.type, end.started_at, end.onset) == ("action_end", 9.0, 4.0)


def test_after_a_restart_the_onset_averages_only_clips_after_the_break():
    tracker = ActionTracker(LABELS, PostprocessConfig(smoothing_hops=3, enter_threshold=0.6, exit_threshold=0.4,
                                                      background_labels=("idle",)))
    tracker.update(logits_for([0.8, 0.2, 1e-9]), 3.0, 0.0)
    tracker.restart("stream_lost")
    (start,) = tracker.update(logits_for([0.1, 0.9, 1e-9]), 23.0, 20.0)
    assert start.onset == 20.0
