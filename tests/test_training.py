"""Training: scheduler-exact clips, window labels, a short run that learns, resuming, folders, fine-tuning."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import run_cli

from streamrec.checkpoints import load_checkpoint, save_checkpoint
from streamrec.config import load_config
from streamrec.errors import StreamrecError
from streamrec.evaluation import Segment
from streamrec.models import build_model
from streamrec.procedural import write_clip_folders
from streamrec.ringbuffer import RingBuffer
from streamrec.scheduler import StreamSchedule
from streamrec.training import (
    TrainSettings,
    cut_clip,
    folder_splits,
    initial_weights,
    train,
    window_label,
)

# A SlowFast small enough to train for a few epochs in seconds.
TINY = ["clip.num_frames=8", "clip.crop_size=32", "clip.short_side=40", "model.width=4", "model.depth=[1,1,1,1]",
        "model.dropout=0.0"]


def tiny_config():
    return load_config("slowfast_tiny", TINY)


def settings(out: Path, **changes) -> TrainSettings:
    base = dict(data=None, out=out, epochs=3, clips_per_epoch=28, batch_size=7, lr=3e-3, train_scenes=7,
                val_scenes=7, workers=0, command="pytest")
    return TrainSettings(**{**base, **changes})


class NumberedFrames:
    """A video whose frame i is filled with the value i, so a clip's pixels name its frames."""

    def __init__(self, count: int, fps: float):
        self.fps, self.times, self.segments = fps, np.arange(count) / fps, []

    def frame(self, index: int) -> np.ndarray:
        return np.full((2, 2, 3), index, np.uint8)


@pytest.mark.parametrize("fps", [30.0, 20.0, 24.0])
def test_clips_are_cut_exactly_like_the_scheduler(fps):
    """Feed frames numbered by their pixels through the real scheduler and through training's
    `cut_clip`, and compare."""
    clip = load_config("slowfast_tiny").clip
    count, hop = 120, 8
    ring = RingBuffer(count + 1, 2, 2)
    video = NumberedFrames(count, fps)
    for i in range(count):
        ring.write(video.frame(i), capture_time=0.0, media_time=video.times[i])
    schedule = StreamSchedule("s", ring, clip, fps, hop, offline=True, live_clock=False)
    views = 0
    while (view := schedule.take()) is not None:
        served = view.inputs["fast"][:, 0, 0, 0].astype(int)
        np.testing.assert_array_equal(served, cut_clip(video, view.end_index, clip)[:, 0, 0, 0])
        views += 1
    assert views >= 8


def test_window_labels():
    walk = [Segment(2.0, 5.0, "walking left")]
    fall = [Segment(2.0, 2.8, "falling down")]
    assert window_label(walk, 3.0, 4.0, "standing still") == "walking left"  # inside
    assert window_label(walk, 1.5, 2.5, "standing still") == "walking left"  # half of the window
    assert window_label(walk, 1.0, 2.1, "standing still") == "standing still"  # barely started
    assert window_label(walk, 1.0, 2.3, "standing still") is None  # ambiguous: not trained on
    assert window_label(fall, 1.9, 2.9, "standing still") == "falling down"  # shorter than the window
    assert window_label(fall, 2.5, 3.5, "standing still") is None  # only its last 0.3 s: share 0.375
    assert window_label(walk, 3.0, 4.0, None) == "walking left"


def test_a_short_training_run_lowers_the_loss_and_writes_a_usable_model(tmp_path):
    torch.set_num_threads(1)
    result = train(tiny_config(), settings(tmp_path, epochs=6))
    losses = [r.train_loss for r in result.history]
    assert np.mean(losses[-2:]) < losses[0] - 0.2
    checkpoint = load_checkpoint(tmp_path / "model.pt")
    assert checkpoint.labels == result.labels and checkpoint.metadata["command"] == "pytest"
    assert checkpoint.metadata["val_accuracy"] == result.val.overall
    config = load_config(tmp_path / "config.yaml")
    assert config.checkpoint and Path(config.checkpoint).resolve() == (tmp_path / "model.pt").resolve()
    report = (tmp_path / "TRAINING.md").read_text()
    assert "pytest" in report and f"{result.val.overall:.4f}" in report
    assert not (tmp_path / "train_state.pt").exists()


def test_resuming_an_interrupted_run_gives_the_uninterrupted_result(tmp_path, monkeypatch):
    torch.set_num_threads(1)
    whole = train(tiny_config(), settings(tmp_path / "whole", epochs=2))

    from streamrec.training import run_state

    save_state = run_state.save_state

    def crash_after_first_epoch(path, model, optimizer, schedule, epoch, history, s):
        save_state(path, model, optimizer, schedule, epoch, history, s)
        raise KeyboardInterrupt

    monkeypatch.setattr(run_state, "save_state", crash_after_first_epoch)
    with pytest.raises(KeyboardInterrupt):
        train(tiny_config(), settings(tmp_path / "split", epochs=2))
    monkeypatch.setattr(run_state, "save_state", save_state)
    with pytest.raises(StreamrecError, match="different settings"):
        train(tiny_config(), settings(tmp_path / "split", epochs=2, lr=1e-3), resume=True)
    resumed = train(tiny_config(), settings(tmp_path / "split", epochs=2), resume=True)
    assert [r.train_loss for r in resumed.history] == [r.train_loss for r in whole.history]
    a = load_checkpoint(tmp_path / "whole" / "model.pt").state_dict
    b = load_checkpoint(tmp_path / "split" / "model.pt").state_dict
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_folder_data_split_and_errors(tmp_path):
    clip = tiny_config().clip
    write_clip_folders(tmp_path / "data", per_class=2, seed=1)
    train_set, val_set = folder_splits(tmp_path / "data", clip, val_fraction=0.5, seed=0, assumed_fps=30)
    assert train_set.labels == sorted(p.name for p in (tmp_path / "data").iterdir())
    assert len(train_set) == len(val_set) == 7
    assert {v.label for v in val_set.videos} == set(train_set.labels)

    (tmp_path / "empty").mkdir()
    with pytest.raises(StreamrecError, match="no class subfolders"):
        folder_splits(tmp_path / "empty", clip, 0.2, 0, 30)
    (tmp_path / "empty" / "fall").mkdir()
    with pytest.raises(StreamrecError, match="has no videos"):
        folder_splits(tmp_path / "empty", clip, 0.2, 0, 30)
    (tmp_path / "empty" / "fall" / "broken.mp4").write_bytes(b"not a video")
    with pytest.raises(StreamrecError, match="cannot read video"):
        folder_splits(tmp_path / "empty", clip, 0.2, 0, 30)
    write_clip_folders(tmp_path / "one_each", per_class=1, seed=1)  # every clip is needed for training
    with pytest.raises(StreamrecError, match="no video is left to validate on"):  # (numpy's stack failed)
        folder_splits(tmp_path / "one_each", clip, 0.5, 0, 30)


def test_fine_tuning_with_a_new_head_keeps_everything_but_the_classifier(tmp_path):
    config = tiny_config()
    source = build_model(config)
    save_checkpoint(tmp_path / "src.pt", source, config)
    target = build_model(config.replace(model=replace(config.model, num_classes=2)))
    initial_weights(target, str(tmp_path / "src.pt"), arch="slowfast", new_head=True, labels=["fall", "walk"])
    loaded, original = target.state_dict(), source.state_dict()
    classifier = f"{target.classifier_name}."
    assert classifier == "head.projection."  # PySlowFast's name, which its checkpoints use
    for key, value in loaded.items():
        if key.startswith(classifier):
            assert value.shape[0] == 2
        else:
            assert torch.equal(value, original[key])
    with pytest.raises(StreamrecError, match="--new-head"):
        initial_weights(target, str(tmp_path / "src.pt"), arch="slowfast", new_head=False, labels=["fall", "walk"])


def test_training_on_a_folder_records_its_own_labels(tmp_path):
    torch.set_num_threads(1)
    write_clip_folders(tmp_path / "data", per_class=2, seed=2)
    for name in ("jumping", "waving", "walking left", "walking right", "falling down"):
        for clip in (tmp_path / "data" / name).iterdir():
            clip.unlink()
        (tmp_path / "data" / name).rmdir()
    result = train(tiny_config(), settings(tmp_path / "out", data=str(tmp_path / "data"), epochs=1,
                                           clips_per_epoch=4, batch_size=2, val_fraction=0.5))
    assert result.labels == ["sitting down", "standing still"] and result.test is None
    config = load_config(tmp_path / "out" / "config.yaml")
    assert config.model.num_classes == 2
    assert (tmp_path / "out" / "labels.txt").read_text().split("\n")[:2] == result.labels
    assert load_checkpoint(tmp_path / "out" / "model.pt").labels == result.labels


def test_train_command_runs_end_to_end_and_rejects_bad_flags(tmp_path):
    tiny = [arg for item in TINY for arg in ("--set", item)]
    done = run_cli("train", *tiny, "--epochs", "1", "--clips-per-epoch", "4", "--batch-size", "2",
                   "--train-scenes", "7", "--val-scenes", "7", "--workers", "0", "--out", str(tmp_path))
    assert done.returncode == 0, done.stderr
    assert "validation accuracy" in done.stderr and (tmp_path / "model.pt").is_file()
    assert "--epochs 1" in (tmp_path / "TRAINING.md").read_text()
    done = run_cli("train", "--new-head", "--out", str(tmp_path))
    assert done.returncode == 2 and "--checkpoint" in done.stderr
    done = run_cli("train", "--data", str(tmp_path / "nothing"), "--out", str(tmp_path))
    assert done.returncode == 2 and "does not exist" in done.stderr
