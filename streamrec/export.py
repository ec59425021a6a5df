"""ONNX export: the engine contract as a graph, for ONNX Runtime and TensorRT.

The graph takes uint8 RGB ``slow`` ``[B, T_slow, H, W, 3]`` and ``fast`` ``[B, T_fast, H, W, 3]``
(``frames`` for single-pathway models), normalises inside (`UInt8Clips` casts to float before
anything touches the time axis) and returns float32 ``logits`` ``[B, num_classes]``. A model with
an RoI head also takes float32 ``boxes`` ``[N, 5]`` and returns ``logits`` ``[N, num_classes]``,
both axes dynamic (`streamrec.backends.inputs`); its RoIAlign is ONNX's ``RoiAlign`` (opset 16
or later, for the ``aligned`` convention: `streamrec.models.roi_align`).

fp16 exports are made from the float32 graph by `to_float16`: PyTorch's CPU kernels lack
half-precision 3D pooling, so the model cannot be traced in half on a machine without a GPU.
The inputs stay uint8 (boxes float32, cast to half inside) and the output stays float32, so every
backend moves the same bytes.

A streaming model's graph (`export_streaming`) takes each call's new frames and its carried
state and returns the new state beside the logits: uint8 ``slow``/``fast`` (or ``frames``) of
``frames_per_call`` frames, float32 ``state`` ``[B, state_size]`` in, ``logits`` and
``new_state`` out, every batch axis dynamic together (`streamrec.backends.inputs.StateSpec`).
Its metadata's ``streaming`` entry says how to drive it (`streaming_metadata`).

The legacy TorchScript exporter (``dynamo=False``) is used: it needs no extra packages, folds
batch norms into the convolutions, and its graphs are the ones TensorRT's parser is tested on.
"""

from __future__ import annotations

import json
import os
import tempfile
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from streamrec.config import ClipConfig, Config
from streamrec.errors import StreamrecError

if TYPE_CHECKING:
    import onnx
    import torch
    from torch import nn

OPSET = 17
EXPORT_FORMAT = 1  # bump when the exported graph changes: it is part of the export cache key
# The same for a streaming graph alone (git log says what each bump changed), so that a change
# there leaves cached clip exports, and the TensorRT engines built from them, valid.
STREAMING_EXPORT_FORMAT = 7
METADATA_KEY = "streamrec"  # ONNX metadata_props entry: JSON with the clip contract and model


def export_config(config: Config, output: str | Path, *, fp16: bool = False, batch: int | None = None) -> Path:
    """Export the model a config describes (with its checkpoint) to ``output``: the graph its
    engines run, so a streaming config's is its streaming form at its hop, never its clip model."""
    from streamrec.checkpoints import load_model
    from streamrec.config import streaming_hop_frames

    if config.streaming is not None:
        return export_streaming(config, output, form=config.streaming.form, hop_frames=streaming_hop_frames(config),
                                average_units=config.streaming.average_units, fp16=fp16, batch=batch)
    return export_onnx(load_model(config), config.clip, output, fp16=fp16, batch=batch,
                       metadata=export_metadata(config, fp16))


def export_metadata(config: Config, fp16: bool) -> dict:
    """What an exported graph records about itself, so an engine can check it matches a config."""
    return {
        "arch": config.model.arch,
        "num_classes": config.model.num_classes,
        "clip": config.to_dict()["clip"],
        "checkpoint": Path(config.checkpoint).name if config.checkpoint else None,
        "precision": "fp16" if fp16 else "fp32",
        "export_format": EXPORT_FORMAT,
    }


def export_onnx(model: "nn.Module", clip: ClipConfig, output: str | Path, *, fp16: bool = False,
                batch: int | None = None, metadata: dict | None = None) -> Path:
    """Export an engine-contract model (`UInt8Clips`); ``batch=None`` makes the batch axis dynamic.

    The file is written atomically, so an interrupted export never leaves a half-written
    model where the engine cache would pick it up.
    """
    import torch

    from streamrec.backends.inputs import BoxesSpec, input_specs

    if batch is not None and batch < 1:
        raise StreamrecError(f"export batch must be >= 1 or 'dynamic', got {batch}")
    specs = input_specs(clip)
    example_batch = batch or 2  # not 1: a dynamic axis traced at 1 can be specialised away
    examples = tuple(torch.zeros((example_batch, *s.clip_shape), dtype=torch.uint8) for s in specs)
    names = [s.name for s in specs]
    dynamic_axes = None if batch else {name: {0: "batch"} for name in [*names, "logits"]}
    if getattr(getattr(model, "network", None), "takes_boxes", False):
        examples += (example_boxes(example_batch, clip.crop_size),)
        names.append(BoxesSpec.name)
        dynamic_axes = {**(dynamic_axes or {}), BoxesSpec.name: {0: "boxes"}, "logits": {0: "boxes"}}
    return _write_graph(model, examples, names, ["logits"], dynamic_axes, output, fp16=fp16, metadata=metadata)


def _write_graph(model: "nn.Module", examples: tuple, names: list[str], output_names: list[str],
                 dynamic_axes: dict | None, output: str | Path, *, fp16: bool, metadata: dict | None,
                 output_dims: dict[str, dict[int, int]] | None = None) -> Path:
    """Trace ``model`` on ``examples`` into an ONNX graph (then half precision, metadata), checked
    and written atomically to ``output``. ``output_dims`` states output sizes the trace leaves
    symbolic (name -> {axis: size})."""
    import onnx
    import torch

    from streamrec.backends.engine_cache import write_atomically

    graph_file = tempfile.NamedTemporaryFile(suffix=".onnx", delete=False)
    graph_file.close()
    try:
        with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
            # shapes read while tracing become constants, as they should: every shape but the batch is fixed
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            torch.onnx.export(model.eval().float(), examples, graph_file.name, input_names=names,
                              output_names=output_names, dynamic_axes=dynamic_axes, opset_version=OPSET,
                              dynamo=False, do_constant_folding=True)
        graph = onnx.load(graph_file.name)
    finally:
        os.unlink(graph_file.name)
    for graph_output in graph.graph.output:
        for axis, size in (output_dims or {}).get(graph_output.name, {}).items():
            graph_output.type.tensor_type.shape.dim[axis].dim_value = size
    if fp16:
        graph = to_float16(graph)
    if metadata is not None:
        entry = graph.metadata_props.add()
        entry.key, entry.value = METADATA_KEY, json.dumps(metadata, sort_keys=True)
    onnx.checker.check_model(graph)
    return write_atomically(Path(output), graph.SerializeToString())


def export_streaming(config: Config, output: str | Path, *, hop_frames: int, form: str = "delayed_exact",
                     average_units: int | None = None, fp16: bool = False, batch: int | None = None) -> Path:
    """Export the streaming form of the model a config describes (with its checkpoint), for a
    hop of ``hop_frames`` source frames at the training rate (`streamrec.config.streaming_hop_frames`)."""
    from streamrec.models.streaming import streaming_network_for_hop

    network = streaming_network_for_hop(folded_model(config), config.clip, hop_frames, form=form,
                                        average_units=average_units)
    metadata = {**export_metadata(config, fp16), "streaming": streaming_metadata(network)}
    return export_streaming_onnx(network, output, fp16=fp16, batch=batch, metadata=metadata)


def folded_model(config: Config) -> "nn.Module":
    """The config's model (with its checkpoint) with its batch norms folded into the convolutions
    before them, as the PyTorch engines run it. A streaming graph is exported from it: a stem's
    carried products are then of the folded kernels on every backend, and their states hold the
    same numbers."""
    from streamrec.backends.torch_backend import folded_clip_model
    from streamrec.checkpoints import load_model

    return folded_clip_model(load_model(config), config.clip)


def streaming_metadata(network) -> dict:
    """How to drive a streaming graph: its form, frames per call, delay, warm-up and state layout.

    ``units`` per call of ``unit_frames`` source frames each (at the training rate); a step's
    feature reaches the head ``delay_units`` units after its frames; logits are valid from the
    call at which ``warmup_units`` units have arrived since the state was zeroed.
    """
    return {
        "form": network.form,
        "units": network.units,
        "unit_frames": network.unit_frames,
        "frames_per_call": network.frames_per_call(),
        "delay_units": network.delay_units,
        "clip_units": network.clip_units,
        "average_units": network.average_units,
        "warmup_units": network.warmup_units,
        "state_size": network.layout.size,
        "state_layout": network.layout.describe(),
    }


def export_streaming_onnx(network, output: str | Path, *, fp16: bool = False, batch: int | None = None,
                          metadata: dict | None = None) -> Path:
    """Export a `streamrec.models.streaming.StreamingNetwork`; ``batch=None`` makes the batch axis dynamic."""
    import torch

    from streamrec.backends.inputs import StateSpec, step_input_specs

    if batch is not None and batch < 1:
        raise StreamrecError(f"export batch must be >= 1 or 'dynamic', got {batch}")
    specs = step_input_specs(network.clip, network.frames_per_call())
    example_batch = batch or 2  # not 1: a dynamic axis traced at 1 can be specialised away
    examples = (*(torch.zeros((example_batch, *s.clip_shape), dtype=torch.uint8) for s in specs),
                network.zero_state(example_batch))
    names = [*(s.name for s in specs), StateSpec.name]
    outputs = ["logits", StateSpec.output]
    dynamic_axes = None if batch else {name: {0: "batch"} for name in [*names, *outputs]}
    return _write_graph(network, examples, names, outputs, dynamic_axes, output, fp16=fp16, metadata=metadata,
                        output_dims={StateSpec.output: {1: network.layout.size}})


def example_boxes(batch: int, size: int) -> "torch.Tensor":
    """Boxes on a batch of ``batch`` clips, for tracing: one more than there are clips, so that
    neither axis is specialised to the other."""
    import torch

    return torch.tensor([[i % batch, 0.0, 0.0, size / (i + 1), size] for i in range(batch + 1)], dtype=torch.float32)


def to_float16(graph: "onnx.ModelProto") -> "onnx.ModelProto":
    """The same graph computing in float16: weights, constants and casts become half precision.

    Made for this project's exported graphs (uint8 inputs cast to float at the start, float
    logits at the end): every float tensor the graph holds or casts to becomes float16, a float32
    input (an RoI model's boxes) is cast to float16 where it enters, and a final Cast keeps
    ``logits`` float32. The fp16 parity test checks the result numerically.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    def half(tensor: TensorProto) -> TensorProto:
        if tensor.data_type != TensorProto.FLOAT:
            return tensor
        return numpy_helper.from_array(numpy_helper.to_array(tensor).astype(np.float16), tensor.name)

    graph = onnx.ModelProto.FromString(graph.SerializeToString())  # leave the caller's graph alone
    body = graph.graph
    for i, initializer in enumerate(body.initializer):
        body.initializer[i].CopyFrom(half(initializer))
    for node in body.node:
        for attribute in node.attribute:
            if node.op_type == "Cast" and attribute.name == "to" and attribute.i == TensorProto.FLOAT:
                attribute.i = TensorProto.FLOAT16
            elif attribute.type == onnx.AttributeProto.TENSOR:
                attribute.t.CopyFrom(half(attribute.t))
    for graph_input in body.input:
        if graph_input.type.tensor_type.elem_type == TensorProto.FLOAT:
            internal = f"{graph_input.name}_fp16"
            for node in body.node:
                node.input[:] = [internal if name == graph_input.name else name for name in node.input]
            body.node.insert(0, helper.make_node("Cast", [graph_input.name], [internal], to=TensorProto.FLOAT16,
                                                 name=f"{graph_input.name}_to_float16"))
    del body.value_info[:]  # stale float32 annotations; shape inference recomputes them
    for output in body.output:
        internal = f"{output.name}_fp16"
        for node in body.node:
            node.output[:] = [internal if name == output.name else name for name in node.output]
        body.node.append(helper.make_node("Cast", [internal], [output.name], to=TensorProto.FLOAT,
                                          name=f"{output.name}_to_float32"))
    return graph


def check_metadata(metadata: dict | None, config: Config, path: str | Path) -> None:
    """An exported graph must have been made for this config's model and clip contract.

    Graphs exported elsewhere carry no streamrec metadata and are checked by shape only.
    """
    if metadata is None:
        return
    wanted = export_metadata(config, fp16=False)
    for field in ("arch", "num_classes"):
        if metadata.get(field) != wanted[field]:
            raise StreamrecError(f"{path} was exported for model.{field}={metadata.get(field)}, the config has "
                                 f"{wanted[field]}; export it from this config with `run_stream.py export`")
    for field, value in wanted["clip"].items():
        if metadata.get("clip", {}).get(field) != value:
            raise StreamrecError(f"{path} was exported for clip.{field}={metadata['clip'].get(field)}, the config "
                                 f"has {value}; export it from this config with `run_stream.py export`")
