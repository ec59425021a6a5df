"""Graph rewrites that make ONNX Runtime's CPU provider faster on video networks.

Applied when an exported graph is loaded for ONNX Runtime's CPU provider, and nowhere else:
TensorRT and GPU providers get the exported graph as it is. The rewrites are exact up to float
summation order; the tests run each rewritten graph against the original in ONNX Runtime, and
`bench engine --backend onnxruntime,onnxruntime-plain` times the two side by side. The figures
behind each rewrite are in BENCHMARKS.md, "Measurements behind design choices".

**Temporal stems.** ONNX Runtime runs a 3-D convolution as im2col and a matrix product. For a
stem that reads raw RGB over several frames (SlowFast's Fast stem, I3D's: 5x7x7 over 3 channels)
that product has as many rows as output channels and a 735-deep unrolled input, so the CPU
mostly copies: in ONNX Runtime's profiler SlowFast R50 4x16's Fast stem ran at a fraction of
the rest of the network's FLOP rate and took a large share of the clip. The same convolution
is a sum over its temporal taps of one 2-D convolution each, on the frames that tap reads;
ONNX Runtime runs those on its blocked (NCHWc) 2-D kernels, and the stem gets faster.

**Pointwise and temporal convolutions.** A convolution whose kernel is kt x 1 x 1 with no
spatial stride or padding (ResNet's 1x1x1 and 3x1x1 layers, SlowFast's lateral connections) is
the same 2-D convolution over the free view [B, C, T, H*W] with a kt x 1 kernel, which ONNX
Runtime also runs on its NCHWc kernels rather than its slower 3-D path. A Relu that alone reads
it goes inside the view too, where ONNX Runtime fuses it into the convolution.

**Residual sums.** ONNX Runtime fuses a 3-D convolution with the ReLU after it, but not with a
residual ``Add`` between them, so each ResNet block writes and rereads its output twice more.
Its own ``FusedConv`` takes the residual as a fourth input (``Z``) and adds it in place. A split
stem's per-tap sums look the same to it and stay Adds: fused, the streaming stem ran slower.

`cpu_session_inputs` is the entry point; `rewrite_for_cpu` does the work.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from streamrec.backends.cpu_int8 import is_quantized

if TYPE_CHECKING:
    import onnx

log = logging.getLogger(__name__)

SMALL_INPUT = 8  # input channels below one NCHWc block: ONNX Runtime's 2-D kernels read these unblocked
PER_TAP = "per_tap"  # in the name of every node a split stem is made of
MICROSOFT = "com.microsoft"  # ONNX Runtime's own operator domain, where FusedConv lives
# ONNX Runtime's transpose optimizer would merge a stem's frames-first transpose into the input
# normalisation's, moving it after the per-channel Mul/Sub: they then broadcast over an innermost
# axis of 3, which runs several times slower. Nothing else in these graphs needs it.
DISABLED_OPTIMIZERS = ("TransposeOptimizer", "TransposeOptimizer_CPUExecutionProvider")


@dataclass(frozen=True)
class Rewrites:
    stems: int = 0  # spatio-temporal stems split into per-tap 2-D convolutions
    flattened: int = 0  # kt x 1 x 1 convolutions run as 2-D over [B, C, T, H*W]
    residuals: int = 0  # Conv + Add + Relu made one FusedConv

    def __bool__(self) -> bool:
        return bool(self.stems or self.flattened or self.residuals)


def cpu_session_inputs(path: Path) -> tuple[str | bytes, list[str]]:
    """What to hand ``onnxruntime.InferenceSession`` for the CPU provider: the rewritten graph's
    bytes and the optimizers to disable, or the file as it is when there is nothing to rewrite
    (an int8 graph: see `cpu_int8`), when the ``onnx`` package is missing or the rewrite fails on
    a graph it was not made for (each with a one-line warning), or when the file does not parse
    (ONNX Runtime then says what is wrong with it)."""
    try:
        import onnx
    except ImportError:
        log.warning("the onnx package is not installed, so ONNX Runtime runs %s unoptimised for the CPU "
                    "(slower on video stems); pip install onnx", path.name)
        return str(path), []
    try:
        model = onnx.load(str(path))
    except Exception:  # a damaged file: let ONNX Runtime report it in its own words
        return str(path), []
    if is_quantized(model):
        return str(path), []
    try:
        done = rewrite_for_cpu(model)
    except Exception as err:  # a graph unlike the exported ones: it still runs, as it is
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        log.warning("cannot rewrite %s for ONNX Runtime's CPU kernels (%s); running it as exported "
                    "(engine.cpu_graph: false skips the attempt)", path.name, reason)
        return str(path), []
    if not done:
        return str(path), []
    log.info("onnxruntime cpu graph: %d stem(s) split per temporal tap, %d convolution(s) flattened to 2-D, "
             "%d residual sum(s) fused", done.stems, done.flattened, done.residuals)
    return model.SerializeToString(), list(DISABLED_OPTIMIZERS)


def rewrite_for_cpu(model: "onnx.ModelProto") -> Rewrites:
    """Apply the rewrites to ``model`` in place; returns what was changed. The residual fusion
    comes last: shape inference does not see through ``FusedConv``, and the others need shapes."""
    done = Rewrites(stems=_rewrite(model, _split_stem), flattened=_rewrite(model, _flatten_temporal),
                    residuals=_rewrite(model, _fuse_residual))
    if done.residuals and not any(o.domain == MICROSOFT for o in model.opset_import):
        from onnx import helper

        model.opset_import.append(helper.make_opsetid(MICROSOFT, 1))
    if done:
        used = {name for node in model.graph.node for name in node.input}
        for init in [i for i in model.graph.initializer if i.name not in used]:
            model.graph.initializer.remove(init)
    return done


class _Graph:
    """What the rewrites look up: inferred shapes, initializers, and who reads each tensor."""

    def __init__(self, model: "onnx.ModelProto"):
        import onnx

        inferred = onnx.shape_inference.infer_shapes(_without_weights(model))
        values = [*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output]
        self.shapes = {v.name: [d.dim_value if d.HasField("dim_value") else (d.dim_param or None)
                                for d in v.type.tensor_type.shape.dim] for v in values}
        self.weights = {init.name: init for init in model.graph.initializer}
        self.outputs = {o.name for o in model.graph.output}
        self.readers: dict[str, list] = {}  # tensor name -> the nodes that read it
        self.producer = {}  # tensor name -> the node that writes it
        for node in model.graph.node:
            for name in node.input:
                self.readers.setdefault(name, []).append(node)
            for name in node.output:
                self.producer[name] = node

    def only_reader(self, name: str, op_type: str):
        """The node of ``op_type`` that alone reads ``name`` (which is not a graph output), or None."""
        readers = self.readers.get(name, [])
        if len(readers) == 1 and readers[0].op_type == op_type and name not in self.outputs:
            return readers[0]
        return None

    def float32_conv(self, node) -> tuple[dict, list[int]] | None:
        """A Conv's attributes and kernel shape, when its weight is a float32 initializer (fp16
        graphs are left as exported); None for any other node."""
        import onnx
        from onnx import helper

        weight = self.weights.get(node.input[1]) if node.op_type == "Conv" and len(node.input) > 1 else None
        if weight is None or weight.data_type != onnx.TensorProto.FLOAT:
            return None
        return {a.name: helper.get_attribute_value(a) for a in node.attribute}, list(weight.dims)

    def same_shape(self, a: str, b: str) -> bool:
        """Whether ``a`` and ``b`` are known to have one shape: equal known axes after the batch
        axis, and batch axes equal or both unknown numbers. Shape inference names the batch axis
        afresh after a reshape to -1 (a streaming graph's state), yet both are the call's batch;
        a literal batch of 1 beside an unknown one could broadcast, and does not count."""
        shape_a, shape_b = self.static_shape(a), self.static_shape(b)
        if not shape_a or not shape_b or len(shape_a) != len(shape_b) or shape_a[1:] != shape_b[1:]:
            return False
        return shape_a[0] == shape_b[0] or not isinstance(shape_a[0], int) and not isinstance(shape_b[0], int)

    def static_shape(self, name: str) -> list[int] | None:
        """The shape of ``name`` when every axis but the batch axis is a known number."""
        shape = self.shapes.get(name)
        return shape if shape and all(isinstance(d, int) and d > 0 for d in shape[1:]) else None


def _without_weights(model: "onnx.ModelProto") -> "onnx.ModelProto":
    """``model`` with its float weights as typed inputs: shape inference needs their shapes, not
    their values, and copies whatever it is given, so large weights make it slow.
    Integer initializers (shapes, pads) keep their values, which shape inference reads."""
    import onnx
    from onnx import helper

    inputs = {i.name for i in model.graph.input}  # old graphs list their initializers as inputs too
    small = [i for i in model.graph.initializer if i.data_type != onnx.TensorProto.FLOAT]
    weights = [helper.make_tensor_value_info(i.name, i.data_type, list(i.dims)) for i in model.graph.initializer
               if i.data_type == onnx.TensorProto.FLOAT and i.name not in inputs]
    graph = helper.make_graph(model.graph.node, model.graph.name, [*model.graph.input, *weights],
                              model.graph.output, small)
    return helper.make_model(graph, opset_imports=model.opset_import, ir_version=model.ir_version)


def _rewrite(model: "onnx.ModelProto", rewrite) -> int:
    """Apply ``rewrite(node, graph)`` to every node. It returns None to leave a node, or (nodes that
    replace it, new initializers, outputs of the other nodes it absorbs, which are dropped)."""
    graph = _Graph(model)
    replacements, absorbed = {}, set()
    for node in model.graph.node:
        result = rewrite(node, graph)
        if result is not None:
            nodes, initializers, gone = result
            replacements[node.output[0]] = nodes
            model.graph.initializer.extend(initializers)
            absorbed |= gone
    if replacements:
        new_nodes = []
        for node in model.graph.node:
            if node.output[0] not in absorbed:
                new_nodes.extend(replacements.get(node.output[0], [node]))
        del model.graph.node[:]
        model.graph.node.extend(new_nodes)
    return len(replacements)


def _split_stem(node, graph: _Graph):
    """A Conv with a temporal and a spatial kernel on fewer than 8 input channels (and the Relu
    that alone reads it), as the sum over temporal taps of 2-D convolutions: [B, C, T, H, W] ->
    [B, T, C, H, W], zero-pad time, one strided time slice per tap, frames into the batch axis,
    2-D conv, sum, Relu, back to [B, C_out, T_out, H_out, W_out]. No Pad where time has no
    padding (ONNX Runtime would copy every frame for nothing)."""
    from onnx import helper, numpy_helper

    conv = graph.float32_conv(node)
    if conv is None:
        return None
    attrs, kernel = conv
    in_shape, out_shape = graph.static_shape(node.input[0]), graph.static_shape(node.output[0])
    if (len(kernel) != 5 or kernel[2] == 1 or kernel[3] * kernel[4] == 1 or kernel[1] >= SMALL_INPUT
            or attrs.get("group", 1) != 1 or attrs.get("dilations", [1, 1, 1])[0] != 1
            or attrs.get("auto_pad", b"NOTSET") not in (b"NOTSET", b"") or not in_shape or not out_shape):
        return None
    weight = numpy_helper.to_array(graph.weights[node.input[1]])
    pads, strides = attrs.get("pads", [0] * 6), attrs.get("strides", [1, 1, 1])
    _, channels, _, height, width = in_shape
    _, out_channels, out_frames, out_height, out_width = out_shape
    relu = graph.only_reader(node.output[0], "Relu")
    prefix = f"streamrec/{node.name or node.output[0]}/{PER_TAP}"
    initializers: list = []

    def const(suffix: str, values) -> str:
        initializers.append(numpy_helper.from_array(np.asarray(values), f"{prefix}/{suffix}"))
        return f"{prefix}/{suffix}"

    def add(op: str, inputs: list[str], suffix: str, **attributes) -> str:
        nodes.append(helper.make_node(op, inputs, [f"{prefix}/{suffix}"], name=f"{prefix}/{suffix}", **attributes))
        return f"{prefix}/{suffix}"

    nodes: list = []
    frames_first = add("Transpose", [node.input[0]], "frames_first", perm=[0, 2, 1, 3, 4])
    padded = frames_first if pads[0] == pads[3] == 0 else add(  # a streaming stem's past comes as frames, not zeros
        "Pad", [frames_first, const("time_pads", np.array([0, pads[0], 0, 0, 0, 0, pads[3], 0, 0, 0]))], "padded")
    axis, step = const("time_axis", np.array([1])), const("time_step", np.array([strides[0]]))
    frame_shape = const("frame_shape", np.array([-1, channels, height, width]))
    total = None
    for tap in range(kernel[2]):
        # tap t reads padded frames t, t + stride, ...: out_frames of them, the last (taps - 1 - t) before the end
        end = -(kernel[2] - 1 - tap) or np.iinfo(np.int64).max
        start, stop = const(f"tap{tap}_start", np.array([tap])), const(f"tap{tap}_end", np.array([end]))
        sliced = add("Slice", [padded, start, stop, axis, step], f"tap{tap}_frames")
        frames = add("Reshape", [sliced, frame_shape], f"tap{tap}_batch")
        conv_inputs = [frames, const(f"tap{tap}_weight", np.ascontiguousarray(weight[:, :, tap]))]
        if tap == 0 and len(node.input) > 2 and node.input[2]:
            conv_inputs.append(node.input[2])  # the bias, once
        conv = add("Conv", conv_inputs, f"tap{tap}_conv", kernel_shape=kernel[3:], strides=strides[1:],
                   dilations=attrs.get("dilations", [1, 1, 1])[1:], pads=[pads[1], pads[2], pads[4], pads[5]])
        total = conv if total is None else add("Add", [total, conv], f"tap{tap}_sum")
    if relu is not None:
        total = add("Relu", [total], "relu")
    clip_shape = const("clip_shape", np.array([-1, out_frames, out_channels, out_height, out_width]))
    clips = add("Reshape", [total, clip_shape], "clips")
    nodes.append(helper.make_node("Transpose", [clips], [(relu or node).output[0]], perm=[0, 2, 1, 3, 4],
                                  name=f"{prefix}/channels_first"))
    return nodes, initializers, {relu.output[0]} if relu is not None else set()


def _flatten_temporal(node, graph: _Graph):
    """A Conv with a kt x 1 x 1 kernel and no spatial stride, padding or dilation, as a 2-D Conv
    with a kt x 1 kernel over the view [B, C, T, H*W]; the Relu that alone reads it moves inside
    the view, next to the Conv, where ONNX Runtime fuses the two. Left alone when it ends a
    residual block (Conv -> Add -> Relu), which `_fuse_residual` makes one node instead."""
    from onnx import helper, numpy_helper

    conv = graph.float32_conv(node)
    if conv is None:
        return None
    attrs, kernel = conv
    out_shape = graph.static_shape(node.output[0])
    pads, dilations = attrs.get("pads", [0] * 6), attrs.get("dilations", [1, 1, 1])
    residual_add = graph.only_reader(node.output[0], "Add")
    if (len(kernel) != 5 or kernel[3:] != [1, 1] or attrs.get("strides", [1, 1, 1])[1:] != [1, 1]
            or any(pads[i] for i in (1, 2, 4, 5)) or dilations[1:] != [1, 1] or attrs.get("group", 1) != 1
            or attrs.get("auto_pad", b"NOTSET") not in (b"NOTSET", b"") or not out_shape
            or residual_add is not None and graph.only_reader(residual_add.output[0], "Relu") is not None):
        return None
    p = f"streamrec/{node.name or node.output[0]}/flat"
    weight = numpy_helper.to_array(graph.weights[node.input[1]])[..., 0]  # [C_out, C_in, kt, 1]
    initializers = [numpy_helper.from_array(weight, f"{p}/weight"),
                    numpy_helper.from_array(np.array([0, 0, 0, -1]), f"{p}/flat_shape"),  # 0: keep that axis
                    numpy_helper.from_array(np.array([0, 0, 0, *out_shape[3:]]), f"{p}/clip_shape")]
    relu = graph.only_reader(node.output[0], "Relu")
    nodes = [
        helper.make_node("Reshape", [node.input[0], f"{p}/flat_shape"], [f"{p}/input"], name=f"{p}/input"),
        helper.make_node("Conv", [f"{p}/input", f"{p}/weight", *node.input[2:]], [f"{p}/output"], name=f"{p}/conv",
                         kernel_shape=kernel[2:4], strides=[attrs.get("strides", [1])[0], 1],
                         pads=[pads[0], 0, pads[3], 0], dilations=[dilations[0], 1]),
    ]
    if relu is None:
        nodes.append(helper.make_node("Reshape", [f"{p}/output", f"{p}/clip_shape"], [node.output[0]],
                                      name=f"{p}/clips"))
        return nodes, initializers, set()
    nodes += [helper.make_node("Relu", [f"{p}/output"], [f"{p}/relu"], name=f"{p}/relu"),
              helper.make_node("Reshape", [f"{p}/relu", f"{p}/clip_shape"], [relu.output[0]], name=f"{p}/clips")]
    return nodes, initializers, {relu.output[0]}


def _fuse_residual(node, graph: _Graph):
    """``Relu(Add(Conv(x), shortcut))`` as one ``FusedConv(x, W, b, Z=shortcut)``, placed where the
    Add was (by then both the convolution's input and the shortcut exist)."""
    from onnx import helper

    if node.op_type != "Add" or len(node.input) != 2 or f"/{PER_TAP}/" in node.name:
        return None  # a split stem's sums stay Adds: fused, a streaming stem's last tap ran slower
    relu = graph.only_reader(node.output[0], "Relu")
    if relu is None or not graph.same_shape(node.input[0], node.input[1]):  # no broadcasting
        return None
    for conv_output, shortcut in ((node.input[1], node.input[0]), (node.input[0], node.input[1])):
        conv = graph.producer.get(conv_output)
        if conv is None or graph.float32_conv(conv) is None or graph.only_reader(conv_output, "Add") is None:
            continue
        fused = helper.make_node("FusedConv", [*conv.input, *([""] if len(conv.input) == 2 else []), shortcut],
                                 [relu.output[0]], name=f"streamrec/{conv.name or conv_output}/residual",
                                 domain=MICROSOFT, activation="Relu")
        fused.attribute.extend(conv.attribute)
        return [fused], [], {conv_output, relu.output[0]}
    return None
