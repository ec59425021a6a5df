"""Distilling a streaming form from its clip model on unlabelled footage (`streamrec.training.distill`)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from conftest import write_video
from streamrec.checkpoints import load_checkpoint, load_model
from streamrec.config import load_config
from streamrec.errors import StreamrecError
from streamrec.models.streaming import CAUSAL, streaming_network
from streamrec.cli import main
from streamrec.training.distill import FolderFootage, ProceduralFootage, distill, stream_inputs, teacher_targets


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_targets_are_the_clip_model_on_each_window_smoothed_over_the_ones_before():
    config = load_config("slowfast_tiny")
    teacher = load_model(config)
    fast = torch.randint(0, 256, (1, 4 * 7, 96, 96, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    targets = teacher_targets(teacher, config.clip, fast, clip_units=4, rate=4, smoothing=2)
    assert targets.shape == (1, 4, 7)
    with torch.no_grad():
        each = [teacher(*stream_inputs(fast[:, 4 * (u - 4):4 * u], 4)).softmax(-1)[0] for u in range(4, 8)]
    assert torch.allclose(targets[0, 0], each[0], atol=1e-6)  # the first window has none before it
    for w in range(1, 4):
        assert torch.allclose(targets[0, w], (each[w - 1] + each[w]) / 2, atol=1e-6)
    assert (each[0] - each[3]).abs().max() > 1e-3  # windows differ, so the smoothing is seen


def test_footage_comes_in_fitted_frames_at_the_training_rate(tmp_path):
    config = load_config("slowfast_tiny")
    rng = np.random.default_rng(0)
    generated = ProceduralFootage(config.clip, scene_seconds=12.0).sequence(rng, 40)
    assert generated.shape == (40, 96, 96, 3) and generated.dtype == np.uint8
    (tmp_path / "videos").mkdir()
    write_video(tmp_path / "videos" / "a.mp4", frames=45, fps=15.0)  # at half the rate: frames repeat
    sequence = FolderFootage(tmp_path / "videos", config.clip).sequence(rng, 40)
    assert sequence.shape == (40, 96, 96, 3)
    assert sum(np.array_equal(a, b) for a, b in zip(sequence, sequence[1:])) >= 15
    (tmp_path / "empty").mkdir()
    with pytest.raises(StreamrecError, match="no readable video"):
        FolderFootage(tmp_path / "empty", config.clip)


def test_a_short_run_moves_the_student_towards_the_teacher_and_writes_a_loadable_checkpoint(tmp_path):
    config = load_config("slowfast_tiny")
    record = distill(config, "procedural", tmp_path / "run", steps=6, batch=1, units=6, lr=1e-3, seed=0,
                     held_out=2, log_every=3)
    assert len(record["losses"]) == 6
    held = record["held_out"]
    assert held["after"]["kl"] < held["before"]["kl"]
    assert json.loads((tmp_path / "run" / "distill.json").read_text())["held_out"] == held
    checkpoint = load_checkpoint(tmp_path / "run" / "model.pt")
    assert checkpoint.metadata["streaming"]["form"] == CAUSAL
    distilled = load_model(config.replace(checkpoint=str(tmp_path / "run" / "model.pt")))
    original = load_model(config)
    changed = [name for name, p in distilled.network.named_parameters()
               if not torch.equal(p, original.network.get_parameter(name))]
    assert changed  # and the clip model it started from is untouched on disk
    assert streaming_network(distilled, config.clip, form=CAUSAL).layout == \
        streaming_network(original, config.clip, form=CAUSAL).layout


def test_train_stream_from_distils_without_labels(tmp_path, capsys):
    out = tmp_path / "causal"
    assert main(["train", "--stream-from", "slowfast_tiny", "--out", str(out), "--steps", "2", "--batch-size", "1",
                 "--units", "6", "--threads", "1"]) == 0
    record = json.loads((out / "distill.json").read_text())
    assert (record["form"], record["data"], record["steps"], record["batch"], record["units"]) == \
        (CAUSAL, "procedural", 2, 1, 6)
    assert load_checkpoint(out / "model.pt").metadata["streaming"]["form"] == CAUSAL
    assert f"wrote {out / 'model.pt'}" in capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["--stream-from", "slowfast_tiny", "--data", "{tmp}/none"], "is not a folder"),
    (["--stream-from", "slowfast_tiny", "--units", "4"], "--units 4 leaves no room"),
    (["--stream-from", "slowfast_tiny", "--steps", "0"], "--steps, --batch-size, --units and --threads must be"),
    (["--stream-from", "slowfast_tiny", "--epochs", "3", "--resume"],
     "--epochs, --resume do not apply to --stream-from"),
    (["--form", "causal"], "--form set how a streaming model is distilled; add --stream-from"),
    (["--stream-from", "no_such_config"], "no_such_config"),
])
def test_bad_arguments_are_one_line(tmp_path, capsys, argv, message):
    argv = [arg.replace("{tmp}", str(tmp_path)) for arg in argv]
    assert main(["train", *argv, "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1 and err.startswith("error: "), err
