"""Training person models (an RoI head): clips cut as the scheduler cuts them, boxes where the
letterbox puts the people, keyframes that favour actions, a short run that learns, resuming."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import run_cli

from streamrec.checkpoints import load_checkpoint
from streamrec.config import load_config, load_labels
from streamrec.errors import StreamrecError
from streamrec.evaluation_persons import PersonBox
from streamrec.procedural import BACKGROUND
from streamrec.ringbuffer import RingBuffer
from streamrec.scheduler import StreamSchedule
from streamrec.training import GroupScenes, TrainSettings, collate_person_clips, person_clip, train
from streamrec.training.persons import BOX_JITTER, choose_clip_end, fast_indices, keyframe
from streamrec.transforms import fit_clip_frame

# An RoI SlowFast small enough to train for a few epochs in seconds.
TINY = ["clip.num_frames=8", "clip.crop_size=64", "clip.short_side=64", "model.width=4", "model.depth=[1,1,1,1]",
        "model.dropout=0.0"]
LABELS = load_labels(load_config("slowfast_tiny_roi"))


def tiny_config(*overrides: str):
    return load_config("slowfast_tiny_roi", [*TINY, *overrides])


def settings(out: Path, **changes) -> TrainSettings:
    base = dict(data=None, out=out, epochs=2, clips_per_epoch=12, batch_size=4, lr=3e-3, train_scenes=6,
                val_scenes=1, workers=0, command="pytest")
    return TrainSettings(**{**base, **changes})


class BoxScene:
    """One "person": a green rectangle on black that moves a pixel right every frame, its green
    50 + its frame's index, so a fitted frame names the source frame it came from (the grey
    letterbox padding has red, the picture none)."""

    def __init__(self, width: int, height: int, fps: float, count: int, box: tuple[int, int, int, int]):
        self.size, self.fps, self.num_frames, self.box = (width, height), fps, count, box
        self.times = np.arange(count) / fps

    def box_at(self, index: int) -> tuple[int, int, int, int]:
        x1, y1, x2, y2 = self.box
        return x1 + index, y1, x2 + index, y2

    def frame(self, index: int) -> np.ndarray:
        image = np.zeros((self.size[1], self.size[0], 3), np.uint8)
        x1, y1, x2, y2 = self.box_at(index)
        image[y1:y2, x1:x2, 1] = 50 + index  # pixel j spans [j, j + 1): the rectangle's box is exactly box_at
        return image

    def people(self, index: int) -> tuple[PersonBox, ...]:
        return (PersonBox(0, tuple(float(v) for v in self.box_at(index)), "waving"),)


def shown(frame: np.ndarray) -> np.ndarray:
    """A fitted `BoxScene` frame's green inside the picture (0 on the padding)."""
    return np.where(frame[..., 0] == 0, frame[..., 1], 0)


@pytest.mark.parametrize("fps", [30.0, 20.0, 24.0])
def test_person_clips_are_the_scheduler_s_views_of_capture_s_letterboxed_frames(fps):
    """Frames letterboxed by capture's own function go through the real scheduler; every view it
    serves must equal the person clip ending on the same frame, and the clip's keyframe must be
    the source frame shown in the view's middle Fast frame."""
    clip = load_config("slowfast_tiny_roi").clip
    assert clip.fit == "pad" and clip.crop_size == 128
    scene = BoxScene(320, 240, fps, 100, (40, 60, 80, 160))
    ring = RingBuffer(scene.num_frames + 1, clip.crop_size, clip.crop_size)
    for i in range(scene.num_frames):
        ring.write(fit_clip_frame(scene.frame(i), clip), capture_time=0.0, media_time=scene.times[i])
    schedule = StreamSchedule("s", ring, clip, fps, 8, offline=True, live_clock=False)
    views = 0
    while (view := schedule.take()) is not None:
        sample = person_clip(scene, view.end_index, clip, LABELS)
        np.testing.assert_array_equal(view.inputs["fast"], sample.frames)
        assert int(shown(view.inputs["fast"][clip.num_frames // 2]).max()) - 50 == sample.keyframe
        views += 1
    assert views >= 6


@pytest.mark.parametrize("width, height, expected", [
    # 320x240 scaled by 128/320 = 0.4 into 128x96, 16 rows of padding above: box (x1 + k, 60, x2 + k, 160)
    (320, 240, lambda k: (0.4 * (100 + k), 0.4 * 60 + 16, 0.4 * (150 + k), 0.4 * 160 + 16)),
    # 240x320 scaled by 0.4 into 96x128, 16 columns of padding on the left
    (240, 320, lambda k: (0.4 * (100 + k) + 16, 0.4 * 60, 0.4 * (150 + k) + 16, 0.4 * 160)),
])
def test_keyframe_boxes_land_where_the_letterbox_puts_the_person(width, height, expected):
    clip = load_config("slowfast_tiny_roi").clip
    scene = BoxScene(width, height, 30.0, 60, (100, 60, 150, 160))
    sample = person_clip(scene, 50, clip, LABELS)
    box = sample.boxes[0]
    np.testing.assert_allclose(box, expected(sample.keyframe), atol=1e-4)
    # ... and the rectangle drawn there is found there in the keyframe the model sees
    lit = shown(sample.frames[clip.num_frames // 2]) >= (50 + sample.keyframe) / 2
    rows, columns = np.flatnonzero(lit.any(axis=1)), np.flatnonzero(lit.any(axis=0))
    found = (columns[0], rows[0], columns[-1] + 1, rows[-1] + 1)
    np.testing.assert_allclose(found, box, atol=1.0)
    assert sample.targets.tolist() == [[float(name == "waving") for name in LABELS]]


def test_training_samples_jitter_boxes_and_batch_them_as_the_engine_takes_them():
    clip = load_config("slowfast_tiny_roi").clip
    scene = BoxScene(320, 240, 30.0, 60, (100, 60, 150, 160))
    plain = person_clip(scene, 50, clip, LABELS).boxes
    moved = np.stack([person_clip(scene, 50, clip, LABELS, rng=np.random.default_rng(s)).boxes[0] for s in range(20)])
    size = np.tile(plain[0, 2:] - plain[0, :2], 2)
    assert np.all(np.abs(moved - plain[0]) <= BOX_JITTER * size + 1e-4)
    assert np.all(np.abs(moved - plain[0]).max(axis=0) > 0.5 * BOX_JITTER * size)  # every edge moves

    items = [(np.full((2, 4, 4, 3), k, np.uint8), np.full((k + 1, 4), k, np.float32),
              np.eye(len(LABELS), dtype=np.float32)[[k] * (k + 1)]) for k in range(3)]
    frames, boxes, targets = collate_person_clips(items)
    assert frames.shape == (3, 2, 4, 4, 3)
    assert boxes[:, 0].tolist() == [0, 1, 1, 2, 2, 2] and torch.equal(boxes[:, 1], boxes[:, 0])
    assert targets.argmax(1).tolist() == [0, 1, 1, 2, 2, 2]


def test_training_keyframes_favour_short_actions_and_always_show_someone():
    """Keyframes are drawn by class among the actions a scene has, so the short ones are shown far
    more often than on evenly spaced keyframes."""
    clip = load_config("slowfast_tiny_roi").clip
    scenes = GroupScenes(LABELS, 3, seed=3, split=0)
    rng = np.random.default_rng(0)
    short = {"jumping", "waving", "falling down", "sitting down"}
    drawn, even = [], []
    for index in range(len(scenes)):
        scene = scenes.scene(index)
        for _ in range(30):
            end = choose_clip_end(scene, clip, BACKGROUND, rng)
            people = scene.people(keyframe(clip, fast_indices(scene, clip, end)))
            assert people
            drawn.append(any(p.label in short for p in people))
        even += [any(p.label in short for p in people)
                 for people in map(scene.people, range(0, scene.num_frames, 5)) if people]
    assert np.mean(drawn) >= 1.5 * np.mean(even)


def test_a_short_run_lowers_the_loss_and_records_frame_map(tmp_path):
    torch.set_num_threads(1)
    result = train(tiny_config(), settings(tmp_path, epochs=3))
    losses = [r.train_loss for r in result.history]
    assert losses[-1] < losses[0] - 0.1
    checkpoint = load_checkpoint(tmp_path / "model.pt")
    assert checkpoint.labels == LABELS
    assert checkpoint.metadata["val_map"] == result.val.overall
    assert checkpoint.metadata["test_map"] == result.test.overall
    assert set(checkpoint.metadata["test_ap_per_class"]) <= set(LABELS)
    report = (tmp_path / "TRAINING.md").read_text()
    assert f"mAP **{result.test.overall:.4f}**" in report and "| val mAP |" in report
    config = load_config(tmp_path / "config.yaml")
    assert config.clip.fit == "pad" and config.model.arch == "slowfast_roi"


def test_resuming_an_interrupted_person_run_gives_the_uninterrupted_result(tmp_path, monkeypatch):
    torch.set_num_threads(1)
    whole = train(tiny_config(), settings(tmp_path / "whole"))

    from streamrec.training import run_state

    save_state = run_state.save_state

    def crash_after_first_epoch(path, model, optimizer, schedule, epoch, history, s):
        save_state(path, model, optimizer, schedule, epoch, history, s)
        raise KeyboardInterrupt

    monkeypatch.setattr(run_state, "save_state", crash_after_first_epoch)
    with pytest.raises(KeyboardInterrupt):
        train(tiny_config(), settings(tmp_path / "split"))
    monkeypatch.setattr(run_state, "save_state", save_state)
    resumed = train(tiny_config(), settings(tmp_path / "split"), resume=True)
    assert [r.train_loss for r in resumed.history] == [r.train_loss for r in whole.history]
    a = load_checkpoint(tmp_path / "whole" / "model.pt").state_dict
    b = load_checkpoint(tmp_path / "split" / "model.pt").state_dict
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_person_models_refuse_folder_data_and_cropped_frames(tmp_path):
    with pytest.raises(StreamrecError, match="leave out --data"):
        train(tiny_config(), settings(tmp_path, data=str(tmp_path)))
    with pytest.raises(StreamrecError, match="clip.fit: pad"):
        train(tiny_config("clip.fit=crop"), settings(tmp_path))


def test_train_command_trains_a_person_model(tmp_path):
    tiny = [arg for item in TINY for arg in ("--set", item)]
    done = run_cli("train", "--config", "slowfast_tiny_roi", *tiny, "--epochs", "1", "--clips-per-epoch", "4",
                   "--batch-size", "2", "--train-scenes", "2", "--val-scenes", "1", "--workers", "0", "--out",
                   str(tmp_path))
    assert done.returncode == 0, done.stderr
    assert "validation mAP" in done.stderr and "test mAP" in done.stderr
    assert "--config slowfast_tiny_roi" in (tmp_path / "TRAINING.md").read_text()
