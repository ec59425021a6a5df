"""The shipped demo model: it loads from the default config and recognises fresh procedural data."""

from __future__ import annotations

import numpy as np
import pytest

from streamrec.checkpoints import load_checkpoint, load_model
from streamrec.config import REPO_ROOT, load_config, load_labels
from streamrec.evaluation import (
    combine,
    ground_truth_path,
    overall,
    read_ground_truth,
    replay,
    run_pipeline,
    score_segments,
    segments_from_events,
)
from streamrec.procedural import write_video, surveillance_scene
from streamrec.training import ProceduralVideos, evaluation_clips, predict

FRESH_SEED = 31337  # never used by training (seed 0) or by the validation (777) and test (12345) videos


@pytest.fixture(scope="module")
def config():
    config = load_config("slowfast_tiny", ["engine.threads=1"])
    assert config.checkpoint, "configs/slowfast_tiny.yaml names no checkpoint"
    return config


def test_shipped_checkpoint_is_small_and_documented(config):
    path = REPO_ROOT / config.checkpoint
    assert path.stat().st_size <= 5 * 2**20
    checkpoint = load_checkpoint(path)
    assert checkpoint.labels == load_labels(config)
    assert checkpoint.metadata["command"].startswith("python run_stream.py train")
    assert checkpoint.metadata["test_accuracy"] >= 0.95
    assert (path.parent / "TRAINING.md").is_file()


def test_shipped_model_reaches_its_accuracy_on_a_fresh_sample(config):
    labels = load_labels(config)
    model = load_model(config)
    fresh = ProceduralVideos(labels, count=7 * 8, seed=FRESH_SEED, split=2)
    clips, targets = evaluation_clips(fresh, config.clip)
    accuracy = (predict(model, config.clip, clips).argmax(axis=1) == targets).mean()
    assert accuracy >= 0.9  # 56 clips: the recorded >= 95% with room for sampling noise


def test_pipeline_events_on_a_fresh_video_match_their_replay_and_find_the_actions(config, tmp_path):
    video = write_video(surveillance_scene(FRESH_SEED, duration_s=40), tmp_path / "fresh.mp4")
    record = run_pipeline(config, [video])[video]
    labels = load_labels(config)
    actions = [e for e in record.events if e["type"] in ("action_start", "action_end")]
    replayed = replay(record.hops, labels, config.postprocess)
    assert [(e["type"], e["label"]) for e in actions] == [(e["type"], e["label"]) for e in replayed]
    assert np.allclose([e["clip_end"] for e in actions], [e["clip_end"] for e in replayed], atol=1e-3)
    assert np.allclose([e["onset"] for e in actions], [e["onset"] for e in replayed], atol=1e-3)
    scored = [n for n in labels if n not in config.postprocess.background_labels]
    truth = read_ground_truth(ground_truth_path(video))
    score = overall(combine([score_segments(truth, segments_from_events(record.events), scored)]))
    assert score.recall >= 0.5 and score.precision >= 0.5
