"""Per-person mode end to end: a real multi-person video, OpenCV's motion detector, the tracker and
an RoI-head engine, through the real pipeline; the events say who is doing what, where."""

from __future__ import annotations

import numpy as np
import pytest

from streamrec.backends import create_engine
from streamrec.config import StreamConfig, load_config, load_labels
from streamrec.detection import Detections, PersonDetector
from streamrec.detection.config import TrackerConfig
from streamrec.errors import StreamrecError
from streamrec.evaluation import ground_truth_path
from streamrec.evaluation_persons import read_person_truth
from streamrec.events import EventBus, MemorySink
from streamrec.persons import PersonRows, PersonStage, SourceGeometry, StreamPeople
from streamrec.pipeline import Pipeline
from streamrec.procedural_group import group_scene, write_group_video
from streamrec.scheduler import Batch, View

# Letterboxed 128 px input, random weights, low thresholds: actions may start on any clip (whether
# one does is chance; a test that needs actions runs the demo config's trained weights).
PERSONS = ["clip.short_side=128", "clip.crop_size=128", "clip.fit=pad", "checkpoint=null", "events.predictions=true",
           "postprocess.enter_threshold=0.52", "postprocess.exit_threshold=0.5", "postprocess.background_labels=[]"]
TRAINED = f"checkpoint={load_config('slowfast_tiny_roi').checkpoint}"  # the per-person demo's own weights


@pytest.fixture(scope="module")
def group_video(tmp_path_factory):
    return write_group_video(group_scene(7, 20.0), tmp_path_factory.mktemp("group") / "group.mp4")


def iou(a, b) -> float:
    x1, y1, x2, y2 = max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3])
    inter = max(0.0, x2 - x1) * max(0.0, y2 - y1)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union else 0.0


def run_persons(video, *overrides):
    config = load_config("slowfast_tiny_roi", [*PERSONS, *overrides], values={"detection": {}})
    config = config.replace(streams=(StreamConfig(id="room", source=str(video)),))
    sink = MemorySink()
    Pipeline(config, create_engine(config), load_labels(config), EventBus([sink])).run()
    return sink.events()


def test_people_are_found_tracked_and_their_actions_published_in_source_pixels(group_video):
    events = run_persons(group_video, TRAINED)  # its people's actions start and end
    truth = read_person_truth(ground_truth_path(group_video))
    predictions = [e for e in events if e["type"] == "prediction"]
    assert predictions and any(e["persons"] for e in predictions)
    # Boxes are in the source frame's pixels: each lies on a true person at its clip's keyframe.
    overlaps = []
    for event in predictions:
        frame = min(round((event["clip_start"] + event["clip_end"]) / 2 * truth.fps), len(truth.frames) - 1)
        for person in event["persons"]:
            overlaps.append(max((iou(person["box"], p.box) for p in truth.frames[frame]), default=0.0))
    assert np.median(overlaps) >= 0.6 and np.mean(np.array(overlaps) >= 0.3) >= 0.8
    # Tracks start before their actions, every action and track ends, and action events say whose.
    started = set()
    open_actions, ended_actions = {}, 0
    for event in events:
        if event["type"] == "track_start":
            started.add(event["track_id"])
        elif event["type"] == "action_start":
            assert event["track_id"] in started and len(event["box"]) == 4
            open_actions[(event["track_id"], event["label"])] = event
        elif event["type"] == "action_end":
            assert open_actions.pop((event["track_id"], event["label"]))["clip_end"] == event["started_at"]
            ended_actions += 1
    assert not open_actions and started and ended_actions
    ended = {e["track_id"] for e in events if e["type"] == "track_end"}
    assert ended == started
    assert {e["reason"] for e in events if e["type"] == "track_end"} <= {"person_left", "stream_ended"}


class FixedDetector(PersonDetector):
    """Hands back the boxes a test chose, per stream; records the keyframes it was given."""

    def __init__(self, boxes: dict[str, list]):
        self.boxes, self.keyframes = boxes, []  # no DetectionConfig: nothing is filtered

    def detect(self, keyframes):
        self.keyframes += keyframes
        return [Detections.of(np.array(self.boxes[k.stream_id], np.float32).reshape(-1, 4),
                              np.linspace(0.9, 0.5, len(self.boxes[k.stream_id]))) for k in keyframes]


def test_one_engine_call_scores_every_box_of_every_clip():
    config = load_config("slowfast_tiny_roi", PERSONS)
    engine = create_engine(config)
    clip = config.clip
    frames = np.random.default_rng(0).integers(0, 255, (2, clip.num_frames, 128, 128, 3), np.uint8)
    views = [View(name, {}, 0, 1.0, 2.0, 0.0, 0) for name in ("a", "b")]
    detector = FixedDetector({"a": [[10, 10, 40, 90], [60, 20, 90, 100]], "b": []})
    stage = PersonStage(detector, engine, clip, max_boxes=16)
    rows = stage(Batch(views, {"slow": frames[:, ::clip.alpha], "fast": frames}, {}))
    assert [len(r.boxes) for r in rows] == [2, 0] and rows[1].logits.shape == (0, 7)
    assert [k.stream_id for k in detector.keyframes] == ["a", "b"] and detector.keyframes[0].time_s == pytest.approx(1 + 8 / 15)  # frame 8 of 16
    assert (detector.keyframes[1].frame == frames[1, clip.num_frames // 2]).all()  # the middle Fast frame
    # Each row is what the engine gives that box alone.
    alone = engine.infer({"slow": frames[:1, ::clip.alpha], "fast": frames[:1],
                          "boxes": np.array([[0, 60, 20, 90, 100]], np.float32)})
    assert np.allclose(rows[0].logits[1], alone[0], atol=1e-4)
    # ... and each box comes with its colours on that keyframe, for the tracker.
    from streamrec.detection import appearance

    keyframe = frames[0, clip.num_frames // 2]
    assert np.array_equal(rows[0].signatures, appearance.signatures(keyframe, rows[0].boxes))
    assert rows[1].signatures.shape == (0, appearance.SIZE)
    # A tracker that reads no colours (appearance_weight and reid_distance 0) is handed none.
    blind = PersonStage(detector, engine, clip, max_boxes=16, colours=False)
    assert blind(Batch(views, {"slow": frames[:, ::clip.alpha], "fast": frames}, {}))[0].signatures is None
    assert not TrackerConfig(appearance_weight=0, reid_distance=0).uses_colours and TrackerConfig().uses_colours


def test_a_person_who_leaves_ends_what_they_were_doing():
    people = StreamPeople(["idle", "waving"], load_config("slowfast_tiny_roi").postprocess,
                          TrackerConfig(min_hits=1, max_missed_hops=1), "sigmoid")
    waving = np.array([[-4.0, 4.0]], np.float32)
    box = np.array([[10, 10, 40, 90]], np.float32)
    first = people.hop(PersonRows(box, np.array([0.9], np.float32), waving), 1.0)
    assert [t.id for t in first.tracks.started] == [1]
    assert [(c.change.type, c.change.label) for c in first.changes] == [("action_start", "waving")]
    nobody = PersonRows(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros((0, 2), np.float32))
    people.hop(nobody, 1.5)  # missed once: still there
    gone = people.hop(nobody, 2.0)
    assert [t.id for t in gone.tracks.ended] == [1]
    assert [(c.change.type, c.change.reason, c.track.id) for c in gone.changes] == [("action_end", "person_left", 1)]
    assert people.active() == {}


def test_boxes_map_back_to_the_source_through_the_letterbox_and_region():
    clip = load_config("slowfast_tiny_roi", PERSONS).clip
    whole = SourceGeometry(320, 240, None, clip)
    assert np.allclose(whole.to_source(np.array([[40, 36, 56, 76]])), [[100, 50, 140, 150]])  # scale 0.4, 16 px pad
    right_half = SourceGeometry(640, 240, (0.5, 0.0, 0.5, 1.0), clip)  # the same 320x240 view, from x = 320
    assert np.allclose(right_half.to_source(np.array([[40, 36, 56, 76]])), [[420, 50, 460, 150]])


def test_a_config_and_a_model_that_disagree_on_the_mode_are_one_line(video_file):
    whole_frame = load_config("slowfast_tiny", values={"detection": {}})
    with pytest.raises(StreamrecError, match="needs a model with an RoI head"):
        Pipeline(whole_frame.replace(streams=(StreamConfig(id="a", source=str(video_file)),)),
                 create_engine(whole_frame), load_labels(whole_frame), EventBus([]))
    per_person = load_config("slowfast_tiny_roi", PERSONS, values={"detection": None})
    with pytest.raises(StreamrecError, match=r"no detection: section"):
        Pipeline(per_person.replace(streams=(StreamConfig(id="a", source=str(video_file)),)),
                 create_engine(per_person), load_labels(per_person), EventBus([]))


def test_a_per_person_run_becomes_scorer_input():
    """predictions_from_events: an action from its onset to the start of the clip that ended it, per
    track; every hop's boxes at its keyframe, the clip's middle."""
    from streamrec.evaluation_persons import predictions_from_events

    common = {"stream": "room"}
    events = [
        {**common, "type": "prediction", "clip_start": 0.0, "clip_end": 1.0,
         "persons": [{"track_id": 4, "box": [10, 10, 30, 60], "topk": [["waving", 0.8], ["jumping", 0.1]]}]},
        {**common, "type": "prediction", "clip_start": 0.5, "clip_end": 1.5,
         "persons": [{"track_id": 4, "box": [12, 10, 32, 60], "topk": [["waving", 0.7], ["jumping", 0.2]]}]},
        {**common, "type": "action_start", "track_id": 4, "label": "waving", "clip_start": 0.5, "clip_end": 1.5,
         "onset": 0.25},
        {**common, "type": "action_end", "track_id": 4, "label": "waving", "clip_start": 1.2, "clip_end": 2.2},
    ]
    found = predictions_from_events(events)
    (segment,) = found.segments
    assert (segment.start, segment.end, segment.label, segment.person, segment.detected_at) == (
        0.25, 1.2, "waving", 4, 1.5)
    assert found.tracks[4].times.tolist() == [0.5, 1.0] and found.tracks[4].boxes[1].tolist() == [12, 10, 32, 60]
    assert [(m, [(d.label, d.score) for d in ds]) for m, ds in found.keyframes] == [
        (0.5, [("waving", 0.8), ("jumping", 0.1)]), (1.0, [("waving", 0.7), ("jumping", 0.2)])]


def test_eval_scores_a_per_person_run(tmp_path):
    from conftest import run_cli

    report = tmp_path / "eval.json"
    done = run_cli("eval", "--persons", "--count", "1", "--minutes", "0.3", "--seed", "3", "--json", str(report),
                   *[arg for value in PERSONS[:4] for arg in ("--set", value)], timeout=300)
    assert done.returncode == 0, done.stderr
    detector = load_config("slowfast_tiny_roi").detection.detector  # the demo's own: onnx:.../person_detector/...
    detected, perfect = done.stdout.split(f"with the detected boxes ({detector})")[1].split("with the ground-truth boxes")
    assert "frame AP at IoU 0.5" in detected and "frame AP at IoU 0.5" in perfect
    import json

    data = json.loads(report.read_text())
    assert data["mode"] == "persons" and data["detector"] == detector and data["segments"] > 0
    assert 0.0 <= data["frame_map_detected_boxes"] <= 1.0
    assert 0.0 <= data["coverage_detected_boxes"] <= 1.0 and data["person_hops_detected_boxes"] > 0
    assert data["id_switches_detected_boxes"] >= 0 and data["track_ids_detected_boxes"] >= 1
    assert f"{data['id_switches_detected_boxes']} id switches" in detected
    truth = data["ground_truth_boxes"]  # the same videos with perfect boxes: as many true actions to find
    assert truth["true_positives"] + truth["false_negatives"] == data["true_positives"] + data["false_negatives"]
    assert 0.0 <= truth["frame_map"] <= 1.0
    assert f"{truth['true_positives']:4d} {truth['false_positives']:4d} {truth['false_negatives']:4d}" in perfect


def test_the_ground_truth_detector_hands_the_keyframes_people_in_input_pixels():
    from streamrec.detection import Keyframe
    from streamrec.evaluation_persons import PersonBox, PersonTruth, TruthDetector

    clip = load_config("slowfast_tiny_roi").clip  # the 320x240 room letterboxed into 128 px: scale 0.4, 16 px pad
    people = (PersonBox(1, (100, 50, 140, 150), "waving"), PersonBox(2, (300, 200, 330, 250), "jumping"))
    truth = PersonTruth(fps=10.0, width=320, height=240, frames=((), people, ()), segments=(),
                        background_label="standing still")
    detector = TruthDetector({"room": truth}, clip)
    frame = np.zeros((128, 128, 3), np.uint8)
    found = detector.detect([Keyframe("room", frame, 0.12), Keyframe("room", frame, 0.21)])
    assert np.allclose(found[0].boxes, [[40, 36, 56, 76], [120, 96, 128, 116]])  # the second cut at the edge
    assert list(found[0].scores) == [1, 1]
    assert len(found[1]) == 0  # frame 2: nobody