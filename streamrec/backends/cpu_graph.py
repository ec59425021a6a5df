"""Graph rewrites that make ONNX Runtime's CPU provider faster on video networks.

Applied when an exported graph is loaded for ONNX Runtime's CPU provider, and nowhere else:
TensorRT and GPU providers get the exported graph as it is. The rewrites are exact up to float
summation order; the tests run each rewritten graph against the original in ONNX Runtime, and
`bench engine --backend onnxruntime,onnxruntime-plain` times the two side by side. The figures
behind each rewrite are in BENCHMARKS.md, "Measurements behind design choices".

**Stems.** ONNX Runtime runs a 3-D convolution as im2col and a matrix product. For a stem
that reads raw RGB (SlowFast's Fast stem, I3D's: 5x7x7 over 3 channels) that product has as
many rows as output channels and a 735-deep unrolled input, so the CPU mostly copies: in ONNX
Runtime's profiler SlowFast R50 4x16's Fast stem ran at a fraction of the rest of the network's
FLOP rate and took a large share of the clip. The same convolution is a sum over its temporal
taps of 2-D convolutions, which ONNX Runtime runs on its blocked (NCHWc) kernels. A wide stem
(I3D's 64 channels) runs one per tap, on the frames that tap reads. A narrow one (SlowFast's
Fast stem: 8 channels in R50, 4 in the tiny model) would fill only part of each block that way,
so its taps' kernels are stacked into one convolution over every frame, each output frame the
sum of its taps' products: each frame is read once, and the blocks are full. A narrow stem with
one tap (the tiny model's Slow stem) is that convolution alone.

**Pointwise and temporal convolutions.** A convolution whose kernel is kt x 1 x 1 with no
spatial stride or padding (ResNet's 1x1x1 and 3x1x1 layers, SlowFast's lateral connections) is
the same 2-D convolution over the free view [B, C, T, H*W] with a kt x 1 kernel, which ONNX
Runtime also runs on its NCHWc kernels rather than its slower 3-D path. A Relu that alone reads
it goes inside the view too, where ONNX Runtime fuses it into the convolution.

**Residual sums.** ONNX Runtime fuses a 3-D convolution with the ReLU after it, but not with a
residual ``Add`` between them, so each ResNet block writes and rereads its output twice more.
Its own ``FusedConv`` takes the residual as a fourth input (``Z``) and adds it in place.

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
# Output channels a temporal tap of a stem must reach to fill ONNX Runtime's NCHWc block (16 floats
# with AVX-512) alone; narrower taps are stacked into one convolution, which fills it.
NARROW_OUTPUT = 16
STEM = "stem"  # in the name of every node a rewritten stem is made of
MICROSOFT = "com.microsoft"  # ONNX Runtime's own operator domain, where FusedConv lives
# ONNX Runtime's transpose optimizer would merge a stem's frames-first transpose into the input
# normalisation's, moving it after the per-channel Mul/Sub: they then broadcast over an innermost
# axis of 3, which runs several times slower. Nothing else in these graphs needs it.
DISABLED_OPTIMIZERS = ("TransposeOptimizer", "TransposeOptimizer_CPUExecutionProvider")


@dataclass(frozen=True)
class Rewrites:
    stems: int = 0  # stems on RGB run as one 2-D convolution over every frame, taps stacked
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
    log.info("onnxruntime cpu graph: %d stem(s) as 2-D convolutions, %d convolution(s) flattened to 2-D, "
             "%d residual sum(s) fused", done.stems, done.flattened, done.residuals)
    return model.SerializeToString(), list(DISABLED_OPTIMIZERS)


def rewrite_for_cpu(model: "onnx.ModelProto") -> Rewrites:
    """Apply the rewrites to ``model`` in place; returns what was changed. The residual fusion
    comes last: shape inference does not see through ``FusedConv``, and the others need shapes."""
    done = Rewrites(stems=_rewrite(model, _stem_as_2d), flattened=_rewrite(model, _flatten_temporal),
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


def _stem_as_2d(node, graph: _Graph):
    """A Conv with a spatial kernel on fewer than 8 input channels (a stem over RGB, or a narrow
    pathway's 1x3x3), and the Relu that alone reads it, as 2-D convolutions over frames:
    [B, C, T, H, W] -> [B, T, C, H, W], zero-pad time, frames into the batch axis, then

    - with fewer than `NARROW_OUTPUT` output channels: one 2-D conv over every frame, every
      temporal tap's kernels stacked as output channels, back to [B, T, taps x C_out, H', W'],
      and each tap's products (a strided slice of frames and channels) summed. The conv bias
      goes with the first tap's kernels: every output takes exactly one product of each tap;
    - with more (and more than one tap): one 2-D conv per tap on a strided slice of the frames
      that tap reads, summed; the sums stay Adds (see `_fuse_residual`);

    then Relu, [B, C_out, T_out, H', W']. No Pad where time has no padding (ONNX Runtime would
    copy every frame for nothing)."""
    from onnx import helper, numpy_helper

    conv = graph.float32_conv(node)
    if conv is None:
        return None
    attrs, kernel = conv
    in_shape, out_shape = graph.static_shape(node.input[0]), graph.static_shape(node.output[0])
    if (len(kernel) != 5 or kernel[3] * kernel[4] == 1 or kernel[1] >= SMALL_INPUT
            or attrs.get("group", 1) != 1 or attrs.get("dilations", [1, 1, 1])[0] != 1
            or attrs.get("auto_pad", b"NOTSET") not in (b"NOTSET", b"") or not in_shape or not out_shape):
        return None
    stacked = kernel[0] < NARROW_OUTPUT
    if kernel[2] == 1 and not stacked:
        return None  # a wide 2-D stem gains nothing (X3D's 1x3x3 over RGB ran slower as 2-D)
    weight = numpy_helper.to_array(graph.weights[node.input[1]])
    bias = node.input[2] if len(node.input) > 2 and node.input[2] else None
    pads, strides = attrs.get("pads", [0] * 6), attrs.get("strides", [1, 1, 1])
    _, channels, frames_in, height, width = in_shape
    _, out_channels, out_frames, out_height, out_width = out_shape
    taps = kernel[2]
    relu = graph.only_reader(node.output[0], "Relu")
    prefix = f"streamrec/{node.name or node.output[0]}/{STEM}"
    initializers: list = []

    def const(suffix: str, values) -> str:
        initializers.append(numpy_helper.from_array(np.asarray(values), f"{prefix}/{suffix}"))
        return f"{prefix}/{suffix}"

    def add(op: str, inputs: list[str], suffix: str, **attributes) -> str:
        nodes.append(helper.make_node(op, inputs, [f"{prefix}/{suffix}"], name=f"{prefix}/{suffix}", **attributes))
        return f"{prefix}/{suffix}"

    def conv2d(frames: str, kernels: np.ndarray, biases: str | None, suffix: str) -> str:
        return add("Conv", [frames, const(f"{suffix}_weight", kernels), *([biases] if biases else [])], suffix,
                   kernel_shape=kernel[3:], strides=strides[1:], dilations=attrs.get("dilations", [1, 1, 1])[1:],
                   pads=[pads[1], pads[2], pads[4], pads[5]])

    nodes: list = []
    frames_first = add("Transpose", [node.input[0]], "frames_first", perm=[0, 2, 1, 3, 4])
    padded = frames_first if pads[0] == pads[3] == 0 else add(  # a streaming stem's past comes as frames, not zeros
        "Pad", [frames_first, const("time_pads", np.array([0, pads[0], 0, 0, 0, 0, pads[3], 0, 0, 0]))], "padded")
    frame_shape = const("frame_shape", np.array([-1, channels, height, width]))
    total = None
    if stacked:
        if bias:
            bias_values = numpy_helper.to_array(graph.weights[bias])
            bias = const("bias", np.concatenate([bias_values, np.zeros((taps - 1) * out_channels, bias_values.dtype)]))
        products = conv2d(add("Reshape", [padded, frame_shape], "batch"),
                          np.concatenate([weight[:, :, tap] for tap in range(taps)]), bias, "conv")  # tap-major
        products = add("Reshape", [products, const("products_shape", np.array(
            [-1, frames_in + pads[0] + pads[3], taps * out_channels, out_height, out_width]))], "products")
        if taps == 1 and strides[0] == 1:
            total = products  # every frame's products are its output
        else:
            axes, step = const("axes", np.array([1, 2])), const("step", np.array([strides[0], 1]))
            for tap in range(taps):
                # tap t's products of padded frames t, t + stride, ... (out_frames of them), its channels
                start = const(f"tap{tap}_start", np.array([tap, tap * out_channels]))
                stop = const(f"tap{tap}_end", np.array([tap + strides[0] * (out_frames - 1) + 1,
                                                        (tap + 1) * out_channels]))
                term = add("Slice", [products, start, stop, axes, step], f"tap{tap}")
                total = term if total is None else add("Add", [total, term], f"tap{tap}_sum")
    else:
        axis, step = const("time_axis", np.array([1])), const("time_step", np.array([strides[0]]))
        for tap in range(taps):
            # tap t reads padded frames t, t + stride, ...: out_frames of them, the last (taps - 1 - t) before the end
            end = -(taps - 1 - tap) or np.iinfo(np.int64).max
            start, stop = const(f"tap{tap}_start", np.array([tap])), const(f"tap{tap}_end", np.array([end]))
            sliced = add("Slice", [padded, start, stop, axis, step], f"tap{tap}_frames")
            term = conv2d(add("Reshape", [sliced, frame_shape], f"tap{tap}_batch"),
                          np.ascontiguousarray(weight[:, :, tap]), bias if tap == 0 else None, f"tap{tap}_conv")
            total = term if total is None else add("Add", [total, term], f"tap{tap}_sum")
    if relu is not None:
        total = add("Relu", [total], "relu")
    if not stacked:
        total = add("Reshape", [total, const("clip_shape", np.array(
            [-1, out_frames, out_channels, out_height, out_width]))], "clips")
    nodes.append(helper.make_node("Transpose", [total], [(relu or node).output[0]], perm=[0, 2, 1, 3, 4],
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

    if node.op_type != "Add" or len(node.input) != 2 or f"/{STEM}/" in node.name:
        return None  # a stem's per-tap sums stay Adds: fused, a streaming stem's last tap ran slower
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
