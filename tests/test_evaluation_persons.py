"""Per-person scoring on hand-built cases: AVA's frame AP (VOC AP, one box per detection, no
fallback, thresholds inclusive) and per-person event F1 (labels, temporal IoU and box overlap)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from streamrec.errors import StreamrecError
from streamrec.evaluation import overall
from streamrec.evaluation_persons import (
    BoxDetection,
    PersonBox,
    PersonSegment,
    PersonTruth,
    Trajectory,
    average_precision,
    box_overlap,
    frame_average_precision,
    identity,
    mean_ap,
    read_person_truth,
    score_person_events,
    write_person_truth,
)

A = (0.0, 0.0, 10.0, 10.0)
HALF_A = (0.0, 0.0, 10.0, 5.0)  # IoU with A exactly 0.5
UNDER_HALF_A = (0.0, 0.0, 10.0, 4.9)  # IoU with A 0.49
B = (20.0, 0.0, 30.0, 10.0)  # far from A


def waving(box, score: float) -> BoxDetection:
    return BoxDetection(box, "waving", score)


# --------------------------------------------------------------------------- average precision


def test_average_precision_is_the_area_under_the_raised_precision_curve():
    # hit, miss, hit of two: precision 1, 1/2, 2/3 at recall 1/2, 1/2, 1.
    assert average_precision([0.9, 0.8, 0.7], [True, False, True], 2) == pytest.approx(0.5 + 0.5 * 2 / 3)
    # The same detections listed in another order: ranked by score.
    assert average_precision([0.7, 0.9, 0.8], [True, True, False], 2) == pytest.approx(0.5 + 0.5 * 2 / 3)
    # miss, hit, hit: the precision at recall 1/2 (1/2) is raised to the best later one (2/3).
    assert average_precision([0.9, 0.8, 0.7], [False, True, True], 2) == pytest.approx(2 / 3)
    # Truth never found counts: one hit of three true boxes.
    assert average_precision([0.9], [True], 3) == pytest.approx(1 / 3)
    assert average_precision([], [], 2) == 0.0
    with pytest.raises(ValueError):
        average_precision([0.5], [False], 0)


def test_a_box_overlapping_exactly_half_is_a_hit_and_just_under_is_not():
    truth = {"k": (PersonBox(0, A, "waving"),)}
    assert frame_average_precision(truth, {"k": [waving(HALF_A, 0.9)]}) == {"waving": 1.0}
    assert frame_average_precision(truth, {"k": [waving(UNDER_HALF_A, 0.9)]}) == {"waving": 0.0}


def test_each_true_box_is_claimed_once():
    truth = {"k": (PersonBox(0, A, "waving"), PersonBox(1, B, "waving"))}
    duplicates = {"k": [waving(A, 0.9), waving(A, 0.8), waving(B, 0.7)]}  # hit, duplicate (a false positive), hit
    assert frame_average_precision(truth, duplicates)["waving"] == pytest.approx(0.5 + 0.5 * 2 / 3)


def test_a_detection_whose_best_box_is_taken_does_not_fall_back_to_another():
    """AVA's rule: a detection is judged against the true box it overlaps most, only."""
    near_a = (1.0, 0.0, 11.0, 10.0)
    truth = {"k": (PersonBox(0, A, "waving"), PersonBox(1, near_a, "waving"))}
    second = (0.2, 0.0, 10.2, 10.0)  # IoU 0.96 with A (taken), 0.85 with near_a (free)
    assert frame_average_precision(truth, {"k": [waving(A, 0.9), waving(second, 0.8)]})["waving"] == pytest.approx(0.5)


def test_a_keyframes_detections_are_judged_best_score_first_whatever_their_order():
    truth = {"k": (PersonBox(0, A, "waving"),)}
    worst_first = {"k": [waving(A, 0.2), waving(A, 0.9)]}
    assert frame_average_precision(truth, worst_first) == {"waving": 1.0}


def test_classes_keyframes_and_invalid_boxes():
    truth = {1: (PersonBox(0, A, "waving"),), 2: (PersonBox(0, A, "jumping"),), 3: ()}
    detections = {
        1: [waving(A, 0.6), BoxDetection(A, "falling down", 0.9), waving((10.0, 0.0, 0.0, 10.0), 0.99)],
        3: [waving(B, 0.5)],  # nobody there: a false positive, ranked below the hit
        4: [waving(A, 0.95)],  # a frame the truth does not score: a false positive ranked first
    }
    ap = frame_average_precision(truth, detections)
    # falling down has no true box: no AP. jumping was never detected: 0. waving: miss, hit, miss.
    assert ap == {"jumping": 0.0, "waving": pytest.approx(0.5)}
    assert mean_ap(ap) == pytest.approx(0.25)
    assert frame_average_precision(truth, detections, labels=["waving", "falling down"]) == {"waving": ap["waving"]}
    assert mean_ap({}) is None


def test_keyframes_are_the_frames_nearest_each_tick():
    truth = PersonTruth(25.0, 320, 240, ((),) * 100, (), "standing still")
    assert truth.keyframes() == [0, 13, 25, 38, 50, 63, 75, 88]  # 2 Hz: 12.5 frames apart, halves rounded up
    assert truth.keyframes(1.0, start_s=0.5) == [13, 38, 63, 88]
    assert truth.keyframe_truth(1.0) == {0: (), 25: (), 50: (), 75: ()}
    with pytest.raises(StreamrecError, match="not positive"):
        truth.keyframes(0.0)


# --------------------------------------------------------------------------- trajectories and box overlap


def per_frame(box, start: float, end: float, fps: float = 10.0) -> Trajectory:
    """A person seen on every frame from ``start`` to ``end`` (inclusive) at ``box``."""
    return Trajectory.of([(i / fps, box) for i in range(round(start * fps), round(end * fps) + 1)], reach_s=0.5 / fps)


def test_trajectory_lookups():
    track = Trajectory.of([(1.0, B), (0.0, A)], reach_s=0.05)
    assert list(track.times) == [0.0, 1.0]
    np.testing.assert_array_equal(track.box_at(0.96), B)
    np.testing.assert_array_equal(track.box_at(0.05), A)  # reach is inclusive
    assert track.box_at(0.5) is None and Trajectory.of([]).box_at(0.0) is None
    assert track.samples_within(0.0, 1.0) == [0, 1]  # bounds inclusive
    assert track.samples_within(0.2, 0.4) == [0]  # none inside: the one nearest the middle
    assert Trajectory.of([]).samples_within(0.0, 1.0) == []


def test_box_overlap_averages_the_tracks_samples_over_the_common_span():
    person = per_frame(A, 0.0, 1.5)  # out of sight after 1.5 s
    truth = PersonSegment(0.0, 2.0, "waving", 0)
    predicted = PersonSegment(0.5, 3.0, "waving", 7)
    track = Trajectory.of([(0.0, UNDER_HALF_A), (0.5, A), (1.0, HALF_A), (2.0, A), (2.5, A)])
    # Samples at 0.5, 1.0 and 2.0 lie in [0.5, 2.0]; the person has no box at 2.0.
    assert box_overlap(predicted, track, truth, person) == pytest.approx((1.0 + 0.5 + 0.0) / 3)
    assert box_overlap(predicted, Trajectory.of([]), truth, person) == 0.0


# --------------------------------------------------------------------------- per-person events


TRUTH = [PersonSegment(0.0, 2.0, "waving", 0)]
PEOPLE = {0: per_frame(A, 0.0, 4.0), 1: per_frame(B, 0.0, 4.0)}


def counts(scores) -> tuple[int, int, int]:
    total = overall(scores)
    return total.true_positives, total.false_positives, total.false_negatives


def test_identity_counts_covered_person_hops_and_switches():
    """Two people, one track each until the tracks swap people for one hop and swap back; a third
    hop where a track's box is only half on its person (IoU 1/3) covers nobody."""
    left, right = Trajectory.of([(t, A) for t in range(5)]), Trajectory.of([(t, B) for t in range(5)])
    away = (5.0, 0.0, 15.0, 10.0)  # IoU 1/3 with A
    one = Trajectory.of([(0, A), (1, A), (2, B), (3, A), (4, away)])
    two = Trajectory.of([(0, B), (1, B), (2, A), (3, B), (4, B)])
    ids = identity({0: left, 1: right}, {1: one, 2: two})
    assert (ids.person_hops, ids.covered, ids.tracks) == (10, 9, 2)
    assert ids.switches == 4  # each person: to the other track at 2, back at 3
    assert ids.coverage == pytest.approx(0.9)
    steady = identity({0: left, 1: right}, {1: Trajectory.of([(t, A) for t in range(5)]),
                                            2: Trajectory.of([(t, B) for t in range(5)])})
    assert (steady.covered, steady.switches) == (10, 0)


def test_a_person_on_a_keyframe_where_no_track_was_published_is_an_uncovered_person_hop():
    """Keyframes 0-4, one person throughout; the track has no box at 2 (nothing published that hop).
    Counted only where some track has a box, the person would be covered 4 of 4 hops."""
    person = Trajectory.of([(t, A) for t in range(5)])
    track = Trajectory.of([(t, A) for t in (0, 1, 3, 4)])
    ids = identity({0: person}, {1: track}, moments=range(5))
    assert (ids.person_hops, ids.covered, ids.switches, ids.tracks) == (5, 4, 0, 1)
    assert ids.coverage == pytest.approx(0.8)
    # With no track at all, every person-hop is uncovered.
    nobody = identity({0: person}, {}, moments=range(5))
    assert (nobody.person_hops, nobody.covered, nobody.coverage) == (5, 0, 0.0)


def test_temporal_iou_of_exactly_half_matches_and_just_under_does_not():
    tracks = {7: Trajectory.of([(t, A) for t in np.arange(0, 4, 0.25)])}
    half = [PersonSegment(0.0, 1.0, "waving", 7)]  # IoU 1/2
    under = [PersonSegment(0.0, 0.99, "waving", 7)]
    assert counts(score_person_events(TRUTH, PEOPLE, half, tracks, ["waving"])) == (1, 0, 0)
    assert counts(score_person_events(TRUTH, PEOPLE, under, tracks, ["waving"])) == (0, 1, 1)


def test_box_overlap_of_exactly_half_matches_and_just_under_does_not():
    predicted = [PersonSegment(0.0, 2.0, "waving", 7)]
    half = {7: Trajectory.of([(t, HALF_A) for t in np.arange(0, 4, 0.25)])}
    under = {7: Trajectory.of([(t, UNDER_HALF_A) for t in np.arange(0, 4, 0.25)])}
    assert counts(score_person_events(TRUTH, PEOPLE, predicted, half, ["waving"])) == (1, 0, 0)
    assert counts(score_person_events(TRUTH, PEOPLE, predicted, under, ["waving"])) == (0, 1, 1)


def test_matching_is_one_to_one_best_temporal_iou_first():
    tracks = {7: Trajectory.of([(t, A) for t in np.arange(0, 4, 0.25)]),
              8: Trajectory.of([(t, A) for t in np.arange(0, 4, 0.25)])}
    close = PersonSegment(0.0, 1.2, "waving", 7, detected_at=1.0)  # IoU 0.6
    exact = PersonSegment(0.0, 2.0, "waving", 8, detected_at=0.4)  # IoU 1
    scores = score_person_events(TRUTH, PEOPLE, [close, exact], tracks, ["waving"])
    assert counts(scores) == (1, 1, 0)
    assert scores["waving"].delays_s == (0.4,)  # the best pair is the hit: its delay
    # Two people waving where one track claims it: one of them is missed.
    together = {0: PEOPLE[0], 1: per_frame(A, 0.0, 4.0)}
    both = [PersonSegment(0.0, 2.0, "waving", 0), PersonSegment(0.0, 2.0, "waving", 1)]
    assert counts(score_person_events(both, together, [exact], tracks, ["waving"])) == (1, 0, 1)


def test_the_right_action_on_the_wrong_person_or_with_the_wrong_label_is_no_hit():
    elsewhere = {7: Trajectory.of([(t, B) for t in np.arange(0, 4, 0.25)])}  # following person 1
    predicted = [PersonSegment(0.0, 2.0, "waving", 7)]
    assert counts(score_person_events(TRUTH, PEOPLE, predicted, elsewhere, ["waving"])) == (0, 1, 1)
    on_person = {7: Trajectory.of([(t, A) for t in np.arange(0, 4, 0.25)])}
    jumping = [PersonSegment(0.0, 2.0, "jumping", 7)]
    scores = score_person_events(TRUTH, PEOPLE, jumping, on_person, ["waving", "jumping"])
    assert counts(scores) == (0, 1, 1)
    assert set(score_person_events(TRUTH, PEOPLE, jumping, on_person, ["waving"])) == {"waving"}  # others ignored
    untracked = [PersonSegment(0.0, 2.0, "waving", 9)]  # a track with no boxes
    assert counts(score_person_events(TRUTH, PEOPLE, untracked, on_person, ["waving"])) == (0, 1, 1)


def test_delay_and_f1():
    tracks = {7: Trajectory.of([(t, A) for t in np.arange(0, 8, 0.25)])}
    truth = [PersonSegment(0.0, 2.0, "waving", 0), PersonSegment(4.0, 6.0, "waving", 0)]
    people = {0: per_frame(A, 0.0, 8.0)}
    predicted = [PersonSegment(0.2, 2.0, "waving", 7, detected_at=1.1), PersonSegment(6.5, 7.5, "waving", 7)]
    scores = score_person_events(truth, people, predicted, tracks, ["waving"])
    assert counts(scores) == (1, 1, 1)
    assert scores["waving"].delays_s == (pytest.approx(1.1),)
    assert overall(scores).f1 == pytest.approx(0.5)


# --------------------------------------------------------------------------- files


def test_ground_truth_file_round_trip_and_checks(tmp_path):
    truth = PersonTruth(
        10.0, 320, 240,
        ((PersonBox(0, (1.5, 2.25, 30.0, 60.5), "waving"), PersonBox(3, B, "standing still", 0.25)), ()),
        (PersonSegment(0.0, 0.2, "waving", 0),), "standing still", {"seed": 4})
    path = tmp_path / "v.json"
    write_person_truth(path, truth)
    assert read_person_truth(path) == truth
    assert json.loads(path.read_text())["people"] == [0, 3]
    data = json.loads(path.read_text())
    data["frames"] = 3
    path.write_text(json.dumps(data))
    with pytest.raises(StreamrecError, match="says 3 frames but boxes lists 2"):
        read_person_truth(path)
    path.write_text("{not json")
    with pytest.raises(StreamrecError, match="is not JSON"):
        read_person_truth(path)
    path.write_text(json.dumps({"segments": [[0, 1, "waving"]]}))  # a single-stream ground truth file
    with pytest.raises(StreamrecError, match="not per-person ground truth"):
        read_person_truth(path)


def _person_truth_file(tmp_path, segment=None, box=None, background="standing still"):
    truth = PersonTruth(10.0, 320, 240, ((PersonBox(0, A, "waving"),), ()), (PersonSegment(0.0, 0.2, "waving", 0),),
                        background)
    path = tmp_path / "v.json"
    write_person_truth(path, truth)
    data = json.loads(path.read_text())
    if segment is not None:
        data["person_segments"].append(segment)
    if box is not None:
        data["boxes"][1].append(box)
    path.write_text(json.dumps(data))
    return path


PERSON_LABELS = ["standing still", "waving", "jumping"]


@pytest.mark.parametrize("segment,box,message", [
    ([0.0, 1.0, "wavng", 1], None,
     r'person_segments\[1\] \("wavng"\) has a label the model does not know.*did you mean "waving"\?'),
    ([1.0, 0.5, "waving", 1], None, r'person_segments\[1\] \("waving"\) ends before it starts'),
    ([float("nan"), 0.5, "waving", 1], None, r"has start nan"),
    ([-0.5, 0.5, "waving", 1], None, r"has start -0.5"),
    ([0.0, 0.5, "waving"], None, r"person_segments\[1\] .* has 3 fields, not 4 \(a field is missing\)"),
    ([0.0, 0.5, "waving", "bob"], None, r"has person 'bob'; people are integer ids"),
    (None, [1, 0, 0, 10, 10, "jumpin", 0.0], r'boxes\[1\]\[0\] \("jumpin"\).*did you mean "jumping"\?'),
    (None, [1, 0, float("inf"), 10, 10, "jumping", 0.0], r'boxes\[1\]\[0\] \("jumping"\) has y1 inf'),
    (None, [1, 0, 0, 10, 10, "jumping", 1.5], r"has occluded 1.5; .*from 0 to 1"),
    (None, [1, 0, 0, 10, "jumping", 0.0], r"boxes\[1\]\[0\] .* has 6 fields, not 7"),
])
def test_a_bad_person_segment_or_box_is_refused_naming_the_file_row_problem_and_fix(tmp_path, segment, box, message):
    path = _person_truth_file(tmp_path, segment, box)
    with pytest.raises(StreamrecError, match=message) as caught:
        read_person_truth(path, PERSON_LABELS)
    assert str(caught.value).startswith(f"ground truth {path} is not valid: ") and "\n" not in str(caught.value)


def test_person_truth_labels_are_checked_only_when_the_model_s_labels_are_given(tmp_path):
    path = _person_truth_file(tmp_path, segment=[0.0, 1.0, "sneezing", 1], background="idle")
    assert read_person_truth(path).segments[-1].label == "sneezing"
    with pytest.raises(StreamrecError, match=r'person_segments\[1\] \("sneezing"\).*the model\'s labels are: '
                                             r"standing still, waving, jumping"):
        read_person_truth(path, PERSON_LABELS)
    with pytest.raises(StreamrecError, match=r'background_label \("idle"\) has a label the model does not know'):
        read_person_truth(path, [*PERSON_LABELS, "sneezing"])
