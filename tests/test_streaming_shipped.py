"""The shipped causal streaming demo model (streamrec/weights/slowfast_tiny_causal): distilled from
the shipped clip model with no labels, recorded, small, and as close to its teacher on fresh
footage as its record says."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from streamrec.checkpoints import load_checkpoint, load_model
from streamrec.config import load_config
from streamrec.models.streaming import streaming_network
from streamrec.training.distill import ProceduralFootage, evaluate, teacher_targets

REPO = Path(__file__).resolve().parents[1]
CONFIG = "slowfast_tiny_causal"


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_the_file_is_small_and_says_what_it_is():
    config = load_config(CONFIG)
    path = REPO / config.checkpoint
    record = json.loads((path.parent / "distill.json").read_text())
    assert path.stat().st_size < 2_000_000
    made = load_checkpoint(path).metadata["streaming"]
    assert config.streaming.form == made["form"] == record["form"] == "causal"
    assert config.streaming.average_units == made["average_units"] == record["average_units"] == 2
    assert record["stream_from"] == "slowfast_tiny" and record["data"] == "procedural"
    assert record["targets"] == "teacher"  # no labels read
    assert record["held_out"]["after"]["agreement"] > record["held_out"]["before"]["agreement"]
    assert "slowfast_tiny_causal/model.pt" in (REPO / "streamrec/weights/README.md").read_text()  # how it was made


def test_on_fresh_footage_it_follows_its_teacher_as_its_record_says():
    config = load_config(CONFIG)
    teacher_config = load_config("slowfast_tiny")
    record = json.loads((REPO / config.checkpoint).with_name("distill.json").read_text())
    teacher = load_model(teacher_config)
    average = config.streaming.average_units
    student = streaming_network(load_model(config), config.clip, form="causal", units=record["units"],
                                average_units=average)
    undistilled = streaming_network(teacher, config.clip, form="causal", units=record["units"], average_units=average)
    clip, rate = config.clip, max(student.rates)
    footage, rng = ProceduralFootage(clip), np.random.default_rng([4242, 7])  # seeds the distillation never drew
    frames = record["units"] * student.unit_frames
    sequences = [torch.from_numpy(footage.sequence(rng, frames)[None, ::clip.sampling_rate]) for _ in range(4)]
    windows = record["units"] - student.warmup_units + 1
    targets = [teacher_targets(teacher, clip, fast, student.clip_units, rate, record["target_hops"])[:, :windows]
               for fast in sequences]
    fresh = evaluate(student, targets, sequences, clip.alpha)
    before = evaluate(undistilled, targets, sequences, clip.alpha)
    assert fresh.kl < before.kl
    assert fresh.agreement >= record["held_out"]["after"]["agreement"] - 0.15, (fresh, record["held_out"])
