"""``bench compare``: one video file, one set of weights, processed two ways in one run.

(a) this project: the file through the real pipeline (capture thread, ring buffer,
    scheduler, the chosen engine, postprocessing, events), offline, so every hop is served;
(b) the usual way: PySlowFast's demo loop (`streamrec.bench.baseline.DemoLoop`): 64 frames
    read into a list, float32 preprocessing on the CPU, PyTorch eager float32 at batch 1,
    one prediction per window.

Both sides read the same file from disk and decode it with OpenCV; neither side's one-off
set-up (loading the model, building an engine, the first warm-up call) is counted. Reported
per side: clips (predictions) per second of wall time, video frames per second of wall
time (at or above the file's frame rate means it keeps up with a live camera), the hop and
so the predictions per second of video, and the time from reading a clip's newest frame to
its prediction; and the ratios of the two sides. For the pipeline that latency is taken
from its own prediction events; processing a file, its reader may run a few hops ahead of
the engine, so this is an upper bound of what the same engine shows on a live camera
(``bench pipeline`` measures that).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections import Counter
from pathlib import Path

import cv2
import numpy as np

from streamrec.backends import Engine
from streamrec.bench.baseline import DemoLoop, EagerEngine, EagerModel
from streamrec.bench.engine import random_inputs
from streamrec.bench.pipeline import MeteredEngine, prediction_latencies
from streamrec.bench.report import Column, new_figure, save_figure, table
from streamrec.bench.timing import latency_summary
from streamrec.config import Config, EventsConfig, StreamConfig
from streamrec.errors import StreamrecError
from streamrec.events import EventBus, MemorySink
from streamrec.sources import SyntheticSource

log = logging.getLogger(__name__)


def shared_weights(config: Config, directory: Path) -> tuple[Config, str]:
    """A config whose weights both sides load, and a description of them.

    A config without a checkpoint gets random weights each time its model is built, so the
    engine exported for the pipeline and the baseline's network would be two different
    networks. Such weights are drawn once (seed 0) and saved as a checkpoint in ``directory``
    for both sides to load; the same seed gives the same file, so the export cache is reused.
    """
    if config.checkpoint:
        return config, f"checkpoint {Path(config.checkpoint).name}"
    import torch

    from streamrec.checkpoints import load_model, save_checkpoint

    with torch.random.fork_rng():
        torch.manual_seed(0)
        network = load_model(config)
    path = directory / f"{config.name or config.model.arch}.random-seed0.pt"
    save_checkpoint(path, network, config, metadata={"note": "random weights (seed 0) for bench compare"})
    return config.replace(checkpoint=str(path)), "random weights (seed 0; the config names no checkpoint)"


def synthetic_video(path: Path, frames: int, size: str, fps: float = 30.0) -> Path:
    """A real MP4 file of moving synthetic content, for a comparison without a video of one's own."""
    source = SyntheticSource.from_spec(f"synthetic:size={size},fps={fps:g}")
    source.open()
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (source.width, source.height))
    for index in range(frames):
        writer.write(cv2.cvtColor(source.render(index), cv2.COLOR_RGB2BGR))
    writer.release()
    return path


def first_frames(source: Path, frames: int, path: Path) -> Path:
    """The first ``frames`` frames of a video as a new MP4 file, so both sides read exactly the same input."""
    capture = cv2.VideoCapture(str(source))
    if not capture.isOpened():
        raise StreamrecError(f"cannot decode video file '{source}'; check it is a video OpenCV/FFmpeg can read")
    fps = capture.get(cv2.CAP_PROP_FPS) or 30.0
    size = (int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)), int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT)))
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, size)
    written = 0
    while written < frames:
        ok, frame = capture.read()
        if not ok:
            break
        writer.write(frame)
        written += 1
    capture.release()
    writer.release()
    return path


def side_figures(side: str, clips: int, frames: int, wall_s: float, hop_frames: int, fps: float | None,
                 latencies_s: list[float], **extra) -> dict:
    frames_per_s = frames / wall_s if wall_s > 0 else None
    return {
        "side": side,
        "clips": clips,
        "frames": frames,
        "wall_s": round(wall_s, 3),
        "clips_per_s": round(clips / wall_s, 4) if wall_s > 0 else None,
        "frames_per_s": round(frames_per_s, 2) if frames_per_s else None,
        "video_fps": round(fps, 3) if fps else None,
        "realtime_factor": round(frames_per_s / fps, 3) if frames_per_s and fps else None,
        "hop_frames": hop_frames,
        "predictions_per_video_s": round(fps / hop_frames, 3) if fps else None,
        **latency_summary(latencies_s),
        **extra,
    }


def run_baseline(model: EagerModel, config: Config, video: Path) -> dict:
    """The PySlowFast demo loop over the file, after one untimed warm-up prediction."""
    loop = DemoLoop(model, config.clip)
    loop.warm_up()
    device = model.device.type
    log.info("baseline: PySlowFast demo loop, PyTorch eager float32, batch 1, on %s", device)
    run = loop.run(str(video))
    if not run.windows:
        raise StreamrecError(f"{video} has {run.frames_read} frames, fewer than one {loop.window}-frame window; "
                             "give a longer video or a larger --frames")
    windows = run.windows
    return side_figures(
        "PySlowFast demo loop (PyTorch eager fp32, batch 1)", len(windows), run.frames_read, run.wall_s, loop.window,
        run.fps, [w.predicted - w.newest_frame_read for w in windows],
        device=device, backend="eager", precision="fp32", batch=1,
        read_s=round(sum(w.read_s for w in windows), 3),
        preprocess_s=round(sum(w.preprocess_s for w in windows), 3),
        infer_s=round(sum(w.infer_s for w in windows), 3),
    )


def run_project(config: Config, engine: Engine, labels: list[str], video: Path) -> dict:
    """The file through the pipeline, offline; the warm-up call the pipeline makes first is not counted."""
    from streamrec.pipeline import Pipeline

    metered, predictions = MeteredEngine(engine), MemorySink({"prediction"})
    bus = EventBus([predictions])
    offline = config.replace(
        streams=(StreamConfig(id="input", source=str(video)),),
        pipeline=dataclasses.replace(config.pipeline, realtime=False),
        events=EventsConfig(publish=None, stdout=False, predictions=True, event_log=None))
    pipeline = Pipeline(offline, metered, labels, bus)
    log.info("project: the pipeline with the %s engine, hop %d", engine.name, config.pipeline.hop_frames)
    start = time.monotonic()
    try:
        pipeline.run()
    finally:
        bus.close()
    wall = time.monotonic() - start - metered.calls[0][1]
    stats = pipeline.stats()["input"]
    latencies = np.array(prediction_latencies(predictions).get("input", [])) / 1000.0
    calls = f", {engine.parallel_calls} calls at once" if engine.parallel_calls > 1 else ""
    return side_figures(
        f"streamrec pipeline ({engine.name} {config.engine.precision}{calls})", sum(b for _, _, b in metered.calls[1:]),
        stats.frames_captured, wall, config.pipeline.hop_frames, stats.source_fps, list(latencies),
        device=engine.device, backend=engine.name, precision=config.engine.precision,
        batch=Counter(b for _, _, b in metered.calls[1:]).most_common(1)[0][0] if metered.calls[1:] else None,
        infer_s=round(sum(d for _, d, _ in metered.calls[1:]), 3),
    )


def same_model_check(model: EagerModel, engine: Engine, config: Config) -> dict:
    """Both sides compute the same function: their logits for one random clip, compared.

    The project's engines fold batch norms and may run in reduced precision, so the logits
    differ by rounding; the top class should not.
    """
    inputs = random_inputs(config, batch=1, seed=1)
    baseline, project = EagerEngine(model).infer(inputs)[0], engine.infer(inputs)[0]
    return {"max_abs_logit_difference": float(np.abs(baseline - project).max()),
            "max_abs_logit": float(np.abs(baseline).max()),
            "same_top1": bool(baseline.argmax() == project.argmax())}


def ratios(project: dict, baseline: dict) -> dict:
    """Project over baseline for throughput; baseline over project for latency (above 1: the project is better)."""
    def over(a, b):
        return round(a / b, 3) if a and b else None

    return {
        "clips_per_s": over(project["clips_per_s"], baseline["clips_per_s"]),
        "frames_per_s": over(project["frames_per_s"], baseline["frames_per_s"]),
        "predictions_per_video_s": over(project["predictions_per_video_s"], baseline["predictions_per_video_s"]),
        "latency_p50_baseline_over_project": over(baseline["latency_ms_p50"], project["latency_ms_p50"]),
    }


# --------------------------------------------------------------------------- presentation

COLUMNS = [
    Column("side", "side"), Column("device", "device"), Column("clips", "clips"), Column("frames", "frames"),
    Column("wall s", "wall_s", 1), Column("clips/s", "clips_per_s", 3), Column("frames/s", "frames_per_s", 1),
    Column("x real time", "realtime_factor", 2), Column("hop", "hop_frames"),
    Column("predictions/video s", "predictions_per_video_s", 2), Column("p50 ms", "latency_ms_p50", 0),
    Column("p99 ms", "latency_ms_p99", 0), Column("in model s", "infer_s", 1),
]


def summary_text(document: dict, markdown: bool = False) -> str:
    sides = document["results"]  # [project, baseline]
    r = document["ratios"]
    lines = [table(sides, COLUMNS, markdown), "",
             f"Input: {document['input']['description']}; {document['input']['weights']}. "
             f"Latency: reading a clip's newest frame to its prediction. "
             f"\"in model s\": seconds inside the model calls, summed (more than the wall time where calls "
             f"ran side by side; the baseline also spent "
             f"{sides[1]['read_s']:.1f} s reading and {sides[1]['preprocess_s']:.1f} s "
             f"preprocessing).", ""]
    check = document["same_model"]
    lines.append(f"Same model on both sides: on one random clip the logits differ by at most "
                 f"{check['max_abs_logit_difference']:.1e} (largest logit {check['max_abs_logit']:.3g}); top class "
                 f"{'the same' if check['same_top1'] else 'DIFFERENT'}.")
    lines.append("")
    shown = lambda v: f"{v:.2f}x" if v is not None else "-"  # noqa: E731
    lines.append(f"Ratios (streamrec / demo loop, same run): clips/s **{shown(r['clips_per_s'])}**, "
                 f"frames/s {shown(r['frames_per_s'])}, predictions per video second "
                 f"{shown(r['predictions_per_video_s'])}; p50 latency {shown(r['latency_p50_baseline_over_project'])} "
                 f"lower.")
    return "\n".join(lines)


def plot(document: dict, path: str) -> None:
    """Throughput and latency of the two sides, as bars."""
    figure, (throughput, latency) = new_figure(2)
    sides = document["results"]  # [project, baseline]
    names = ["streamrec", "demo loop"]
    throughput.bar(names, [s["clips_per_s"] or 0 for s in sides], color=["tab:blue", "tab:grey"])
    throughput.set_ylabel("clips (predictions) per second")
    positions = np.arange(len(sides))
    latency.bar(positions - 0.2, [s["latency_ms_p50"] or 0 for s in sides], width=0.4, label="p50")
    latency.bar(positions + 0.2, [s["latency_ms_p99"] or 0 for s in sides], width=0.4, label="p99")
    latency.set_xticks(positions, names)
    latency.set_ylabel("newest frame read → prediction (ms)")
    latency.legend(fontsize=8)
    for axis in (throughput, latency):
        axis.grid(True, axis="y", alpha=0.3)
    save_figure(figure, path, f"bench compare: {document['config']} on {sides[0]['device']}")
