"""The procedural generator: deterministic from a seed, random where it should be, honest ground truth."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from streamrec.config import LABELS_DIR
from streamrec.errors import StreamrecError
from streamrec.evaluation import ground_truth_path, read_ground_truth
from streamrec.procedural import (
    ACTIONS,
    BACKGROUND,
    FPS_RANGE,
    FRAME_SIZE,
    LABELS,
    action_scene,
    demo_video,
    surveillance_scene,
    write_video,
)


def test_labels_match_the_packaged_label_file():
    packaged = (LABELS_DIR / "actions.txt").read_text().split("\n")
    assert list(LABELS) == [name for name in packaged if name]


@pytest.mark.parametrize("label", LABELS)
def test_same_seed_same_frames_in_any_order(label):
    a, b = action_scene(7, label), action_scene(7, label)
    assert a.fps == b.fps and a.num_frames == b.num_frames and a.segments == b.segments
    indices = [0, a.num_frames // 2, a.num_frames - 1]
    forward = [a.frame(i) for i in indices]
    backward = [b.frame(i) for i in reversed(indices)][::-1]
    for x, y in zip(forward, backward):
        assert x.dtype == np.uint8 and x.shape == (FRAME_SIZE[1], FRAME_SIZE[0], 3)
        np.testing.assert_array_equal(x, y)


def test_different_seeds_differ_in_what_should_not_matter():
    scenes = [action_scene(seed, "jumping") for seed in range(12)]
    assert len({s.fps for s in scenes}) > 3
    assert all(FPS_RANGE[0] <= s.fps <= FPS_RANGE[1] for s in scenes)
    backgrounds = [s.look.background.mean(axis=(0, 1)) for s in scenes]
    assert np.std(backgrounds, axis=0).min() > 10  # colours vary
    assert len({round(s.look.scale, 3) for s in scenes}) == len(scenes)
    assert len({round(s.segments[0].duration, 3) for s in scenes}) == len(scenes)  # speeds vary


def test_action_scenes_hold_one_labelled_segment_with_context():
    for k, label in enumerate(ACTIONS):
        scene = action_scene(100 + k, label)
        [segment] = scene.segments
        assert segment.label == label
        assert segment.start >= 1.0 and segment.end < scene.duration  # idle before, something after
    assert action_scene(3, BACKGROUND).segments == []
    with pytest.raises(StreamrecError, match="unknown procedural label"):
        action_scene(0, "dancing")


def test_walking_moves_the_figure_the_labelled_way():
    for label, sign in (("walking left", -1), ("walking right", 1)):
        scene = action_scene(11, label)
        [segment] = scene.segments
        start = scene.script.pose(segment.start)[0]
        end = scene.script.pose(segment.end)[0]
        assert sign * (end - start) > 1.0


def test_surveillance_video_and_ground_truth(tmp_path):
    scene = surveillance_scene(5, duration_s=40)
    labels = [s.label for s in scene.segments]
    assert len(labels) >= 4 and set(labels) <= set(ACTIONS)
    starts = [s.start for s in scene.segments]
    assert starts == sorted(starts)
    gaps = [b.start - a.end for a, b in zip(scene.segments, scene.segments[1:])]
    assert min(gaps) >= 1.5  # idle between actions
    path = write_video(scene, tmp_path / "s.mp4")
    assert read_ground_truth(ground_truth_path(path)) == [
        type(s)(round(s.start, 4), round(s.end, 4), s.label) for s in scene.segments]
    capture = cv2.VideoCapture(str(path))
    assert capture.get(cv2.CAP_PROP_FPS) == scene.fps
    assert int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) == scene.num_frames
    capture.release()


def test_demo_video_is_generated_once(tmp_path):
    path = demo_video(tmp_path)
    stamp = path.stat().st_mtime_ns
    assert demo_video(tmp_path) == path and path.stat().st_mtime_ns == stamp
    truth = read_ground_truth(ground_truth_path(path))
    assert {s.label for s in truth} == set(ACTIONS)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([path.name, ground_truth_path(path).name])
