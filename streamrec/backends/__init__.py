"""Engines: the one seam between CPU-side code and the accelerator.

Every backend serves the same contract: ``infer(inputs)`` takes uint8 RGB arrays keyed by
the clip's input names (``slow`` ``[B, Ts, H, W, 3]`` and ``fast`` ``[B, Tf, H, W, 3]``, or
``frames`` for single-pathway models) and returns float32 logits ``[B, num_classes]``.
Normalisation happens inside the engine.

`create_engine` is where a config becomes an engine: it picks the backend (``auto``: TensorRT
where it is installed and a GPU is present, else ONNX Runtime, else PyTorch), takes
``engine.engine_file`` if given, and otherwise exports and builds into ``engines/``, reusing
what an earlier run made there. The ONNX Runtime and TensorRT paths import torch only to
export a missing ONNX file.

Backends are registered, as models are (`streamrec.models`): the CLI's ``--backend`` choices,
config validation, ``auto``, `create_engine` and ``bench engine`` all read the registry.
Adding a backend is one module in this package whose factory is decorated with
`register_backend` (name, precisions, whether this machine can run it, where ``auto`` ranks
it, which engine files it reads), plus the module's name in `BACKEND_MODULES`. The factory
imports the backend's library when it is called, never at registration: listing backends
must not import torch, onnxruntime or tensorrt. Its engine sets ``name``, ``max_batch``,
``parallel_calls`` and ``device``.
"""

from __future__ import annotations

import difflib
import importlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, Protocol

import numpy as np

from streamrec.config import Config, EngineConfig
from streamrec.errors import StreamrecError

log = logging.getLogger(__name__)
# Each registers one backend; their order is the order the CLI lists them in.
BACKEND_MODULES = ("torch_factory", "onnxruntime_factory", "tensorrt_factory")
AUTO = "auto"  # engine.backend: the fastest registered backend this machine can run


class Engine(Protocol):
    name: str  # backend name, for logs and benchmark tables
    max_batch: int  # largest batch one infer() call accepts
    parallel_calls: int  # infer() calls it runs at once, from as many threads (engine.parallel_calls)
    device: str  # where it computes: "cpu", "cuda:0", ...
    # An RoI head (per-person actions): infer() also takes ``boxes`` [N, 5] and returns a row of
    # logits per box, [N, num_classes] (see `streamrec.backends.inputs`).
    takes_boxes: bool

    def infer(self, inputs: Mapping[str, np.ndarray]) -> np.ndarray: ...


class EngineWrapper:
    """An engine around another one (to meter, alter or fail its calls): it forwards what
    describes the engine, so a subclass overrides only ``infer`` (or a class attribute such as
    ``name``) and never copies the rest by hand."""

    def __init__(self, engine: Engine):
        self.engine = engine

    @property
    def name(self) -> str:
        return self.engine.name

    @property
    def max_batch(self) -> int:
        return self.engine.max_batch

    @property
    def parallel_calls(self) -> int:
        return self.engine.parallel_calls

    @property
    def device(self) -> str:
        return self.engine.device

    @property
    def takes_boxes(self) -> bool:
        return self.engine.takes_boxes

    @property
    def state(self):
        """A streaming engine's `streamrec.backends.inputs.StateSpec` (None: it runs whole clips)."""
        return getattr(self.engine, "state", None)

    @property
    def streaming(self):
        """A streaming engine's `streamrec.backends.inputs.StreamingSpec` (None: it runs whole clips)."""
        return getattr(self.engine, "streaming", None)

    def infer(self, inputs: Mapping[str, np.ndarray]) -> np.ndarray:
        return self.engine.infer(inputs)

    def step(self, inputs: Mapping[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        return self.engine.step(inputs)


# --------------------------------------------------------------------------- the registry


@dataclass(frozen=True)
class Backend:
    """A registered backend: how to make its engine from a config, and what it can run."""

    name: str
    create: Callable[[Config], Engine]
    precisions: tuple[str, ...]  # engine.precision values it runs (an engine_file decides its own)
    available: Callable[[EngineConfig], bool]  # whether this machine can run it, for ``auto``
    auto_rank: int | None = None  # ``auto`` tries lower ranks first; None: never picked by ``auto``
    reads_file: Callable[[Path], bool] | None = None  # the engine files it runs; None: it takes none


_BACKENDS: dict[str, Backend] = {}


def register_backend(name: str, *, precisions: tuple[str, ...], available: Callable[[EngineConfig], bool],
                     auto_rank: int | None = None, reads_file: Callable[[Path], bool] | None = None,
                     ) -> Callable[[Callable[[Config], Engine]], Callable[[Config], Engine]]:
    """Register the decorated ``factory(config) -> Engine`` as backend ``name``."""
    def decorator(factory: Callable[[Config], Engine]) -> Callable[[Config], Engine]:
        _BACKENDS[name] = Backend(name, factory, tuple(precisions), available, auto_rank, reads_file)
        return factory

    return decorator


def registered_backends() -> dict[str, Backend]:
    """Every registered backend by name, in `BACKEND_MODULES` order."""
    for module in BACKEND_MODULES:  # importing a backend's module registers it
        importlib.import_module(f"{__name__}.{module}")
    return dict(_BACKENDS)


def backend_names() -> tuple[str, ...]:
    """The registered backends' names, without ``auto``."""
    return tuple(registered_backends())


def all_precisions() -> tuple[str, ...]:
    """Every precision some registered backend runs, each once, in the order they register them."""
    return tuple(dict.fromkeys(p for backend in registered_backends().values() for p in backend.precisions))


def unknown_backend(name: str, where: str = "engine.backend") -> str:
    """The message for a backend name nobody registered, with the closest one if any."""
    names = [*backend_names(), AUTO]
    close = difflib.get_close_matches(name, names, n=1)
    hint = f"; did you mean '{close[0]}'?" if close else ""
    return f"{where} '{name}' is not one of {', '.join(names)}{hint}"


def get_backend(name: str) -> Backend:
    backends = registered_backends()
    if name not in backends:
        raise StreamrecError(unknown_backend(name))
    return backends[name]


# --------------------------------------------------------------------------- choosing and creating


def call_threads(engine: EngineConfig) -> int:
    """CPU threads for each engine call: ``engine.threads`` when set; with parallel calls, the
    process's cores shared out between them; else 0, the library's default (every core)."""
    if engine.threads or engine.parallel_calls == 1:
        return engine.threads
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, cores // engine.parallel_calls)


def parallel_calls_need_cpu(engine: str) -> StreamrecError:
    """The error for ``engine.parallel_calls`` > 1 on an engine that computes on a GPU."""
    return StreamrecError(f"engine.parallel_calls > 1 is for engines on the CPU, and this {engine} engine runs on a "
                          "GPU, where a larger pipeline.max_batch keeps it busy instead; set engine.parallel_calls: 1")


def resolve_backend(config: Config) -> str:
    """The backend ``engine.backend`` names; for ``auto``, the fastest one this machine can run
    (with an ``engine.engine_file``, the one that reads that file)."""
    engine = config.engine
    if engine.backend != AUTO:
        return engine.backend
    ranked = sorted((b for b in registered_backends().values() if b.auto_rank is not None), key=lambda b: b.auto_rank)
    if engine.engine_file:  # the file says which runtime reads it
        path = Path(engine.engine_file)
        for backend in ranked:
            if backend.reads_file is not None and backend.reads_file(path):
                return backend.name
        raise StreamrecError(f"no backend reads the engine file {path}; name one with --backend")
    for backend in ranked:
        if backend.available(engine):
            return backend.name
    raise StreamrecError(f"no backend can run here; install one of {', '.join(b.name for b in ranked)}")


def check_streaming(engine, config: Config, path: Path, hop: int | None) -> None:
    """A streaming config (``hop``: its `streamrec.config.streaming_hop_frames`) needs an engine
    that streams its form at its hop, and a clip config one that runs whole clips; ``path`` is
    the graph or engine file the engine came from, for the message."""
    spec = getattr(engine, "streaming", None)
    if hop is None:
        if getattr(engine, "state", None) is not None:
            raise StreamrecError(f"{path} is a streaming model's graph; add a streaming: section to the config "
                                 "(e.g. configs/slowfast_tiny_streaming.yaml) or export the clip model")
        return
    if spec is None:
        raise StreamrecError(f"{path} is not a streaming model with streamrec's metadata; the config's streaming: "
                             "section needs a graph made by streamrec.export.export_streaming (or an engine "
                             "build-engine made from one), or no engine_file")
    asked = (config.streaming.form, hop, config.streaming.average_units)
    if not spec.matches(*asked):
        raise StreamrecError(f"{path} streams {spec.describe()}, the config asks for {spec.describe(*asked)}; export "
                             "it from this config (or drop engine_file)")


def create_engine(config: Config) -> Engine:
    """The engine a config asks for, from ``engine.engine_file`` or the cache in ``engines/``."""
    backend = get_backend(resolve_backend(config))
    engine = config.engine
    if engine.engine_file is None and engine.precision not in backend.precisions:
        raise StreamrecError(f"engine.precision={engine.precision} is not available with the {backend.name} backend; "
                             f"it runs {', '.join(backend.precisions)}")
    if engine.engine_file and backend.reads_file is None:
        readers = [b.name for b in registered_backends().values() if b.reads_file is not None]
        raise StreamrecError(f"engine.engine_file is for {' and '.join(readers)}; the {backend.name} backend runs the "
                             "config's model and checkpoint")
    log.info("engine backend: %s%s", backend.name, " (auto)" if engine.backend == AUTO else "")
    return backend.create(config)
