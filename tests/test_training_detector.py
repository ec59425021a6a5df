"""The procedural rooms' person detector: its targets and loss, ``train --person-detector``, and
the exported graph run by the ONNX detector as a user's YOLO export is."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch

from streamrec.cli import main
from streamrec.config import load_config
from streamrec.detection import Keyframe, create_detector
from streamrec.detection.config import DetectionConfig
from streamrec.training.detector import (INPUT_SIZE, STRIDE, cell_centres, cell_targets, giou_loss)

CENTRES = cell_centres(INPUT_SIZE[1] // STRIDE, INPUT_SIZE[0] // STRIDE)


def test_cells_near_a_box_centre_and_inside_it_learn_it():
    owner, ignore = cell_targets(np.array([[100, 60, 124, 140]], np.float32), np.array([False]), CENTRES)
    x, y = CENTRES
    assert owner.max() == 0 and not ignore.any()
    taken = owner == 0
    assert (x[taken] > 100).all() and (x[taken] < 124).all() and (y[taken] > 60).all() and (y[taken] < 140).all()
    assert (np.abs(x[taken] - 112) < 2.5 * STRIDE).all() and (np.abs(y[taken] - 100) < 2.5 * STRIDE).all()
    assert taken.sum() == 2 * 5  # 24 px wide: 2 columns of centres inside it; 80 px tall: 5 rows within 2.5 cells


def test_the_smaller_of_two_boxes_takes_a_shared_cell_and_a_hidden_person_is_left_out():
    boxes = np.array([[80, 40, 160, 200], [110, 100, 130, 140], [250, 100, 270, 160]], np.float32)
    owner, ignore = cell_targets(boxes, np.array([False, False, True]), CENTRES)
    assert owner[120 // STRIDE, 120 // STRIDE] == 1  # inside both: the small one's
    assert (owner == 0).any() and not (owner == 2).any()
    x, y = CENTRES
    assert ignore.any() and ((x[ignore] > 250) & (x[ignore] < 270)).all()


def test_a_box_thinner_than_a_cell_still_has_a_cell():
    owner, _ = cell_targets(np.array([[101, 50, 104, 90]], np.float32), np.array([False]), CENTRES)
    assert (owner == 0).sum() == 1


def test_giou_loss_is_zero_for_the_same_box_and_grows_as_boxes_part():
    true = torch.tensor([[10.0, 20.0, 10.0, 20.0]] * 3)
    predicted = torch.tensor([[10.0, 20.0, 10.0, 20.0], [5.0, 20.0, 15.0, 20.0], [0.1, 0.1, 0.1, 0.1]])
    loss = giou_loss(predicted, true)
    assert loss[0].abs() < 1e-6 and 0 < loss[1] < loss[2] <= 2


def test_train_person_detector_writes_a_graph_the_onnx_detector_runs(tmp_path, capsys):
    out = tmp_path / "detector"
    assert main(["train", "--person-detector", "--out", str(out), "--steps", "2", "--batch-size", "2",
                 "--workers", "0"]) == 0
    record = json.loads((out / "detector.json").read_text())
    assert (record["steps"], record["batch"], record["input"]) == (2, 2, list(INPUT_SIZE))
    assert record["frames"] == "fitted to a 128 px clip input (pad)"  # the per-person demo's, as capture fits it
    assert set(record["held_out"]) >= {"ap50", "recall", "precision", "people", "frames"}
    assert f"wrote {out / 'model.onnx'}" in capsys.readouterr().err
    config = DetectionConfig(detector=f"onnx:{out / 'model.onnx'}", score_threshold=0.0)
    detector = create_detector(config)
    frame = np.full((240, 320, 3), 90, np.uint8)
    found = detector.detect([Keyframe("a", frame, 0.0), Keyframe("b", frame[:200], 0.0)])
    assert (detector.width, detector.height) == INPUT_SIZE
    for detections, height in zip(found, (240, 200)):  # boxes in each frame's own pixels
        assert len(detections) and (detections.boxes[:, [1, 3]] <= height).all()


@pytest.mark.parametrize("argv, message", [
    (["--epochs", "2"], "--epochs does not apply to --person-detector"),
    (["--data", "videos", "--stream-from", "slowfast_tiny"], "--data, --stream-from do not apply"),
    (["--steps", "0"], "argument --steps: must be from 1 to 1000000000, got 0"),
])
def test_bad_arguments_are_one_line(tmp_path, capsys, argv, message):
    assert main(["train", "--person-detector", *argv, "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1 and err.startswith("error: "), err


SHIPPED = "streamrec/weights/person_detector/model.onnx"


def test_the_shipped_detector_finds_the_people_of_rooms_it_never_saw(monkeypatch, tmp_path):
    """Rooms from seeds no split of training draws, every 15th frame fitted to the demo's clip input
    as per-person mode hands it over: ONNX Runtime runs the shipped graph, found from another
    folder as a config's own paths are."""
    from streamrec.detection.boxes import iou_matrix
    from streamrec.procedural_group import group_scene
    from streamrec.transforms import fit_clip_frame, frame_fit

    clip = load_config("slowfast_tiny_roi").clip
    monkeypatch.chdir(tmp_path)
    detector = create_detector(DetectionConfig(detector=f"onnx:{SHIPPED}"))
    best, spurious, frames = [], 0, 0
    for seed in (101, 202):
        scene = group_scene(seed, 40.0)
        for index in range(0, scene.num_frames, 15):
            drawings = scene.drawings(index)
            people = [p for p in scene.people(index, drawings) if p.occluded < 0.01]
            frame = scene.frame(index, drawings)
            fit = frame_fit(frame.shape[1], frame.shape[0], clip.short_side, clip.crop_size, clip.fit)
            found = detector.detect_one(Keyframe("room", fit_clip_frame(frame, clip), 0.0))
            sure = found.boxes[found.scores >= 0.5]  # the tracker's high_score
            overlaps = iou_matrix(fit.to_input(np.array([p.box for p in people], np.float32).reshape(-1, 4)), sure)
            best += list(overlaps.max(1)) if sure.size else [0.0] * len(people)
            spurious += int((overlaps.max(0) < 0.5).sum()) if people else len(sure)
            frames += 1
    best = np.array(best)
    assert len(best) > 100
    assert (best >= 0.5).mean() >= 0.95 and best.mean() >= 0.75, (best >= 0.5).mean()
    assert spurious / frames <= 0.25


def test_the_per_person_demo_config_runs_the_shipped_detector():
    config = load_config("slowfast_tiny_roi")
    assert config.detection.detector == f"onnx:{SHIPPED}"


def test_an_onnx_detector_without_onnx_runtime_says_what_to_install(monkeypatch):
    from streamrec.errors import StreamrecError

    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # as if not installed: importing it fails
    with pytest.raises(StreamrecError, match=r"pip install 'streamrec\[onnxruntime\]', or set detection.detector=motion"):
        create_detector(DetectionConfig(detector=f"onnx:{SHIPPED}"))
