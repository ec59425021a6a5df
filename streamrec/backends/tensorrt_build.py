"""Building TensorRT engines from ONNX graphs into the engine cache.

Precision comes from the graph, not from builder flags (TensorRT 11 removed them, and strong
typing obeys the graph's types): fp32 is a float32 export, fp16 a float16 export, int8 an
explicitly quantized (Q/DQ) graph made by `streamrec.backends.calibration` (fp16 where not
quantized). ``--precision`` names which of these the graph must be, and is checked against it.
TensorRT's one precision switch left, TF32 (on by default), is turned off for fp32 builds, so
that an fp32 engine computes what the float32 graph does; fp16 and int8 graphs keep it for what
float32 layers they have.

The build itself is one call into `trt_api.TensorRT.build`; everything around it (the cache
key, the profile shapes, reuse, error messages) is here and tested with a stand-in.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from streamrec.backends.cuda_memory import DeviceMemory
from streamrec.backends.engine_cache import (
    BatchProfile,
    EngineKey,
    EngineRecord,
    engine_path,
    sha256_bytes,
    stale_engines,
    timing_cache_path,
    write_atomically,
)
from streamrec.backends.inputs import MAX_BOXES_PER_CLIP, BoxesSpec
from streamrec.backends.trt_api import OnnxParseError, Shape, TensorRT, TensorRTError
from streamrec.errors import StreamrecError

if TYPE_CHECKING:
    import onnx

log = logging.getLogger(__name__)
PRECISIONS = ("fp32", "fp16", "int8")


def engine_key(onnx: bytes, precision: str, batch: BatchProfile, api: TensorRT, memory: DeviceMemory) -> EngineKey:
    return EngineKey(sha256_bytes(onnx), api.version, memory.device_name, memory.compute_capability, precision,
                     str(batch))


def parse_graph(onnx: bytes) -> "onnx.ModelProto":
    """An ONNX file's bytes parsed once, for `graph_precision` and `graph_metadata` to read."""
    import onnx as onnx_lib

    return onnx_lib.load_from_string(onnx)


def graph_precision(model: "onnx.ModelProto") -> str:
    """What an ONNX graph computes in: int8 if it has Q/DQ nodes, else the type of most float weights."""
    from onnx import TensorProto

    graph = model.graph
    if any(node.op_type in ("QuantizeLinear", "DequantizeLinear") for node in graph.node):
        return "int8"
    halves = sum(t.data_type == TensorProto.FLOAT16 for t in graph.initializer)
    floats = sum(t.data_type == TensorProto.FLOAT for t in graph.initializer)
    return "fp16" if halves > floats else "fp32"


def graph_metadata(model: "onnx.ModelProto") -> dict | None:
    """The streamrec metadata an exported graph records about itself (None: exported elsewhere)."""
    from streamrec.export import METADATA_KEY

    for entry in model.metadata_props:
        if entry.key == METADATA_KEY:
            return json.loads(entry.value)
    return None


def check_precision(model: "onnx.ModelProto", precision: str, onnx_file: Path) -> None:
    if precision not in PRECISIONS:
        raise StreamrecError(f"TensorRT precision must be one of {', '.join(PRECISIONS)}, not {precision}")
    found = graph_precision(model)
    if found != precision:
        how = {
            "fp32": "export it without --fp16",
            "fp16": "export it with `run_stream.py export --fp16`",
            "int8": "quantize it: `run_stream.py build-engine --precision int8 --calibration DIR`",
        }[precision]
        raise StreamrecError(f"{onnx_file} is an {found} graph but precision {precision} was asked; TensorRT takes "
                             f"precision from the graph: {how}")


TYPICAL_BOXES_PER_CLIP = 4  # what an RoI engine's profile is tuned for: a few people a clip


def profile_shapes(batch: BatchProfile) -> Callable[[str, Shape], tuple[Shape, Shape, Shape]]:
    """The (min, opt, max) shapes of each input: the ONNX shape with the batch axis from ``batch``;
    for an RoI head's ``boxes``, from one box to `MAX_BOXES_PER_CLIP` for every clip of the batch
    (tuned for a few people a clip)."""

    def shapes(name: str, onnx_shape: Shape) -> tuple[Shape, Shape, Shape]:
        first, *rest = onnx_shape
        if name == BoxesSpec.name and first < 0:
            most = batch.max * MAX_BOXES_PER_CLIP
            return ((1, *rest), (min(most, batch.opt * TYPICAL_BOXES_PER_CLIP), *rest), (most, *rest))
        if any(d < 0 for d in rest):
            raise StreamrecError(f"ONNX input '{name}' {list(onnx_shape)} is dynamic beyond the batch axis; "
                                 "export it with `run_stream.py export` (only the batch may vary)")
        if first >= 0 and batch != BatchProfile(first, first, first):
            raise StreamrecError(f"ONNX input '{name}' has a fixed batch of {first}; build it with --batch {first}:{first}:{first} "
                                 "or export with --batch dynamic")
        return tuple((size, *rest) for size in (batch.min, batch.opt, batch.max))  # type: ignore[return-value]

    return shapes


def describe_parse_error(err: OnnxParseError, onnx_file: Path) -> str:
    first = err.issues[0] if err.issues else None
    if first is None:
        return f"TensorRT's ONNX parser rejected {onnx_file} without saying why"
    more = f" (and {len(err.issues) - 1} more)" if len(err.issues) > 1 else ""
    return (f"TensorRT cannot parse {onnx_file}: node '{first.node_name}' ({first.node_operator}): "
            f"{first.description}{more}")


def build_engine(onnx_file: Path, precision: str, batch: BatchProfile, api: TensorRT, memory: DeviceMemory, *,
                 workspace_mb: int | None = None, progress: Callable[[str], None] = print,
                 phases: bool = True) -> Path:
    """Build ``onnx_file`` into the engine cache (with its record and the shared timing cache).

    ``phases`` also reports TensorRT's build phases through a progress monitor, whose Python
    callbacks take the GIL from the builder's threads: worth it when a person is watching a
    build, not when a run builds in passing.
    """
    if not onnx_file.is_file():
        raise StreamrecError(f"ONNX file {onnx_file} not found; make one with `run_stream.py export`")
    onnx = onnx_file.read_bytes()
    graph = parse_graph(onnx)
    check_precision(graph, precision, onnx_file)
    key = engine_key(onnx, precision, batch, api, memory)
    path = engine_path(onnx_file, key)
    timing_path = timing_cache_path(key)
    timing = timing_path.read_bytes() if timing_path.is_file() else None
    progress(f"building a TensorRT {api.version} engine from {onnx_file.name} for {memory.device_name} "
             f"({precision}, batch {batch}); this takes minutes")
    started = time.monotonic()
    try:
        with memory.activate():
            result = api.build(onnx, profile_shapes(batch), workspace_mb * 2**20 if workspace_mb else None,
                               timing, progress if phases else None, tf32=precision != "fp32")
    except OnnxParseError as err:
        raise StreamrecError(describe_parse_error(err, onnx_file)) from None
    except TensorRTError as err:
        raise StreamrecError(f"TensorRT could not build {onnx_file.name}: {err}") from None
    seconds = time.monotonic() - started
    write_atomically(path, result.plan)
    EngineRecord(key, str(onnx_file), sha256_bytes(result.plan), round(seconds, 1), graph_metadata(graph)).save(path)
    if result.timing_cache is not None:
        write_atomically(timing_path, result.timing_cache)
    progress(f"built {path} in {seconds:.1f} s")
    return path


def cached_engine(onnx_file: Path, precision: str, batch: BatchProfile, api: TensorRT, memory: DeviceMemory, *,
                  workspace_mb: int | None = None, rebuild: bool = False,
                  progress: Callable[[str], None] = print, phases: bool = True) -> Path:
    """The cached engine for exactly this ONNX, TensorRT, GPU, precision and batch profile; built if missing."""
    if not onnx_file.is_file():
        raise StreamrecError(f"ONNX file {onnx_file} not found; make one with `run_stream.py export`")
    key = engine_key(onnx_file.read_bytes(), precision, batch, api, memory)
    path = engine_path(onnx_file, key)
    if path.is_file() and not rebuild:
        progress(f"reusing the TensorRT engine {path}")
        return path
    for stale, changes in stale_engines(onnx_file, key):
        progress(f"not reusing {stale.name}: {', '.join(changes)}")
    return build_engine(onnx_file, precision, batch, api, memory, workspace_mb=workspace_mb, progress=progress,
                        phases=phases)
