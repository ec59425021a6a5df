"""Event scoring on hand-made segment lists whose precision, recall and delays are known."""

from __future__ import annotations

import json

import pytest
from conftest import run_cli

from streamrec.errors import StreamrecError
from streamrec.evaluation import (
    Segment,
    combine,
    format_table,
    match_segments,
    overall,
    read_ground_truth,
    report,
    score_segments,
    segments_from_events,
    temporal_iou,
    write_ground_truth,
)

LABELS = ["walking left", "jumping", "falling down"]


def test_temporal_iou():
    assert temporal_iou(Segment(0, 2, "a"), Segment(1, 3, "a")) == pytest.approx(1 / 3)
    assert temporal_iou(Segment(0, 1, "a"), Segment(2, 3, "a")) == 0.0
    assert temporal_iou(Segment(0, 4, "a"), Segment(1, 2, "a")) == pytest.approx(0.25)


def test_known_precision_recall_and_delays():
    truth = [
        Segment(10, 14, "walking left"),  # found (IoU 0.78), detected 0.8 s after it began
        Segment(20, 22, "jumping"),  # found (IoU 0.8), detected 0.5 s after
        Segment(30, 31, "falling down"),  # missed: the prediction overlaps too little (IoU 0.11)
        Segment(40, 43, "jumping"),  # missed: predicted as the wrong class
    ]
    predicted = [
        Segment(10.5, 14.5, "walking left", detected_at=10.8),
        Segment(20.0, 22.5, "jumping", detected_at=20.5),
        Segment(30.8, 31.8, "falling down", detected_at=31.0),
        Segment(40, 43, "walking left", detected_at=40.6),
        Segment(50, 52, "jumping", detected_at=50.5),  # nothing there
    ]
    scores = score_segments(truth, predicted, LABELS)
    assert (scores["walking left"].true_positives, scores["walking left"].false_positives,
            scores["walking left"].false_negatives) == (1, 1, 0)
    assert (scores["jumping"].true_positives, scores["jumping"].false_positives,
            scores["jumping"].false_negatives) == (1, 1, 1)
    assert (scores["falling down"].true_positives, scores["falling down"].false_positives,
            scores["falling down"].false_negatives) == (0, 1, 1)
    total = overall(scores)
    assert total.precision == pytest.approx(2 / 5)
    assert total.recall == pytest.approx(2 / 4)
    assert total.f1 == pytest.approx(2 * 0.4 * 0.5 / 0.9)
    assert sorted(total.delays_s) == pytest.approx([0.5, 0.8])
    summary = report(scores, {"iou_threshold": 0.5})
    assert summary["precision"] == 0.4 and summary["recall"] == 0.5
    assert summary["delay_s_median"] == pytest.approx(0.65)
    assert summary["per_class"]["jumping"]["recall"] == 0.5
    with_a_quiet_class = score_segments(truth, predicted, [*LABELS, "waving"])
    table = {line.split("  ")[0]: line.split()[-8:] for line in format_table(with_a_quiet_class).splitlines()[2:]}
    assert table["overall"][3:5] == ["0.400", "0.500"]  # precision, recall
    assert table["falling down"][3:6] == ["0.000", "0.000", "0.000"]  # happened once, never found: a real 0
    assert table["waving"] == ["0", "0", "0"] + ["-"] * 5  # neither happened nor was reported: nothing to score


def test_matching_is_one_to_one_and_prefers_the_best_overlap():
    truth = [Segment(0, 4, "jumping")]
    predicted = [Segment(0, 3, "jumping"), Segment(0, 4.2, "jumping")]
    pairs = match_segments(truth, predicted)
    assert pairs == [(truth[0], predicted[1])]
    scores = score_segments(truth, predicted, ["jumping"])
    assert (scores["jumping"].true_positives, scores["jumping"].false_positives) == (1, 1)


def test_iou_threshold_is_inclusive_and_adjustable():
    truth = [Segment(0, 2, "jumping")]
    predicted = [Segment(1, 2, "jumping")]  # IoU exactly 0.5
    assert score_segments(truth, predicted, ["jumping"])["jumping"].true_positives == 1
    assert score_segments(truth, predicted, ["jumping"], iou_threshold=0.6)["jumping"].true_positives == 0


def test_unscored_labels_are_ignored_and_empty_classes_score_zero():
    truth = [Segment(0, 5, "standing still"), Segment(6, 8, "jumping")]
    predicted = [Segment(0, 5, "standing still"), Segment(6, 8, "jumping")]
    scores = score_segments(truth, predicted, ["jumping", "falling down"])
    assert set(scores) == {"jumping", "falling down"}
    assert overall(scores).precision == overall(scores).recall == 1.0
    assert scores["falling down"].f1 == 0.0 and scores["falling down"].to_dict()["delay_s_median"] is None


def test_combine_sums_counts_over_videos():
    a = score_segments([Segment(0, 2, "jumping")], [Segment(0, 2, "jumping", detected_at=0.7)], ["jumping"])
    b = score_segments([Segment(0, 2, "jumping")], [], ["jumping"])
    total = combine([a, b])["jumping"]
    assert (total.true_positives, total.false_negatives, total.delays_s) == (1, 1, (0.7,))


def test_segments_from_events_run_from_the_onset_to_the_ending_clip_start_and_detect_at_the_start_event():
    events = [
        {"type": "status", "stream": "v"},
        {"type": "action_start", "label": "jumping", "clip_start": 9.0, "clip_end": 10.0, "onset": 8.5},
        {"type": "action_start", "label": "waving", "clip_start": 9.5, "clip_end": 10.5, "onset": 9.5},
        {"type": "action_end", "label": "jumping", "clip_start": 12.0, "clip_end": 13.0, "onset": 8.5},
        {"type": "action_end", "label": "waving", "clip_start": 15.0, "clip_end": 16.0, "onset": 9.5},
    ]
    assert segments_from_events(events) == [Segment(8.5, 12.0, "jumping", detected_at=10.0),
                                           Segment(9.5, 15.0, "waving", detected_at=10.5)]


def test_a_streaming_form_s_segments_are_detected_its_delay_after_the_window_they_describe():
    events = [{"type": "action_start", "label": "jumping", "clip_start": 9.0, "clip_end": 10.0, "onset": 8.5},
              {"type": "action_end", "label": "jumping", "clip_start": 12.0, "clip_end": 13.0, "onset": 8.5}]
    assert segments_from_events(events, known_after_s=1.25) == [Segment(8.5, 12.0, "jumping", detected_at=11.25)]


def test_ground_truth_round_trip_and_errors(tmp_path):
    path = tmp_path / "video.json"
    write_ground_truth(path, [Segment(1.0, 2.5, "jumping")], fps=25)
    assert read_ground_truth(path) == [Segment(1.0, 2.5, "jumping")]
    assert json.loads(path.read_text())["fps"] == 25
    with pytest.raises(StreamrecError, match="no ground truth"):
        read_ground_truth(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text('{"segments": [[1, "x"]]}')
    with pytest.raises(StreamrecError, match="not valid"):
        read_ground_truth(tmp_path / "bad.json")


def test_eval_command_scores_a_generated_video_and_writes_the_report(tmp_path):
    report_path = tmp_path / "eval.json"
    done = run_cli("eval", "--seed", "5", "--count", "1", "--minutes", "0.4", "--threads", "1", "--sweep",
                   "--json", str(report_path), "--keep-videos", str(tmp_path / "videos"))
    assert done.returncode == 0, done.stderr
    assert "overall" in done.stdout and "postprocess sweep" in done.stdout
    report = json.loads(report_path.read_text())
    for key in ("precision", "recall", "f1", "delay_s_median", "delay_s_p90", "per_class", "sweep", "command"):
        assert key in report
    assert set(report["per_class"]) == {"walking left", "walking right", "jumping", "waving", "falling down",
                                        "sitting down"}
    assert report["segments"] == len(read_ground_truth(tmp_path / "videos" / "surveillance_5_0.json"))


def test_eval_command_errors_are_one_line(tmp_path):
    done = run_cli("eval", str(tmp_path / "missing.mp4"))
    assert done.returncode == 2 and done.stderr.strip().splitlines()[-1].startswith("error: ")
