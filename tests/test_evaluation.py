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
    with pytest.raises(StreamrecError, match="segments\\[0\\] \\[1, \"x\"\\] has 2 fields, not 3"):
        read_ground_truth(tmp_path / "bad.json")


@pytest.mark.parametrize("row,message", [
    ([1.0, 2.0, "jumpng"], r'segments\[1\] \("jumpng"\) has a label the model does not know.*did you mean "jumping"\?'),
    ([1.0, 2.0, "sitting"], r"the model's labels are: walking left, jumping, falling down"),
    ([1.0, 2.0, "Falling Down"], r'did you mean "falling down"\?'),
    ([float("nan"), 2.0, "jumping"], r'segments\[1\] \("jumping"\) has start nan; .*finite, 0 or more'),
    ([1.0, float("inf"), "jumping"], r"has end inf; "),
    ([-1.0, 2.0, "jumping"], r"has start -1.0; "),
    ([3.0, 2.0, "jumping"], r'segments\[1\] \("jumping"\) ends before it starts \(3 s to 2 s\).*end after start'),
    ([2.0, 2.0, "jumping"], r"ends where it starts"),
    ([1.0, 2.0], r"segments\[1\] \[1.0, 2.0\] has 2 fields, not 3 \(a field is missing\); write it as \[start, end, label\]"),
    ([1.0, 2.0, "jumping", 4], r"has 4 fields, not 3 \(it has extra values\)"),
    ([1.0, "soon", "jumping"], r"has end 'soon', not a number"),
    ([1.0, 2.0, 7], r"segments\[1\] has label 7, not a name"),
    ({"start": 1}, r"segments\[1\] is \{'start': 1\}, not a list"),
])
def test_a_bad_ground_truth_segment_is_refused_naming_the_file_segment_problem_and_fix(tmp_path, row, message):
    """A segment no prediction could ever match (an unknown label, no length) or with nonsense times would
    be scored as a silent miss: refused, one line, with the file, the segment and what to write instead."""
    path = tmp_path / "video.json"
    path.write_text(json.dumps({"segments": [[0.5, 1.5, "walking left"], row]}))
    with pytest.raises(StreamrecError, match=message) as caught:
        read_ground_truth(path, LABELS)
    assert str(caught.value).startswith(f"ground truth {path} is not valid: ") and "\n" not in str(caught.value)


def test_ground_truth_labels_are_checked_only_when_the_model_s_labels_are_given(tmp_path):
    path = tmp_path / "video.json"
    write_ground_truth(path, [Segment(1.0, 2.5, "jumping"), Segment(3.0, 4.0, "anything")])
    assert [s.label for s in read_ground_truth(path)] == ["jumping", "anything"]
    assert read_ground_truth(path, LABELS + ["anything"])[1] == Segment(3.0, 4.0, "anything")
    with pytest.raises(StreamrecError, match='segments\\[1\\] \\("anything"\\)'):
        read_ground_truth(path, LABELS)
    many = [f"class {i}" for i in range(40)]
    with pytest.raises(StreamrecError, match=r"class 0, .*class 11, \.\.\. \(41 in all\)"):
        read_ground_truth(path, many + ["jumping"])


def test_eval_command_refuses_bad_ground_truth_in_one_line(tmp_path):
    from conftest import write_video

    video = write_video(tmp_path / "cam.mp4", frames=10, size=(64, 48))
    (tmp_path / "cam.json").write_text(json.dumps({"segments": [[0.0, 1.0, "jumping"], [5.0, 4.0, "waving"]]}))
    done = run_cli("eval", str(video), "--threads", "1")
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert lines[-1].startswith(f"error: ground truth {tmp_path / 'cam.json'} is not valid: segments[1] (\"waving\") ends before it "
                                "starts")
    # a label the config's model does not know could never be matched: eval passes the labels in
    (tmp_path / "cam.json").write_text(json.dumps({"segments": [[0.0, 1.0, "jumping"], [4.0, 5.0, "jumpng"]]}))
    done = run_cli("eval", str(video), "--threads", "1")
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert 'segments[1] ("jumpng") has a label the model does not know' in done.stderr.strip().splitlines()[-1]
    assert 'did you mean "jumping"?' in done.stderr.strip().splitlines()[-1]


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
