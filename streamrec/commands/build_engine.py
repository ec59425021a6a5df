"""``run_stream.py build-engine``: a TensorRT engine from an ONNX file, into ``engines/``.

The engine is named by its cache key (see ``engines/README.md``): a later ``run`` with the
same ONNX, TensorRT, GPU, precision and batch profile reuses it. ``--precision int8`` first
quantizes the graph with ModelOpt from ``--calibration`` videos, unless it is already Q/DQ.

``--backend onnxruntime --precision int8`` makes the CPU's int8 graph instead (`cpu_int8`),
beside the float32 one; runs of that config with ``engine.precision: int8`` then find it.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING

from streamrec.backends.engine_cache import BatchProfile, cache_dir, sha256_file
from streamrec.commands.flags import positive_int
from streamrec.config import ClipConfig, PipelineConfig
from streamrec.errors import StreamrecError

if TYPE_CHECKING:
    import onnx


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--onnx", required=True, type=Path, metavar="FILE", help="the graph (from `export`)")
    parser.add_argument("--backend", choices=["tensorrt", "onnxruntime"], default="tensorrt",
                        help="tensorrt builds an engine; onnxruntime makes the int8 graph its CPU runs "
                             "(default %(default)s)")
    parser.add_argument("--precision", choices=["fp32", "fp16", "int8"], default="fp32",
                        help="what the graph computes in: fp16 needs an `export --fp16` graph, int8 a Q/DQ graph "
                             "or --calibration videos (default %(default)s)")
    parser.add_argument("--batch", default="1:8:8", metavar="MIN:OPT:MAX",
                        help="the batch profile: valid from MIN to MAX, tuned for OPT (default %(default)s)")
    parser.add_argument("--workspace", type=positive_int, metavar="MB", help="limit TensorRT's build workspace")
    parser.add_argument("--device", default="cuda", help="cuda or cuda:N (default %(default)s)")
    parser.add_argument("--rebuild", action="store_true", help="build even if a matching engine is cached")
    calibration = parser.add_argument_group("int8 calibration (with --precision int8)")
    calibration.add_argument("--calibration", type=Path, metavar="DIR", help="a folder of videos like the cameras'")
    calibration.add_argument("--config", help="the config the graph was exported from (default: read from the graph)")
    calibration.add_argument("--calibration-clips", type=positive_int, default=64, metavar="N",
                             help="clips to calibrate on (default %(default)s)")


def main(args: argparse.Namespace) -> int:
    if not args.onnx.is_file():
        raise StreamrecError(f"ONNX file {args.onnx} not found; make one with `run_stream.py export`")
    graph = read_onnx_graph(args.onnx)
    return cpu_int8_main(args, graph) if args.backend == "onnxruntime" else tensorrt_main(args, graph)


def tensorrt_main(args: argparse.Namespace, graph: "onnx.ModelProto") -> int:
    from streamrec.backends.cuda_memory import open_device, parse_device_index
    from streamrec.backends.tensorrt_build import cached_engine, graph_precision
    from streamrec.backends.trt_api import load_tensorrt

    batch = BatchProfile.parse(args.batch)
    api = load_tensorrt()
    memory = open_device(parse_device_index(args.device))
    onnx = args.onnx
    if args.precision == "int8" and graph_precision(graph) != "int8":
        onnx = quantized_copy(args, graph)
    path = cached_engine(onnx, args.precision, batch, api, memory, workspace_mb=args.workspace, rebuild=args.rebuild)
    print(f"run it with: python run_stream.py run --backend tensorrt --engine {path}")
    return 0


def cpu_int8_main(args: argparse.Namespace, graph: "onnx.ModelProto") -> int:
    """The int8 graph ONNX Runtime runs on the CPU, calibrated on ``args.calibration``."""
    from streamrec.backends.calibration import calibration_clips
    from streamrec.backends.cpu_int8 import cpu_int8_path, quantize_for_cpu

    if args.precision != "int8":
        raise StreamrecError(f"ONNX Runtime runs {args.precision} graphs as exported, with nothing to build; "
                             "build-engine --backend onnxruntime makes int8 graphs: add --precision int8")
    output = cpu_int8_path(args.onnx, sha256_file(args.onnx))
    if output.is_file() and not args.rebuild:
        print(f"reusing the int8 graph {output}")
    else:
        clip, pipeline = calibration_setup(args, graph)
        clips = calibration_clips(clip, args.calibration, args.calibration_clips, pipeline)
        print(f"quantizing {args.onnx.name} to int8 for the CPU on {len(next(iter(clips.values())))} clips from "
              f"{args.calibration}")
        quantize_for_cpu(args.onnx, clips, output)
    print(f"run it with: python run_stream.py run --backend onnxruntime --engine {output}")
    return 0


def quantized_copy(args: argparse.Namespace, graph: "onnx.ModelProto") -> Path:
    """The int8 (Q/DQ) graph of ``args.onnx``, calibrated on ``args.calibration``; cached beside the engines."""
    from streamrec.backends.calibration import calibration_clips, quantize_int8

    clip, pipeline = calibration_setup(args, graph)
    output = cache_dir() / f"{args.onnx.stem}.int8.{sha256_file(args.onnx)[:12]}.onnx"
    if output.is_file():
        print(f"reusing the quantized graph {output}")
        return output
    clips = calibration_clips(clip, args.calibration, args.calibration_clips, pipeline)
    print(f"quantizing {args.onnx.name} to int8 on {len(next(iter(clips.values())))} clips from {args.calibration}")
    return quantize_int8(args.onnx, clips, output)


def calibration_setup(args: argparse.Namespace, graph: "onnx.ModelProto") -> tuple[ClipConfig, PipelineConfig]:
    """The clip and pipeline (its hop) calibration clips are cut with: from ``--config``, else
    the graph's clip and the default pipeline."""
    from streamrec.config import load_config

    refuse_streaming_graph(graph, args.onnx)
    if args.calibration is None:
        raise StreamrecError(f"{args.onnx} has no Q/DQ nodes; int8 needs calibration videos: add --calibration DIR")
    if args.config:
        config = load_config(args.config)
        clip, pipeline = config.clip, config.pipeline
    else:
        clip, pipeline = exported_clip(graph, args.onnx), PipelineConfig()
    check_calibration_inputs(graph, args.onnx, clip)
    return clip, pipeline


def check_calibration_inputs(graph: "onnx.ModelProto", onnx_file: Path, clip: ClipConfig) -> None:
    """Calibration feeds the clip's pathways alone: a graph that takes others (an RoI model's boxes)
    or other pathways (a config for another model) is refused in one line."""
    names = sorted(i.name for i in graph.graph.input)
    if names != sorted(clip.input_names):
        raise StreamrecError(f"{onnx_file} takes {names}, and int8 calibration feeds clips of {list(clip.input_names)}: "
                             "calibrate a whole-clip graph with the config it was exported from")


def read_onnx_graph(onnx_file: Path) -> "onnx.ModelProto":
    """The graph, parsed once for every check and choice below (weights kept outside stay there); one
    line for a file that is not an ONNX graph (a video, a truncated export)."""
    import onnx

    try:
        return onnx.load(str(onnx_file), load_external_data=False)
    except Exception as err:  # noqa: BLE001 - protobuf raises its own decode errors
        raise StreamrecError(f"{onnx_file} is not an ONNX graph ({type(err).__name__}); export one with "
                             "`run_stream.py export`") from None


def refuse_streaming_graph(graph: "onnx.ModelProto", onnx_file: Path) -> None:
    """int8 calibration feeds whole clips, and a streaming graph also takes the state carried between
    calls, which no calibration clip has."""
    from streamrec.backends.inputs import StateSpec

    if any(i.name == StateSpec.name for i in graph.graph.input):
        raise StreamrecError(f"{onnx_file} is a streaming graph (it carries state from call to call), and int8 "
                             "calibration runs whole clips: build it at fp32 (or fp16 from an `export --fp16` graph)")


def exported_clip(graph: "onnx.ModelProto", onnx_file: Path) -> ClipConfig:
    """The clip contract `streamrec.export` recorded in the graph."""
    from streamrec.export import METADATA_KEY

    entries = {p.key: p.value for p in graph.metadata_props}
    if METADATA_KEY not in entries:
        raise StreamrecError(f"{onnx_file} was not exported by streamrec; name its config with --config")
    clip = json.loads(entries[METADATA_KEY])["clip"]
    return ClipConfig(**{key: tuple(value) if isinstance(value, list) else value for key, value in clip.items()})
