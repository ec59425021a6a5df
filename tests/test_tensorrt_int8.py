"""int8 calibration clips are cut exactly as the streaming scheduler cuts views, and ModelOpt is
called only where it calibrates on every clip (a stand-in of its ``quantize`` records the call;
ModelOpt itself cannot be installed here).
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from conftest import write_video
from streamrec.backends.calibration import calibration_clips, quantize_int8
from streamrec.config import PipelineConfig, load_config
from streamrec.errors import StreamrecError
from streamrec.ringbuffer import RingBuffer
from streamrec.scheduler import StreamSchedule
from streamrec.transforms import fit_frame


def scheduler_views(path, clip, hop_frames: int) -> list[dict[str, np.ndarray]]:
    """Every view an offline stream of ``path`` yields, through the real ring buffer and schedule."""
    capture = cv2.VideoCapture(str(path))
    fps = capture.get(cv2.CAP_PROP_FPS)
    ring = RingBuffer(4096, clip.crop_size, clip.crop_size)
    schedule = StreamSchedule("calibration", ring, clip, fps, hop_frames, offline=True, live_clock=False)
    views, index = [], 0
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        ring.write(fit_frame(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB), clip.short_side, clip.crop_size),
                   float(index), index / fps)
        index += 1
        while schedule.due():
            view = schedule.take()
            if view is not None:
                views.append(view.inputs)
    capture.release()
    return views


def test_calibration_clips_are_views_the_scheduler_serves(tmp_path):
    # frames no larger than the clip needs, so decoding for calibration resizes exactly as capture does
    config = load_config("slowfast_tiny")
    folder = tmp_path / "calibration"
    folder.mkdir()
    for seed in range(2):
        write_video(folder / f"camera{seed}.mp4", frames=75, size=(128, 96), seed=seed)

    clips = calibration_clips(config.clip, folder, count=6, pipeline=PipelineConfig(hop_frames=8))
    assert {name: a.shape for name, a in clips.items()} == {"slow": (6, 4, 96, 96, 3), "fast": (6, 16, 96, 96, 3)}

    served = [v for seed in range(2) for v in scheduler_views(folder / f"camera{seed}.mp4", config.clip, 8)]
    assert len(served) > 6
    for i in range(6):
        matches = [v for v in served if all(np.array_equal(v[name], clips[name][i]) for name in clips)]
        assert matches, f"calibration clip {i} is not a view the scheduler serves"
    # spread over both videos, not the first clips of the first one
    first_video = scheduler_views(folder / "camera0.mp4", config.clip, 8)
    from_first = sum(any(np.array_equal(v["fast"], clips["fast"][i]) for v in first_video) for i in range(6))
    assert from_first == 3


def test_calibration_takes_the_hop_a_stream_of_that_frame_rate_would(tmp_path):
    """``pipeline.hop_seconds`` wins over ``hop_frames`` at the video's frame rate, as in streaming."""
    clip = load_config("slowfast_tiny").clip
    for seed in range(2):
        write_video(tmp_path / f"camera{seed}.mp4", frames=75, size=(128, 96), seed=seed)  # 30 fps
    by_seconds = calibration_clips(clip, tmp_path, count=6, pipeline=PipelineConfig(hop_frames=99, hop_seconds=4 / 30))
    by_frames = calibration_clips(clip, tmp_path, count=6, pipeline=PipelineConfig(hop_frames=4))
    assert all(np.array_equal(by_seconds[name], by_frames[name]) for name in by_frames)


def test_calibration_needs_videos(tmp_path):
    with pytest.raises(StreamrecError, match="no videos in"):
        calibration_clips(load_config("slowfast_tiny").clip, tmp_path, count=4, pipeline=PipelineConfig())


def test_quantization_without_modelopt_says_what_to_install(tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "modelopt", None)
    with pytest.raises(StreamrecError, match="nvidia-modelopt"):
        quantize_int8(tmp_path / "model.onnx", {}, tmp_path / "model.int8.onnx")


@pytest.fixture
def fake_modelopt(monkeypatch):
    """``modelopt.onnx.quantization.quantize`` recording its arguments and writing its output."""
    import sys
    import types

    calls: list[dict] = []

    def quantize(**kwargs) -> None:
        calls.append(kwargs)
        Path(kwargs["output_path"]).write_bytes(b"q/dq graph")

    quantization = types.ModuleType("modelopt.onnx.quantization")
    quantization.quantize = quantize
    for name, module in (("modelopt", types.ModuleType("modelopt")), ("modelopt.onnx", types.ModuleType("modelopt.onnx")),
                         ("modelopt.onnx.quantization", quantization)):
        monkeypatch.setitem(sys.modules, name, module)
    return calls


def installed(monkeypatch, **versions) -> None:
    names = {"nvidia_modelopt": "nvidia-modelopt", "onnxruntime": "onnxruntime", "onnxruntime_gpu": "onnxruntime-gpu"}
    table = {names[key]: value for key, value in versions.items()}
    monkeypatch.setattr("streamrec.backends.calibration.installed_version", table.get)


@pytest.mark.parametrize("version", ["0.41.0", "0.33.1", "0.9.0"])
def test_modelopt_before_0_42_is_refused_before_it_calibrates_on_one_clip(tmp_path, monkeypatch, fake_modelopt,
                                                                           version):
    installed(monkeypatch, nvidia_modelopt=version, onnxruntime_gpu="1.24.2")
    with pytest.raises(StreamrecError, match=rf"ModelOpt {version} calibrates int8 on the last clip only.*>=0.42"):
        quantize_int8(tmp_path / "model.onnx", {}, tmp_path / "model.int8.onnx")
    assert fake_modelopt == []


def test_onnxruntime_and_onnxruntime_gpu_together_are_refused(tmp_path, monkeypatch, fake_modelopt):
    installed(monkeypatch, nvidia_modelopt="0.47.0", onnxruntime="1.32.0", onnxruntime_gpu="1.24.2")
    with pytest.raises(StreamrecError, match="onnxruntime and onnxruntime-gpu are both installed"):
        quantize_int8(tmp_path / "model.onnx", {}, tmp_path / "model.int8.onnx")
    assert fake_modelopt == []


@pytest.mark.parametrize("version", ["0.42.0", "0.47.0", "1.0.0rc1"])
def test_modelopt_from_0_42_quantizes_on_the_clips_given(tmp_path, monkeypatch, fake_modelopt, version):
    installed(monkeypatch, nvidia_modelopt=version, onnxruntime_gpu="1.24.2")
    clips = {"slow": np.zeros((4, 4, 96, 96, 3), np.uint8), "fast": np.ones((4, 16, 96, 96, 3), np.uint8)}
    output = quantize_int8(tmp_path / "model.onnx", clips, tmp_path / "out" / "model.int8.onnx")
    assert output.read_bytes() == b"q/dq graph"
    (call,) = fake_modelopt
    assert call["calibration_data"] is clips and call["quantize_mode"] == "int8"
    assert call["high_precision_dtype"] == "fp16"  # said, not left to ModelOpt's default of the day
    assert call["onnx_path"] == str(tmp_path / "model.onnx") and call["output_path"] == str(output)
