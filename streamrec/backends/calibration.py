"""int8 for TensorRT: an explicitly quantized (Q/DQ) ONNX graph made with NVIDIA ModelOpt.

TensorRT 11 dropped implicit int8 calibration; the scales now live in the graph. ModelOpt
computes them from calibration clips, which must look like what the engine will serve: every
video in the user's folder is decoded, fitted with the capture thread's `fit_frame` and cut
at hop intervals with the scheduler's own frame choice, through the functions training uses
for the same purpose (`streamrec.training`; they import torch, as ModelOpt does).

NEVER RUN in this project's CI: ModelOpt is not installed there. `calibration_clips` is tested;
`quantize_int8` has only been written against ModelOpt's documented ``quantize`` API.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np

from streamrec.config import ClipConfig, PipelineConfig
from streamrec.errors import StreamrecError
from streamrec.sampling import hop_frames, split_pathways

log = logging.getLogger(__name__)
VIDEO_SUFFIXES = {".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v", ".mpg", ".mpeg", ".ts"}


def calibration_clips(clip: ClipConfig, folder: Path, count: int, pipeline: PipelineConfig) -> dict[str, np.ndarray]:
    """``count`` clips spread evenly over the videos in ``folder``, as engine inputs.

    Each video's candidate clips are those a stream would serve, one every hop from the first
    full clip (the hop `streamrec.sampling.hop_frames` gives ``pipeline`` at the video's frame
    rate); an even share of them is taken from each video.
    """
    from streamrec.training import cut_clip, decode_video, labelled_windows  # imports torch

    videos = sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() in VIDEO_SUFFIXES)
    if not videos:
        raise StreamrecError(f"no videos in {folder} ({', '.join(sorted(VIDEO_SUFFIXES))}); "
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


def quantize_int8(onnx_file: Path, clips: dict[str, np.ndarray], output: Path) -> Path:
    """A Q/DQ int8 copy of ``onnx_file``, calibrated on ``clips`` (entropy calibration)."""
    try:
        from modelopt.onnx.quantization import quantize
    except ImportError:
        raise StreamrecError("int8 needs NVIDIA ModelOpt to quantize the graph: "
                             "pip install 'nvidia-modelopt[onnx]'") from None
    output.parent.mkdir(parents=True, exist_ok=True)
    quantize(onnx_path=str(onnx_file), quantize_mode="int8", calibration_data=clips,
             calibration_method="entropy", output_path=str(output))
    if not output.is_file():
        raise StreamrecError(f"ModelOpt did not write {output}; see its messages above")
    return output
