"""The shipped per-person demo model: it loads from its config, was trained on the clips that
config feeds it, and scores fresh group scenes as its TRAINING.md says."""

from __future__ import annotations

import pytest

from streamrec.checkpoints import load_checkpoint, load_model
from streamrec.config import REPO_ROOT, load_config, load_labels
from streamrec.training import GroupScenes, PersonScore, keyframe_set, predict_boxes

FRESH_SEED = 31337  # never used by its training (seeds 0 to 5: its training, validation and test scenes)
TOLERANCE = 0.1  # three fresh scenes (about 110 keyframes) against the recorded 16


@pytest.fixture(scope="module")
def config():
    config = load_config("slowfast_tiny_roi")
    assert config.checkpoint, "configs/slowfast_tiny_roi.yaml names no checkpoint"
    return config


@pytest.fixture(scope="module")
def checkpoint(config):
    return load_checkpoint(REPO_ROOT / config.checkpoint)


def test_shipped_person_model_is_small_documented_and_trained_on_what_its_config_feeds_it(config, checkpoint):
    path = REPO_ROOT / config.checkpoint
    assert path.stat().st_size <= 5 * 2**20
    assert checkpoint.labels == load_labels(config)
    assert checkpoint.metadata["command"].startswith("python run_stream.py train --config slowfast_tiny_roi")
    assert checkpoint.config["clip"] == config.to_dict()["clip"]  # letterboxed at 128 px
    assert checkpoint.config["model"] == config.to_dict()["model"]
    report = (path.parent / "TRAINING.md").read_text()
    assert f"mAP **{checkpoint.metadata['test_map']:.4f}**" in report


def test_shipped_person_model_scores_fresh_scenes_as_recorded(config, checkpoint):
    labels = load_labels(config)
    model = load_model(config)
    fresh = GroupScenes(labels, 3, seed=FRESH_SEED, split=2)
    keyframes = keyframe_set(fresh, config.clip)
    logits = predict_boxes(model, config.clip, keyframes.clips, keyframes.boxes)
    score = PersonScore.of(logits, keyframes.keys, keyframes.people, labels, fresh.background)
    recorded = checkpoint.metadata
    assert abs(score.overall - recorded["test_map"]) <= TOLERANCE, (score.overall, recorded["test_map"])
    assert abs(score.boxes.overall - recorded["test_box_accuracy"]) <= TOLERANCE
