"""``bench engine``: one engine alone, per backend, precision and batch size.

Each case is warm-up calls, then timed calls on random clips of the config's input contract
(`streamrec.bench.timing`). Reported per case: latency percentiles of one ``infer`` call,
clips/s, the source frames/s those clips cover at the benchmark's hop (and so how many
cameras of a given frame rate that is), peak host RSS of the process (every engine of the run
is loaded at once; ``engine_load_rss_mib`` is what opening this one added), peak device memory
on a GPU, and the model's FLOPs per clip with the fraction of the device's peak reached.

``--parallel-calls`` times an engine the way the pipeline drives it with
``engine.parallel_calls``: that many threads calling it at once, each call on its share of the
cores; clips/s is then counted over wall-clock time, latency per call.

Besides the registered backends (`streamrec.backends`), three variants exist only here
(`VARIANTS`): ``eager`` times the usual way's model call (`streamrec.bench.baseline.EagerEngine`:
PyTorch eager float32, PyTorch's default threads), so every figure can be stated as a ratio to
it, measured in the same run; ``onnxruntime-plain`` times the exported graph without the CPU
rewrites; ``torch-compile`` times the torch backend's engine with its model compiled by
``torch.compile`` (CUDA graphs still on top), to see whether compiling pays on this GPU.
"""

from __future__ import annotations

import dataclasses
import logging
import sys
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Iterator

import numpy as np

from streamrec.backends import AUTO, Engine, all_precisions, backend_names, call_threads, create_engine
from streamrec.bench.flops import flops_per_clip, measure_peak_gflops
from streamrec.bench.machine import PeakRss, current_rss_mib, device_memory_mib
from streamrec.bench.report import Column, new_figure, save_figure, table
from streamrec.bench.timing import latency_summary, time_calls
from streamrec.config import Config, streaming_hop_frames
from streamrec.errors import StreamrecError
from streamrec.sampling import split_pathways

log = logging.getLogger(__name__)
VARIANTS = {  # engines timed only here, beside the registered backends
    "eager": "the usual way: PyTorch eager float32",
    "onnxruntime-plain": "the exported graph without the CPU rewrites",
    "torch-compile": "the torch backend's model through torch.compile (minutes to compile on a GPU)",
}
BACKENDS = ("eager", *backend_names(), "onnxruntime-plain", "torch-compile", AUTO)  # what --backend may list
PRECISIONS = all_precisions()


@dataclass(frozen=True)
class EngineBenchPlan:
    backends: tuple[str, ...]
    precisions: tuple[str, ...]
    batches: tuple[int, ...]
    parallel_calls: tuple[int, ...] = (1,)
    iterations: int = 20
    warmup: int = 3
    rounds: int = 1  # timed calls are split into this many rounds, interleaved across cases
    hop_frames: int = 8  # for frames/s: each clip serves one hop of a stream
    stream_fps: float = 30.0  # for "streams at this frame rate"
    peak_gflops: float | None = None  # the device's peak; None measures it


def parse_names(text: str, allowed: tuple[str, ...], flag: str) -> tuple[str, ...]:
    """A comma-separated list of names from ``allowed``, in the order given, without repeats."""
    names = tuple(dict.fromkeys(part.strip() for part in text.split(",") if part.strip()))
    unknown = [name for name in names if name not in allowed]
    if not names or unknown:
        raise StreamrecError(f"{flag} {text!r}: {'unknown ' + ', '.join(unknown) if unknown else 'empty list'}; "
                             f"use a comma-separated list of {', '.join(allowed)}")
    return names


def parse_counts(text: str, flag: str, most: int | None = None) -> tuple[int, ...]:
    """``1,2,4,8`` as sorted unique positive integers, each at most ``most`` if given."""
    try:
        counts = sorted({int(part) for part in text.split(",") if part.strip()})
    except ValueError:
        counts = []
    if not counts or counts[0] < 1:
        raise StreamrecError(f"{flag} {text!r} must be a comma-separated list of positive integers, e.g. 1,2,4,8")
    if most is not None and counts[-1] > most:
        raise StreamrecError(f"{flag} {text!r}: each must be at most {most}, got {counts[-1]}")
    return tuple(counts)


BENCH_PEOPLE_PER_CLIP = 3  # RoI engines are timed with this many person boxes a clip


def random_inputs(config: Config, batch: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Engine inputs for ``batch`` clips of random pixels (the timing does not depend on content);
    for a per-person model (a ``detection:`` section), `BENCH_PEOPLE_PER_CLIP` boxes a clip."""
    clip = config.clip
    rng = np.random.default_rng(seed)
    if config.streaming is not None:  # one hop's new frames (the engine's state is added by the caller: its size)
        from streamrec.backends.inputs import hop_input_specs

        return {s.name: rng.integers(0, 256, (batch, *s.clip_shape), dtype=np.uint8)
                for s in hop_input_specs(clip, streaming_hop_frames(config))}
    frames = rng.integers(0, 256, (batch, clip.num_frames, clip.crop_size, clip.crop_size, 3), dtype=np.uint8)
    inputs = split_pathways(clip, frames)
    if config.detection is not None:
        people = batch * BENCH_PEOPLE_PER_CLIP
        top_left = rng.uniform(0, clip.crop_size * 0.75, (people, 2))
        size = rng.uniform(clip.crop_size * 0.1, clip.crop_size * 0.25, (people, 2))
        index = np.repeat(np.arange(batch), BENCH_PEOPLE_PER_CLIP)[:, None]
        inputs["boxes"] = np.hstack([index, top_left, top_left + size]).astype(np.float32)
    return inputs


def open_engine(config: Config, backend: str, precision: str, max_batch: int, parallel_calls: int = 1) -> Engine:
    """The engine ``create_engine`` makes for this backend and precision, or the eager baseline."""
    if backend == "eager":
        if precision != "fp32":
            raise StreamrecError("the eager baseline is PyTorch float32 by definition; it has no " + precision)
        if parallel_calls > 1:
            raise StreamrecError("the eager baseline runs one call at a time, as the usual way does")
        from streamrec.backends.torch_backend import pick_device
        from streamrec.bench.baseline import EagerEngine, EagerModel

        return EagerEngine(EagerModel(config, str(pick_device(config.engine.device))), max_batch)
    if backend == "torch-compile":
        from streamrec.backends.torch_backend import TorchEngine

        return TorchEngine.from_config(config.replace(
            engine=dataclasses.replace(config.engine, precision=precision, parallel_calls=parallel_calls),
            pipeline=dataclasses.replace(config.pipeline, max_batch=max_batch)), compile_module=True)
    plain = backend == "onnxruntime-plain"
    if plain and precision == "int8":
        raise StreamrecError("onnxruntime-plain is the float graph without the CPU rewrites; an int8 graph never has "
                             "them, so onnxruntime int8 is the one to time")
    return create_engine(config.replace(
        engine=dataclasses.replace(config.engine, backend="onnxruntime" if plain else backend, precision=precision,
                                   cpu_graph=config.engine.cpu_graph and not plain, parallel_calls=parallel_calls),
        pipeline=dataclasses.replace(config.pipeline, max_batch=max_batch)))


@dataclass
class Case:
    """One backend, precision, batch size and number of parallel calls, and what its timed calls measured."""

    backend: str  # as asked (``auto`` stays ``auto``)
    precision: str
    batch: int
    parallel_calls: int
    engine: Engine
    device: str
    load_rss_mib: float | None  # how much the process grew when this engine was opened
    inputs: dict[str, np.ndarray] = field(default_factory=dict)
    durations: list[float] = field(default_factory=list)
    wall_s: float = 0.0
    rss_peak_mib: float | None = None
    device_memory: dict = field(default_factory=dict)


class EngineBench:
    """Runs a plan against one config.

    Every engine is opened first, then each case is timed ``iterations / rounds`` calls at a
    time, round after round, in alternating order: on a machine whose load drifts (other
    jobs starting or ending), each case sees the same mix of quiet and busy moments, so their
    ratios stay fair. The FLOP count and each device's peak are taken once.
    """

    def __init__(self, config: Config, plan: EngineBenchPlan):
        self.config = config
        self.plan = plan
        self.skipped: list[dict] = []
        self.peaks: dict[str, dict] = {}  # device -> {"gflops_per_s", "source"}
        self.flops: dict | None = None
        self._default_torch_threads = _default_torch_threads()

    def run(self) -> dict:
        cases = self._open_cases()
        per_round = -(-self.plan.iterations // self.plan.rounds)
        for round_index in range(self.plan.rounds):
            for case in cases if round_index % 2 == 0 else reversed(cases):
                if case.engine is not None:
                    self._time(case, self.plan.warmup if round_index == 0 else 0, per_round)
        results = [self._figures(case) for case in cases if case.engine is not None]
        _add_ratios(results)
        return {"results": results, "skipped": self.skipped, "flops": self.flops, "peaks": self.peaks}

    def _open_cases(self) -> list[Case]:
        cases = []
        for backend in self.plan.backends:
            for precision in self.plan.precisions:
                for parallel in self.plan.parallel_calls:
                    before = current_rss_mib()
                    with self._threads_for(backend, parallel):
                        try:
                            engine = open_engine(self.config, backend, precision, max(self.plan.batches), parallel)
                        except StreamrecError as err:
                            self._skip(backend, precision, None, str(err), parallel)
                            continue
                    grown = current_rss_mib() - before
                    if self.flops is None:
                        self._count_flops(engine)
                    cases += [Case(backend, precision, batch, parallel, engine, engine.device, round(grown, 1),
                                   random_inputs(self.config, batch)) for batch in self.plan.batches]
        return cases

    def _time(self, case: Case, warmup: int, iterations: int) -> None:
        log.info("timing %s %s batch %d, %d call(s) at once: %d warm-up + %d timed calls", case.backend,
                 case.precision, case.batch, case.parallel_calls, warmup, iterations)
        read_device_peak = _device_peak_meter(case.engine, case.device)
        try:
            with self._threads_for(case.backend, case.parallel_calls), PeakRss() as rss:
                timed = time_calls(case.engine, case.inputs, warmup, iterations)
        except StreamrecError as err:  # e.g. a batch larger than a fixed-batch engine file takes
            self._skip(case.backend, case.precision, case.batch, str(err), case.parallel_calls)
            case.engine = None
            return
        case.durations += timed.durations
        case.wall_s += timed.wall_s
        if rss.peak_mib is not None:
            case.rss_peak_mib = max(case.rss_peak_mib or 0.0, rss.peak_mib)
        device_memory = read_device_peak()
        if device_memory["device_memory_peak_mib"] is not None:
            previous = case.device_memory.get("device_memory_peak_mib") or 0.0
            device_memory["device_memory_peak_mib"] = max(previous, device_memory["device_memory_peak_mib"])
        case.device_memory = device_memory

    def _figures(self, case: Case) -> dict:
        """A case's figures: latency, throughput, cameras served, memory, and the roofline."""
        plan, durations = self.plan, case.durations
        clips_per_s = case.batch * len(durations) / case.wall_s
        gflops = self.flops["gflops_per_clip"] if self.flops else None
        peak = self._peak(case.device)
        achieved = clips_per_s * gflops if gflops else None
        return {
            "backend": case.backend if case.backend != AUTO else f"auto:{case.engine.name}",
            "precision": case.precision,
            "batch": case.batch,
            "parallel_calls": case.parallel_calls,
            "device": case.device,
            "iterations": len(durations),
            "warmup": plan.warmup,
            "rounds": plan.rounds,
            "threads": self._threads(case.backend, case.parallel_calls),
            "clips_per_s": round(clips_per_s, 3),
            "ms_per_clip": round(1000.0 / clips_per_s, 2),
            **latency_summary(durations),
            "frames_per_s": round(clips_per_s * plan.hop_frames, 2),
            "streams_at_fps": round(clips_per_s * plan.hop_frames / plan.stream_fps, 2),
            "hop_frames": plan.hop_frames,
            "stream_fps": plan.stream_fps,
            "host_rss_peak_mib": round(case.rss_peak_mib, 1) if case.rss_peak_mib is not None else None,
            "engine_load_rss_mib": case.load_rss_mib,
            **case.device_memory,
            "gflops_per_clip": gflops,
            "achieved_gflops_per_s": round(achieved, 2) if achieved else None,
            "peak_gflops_per_s": peak["gflops_per_s"],
            # The peak is a floating-point matrix product's: int8 arithmetic has a higher one, not measured here.
            "peak_fraction": round(achieved / peak["gflops_per_s"], 4)
            if achieved and peak["gflops_per_s"] and case.precision != "int8" else None,
        }

    def _threads(self, backend: str, parallel_calls: int) -> int | None:
        """Threads per call: PyTorch's default for the eager baseline; for the project's engines
        ``call_threads`` (--threads, or the cores shared out between parallel calls), else the
        library's default: PyTorch's count for the torch engine, None for the others."""
        if backend == "eager":
            return self._default_torch_threads
        threads = call_threads(dataclasses.replace(self.config.engine, parallel_calls=parallel_calls))
        return threads or (self._default_torch_threads if backend == "torch" else None)

    def _threads_for(self, backend: str, parallel_calls: int):
        return torch_threads(self._threads(backend, parallel_calls) if backend in ("eager", "torch") else None)

    def _count_flops(self, engine: Engine) -> None:
        onnx_file = getattr(engine, "path", None)
        try:
            flops, method = flops_per_clip(self.config, onnx_file)
        except StreamrecError as err:
            log.warning("FLOPs not counted: %s", err)
            self.flops = {"gflops_per_clip": None, "method": str(err)}
            return
        self.flops = {"gflops_per_clip": round(flops / 1e9, 3), "method": method}

    def _peak(self, device: str) -> dict:
        if device not in self.peaks:
            if self.plan.peak_gflops:
                self.peaks[device] = {"gflops_per_s": self.plan.peak_gflops, "source": "given by --peak-gflops"}
            else:
                with torch_threads(self._default_torch_threads):  # every core, whatever --threads gave an engine
                    gflops, source = measure_peak_gflops(device)
                self.peaks[device] = {"gflops_per_s": round(gflops, 1), "source": source}
        return self.peaks[device]

    def _skip(self, backend: str, precision: str, batch: int | None, reason: str, parallel_calls: int = 1) -> None:
        where = f" batch {batch}" if batch else ""
        where += f" with {parallel_calls} parallel calls" if parallel_calls > 1 else ""
        log.warning("skipping %s %s%s: %s", backend, precision, where, reason)
        self.skipped.append({"backend": backend, "precision": precision, "batch": batch,
                             "parallel_calls": parallel_calls, "reason": reason})


def _torch_threads() -> int | None:
    torch = sys.modules.get("torch")
    return torch.get_num_threads() if torch is not None else None


@contextmanager
def torch_threads(count: int | None) -> Iterator[None]:
    """Run the block with PyTorch at ``count`` threads, then restore the previous count (None: leave it)."""
    previous = _torch_threads()
    if count is None or previous is None:
        yield
        return
    torch = sys.modules["torch"]
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _default_torch_threads() -> int | None:
    """PyTorch's thread count before any engine changed it (``engine.threads`` sets it process-wide)."""
    try:
        import torch
    except ImportError:
        return None
    return torch.get_num_threads()


def _device_peak_meter(engine: Engine, device: str):
    """Resets the device's peak-memory counter; the returned call reads it after the timed calls.

    PyTorch engines report their allocator's peak (``torch.cuda.max_memory_allocated``); other
    GPU engines report what the driver says this process holds (TensorRT and ONNX Runtime
    allocate up front, so that is their peak). On the CPU there is no device memory.
    """
    if not device.startswith("cuda"):
        return lambda: {"device_memory_peak_mib": None, "device_memory_source": None}
    if engine.name in ("torch", "eager"):
        import torch

        torch.cuda.reset_peak_memory_stats()
        return lambda: {"device_memory_peak_mib": round(torch.cuda.max_memory_allocated() / 2**20, 1),
                        "device_memory_source": "torch.cuda.max_memory_allocated"}
    return lambda: {"device_memory_peak_mib": device_memory_mib(), "device_memory_source": "nvidia-smi, this process"}


def _add_ratios(results: list[dict]) -> None:
    """Each result's clips/s over the eager float32 baseline's, at batch 1 and at its own batch."""
    eager = {r["batch"]: r["clips_per_s"] for r in results if r["backend"] == "eager"}  # one call at a time
    for result in results:
        same = eager.get(result["batch"])
        result["speedup_vs_eager_batch1"] = round(result["clips_per_s"] / eager[1], 3) if 1 in eager else None
        result["speedup_vs_eager_same_batch"] = round(result["clips_per_s"] / same, 3) if same else None


# --------------------------------------------------------------------------- presentation

COLUMNS = [
    Column("backend", "backend"), Column("precision", "precision"), Column("batch", "batch"),
    Column("threads", "threads"), Column("calls", "parallel_calls"),
    Column("clips/s", "clips_per_s", 2), Column("p50 ms", "latency_ms_p50", 1), Column("p90 ms", "latency_ms_p90", 1),
    Column("p99 ms", "latency_ms_p99", 1), Column("frames/s", "frames_per_s", 1),
    Column("streams", "streams_at_fps", 1), Column("RSS MiB", "host_rss_peak_mib", 0),
    Column("dev MiB", "device_memory_peak_mib", 0), Column("GFLOP/s", "achieved_gflops_per_s", 1),
    Column("% peak", lambda r: 100 * r["peak_fraction"] if r["peak_fraction"] is not None else None, 1),
    Column("x eager b1", "speedup_vs_eager_batch1", 2), Column("x eager same b", "speedup_vs_eager_same_batch", 2),
]


def summary_text(document: dict, markdown: bool = False) -> str:
    """The results table with its legend, and any skipped cases."""
    results = document["results"]
    first = results[0] if results else {}
    flops = document.get("flops") or {}
    lines = [table(results, COLUMNS, markdown), ""]
    legend = (f"latency: one infer() call of `batch` clips; calls: how many ran at once (clips/s over wall-clock "
              f"time), each on `threads` threads; frames/s and streams: source frames the clips cover at hop "
              f"{first.get('hop_frames')} frames, and how many {first.get('stream_fps')} fps streams that serves")
    if flops.get("gflops_per_clip") is not None:
        legend += f"; {flops['gflops_per_clip']} GFLOPs per clip ({flops['method']})"
    for device, peak in (document.get("peaks") or {}).items():
        legend += f"; {device} peak {peak['gflops_per_s']} GFLOP/s ({peak['source']})"
    lines.append(legend + ".")
    for skip in document.get("skipped", []):
        where = f" batch {skip['batch']}" if skip["batch"] else ""
        where += f" with {skip['parallel_calls']} parallel calls" if skip["parallel_calls"] > 1 else ""
        bullet = "- " if markdown else ""
        lines.append(f"{bullet}skipped {skip['backend']} {skip['precision']}{where}: {skip['reason']}")
    return "\n".join(lines)


def ratio_lines(document: dict) -> list[str]:
    """Each backend's best clips/s over the eager float32 baseline at batch 1, measured in this run."""
    results = document["results"]
    eager = next((r for r in results if r["backend"] == "eager" and r["batch"] == 1), None)
    if eager is None:
        return []
    lines = []
    best: dict[tuple[str, str], dict] = {}
    for r in results:
        key = (r["backend"], r["precision"])
        if r["backend"] != "eager" and (key not in best or r["clips_per_s"] > best[key]["clips_per_s"]):
            best[key] = r
    for (backend, precision), r in best.items():
        calls = f", {r['parallel_calls']} calls at once" if r["parallel_calls"] > 1 else ""
        lines.append(f"{backend} {precision}: {r['clips_per_s']:.3f} clips/s at batch {r['batch']}{calls} = "
                     f"{r['speedup_vs_eager_batch1']:.2f}x the eager float32 baseline at batch 1 "
                     f"({eager['clips_per_s']:.3f} clips/s)")
    return lines


def plot(document: dict, path: str) -> None:
    """Throughput and p50 latency (p99 dotted) against batch size, one line per backend, precision
    and number of parallel calls."""
    figure, (throughput, latency) = new_figure(2)
    series: dict[str, list[dict]] = {}
    for r in document["results"]:
        calls = f" x{r['parallel_calls']} calls" if r["parallel_calls"] > 1 else ""
        series.setdefault(f"{r['backend']} {r['precision']}{calls} ({r['device']})", []).append(r)
    for label, rows in series.items():
        rows.sort(key=lambda r: r["batch"])
        batches = [r["batch"] for r in rows]
        throughput.plot(batches, [r["clips_per_s"] for r in rows], marker="o", label=label)
        line, = latency.plot(batches, [r["latency_ms_p50"] for r in rows], marker="o", label=f"{label} p50")
        latency.plot(batches, [r["latency_ms_p99"] for r in rows], linestyle=":", color=line.get_color(),
                     label=f"{label} p99")
    for axis, ylabel in ((throughput, "clips/s"), (latency, "latency of one call (ms)")):
        axis.set_xscale("log", base=2)
        axis.set_xlabel("batch size")
        axis.set_ylabel(ylabel)
        axis.grid(True, alpha=0.3)
        axis.legend(fontsize=7)
    save_figure(figure, path, f"bench engine: {document['config']}")
