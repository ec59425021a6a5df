"""Distilling a streaming form from its clip model on unlabelled footage (`streamrec.training.distill`)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from conftest import run_cli, write_video
from streamrec.checkpoints import checkpoint_config, load_checkpoint, load_model
from streamrec.config import StreamingConfig, config_from_dict, load_config, streaming_hop_frames
from streamrec.errors import StreamrecError
from streamrec.models.streaming import CAUSAL
from streamrec.cli import main
from streamrec.training.distill import (FolderFootage, ProceduralFootage, config_that_runs, distill, kl_to,
                                       label_targets, stream_inputs, teacher_targets)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_targets_are_the_clip_model_on_each_window_smoothed_over_the_ones_before():
    config = load_config("slowfast_tiny")
    teacher = load_model(config)
    fast = torch.randint(0, 256, (1, 4 * 7, 96, 96, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    targets = teacher_targets(teacher, config.clip, fast, clip_units=4, rate=4, target_hops=2)
    assert targets.shape == (1, 4, 7)
    with torch.no_grad():
        each = [teacher(*stream_inputs(fast[:, 4 * (u - 4):4 * u], 4)).softmax(-1)[0] for u in range(4, 8)]
    assert torch.allclose(targets[0, 0], each[0], atol=1e-6)  # the first window has none before it
    for w in range(1, 4):
        assert torch.allclose(targets[0, w], (each[w - 1] + each[w]) / 2, atol=1e-6)
    assert (each[0] - each[3]).abs().max() > 1e-3  # windows differ, so the smoothing is seen


def test_label_targets_label_each_window_as_clip_training_does():
    from streamrec.evaluation import Segment
    from streamrec.training.windows import window_label

    labels = ["standing still", "jumping", "falling down"]
    segments = [Segment(3.0, 4.0, "jumping"), Segment(7.0, 7.8, "falling down")]  # background between
    targets = label_targets(segments, 1.0, 24, 0.25, 8, labels, "standing still")  # windows of 2 s every 0.25 s
    assert targets.shape == (24, 3) and set(targets.sum(-1).tolist()) <= {0.0, 1.0}
    for w in range(24):
        end = 1.0 + (8 + w) * 0.25
        label = window_label(segments, end - 2.0, end, "standing still")
        assert targets[w].tolist() == ([0.0] * 3 if label is None else [float(n == label) for n in labels])
    assert targets[:, 1].sum() > 0 and targets[:, 2].sum() > 0 and targets[:, 0].sum() > 0
    assert (targets.sum(-1) == 0).any()  # an ambiguous window is left out, as clip training leaves it


def test_the_loss_leaves_out_windows_without_a_target():
    logits = torch.tensor([[[2.0, 0.0], [0.0, 5.0]]])
    one_hot = torch.tensor([[[1.0, 0.0], [0.0, 0.0]]])
    assert torch.allclose(kl_to(one_hot, logits), -logits[0, 0].log_softmax(-1)[0])  # the cross-entropy of row 0
    assert kl_to(torch.zeros(1, 2, 2), logits).item() == 0.0


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


def test_footage_draws_every_second_alike_not_every_file(tmp_path):
    """A week of recordings has files of every length: a stretch comes from a file in proportion
    to its length (here 300 frames of blue and 30 of red: about 10 draws of 11 blue, not half)."""
    import cv2

    config = load_config("slowfast_tiny")
    (tmp_path / "videos").mkdir()
    for name, frames, colour in (("long.avi", 300, (255, 0, 0)), ("short.avi", 30, (0, 0, 255))):  # BGR
        writer = cv2.VideoWriter(str(tmp_path / "videos" / name), cv2.VideoWriter_fourcc(*"MJPG"), 30.0, (64, 48))
        for _ in range(frames):
            writer.write(np.full((48, 64, 3), colour, dtype=np.uint8))
        writer.release()
    footage = FolderFootage(tmp_path / "videos", config.clip)
    rng = np.random.default_rng(0)
    blue = [footage.sequence(rng, 8)[..., 2].mean() > 128 for _ in range(200)]  # RGB: blue is channel 2
    assert 0.84 <= np.mean(blue) <= 0.97, np.mean(blue)


def _recording(path, frames: int, keep_bytes=None):
    """A real MJPG AVI of random frames, cut to ``keep_bytes`` (after its list of frames begins) as
    a recorder killed mid-write leaves it: the header still counts every frame."""
    import cv2

    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 30.0, (64, 48))
    rng = np.random.default_rng(0)
    for _ in range(frames):
        writer.write(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8))
    writer.release()
    if keep_bytes is not None:
        data = path.read_bytes()
        path.write_bytes(data[:data.index(b"movi") + keep_bytes])
    return path


def _decodable(path) -> int:
    import cv2

    capture, count = cv2.VideoCapture(str(path)), 0
    while capture.read()[0]:
        count += 1
    return count


def test_footage_from_a_recording_cut_off_mid_write_keeps_to_the_frames_that_decode(tmp_path, caplog):
    config = load_config("slowfast_tiny")
    (tmp_path / "videos").mkdir()
    cut = _recording(tmp_path / "videos" / "cut.avi", 240, keep_bytes=60_000)
    decodable = _decodable(cut)
    assert 0 < decodable < 120  # the header says 240
    footage = FolderFootage(tmp_path / "videos", config.clip)
    rng = np.random.default_rng(0)
    sequences = [footage.sequence(rng, 16) for _ in range(12)]  # a stretch from a random start, often past the cut
    assert all(s.shape == (16, 96, 96, 3) for s in sequences)
    (video,) = footage.videos
    assert video.frames <= decodable
    said = [r.getMessage() for r in caplog.records if "stops decoding" in r.getMessage()]
    assert len(said) == 1 and "cut.avi" in said[0] and "header says 240" in said[0]  # once, however often it is cut

    (tmp_path / "dead").mkdir()
    _recording(tmp_path / "dead" / "header_only.avi", 60, keep_bytes=40)
    assert _decodable(tmp_path / "dead" / "header_only.avi") == 0
    (tmp_path / "dead" / "notes.mp4").write_bytes(b"not a video")
    dead = FolderFootage(tmp_path / "dead", config.clip)  # the header opens
    assert [v.path.name for v in dead.videos] == ["header_only.avi"]
    assert any("left out 1 file(s)" in r.getMessage() and "notes.mp4" in r.getMessage() for r in caplog.records)
    with pytest.raises(StreamrecError, match="no video in .* decodes a frame"):
        dead.sequence(rng, 16)
    assert any("decodes no frame; left out" in r.getMessage() for r in caplog.records)


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
    run = str(tmp_path / "run" / "model.pt")
    with pytest.raises(StreamrecError, match="was distilled for the causal streaming form, not to run as a clip model"):
        load_model(config.replace(checkpoint=run))
    distilled = load_model(config.replace(checkpoint=run, streaming=StreamingConfig(CAUSAL)))
    original = load_model(config)
    changed = [name for name, p in distilled.network.named_parameters()
               if not torch.equal(p, original.network.get_parameter(name))]
    assert changed  # and the clip model it started from is untouched on disk


def test_train_stream_from_distils_without_labels(tmp_path, capsys):
    out = tmp_path / "causal"
    assert main(["train", "--stream-from", "slowfast_tiny", "--out", str(out), "--steps", "2", "--batch-size", "1",
                 "--units", "6", "--threads", "1"]) == 0
    record = json.loads((out / "distill.json").read_text())
    assert (record["form"], record["data"], record["steps"], record["batch"], record["units"]) == \
        (CAUSAL, "procedural", 2, 1, 6)
    assert load_checkpoint(out / "model.pt").metadata["streaming"]["form"] == CAUSAL
    assert f"wrote {out / 'model.pt'}" in capsys.readouterr().err


def test_train_stream_from_labels_records_its_targets_and_average(tmp_path):
    out = tmp_path / "labels"
    assert main(["train", "--stream-from", "slowfast_tiny", "--targets", "labels", "--average-units", "2", "--out",
                 str(out), "--steps", "2", "--batch-size", "1", "--units", "6", "--threads", "1"]) == 0
    record = json.loads((out / "distill.json").read_text())
    assert (record["targets"], record["target_hops"], record["average_units"], len(record["losses"])) == \
        ("labels", 1, 2, 2)
    made = load_checkpoint(out / "model.pt").metadata["streaming"]
    assert (made["targets"], made["average_units"]) == ("labels", 2)


@pytest.mark.parametrize("argv, message", [
    (["--stream-from", "slowfast_tiny", "--data", "{tmp}/none"], "is not a folder"),
    (["--stream-from", "slowfast_tiny", "--units", "4"], "--units 4 leaves no room"),
    (["--stream-from", "slowfast_tiny", "--steps", "0"], "argument --steps: must be from 1 to 1000000000, got 0"),
    (["--stream-from", "slowfast_tiny", "--target-hops", "0"], "argument --target-hops: must be from 1 to 1024, got 0"),
    (["--stream-from", "slowfast_tiny", "--targets", "labels", "--data", "{tmp}"],
     "--targets labels reads the procedural generator's labels"),
    (["--targets", "labels"], "--targets set how a streaming model is distilled; add --stream-from"),
    (["--stream-from", "slowfast_tiny", "--form", "delayed_exact", "--average-units", "2"],
     "the delayed-exact form averages a whole clip"),
    (["--stream-from", "slowfast_tiny", "--epochs", "3", "--resume"],
     "--epochs, --resume do not apply to --stream-from"),
    (["--form", "causal"], "--form set how a streaming model is distilled; add --stream-from"),
    (["--stream-from", "no_such_config"], "no_such_config"),
    (["--stream-from", "slowfast_tiny_causal"],  # its checkpoint was distilled for the causal form: no teacher
     "was distilled for the causal streaming form, so it cannot teach as a clip model (--stream-from names the "
     "teacher); name the clip model it was distilled from: --stream-from slowfast_tiny"),
    (["--stream-from", "streamrec/weights/slowfast_tiny_causal/model.pt"], "so it cannot teach as a clip model"),
    (["--stream-from", "slowfast_tiny", "--device", "gpu"], "--device gpu is not a device streamrec runs on: use cpu, cuda, cuda:N or auto"),
    (["--device", "cpu"], "--device set how a streaming model is distilled; add --stream-from"),
    pytest.param(["--stream-from", "slowfast_tiny", "--device", "cuda"],
                 "--device cuda but no CUDA GPU is visible to PyTorch; use --device cpu",
                 marks=pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA GPU is visible")),
])
def test_bad_arguments_are_one_line(tmp_path, capsys, argv, message):
    argv = [arg.replace("{tmp}", str(tmp_path)) for arg in argv]
    assert main(["train", *argv, "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1 and err.startswith("error: "), err


def test_a_distilled_checkpoint_runs_only_in_the_form_it_was_distilled_for(tmp_path):
    out = tmp_path / "half"
    assert main(["train", "--stream-from", "slowfast_tiny", "--average-units", "2", "--out", str(out), "--steps", "1",
                 "--batch-size", "1", "--units", "6", "--threads", "1"]) == 0
    config = load_config("slowfast_tiny_causal").replace(checkpoint=str(out / "model.pt"))
    with pytest.raises(StreamrecError) as err:
        load_model(config.replace(streaming=StreamingConfig(CAUSAL)))  # averaging a whole clip
    assert str(err.value).endswith("not to run with streaming.form=causal; set streaming.form=causal and "
                                   "streaming.average_units=2"), err.value
    assert load_model(config.replace(streaming=StreamingConfig(CAUSAL, 2))) is not None


@pytest.mark.parametrize("run_with", ["--config", "--checkpoint"])
def test_a_distilled_model_runs_from_its_folder_with_no_other_flag(tmp_path, video_file, run_with):
    """The run writes the teacher's config in the form it was distilled for as ``config.yaml``, as
    clip training does, and the checkpoint records it too: either runs it, streaming, as the
    command's last line says."""
    out = tmp_path / "half"
    trained = run_cli("train", "--stream-from", "slowfast_tiny", "--average-units", "2", "--out", str(out), "--steps",
                      "1", "--batch-size", "1", "--units", "6", "--threads", "1", timeout=300)
    assert trained.returncode == 0, trained.stderr
    assert f"run it with `run_stream.py --config {out / 'config.yaml'}`" in trained.stderr
    assert checkpoint_config(out / "model.pt").streaming == StreamingConfig(CAUSAL, 2)
    written = load_config(out / "config.yaml")
    assert (written.streaming, written.checkpoint) == (StreamingConfig(CAUSAL, 2), str(out / "model.pt"))
    log = tmp_path / "events.jsonl"
    given = str(out / ("config.yaml" if run_with == "--config" else "model.pt"))
    result = run_cli("run", run_with, given, "--source", f"door={video_file}", "--publish", "none", "--quiet",
                     "--predictions", "--event-log", str(log), "--backend", "onnxruntime", timeout=120)
    assert result.returncode == 0, result.stderr
    predictions = [e for e in map(json.loads, log.read_text().splitlines()) if e["type"] == "prediction"]
    assert predictions and "warning" not in result.stderr.lower()


def test_a_clip_checkpoint_of_another_format_teaches_with_the_config_it_fits(tmp_path, capsys):
    """A PySlowFast checkpoint records no config: ``--stream-from CONFIG --checkpoint FILE`` names
    both, and the file alone is one line saying so; a config without weights is refused, since a
    randomly initialised teacher teaches nothing."""
    pyslowfast = tmp_path / "SLOWFAST_TINY.pyth"
    torch.save({"model_state": load_model(load_config("slowfast_tiny")).network.state_dict()}, pyslowfast)
    out = tmp_path / "from_pyslowfast"
    assert main(["train", "--stream-from", "slowfast_tiny", "--checkpoint", str(pyslowfast), "--out", str(out),
                 "--steps", "1", "--batch-size", "1", "--units", "6", "--threads", "1"]) == 0
    record = json.loads((out / "distill.json").read_text())
    assert (record["checkpoint"], record["device"]) == (str(pyslowfast), "cpu")
    capsys.readouterr()
    for argv, message in [
        (["--stream-from", str(pyslowfast)], f"checkpoint {pyslowfast} is a pyslowfast checkpoint and records no "
                                             "config; pass the matching config (e.g. --stream-from slowfast_r50_8x8 "
                                             f"--checkpoint {pyslowfast})"),
        (["--stream-from", "slowfast_r50_8x8"], "config slowfast_r50_8x8 names no checkpoint, so the teacher would be "
                                                "random weights; give the clip model's weights: --stream-from CONFIG "
                                                "--checkpoint FILE"),
        (["--stream-from", str(pyslowfast), "--checkpoint", str(pyslowfast)], "is a checkpoint already; give the "
                                                                               "weights once"),
    ]:
        assert main(["train", *argv, "--out", str(tmp_path / "refused")]) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1 and err.startswith("error: "), err
    assert not (tmp_path / "refused").exists()


@pytest.mark.parametrize("pipeline, hop", [({"hop_frames": 8}, 8), ({"hop_frames": 12}, 8), ({"hop_frames": 4}, 8),
                                           ({"hop_frames": 20}, 16), ({"hop_seconds": 1.0}, 24)])
def test_the_recorded_config_hops_a_whole_number_of_units(pipeline, hop):
    config = config_from_dict({**load_config("slowfast_tiny").to_dict(), "pipeline": pipeline,
                               "streams": [{"id": "door", "source": "door.mp4", "hop_frames": 6}]})
    recorded = config_that_runs(config, CAUSAL, None, unit_frames=8)
    assert streaming_hop_frames(recorded) == hop and recorded.streams == ()  # the cameras are the deployment's
    assert config_from_dict(recorded.to_dict()) == recorded  # valid, as `checkpoint_config` reads it back


def test_a_clip_model_s_weights_run_in_the_causal_form_are_said_to_be_undistilled(caplog, tmp_path):
    clip_weights = load_config("slowfast_tiny").checkpoint
    said = lambda: [r.getMessage() for r in caplog.records if "undistilled" in r.getMessage()]  # noqa: E731
    load_model(load_config("slowfast_tiny_causal"))  # distilled for it: nothing to say
    load_model(load_config("slowfast_tiny_streaming"))  # the delayed-exact form is the clip model's function
    assert said() == []
    config = load_config("slowfast_tiny_causal").replace(checkpoint=clip_weights)
    load_model(config)
    (message,) = said()
    assert "holds a clip model's weights, run in the causal streaming form undistilled" in message
    assert "run_stream.py train --stream-from" in message
    caplog.clear()  # distilling from that config: the clip weights load as the clip model they are
    distill(config, "procedural", tmp_path / "run", steps=1, batch=1, units=6, lr=1e-3, seed=0, held_out=1)
    assert said() == []
