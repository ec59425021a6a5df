"""int8 for TensorRT: an explicitly quantized (Q/DQ) ONNX graph made with NVIDIA ModelOpt.

TensorRT 11 dropped implicit int8 calibration; the scales now live in the graph. ModelOpt
computes them from calibration clips, which must look like what the engine will serve: every
video in the user's folder is decoded, fitted with the capture thread's `fit_frame` and cut
at hop intervals with the scheduler's own frame choice, through the functions training uses
for the same purpose (`streamrec.training`; they import torch, as ModelOpt does).

ModelOpt from 0.42 only: before it, its calibration data list repeated one dictionary, so every
calibration step saw the last clip. ``nvidia-modelopt[onnx]`` brings ``onnxruntime-gpu``, which
shares its files with the ``onnxruntime`` package: an environment holding both has a broken
ONNX Runtime, so int8 goes in an environment without the ``onnxruntime`` extra (ModelOpt's
onnxruntime-gpu serves the onnxruntime backend there too). Both are checked before quantizing.
"""

from __future__ import annotations

import importlib.metadata
import logging
import math
import re
from pathlib import Path

import numpy as np

from streamrec.config import ClipConfig, PipelineConfig
from streamrec.errors import StreamrecError
from streamrec.sampling import hop_frames, split_pathways
from streamrec.sources import VIDEO_SUFFIXES

log = logging.getLogger(__name__)
MODELOPT_MIN = (0, 42)  # the first ModelOpt whose calibration sees every clip


def calibration_clips(clip: ClipConfig, folder: Path, count: int, pipeline: PipelineConfig) -> dict[str, np.ndarray]:
    """``count`` clips spread evenly over the videos in ``folder``, as engine inputs.

    Each video's candidate clips are those a stream would serve, one every hop from the first
    full clip (the hop `streamrec.sampling.hop_frames` gives ``pipeline`` at the video's frame
    rate); an even share of them is taken from each video.
    """
    from streamrec.training import cut_clip, decode_video, labelled_windows  # imports torch

    videos = sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() in VIDEO_SUFFIXES)
    if not videos:
        raise StreamrecError(f"no videos in {folder} ({', '.join(VIDEO_SUFFIXES)}); "
                             "point --calibration at a folder of clips like the cameras' footage")
    per_video = math.ceil(count / len(videos))
    clips = []
    for path in videos:
        video = decode_video(path, "", clip, pipeline.assumed_fps)
        ends = labelled_windows(video, clip, background=None)[0]  # window ends only; labels unused
        ends = ends[::hop_frames(pipeline, video.fps)]
        for end in ends[np.linspace(0, len(ends) - 1, min(per_video, len(ends))).round().astype(int)]:
            clips.append(cut_clip(video, int(end), clip))
    log.info("calibration: %d clips from %d videos", min(count, len(clips)), len(videos))
    return split_pathways(clip, np.stack(clips[:count]))


def installed_version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def check_quantizer_install() -> None:
    """ModelOpt new enough to calibrate on every clip, and one ONNX Runtime package, not two."""
    version = installed_version("nvidia-modelopt") or "0"
    numbers = tuple(int(part) for part in re.findall(r"\d+", version)[:2])
    if numbers < MODELOPT_MIN:
        raise StreamrecError(f"ModelOpt {version} calibrates int8 on the last clip only (fixed in "
                             f"{'.'.join(map(str, MODELOPT_MIN))}): pip install 'nvidia-modelopt[onnx]>=0.42'")
    if installed_version("onnxruntime") and installed_version("onnxruntime-gpu"):
        raise StreamrecError("onnxruntime and onnxruntime-gpu are both installed and overwrite each other's files; "
                             "ModelOpt needs onnxruntime-gpu: pip uninstall -y onnxruntime onnxruntime-gpu && "
                             "pip install 'nvidia-modelopt[onnx]>=0.42'")


def quantize_int8(onnx_file: Path, clips: dict[str, np.ndarray], output: Path) -> Path:
    """A Q/DQ int8 copy of ``onnx_file``, calibrated on ``clips`` (entropy calibration). What is
    not quantized runs in fp16, as TensorRT's int8 builds with the fp16 flag did: ModelOpt's own
    default (``high_precision_dtype``), named here so that a change of it cannot change engines."""
    try:
        from modelopt.onnx.quantization import quantize
    except ImportError:
        raise StreamrecError("int8 needs NVIDIA ModelOpt to quantize the graph: "
                             "pip install 'nvidia-modelopt[onnx]>=0.42' (in an environment without the "
                             "onnxruntime extra: it brings onnxruntime-gpu)") from None
    check_quantizer_install()
    output.parent.mkdir(parents=True, exist_ok=True)
    quantize(onnx_path=str(onnx_file), quantize_mode="int8", calibration_data=clips,
             calibration_method="entropy", high_precision_dtype="fp16", output_path=str(output))
    if not output.is_file():
        raise StreamrecError(f"ModelOpt did not write {output}; see its messages above")
    return output
