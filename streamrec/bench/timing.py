"""Timing engine calls honestly: warm-up first, device work finished before the clock stops.

Every engine returns host (numpy) logits, so an ``infer`` call cannot return before its GPU
work is done; on top of that, where PyTorch has a CUDA device in use, the clock starts and
stops only after ``torch.cuda.synchronize()``, so work queued by an earlier call (or by
another library on the same device) is never billed to the wrong iteration.

NOT RUN ON A GPU in this project (its machine has none): the CUDA synchronisation is written
for CUDA and exercised only on a machine that has one.
"""

from __future__ import annotations

import sys
import threading
import time
from dataclasses import dataclass
from typing import Callable, Mapping

import numpy as np

from streamrec.backends import Engine


def device_synchronizer() -> Callable[[], None]:
    """``torch.cuda.synchronize`` where torch is loaded with a CUDA device, else a no-op.

    torch is not imported here: a benchmark of the ONNX Runtime or TensorRT engine on a
    machine without torch must not need it.
    """
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
        return torch.cuda.synchronize
    return lambda: None


@dataclass
class CallTimes:
    """Seconds of each timed call, and of wall clock from the first call's start to the last one's
    end: their sum when calls run one after another, less when they run side by side."""

    durations: list[float]
    wall_s: float

    def clips_per_s(self, batch: int) -> float:
        return batch * len(self.durations) / self.wall_s


def time_calls(engine: Engine, inputs: Mapping[str, np.ndarray], warmup: int, iterations: int) -> CallTimes:
    """``iterations`` timed calls (`engine_call`) after ``warmup`` untimed ones; with
    ``engine.parallel_calls`` > 1, from that many threads at once, as the pipeline calls it."""
    if engine.parallel_calls > 1:
        return _time_side_by_side(engine, inputs, warmup, iterations)
    call = engine_call(engine, inputs)
    for _ in range(warmup):
        call(inputs)
    synchronize = device_synchronizer()  # after warm-up: the first call may be what initialises CUDA
    durations = []
    for _ in range(iterations):
        synchronize()
        start = time.perf_counter()
        call(inputs)
        synchronize()
        durations.append(time.perf_counter() - start)
    return CallTimes(durations, sum(durations))


def engine_call(engine: Engine, inputs: Mapping[str, np.ndarray]):
    """What one call of ``engine`` on ``inputs`` is: ``step`` when they carry a streaming engine's
    ``state``, else ``infer``."""
    return engine.step if "state" in inputs else engine.infer


def _time_side_by_side(engine: Engine, inputs: Mapping[str, np.ndarray], warmup: int, iterations: int) -> CallTimes:
    """Each of ``engine.parallel_calls`` threads warms up, then all make their share of the timed
    calls at once (parallel calls are CPU-only: there is no device to synchronise)."""
    threads = engine.parallel_calls
    call = engine_call(engine, inputs)
    shares = [iterations // threads + (i < iterations % threads) for i in range(threads)]
    durations: list[float] = []
    errors: list[Exception] = []
    ready = threading.Barrier(threads + 1)

    def caller(share: int) -> None:
        try:
            for _ in range(warmup):
                call(inputs)
            ready.wait()
            for _ in range(share):
                start = time.perf_counter()
                call(inputs)
                durations.append(time.perf_counter() - start)
        except threading.BrokenBarrierError:  # another caller failed in its warm-up
            pass
        except Exception as err:  # raised again on the calling thread below
            errors.append(err)
            ready.abort()

    workers = [threading.Thread(target=caller, args=(share,), name=f"timed-call-{i}") for i, share in enumerate(shares)]
    for worker in workers:
        worker.start()
    try:
        ready.wait()
    except threading.BrokenBarrierError:
        pass
    start = time.perf_counter()
    for worker in workers:
        worker.join()
    if errors:
        raise errors[0]
    return CallTimes(durations, time.perf_counter() - start)


def percentile_ms(values_s: list[float] | np.ndarray, q: float) -> float | None:
    """The ``q``-th percentile of durations in seconds, in milliseconds (None for no values)."""
    if len(values_s) == 0:
        return None
    return round(float(np.percentile(np.asarray(values_s) * 1000.0, q)), 2)


def latency_summary(values_s: list[float] | np.ndarray, prefix: str = "latency_ms") -> dict:
    """p50/p90/p95/p99, mean and max of durations in seconds, as ``{prefix}_p50: ms, ...``."""
    summary = {f"{prefix}_p{q}": percentile_ms(values_s, q) for q in (50, 90, 95, 99)}
    summary[f"{prefix}_mean"] = round(float(np.mean(values_s)) * 1000.0, 2) if len(values_s) else None
    summary[f"{prefix}_max"] = round(float(np.max(values_s)) * 1000.0, 2) if len(values_s) else None
    return summary
