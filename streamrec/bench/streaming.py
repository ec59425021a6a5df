"""What a hop costs, clip model against its streaming form, and what the streaming form changes
(issue 21)::

    python run_stream.py bench streaming --markdown BENCHMARKS.md --json streaming.json
    python -m streamrec.bench.streaming --markdown BENCHMARKS.md --json streaming.json   # the same

**Cost**, per config, hop and streaming form (delayed-exact and causal): GFLOPs of one hop
(counted as `streamrec.bench.flops` counts: the clip model runs a whole clip every hop; a
streaming form one call over the hop's new frames) and the ONNX Runtime CPU engine's median
time per call at each batch (``--batches``: 1, and 4, where streams share a call), the engines'
calls taking turns so all see the same load; hops/s is the batch over it. Beside them, the clip
model exported for one call's new frames alone ("no state": zero padding in time instead of
carried steps, so the same convolutions as a streaming call and
none of its state's copies): what a streaming call could reach on this engine if carrying its
state cost nothing. A hop that is not a whole number of the streaming form's units has no
streaming row, and the table says why.

**Accuracy**, for a config with a checkpoint: generated surveillance videos (the seeds ``eval
--seed`` derives, rendered straight from the generator at the training rate instead of through
an MP4), every hop of the clip model (the pipeline's sampling, `sampling.clip_indices`) and of
each streaming form: delayed-exact and causal from the clip model's weights, and any checkpoint
`streamrec.training.distill` made (``--distilled``). Against the clip model on exactly the window
a streaming hop's logits describe (Slow every alpha-th Fast frame, as streamed: only the window's
edges differ, where the clip model pads with zeros and the stream has real frames), and against
the clip model's own hop ending there. Events: the pipeline's own tracker and scorer
(`evaluation.replay`, `score_segments`) over each model's hops, with the config's postprocess; a
streaming hop is stamped with the window its logits describe (its start) and the time they came
out (its end), so its detection delay includes the form's delay.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import shlex
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from streamrec.commands.flags import MAX_MINUTES, non_negative_int, video_minutes
from streamrec.config import RANGES, ClipConfig, Config, StreamingConfig, load_config, load_labels
from streamrec.errors import StreamrecError

log = logging.getLogger(__name__)

DEFAULT_CONFIGS = ("slowfast_tiny", "slowfast_r50_8x8")
DEFAULT_HOPS = (4, 8, 16)
DEFAULT_BATCHES = (1, 4)
MAX_BENCH_BATCH = 1024  # streams sharing a timed call


# --------------------------------------------------------------------------- cost


def count_gflops(module, inputs: tuple) -> float:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        module(*inputs)
    return counter.get_total_flops() / 1e9


def cost_rows(config: Config, hops: tuple[int, ...], iterations: int, threads: int, folder: Path,
              batches: tuple[int, ...] = (1,)) -> list[dict]:
    """One row per hop, batch and streaming form (delayed-exact, causal) where the hop allows it,
    else one for the clip model alone at the smallest batch; at each hop and batch the clip model,
    the no-state reference and the forms are timed in turn."""
    import torch

    from streamrec.backends.inputs import input_specs, step_input_specs
    from streamrec.backends.onnxruntime_backend import OnnxRuntimeEngine
    from streamrec.export import export_onnx, export_streaming_onnx, folded_model, streaming_metadata
    from streamrec.models.streaming import CAUSAL, DELAYED_EXACT, streaming_network, units_in_hop

    clip = config.clip
    model = folded_model(config)  # as `export_streaming` exports a streaming config's graph
    rng = np.random.default_rng(0)

    def clip_engine_and_inputs(clip_model, clip_config: ClipConfig, name: str) -> tuple:
        specs = input_specs(clip_config)
        inputs = {b: {s.name: rng.integers(0, 256, (b, *s.clip_shape), dtype=np.uint8) for s in specs}
                  for b in batches}
        path = export_onnx(clip_model, clip_config, folder / f"{config.name}_{name}.onnx")
        return OnnxRuntimeEngine(path, specs, config.model.num_classes, device="cpu", threads=threads,
                                 max_batch=max(batches)), inputs

    log.info("%s: exporting the clip model", config.name)
    clip_engine, clip_inputs = clip_engine_and_inputs(model, clip, "clip")
    clip_gflops = count_gflops(model, tuple(torch.from_numpy(a[:1]) for a in clip_inputs[batches[0]].values()))
    rows = []
    for hop in hops:
        row = {"hop": hop, "clip_gflops": round(clip_gflops, 3)}
        try:
            units = units_in_hop(model, clip, hop)
        except StreamrecError as err:
            (clip_ms,) = _time_in_turn([Infer(clip_engine, clip_inputs[batches[0]])], iterations)
            rows.append({**row, "batch": batches[0], **_per_hop("clip", clip_ms, batches[0]), "note": str(err)})
            continue
        forms = []
        for form in (DELAYED_EXACT, CAUSAL):
            network = streaming_network(model, clip, form=form, units=units)
            specs = step_input_specs(clip, network.frames_per_call())
            frames = {b: {s.name: rng.integers(0, 256, (b, *s.clip_shape), dtype=np.uint8) for s in specs}
                      for b in batches}
            state = network.zero_state(1)
            stream_gflops = count_gflops(network, (*(torch.from_numpy(frames[batches[0]][s.name][:1]) for s in specs),
                                                   state))
            log.info("%s: exporting the %s form for hop %d", config.name, form, hop)
            path = export_streaming_onnx(network, folder / f"{config.name}_{form}_hop{hop}.onnx",
                                         metadata={"streaming": streaming_metadata(network)})
            engine = OnnxRuntimeEngine(path, specs, config.model.num_classes, device="cpu", threads=threads,
                                       max_batch=max(batches))
            forms.append((form, network, stream_gflops, engine, frames))
        log.info("%s: exporting the clip model for one call's new frames (no state) at hop %d", config.name, hop)
        new_frames = forms[0][1].frames_per_call()[clip.input_names[-1]]  # Fast's, or the only pathway's
        short = replace(clip, num_frames=new_frames)
        stateless, stateless_inputs = clip_engine_and_inputs(folded_model(config.replace(clip=short)), short,
                                                             f"nostate_hop{hop}")
        for batch in batches:
            clip_ms, stateless_ms, *stream_ms = _time_in_turn(
                [Infer(clip_engine, clip_inputs[batch]), Infer(stateless, stateless_inputs[batch]),
                 *(Step(e, f[batch]) for _, _, _, e, f in forms)], iterations)
            for (form, network, stream_gflops, engine, _), ms in zip(forms, stream_ms):
                rows.append({**row, "batch": batch, **_per_hop("clip", clip_ms, batch), "form": form.replace("_", "-"),
                             "units": units, "stream_gflops": round(stream_gflops, 3),
                             "gflops_ratio": round(stream_gflops / clip_gflops, 4), **_per_hop("stream", ms, batch),
                             "speedup": round(clip_ms / ms, 2), "stateless_ms": stateless_ms,
                             "stateless_speedup": round(clip_ms / stateless_ms, 2),
                             "state_mib": round(network.layout.size * 4 / 2**20, 2),
                             "delay_units": network.delay_units,
                             "delay_s": round(engine.streaming.delay_s(clip.train_fps), 3)})
    return rows


class Infer:
    """One timed call of a clip engine on fixed inputs."""

    def __init__(self, engine, inputs: dict):
        self.engine, self.inputs = engine, inputs

    def __call__(self) -> None:
        self.engine.infer(self.inputs)


class Step:
    """One timed call of a streaming engine on fixed new frames, carrying its state from call to call."""

    def __init__(self, engine, frames: dict):
        self.engine, self.frames = engine, frames
        self.state = engine.state.zeros(len(next(iter(frames.values()))))

    def __call__(self) -> None:
        _, self.state = self.engine.step({**self.frames, "state": self.state})


def _time_in_turn(calls: list, iterations: int) -> list[float]:
    """Median ms of each call (`Infer`, `Step`): one of each in turn, ``iterations`` times, after
    one untimed round (so every engine sees the same load)."""
    seconds: list[list[float]] = [[] for _ in calls]
    for _ in range(iterations + 1):
        for call, taken in zip(calls, seconds):
            start = time.perf_counter()
            call()
            taken.append(time.perf_counter() - start)

    def ms(taken: list[float]) -> float:
        """The median call after the first, to 0.01 ms: the JSON's speed-ups are ratios of these."""
        return round(1000 * statistics.median(taken[1:]), 2)

    return [ms(taken) for taken in seconds]


def _per_hop(engine: str, ms: float, batch: int) -> dict:
    """A call's milliseconds, and the hops a second it serves: one a clip of its batch."""
    return {f"{engine}_ms": round(ms, 2), f"{engine}_hops_per_s": round(1000 * batch / ms, 2)}


# --------------------------------------------------------------------------- accuracy


def surveillance_frames(seed: int, minutes: float, config: Config) -> tuple[np.ndarray, list]:
    """A generated surveillance video's frames at the training rate (each the latest frame at or
    before its time), fitted to the model's input, and its ground-truth segments."""
    from streamrec.procedural import surveillance_scene
    from streamrec.transforms import scene_frames

    scene = surveillance_scene(seed, minutes * 60)
    times = np.arange(int(scene.duration * config.clip.train_fps)) / config.clip.train_fps
    return scene_frames(scene, config.clip, times), scene.segments


def accuracy(config: Config, seed: int, count: int, minutes: float, hop: int, threads: int, folder: Path,
             distilled: list[str] = ()) -> dict:
    """Edges and events of the streaming forms against the clip model on generated videos: the
    delayed-exact form and the causal form from the clip weights (not distilled), and each
    ``distilled`` checkpoint (`streamrec.training.distill`) in the form its metadata names."""
    from streamrec.backends.inputs import input_specs
    from streamrec.backends.onnxruntime_backend import OnnxRuntimeEngine
    from streamrec.checkpoints import load_checkpoint
    from streamrec.evaluation import Hop, combine, overall, replay, score_segments, segments_from_events
    from streamrec.export import export_onnx, folded_model
    from streamrec.models.streaming import CAUSAL, DELAYED_EXACT
    from streamrec.sampling import clip_indices, split_hop_pathways, split_pathways

    clip = config.clip

    model = folded_model(config)  # as `export_streaming` exports a streaming config's graph
    variants = {"delayed-exact": StreamingVariant(model, config, DELAYED_EXACT, hop, threads, folder),
                "causal, not distilled": StreamingVariant(model, config, CAUSAL, hop, threads, folder)}
    for index, checkpoint in enumerate(distilled):
        made = load_checkpoint(checkpoint).metadata.get("streaming", {})
        form = made.get("form")
        if form not in (CAUSAL, DELAYED_EXACT):
            raise StreamrecError(f"{checkpoint} records no streaming form; make it with run_stream.py train "
                                 "--stream-from")
        as_made = config.replace(checkpoint=checkpoint, streaming=StreamingConfig(form, made.get("average_units")))
        variant = StreamingVariant(folded_model(as_made), config, form, hop, threads, folder, checkpoint,
                                   average_units=made.get("average_units"))
        how = "trained from labels" if (variant.distilled or {}).get("targets") == "labels" else "distilled"
        if made.get("average_units"):
            how += f", averaging {made['average_units']} units"
        name = f"{form.replace('_', '-')}, {how}"
        variants[name if name not in variants else f"{name} ({checkpoint})"] = variant
    clip_engine = OnnxRuntimeEngine(export_onnx(model, clip, folder / f"{config.name}_clip_acc.onnx"),
                                    input_specs(clip), config.model.num_classes, device="cpu", threads=threads,
                                    max_batch=8)
    labels = load_labels(config)
    scored = [name for name in labels if name not in config.postprocess.background_labels]
    fps = clip.train_fps
    seeds = np.random.SeedSequence([seed, 2]).generate_state(count)  # as `eval --seed` derives them
    per_video: dict[str, list] = {"clip": [], **{name: [] for name in variants}}
    compared: dict[str, dict[str, list]] = {name: {"same": [], "same_gap": [], "sampled": [], "sampled_gap": []}
                                            for name in variants}
    for video_seed in seeds:
        frames, truth = surveillance_frames(int(video_seed), minutes, config)
        clip_ends = list(range(clip.span - 1, len(frames), hop))  # the clip model at its own hops
        sampled = [clip_indices(clip, fps, end, 0, lambda i: i / fps) for end in clip_ends]
        by_end = dict(zip(clip_ends, _clip_probabilities(clip_engine, frames, sampled,
                                                        lambda batch: split_pathways(clip, batch))))
        clip_hops = [Hop((end - clip.span + 1) / fps, end / fps, by_end[end]) for end in clip_ends]
        per_video["clip"].append(score_segments(truth, segments_from_events(replay(clip_hops, labels,
                                                                                   config.postprocess)), scored))
        for name, variant in variants.items():
            hops, window_ends = variant.run(frames)
            same = _clip_probabilities(clip_engine, frames,
                                       [np.arange(end - clip.span, end, clip.sampling_rate) for end in window_ends],
                                       lambda batch: split_hop_pathways(clip, batch))  # Slow as streamed
            figures = compared[name]
            for streamed, end, same_window in zip(hops, window_ends, same):
                figures["same"].append(streamed.probabilities.argmax() == same_window.argmax())
                figures["same_gap"].append(np.abs(streamed.probabilities - same_window).max())
                if end - 1 in by_end:
                    figures["sampled"].append(streamed.probabilities.argmax() == by_end[end - 1].argmax())
                    figures["sampled_gap"].append(np.abs(streamed.probabilities - by_end[end - 1]).max())
            events = replay(hops, labels, config.postprocess)
            per_video[name].append(score_segments(truth, segments_from_events(events, variant.delay_s), scored))
    models = {"clip": {"form": "clip model, the pipeline's sampling", "delay_s": 0.0,
                       "events": overall(combine(per_video["clip"])).to_dict()}}
    for name, variant in variants.items():
        figures = compared[name]
        models[name] = {
            "form": variant.form, "checkpoint": variant.checkpoint, "delay_s": round(variant.delay_s, 3),
            **({"distilled": variant.distilled} if variant.distilled else {}),
            "events": overall(combine(per_video[name])).to_dict(),
            "hops": len(figures["same"]),
            "top1_agreement_same_window": round(float(np.mean(figures["same"])), 4),
            "max_probability_gap_same_window_median": round(float(np.median(figures["same_gap"])), 4),
            "max_probability_gap_same_window_p90": round(float(np.percentile(figures["same_gap"], 90)), 4),
            "top1_agreement_pipeline_sampling": round(float(np.mean(figures["sampled"])), 4),
            "max_probability_gap_pipeline_sampling_median": round(float(np.median(figures["sampled_gap"])), 4),
        }
    return {"seed": seed, "count": count, "minutes": minutes, "hop": hop, "models": models}


class StreamingVariant:
    """One streaming form of a model as an ONNX Runtime engine, run over a video's frames at one hop."""

    def __init__(self, model, config: Config, form: str, hop: int, threads: int, folder: Path,
                 checkpoint: str | None = None, average_units: int | None = None):
        from streamrec.backends.inputs import step_input_specs
        from streamrec.backends.onnxruntime_backend import OnnxRuntimeEngine
        from streamrec.export import export_streaming_onnx, streaming_metadata
        from streamrec.models.streaming import streaming_network_for_hop

        self.clip, self.hop, self.form = config.clip, hop, form
        self.checkpoint = checkpoint or "the clip model's"  # as the table names it
        self.network = streaming_network_for_hop(model, config.clip, hop, form=form, average_units=average_units)
        self.units = self.network.units
        tag = re.sub(r"[^A-Za-z0-9]+", "_", checkpoint or "clip")[-48:]
        path = export_streaming_onnx(self.network, folder / f"{config.name}_{form}_{tag}.onnx",
                                     metadata={"streaming": streaming_metadata(self.network)})
        self.engine = OnnxRuntimeEngine(path, step_input_specs(config.clip, self.network.frames_per_call()),
                                        config.model.num_classes, device="cpu", threads=threads, max_batch=1)
        self.delay_s = self.engine.streaming.delay_s(config.clip.train_fps)
        self.distilled = None
        record = Path(checkpoint).parent / "distill.json" if checkpoint else None  # what distillation wrote beside it
        if record is not None and Path(checkpoint).is_file() and record.is_file():
            made = json.loads(record.read_text())
            self.distilled = {k: made.get(k) for k in ("stream_from", "data", "form", "targets", "average_units", "steps",
                                                       "batch", "units", "lr", "seed", "seconds", "held_out",
                                                       "target_hops")}

    def run(self, frames: np.ndarray) -> tuple[list, list[int]]:
        """Every valid hop (stamped with the window its logits describe and the time they came out)
        and the source frame each window ends before."""
        from streamrec.evaluation import Hop
        from streamrec.postprocess import softmax
        from streamrec.sampling import split_hop_pathways

        clip, network = self.clip, self.network
        fps, unit = clip.train_fps, network.unit_frames
        hops, window_ends = [], []
        state = self.engine.state.zeros(1)
        for call in range(len(frames) // self.hop):
            fast = frames[call * self.hop:(call + 1) * self.hop:clip.sampling_rate][None]
            logits, state = self.engine.step({**split_hop_pathways(clip, fast), "state": state})
            arrived = (call + 1) * self.units  # units since the stream started
            if arrived < network.warmup_units:
                continue
            last_fast = (call + 1) * self.hop - clip.sampling_rate
            # stamped as the pipeline stamps it: the window the logits describe, known `delay_s` later
            start, end = self.engine.streaming.described_window(last_fast / fps, clip.sampling_rate, fps)
            hops.append(Hop(start, end, softmax(logits)[0]))
            window_ends.append((arrived - network.delay_units) * unit)  # the window ends before this frame
        return hops, window_ends


def _clip_probabilities(engine, frames: np.ndarray, windows: list[np.ndarray], pathways) -> list[np.ndarray]:
    """The clip model's class probabilities on each window of frame indices (``pathways`` makes the inputs)."""
    from streamrec.postprocess import softmax

    out = []
    for first in range(0, len(windows), engine.max_batch):
        batch = np.stack([frames[w] for w in windows[first:first + engine.max_batch]])
        out.extend(softmax(engine.infer(pathways(batch))))
    return out


# --------------------------------------------------------------------------- the document


def run(args: argparse.Namespace) -> dict:
    import torch

    from streamrec.bench.flops import COUNTING
    from streamrec.bench.machine import ResourceSampler
    from streamrec.bench.report import finish_document, start_document
    from streamrec.redaction import redact

    torch.set_num_threads(args.threads)
    document = start_document("streaming", ",".join(args.config))  # as `run_stream.py bench streaming` was typed
    if args.module_command:  # as `python -m streamrec.bench.streaming` was
        document["command"] = redact(args.module_command)
    sampler = ResourceSampler().start()
    results = {}
    with tempfile.TemporaryDirectory(prefix="streamrec-streaming-") as scratch:
        for name in args.config:
            config = load_config(name)
            entry = {"checkpoint": config.checkpoint or "random weights",
                     "cost": cost_rows(config, args.hops, args.iters, args.threads, Path(scratch), args.batches)}
            if config.checkpoint and args.videos:
                entry["accuracy"] = accuracy(config, args.seed, args.videos, args.minutes, 8, args.threads,
                                             Path(scratch), args.distilled.get(name, []))
            results[name] = entry
            _print_config(name, entry)
    return finish_document(document, sampler, results=results, threads=args.threads, iterations=args.iters,
                           counting=COUNTING, engine="onnxruntime (CPU graph)", batches=list(args.batches))


def _cost_columns():
    from streamrec.bench.report import Column

    return [Column("hop", "hop"), Column("batch", "batch"), Column("form", "form"), Column("units", "units"),
            Column("clip GFLOPs", "clip_gflops", 2),
            Column("stream GFLOPs", "stream_gflops", 3), Column("ratio", "gflops_ratio", 3),
            Column("clip ms", "clip_ms", 1), Column("stream ms", "stream_ms", 1),
            Column("clip hops/s", "clip_hops_per_s", 1), Column("stream hops/s", "stream_hops_per_s", 1),
            Column("speed-up", "speedup", 2), Column("no-state ms", "stateless_ms", 1),
            Column("no-state speed-up", "stateless_speedup", 2), Column("state MiB", "state_mib", 2),
            Column("delay s", "delay_s", 2)]


def _print_config(name: str, entry: dict) -> None:
    from streamrec.bench.report import table

    print(f"\n{name} ({entry['checkpoint']})")
    print(table(entry["cost"], _cost_columns()))
    for row in entry["cost"]:
        if "note" in row:
            print(f"hop {row['hop']}: {row['note']}")
    if "accuracy" in entry:
        print(_accuracy_text(entry["accuracy"]))


def _accuracy_text(acc: dict) -> str:
    lines = [f"{acc['count']} generated surveillance video(s) of {acc['minutes']:g} min (seed {acc['seed']}, as "
             f"`eval --seed`), hop {acc['hop']}. 'same window': the clip model on exactly the window the streaming "
             "logits describe, Slow = every alpha-th Fast frame (only the window's edges differ); 'pipeline "
             "sampling': the clip model's own hop ending there.", "",
             "| model | delay s | top-1 = clip, same window | prob. gap median / p90 | top-1 = clip, pipeline "
             "sampling | precision | recall | event F1 | median / p90 detection delay s |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name, m in acc["models"].items():
        e = m["events"]
        same = (f"{100 * m['top1_agreement_same_window']:.1f}% of {m['hops']}" if "hops" in m else "-")
        gap = (f"{m['max_probability_gap_same_window_median']:.3f} / {m['max_probability_gap_same_window_p90']:.3f}"
               if "hops" in m else "-")
        sampled = f"{100 * m['top1_agreement_pipeline_sampling']:.1f}%" if "hops" in m else "-"
        lines.append(f"| {name} | {m['delay_s']} | {same} | {gap} | {sampled} | {e['precision']:.3f} | "
                     f"{e['recall']:.3f} | {e['f1']:.3f} | {e['delay_s_median']} / {e['delay_s_p90']} |")
    for name, m in acc["models"].items():
        made = m.get("distilled")
        if made:
            held = made["held_out"]
            lines.append(f"\n{name}: `python run_stream.py train --stream-from {made['stream_from']} --data "
                         f"{made['data']} --form {made['form']}{_distill_flags(made)} --steps {made['steps']} --batch-size {made['batch']} "
                         f"--units {made['units']} --lr {made['lr']} --seed {made['seed']}` ({made['seconds']:.0f} s; on "
                         f"{held['sequences']} held-out sequences, KL to the teacher {held['before']['kl']} -> "
                         f"{held['after']['kl']}, top-1 agreement {held['before']['agreement']} -> "
                         f"{held['after']['agreement']})")
    return "\n".join(lines)


def _distill_flags(made: dict) -> str:
    """The flags of ``train --stream-from`` that chose the head's average and the targets, as typed
    (none at their defaults)."""
    flags = f" --average-units {made['average_units']}" if made.get("average_units") else ""
    flags += " --targets labels" if made.get("targets") == "labels" else ""
    return flags + (f" --target-hops {made['target_hops']}" if (made.get("target_hops") or 1) != 1 else "")


def markdown_body(document: dict) -> str:
    from streamrec.bench.report import table

    batches = document.get("batches", [1])
    parts = [f"Engine: {document['engine']}, {document['threads']} thread(s), batch {', '.join(map(str, batches))}; "
             f"per call the median of {document['iterations']} calls, the clip model and each streaming form called "
             "in turn; hops/s = batch / time a call (at batch B, B streams share each call). 'no-state': the clip "
             "model exported for one call's new frames alone, zero-padded in time, timed in the same turns (the "
             "streaming call's convolutions without its state's copies: what it could reach if carrying state "
             "cost nothing). "
             f"{document['counting']}, per clip. A clip model runs a whole clip every hop, so its cost per hop is "
             "the same at every hop. "
             "Written by `python run_stream.py bench streaming --markdown BENCHMARKS.md`."]
    for name, entry in document["results"].items():
        parts += ["", f"### {name} ({entry['checkpoint']})", "", table(entry["cost"], _cost_columns(), markdown=True)]
        parts += [f"\nHop {row['hop']}: {row['note']}" for row in entry["cost"] if "note" in row]
        if "accuracy" in entry:
            parts += ["", _accuracy_text(entry["accuracy"])]
    return "\n".join(parts)


def configure(parser: argparse.ArgumentParser) -> None:
    """The flags, for ``run_stream.py bench streaming`` and ``python -m streamrec.bench.streaming`` alike."""
    parser.add_argument("--config", action="append", help=f"config(s) to measure (default {', '.join(DEFAULT_CONFIGS)})")
    parser.add_argument("--hops", default=",".join(map(str, DEFAULT_HOPS)), help="hops in source frames (default %(default)s)")
    parser.add_argument("--iters", type=int, default=30, help="timed calls of each engine per hop and batch "
                                                              "(default %(default)s)")
    parser.add_argument("--batches", default=",".join(map(str, DEFAULT_BATCHES)),
                        help="batches to time each engine at (default %(default)s)")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads per engine call (default %(default)s)")
    parser.add_argument("--videos", type=int, default=3, help="generated surveillance videos for accuracy; 0: none "
                                                              "(default %(default)s)")
    parser.add_argument("--minutes", type=video_minutes, default=3.0,
                        help=f"length of each, at most {MAX_MINUTES} (default %(default)s)")
    parser.add_argument("--seed", type=non_negative_int, default=12345, help="their seed, as eval --seed (default %(default)s)")
    parser.add_argument("--distilled", action="append", default=[], metavar="CONFIG=CHECKPOINT",
                        help="a checkpoint of a config distilled by train --stream-from, evaluated in its "
                             "form beside the others (repeatable)")
    parser.add_argument("--json", type=Path, help="write the figures here")
    parser.add_argument("--markdown", type=Path, help="replace this benchmark's section of this file (BENCHMARKS.md)")
    parser.set_defaults(module_command=None)  # set as typed by `python -m streamrec.bench.streaming` (`parse_args`)


def checked(args: argparse.Namespace) -> argparse.Namespace:
    """The parsed flags as `run` takes them: lists parsed, ``--distilled`` grouped by config, ranges checked."""
    from streamrec.bench.engine import parse_counts

    args.config = args.config or list(DEFAULT_CONFIGS)
    longest_clip = int(RANGES["clip.num_frames"][1])  # a hop past a clip's frames skips frames
    args.hops = parse_counts(args.hops, "--hops", most=longest_clip)
    args.batches = parse_counts(args.batches, "--batches", most=MAX_BENCH_BATCH)
    if any("=" not in item for item in args.distilled):
        raise StreamrecError("--distilled takes CONFIG=CHECKPOINT, e.g. slowfast_tiny=runs/causal_tiny/model.pt")
    distilled: dict[str, list[str]] = {}
    for item in args.distilled:
        name, checkpoint = item.split("=", 1)
        distilled.setdefault(name, []).append(checkpoint)
    args.distilled = distilled
    if args.iters < 1 or args.threads < 1 or args.videos < 0:
        raise StreamrecError("--iters and --threads must be >= 1 and --videos >= 0")
    return args


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m streamrec.bench.streaming", description=__doc__.split("\n\n")[0])
    configure(parser)
    args = checked(parser.parse_args(argv))
    args.module_command = "python -m streamrec.bench.streaming " + shlex.join(argv)
    return args


def write(document: dict, args: argparse.Namespace) -> None:
    """The files ``--json`` and ``--markdown`` ask for."""
    from streamrec.bench.report import markdown_section, section_key, update_markdown, write_json

    if args.json:
        write_json(document, args.json)
    if args.markdown:
        title = "streaming: per-hop cost and accuracy, clip model vs its streaming forms (issue 21)"
        update_markdown(args.markdown, section_key(document, "cpu"),
                        markdown_section(document, title, markdown_body(document)))


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        args = parse_args(sys.argv[1:] if argv is None else argv)
        write(run(args), args)
    except StreamrecError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
