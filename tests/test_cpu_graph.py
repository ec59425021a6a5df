"""ONNX Runtime CPU graph rewrites (`streamrec.backends.cpu_graph`): each rewritten graph runs in
a real ONNX Runtime session against the graph it came from, on inputs whose outputs are far from
zero, so a dropped tap, a wrong padding or a missing shortcut shows. Parity of the rewritten
SlowFast graphs with PyTorch is `test_backends.test_torch_and_onnxruntime_agree`.
"""

from __future__ import annotations

import logging
import sys

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from streamrec.backends.cpu_graph import DISABLED_OPTIMIZERS, cpu_session_inputs, rewrite_for_cpu
from streamrec.bench.engine import open_engine
from streamrec.backends.inputs import input_specs
from streamrec.config import load_config
from streamrec.export import export_onnx
from test_export import random_model, varied_clips
from test_models import MODEL_CONFIGS, at_crop

RNG = np.random.default_rng(0)


def graph_model(nodes, inputs, initializers) -> onnx.ModelProto:
    """A graph with a 5-D output ``y`` of any size."""
    output = helper.make_tensor_value_info("y", TensorProto.FLOAT, [f"y{axis}" for axis in range(5)])
    graph = helper.make_graph(nodes, "g", inputs, [output],
                              [numpy_helper.from_array(v, k) for k, v in initializers.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def run(model: onnx.ModelProto, feeds: dict, disabled=()) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"],
                                   disabled_optimizers=list(disabled))
    return session.run(["y"], feeds)[0]


def assert_same_outputs(model: onnx.ModelProto, feeds: dict) -> onnx.ModelProto:
    """Rewrite a copy of ``model``; both give the same outputs. Returns the rewritten copy."""
    rewritten = onnx.ModelProto()
    rewritten.CopyFrom(model)
    rewrite_for_cpu(rewritten)
    onnx.checker.check_model(rewritten)
    before, after = run(model, feeds), run(rewritten, feeds, DISABLED_OPTIMIZERS)
    assert np.abs(before).max() > 1
    np.testing.assert_allclose(after, before, rtol=1e-5, atol=1e-5 * np.abs(before).max())
    return rewritten


def op_types(model: onnx.ModelProto) -> list[str]:
    return [node.op_type for node in model.graph.node]


def stem_model(kernel, strides, pads, *, bias=True, relu="only", outputs=8) -> onnx.ModelProto:
    """One 3-D Conv on 3 channels x 9 frames, batch axis dynamic; ``relu``: "only" (the Relu alone
    reads the conv), "shared" (the conv output is also a second Relu's input), or "none"."""
    weight = RNG.normal(size=(outputs, 3, *kernel)).astype(np.float32)
    inits = {"w": weight, **({"b": RNG.normal(size=outputs).astype(np.float32)} if bias else {})}
    conv = helper.make_node("Conv", ["x", "w", *(["b"] if bias else [])], ["c"], kernel_shape=list(kernel),
                            strides=list(strides), pads=list(pads))
    if relu == "only":
        nodes = [conv, helper.make_node("Relu", ["c"], ["y"])]
    elif relu == "shared":
        nodes = [conv, helper.make_node("Relu", ["c"], ["r"]), helper.make_node("Neg", ["c"], ["n"]),
                 helper.make_node("Add", ["r", "n"], ["y"])]
    else:
        nodes = [conv, helper.make_node("Identity", ["c"], ["y"])]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3, 9, 20, 20])
    return graph_model(nodes, [x], inits)


STEMS = [
    ((5, 7, 7), (1, 2, 2), (2, 3, 3, 2, 3, 3), True, "only"),  # SlowFast's Fast stem, I3D's
    ((3, 5, 5), (1, 2, 2), (1, 2, 2, 1, 2, 2), True, "only"),  # the tiny model's
    ((3, 3, 3), (2, 1, 1), (1, 1, 1, 1, 1, 1), False, "none"),  # temporal stride, no bias, no Relu
    ((4, 3, 3), (2, 2, 1), (2, 0, 1, 1, 2, 0), True, "shared"),  # uneven padding; the conv output read twice
    ((2, 3, 3), (1, 1, 1), (0, 1, 1, 0, 1, 1), True, "only"),  # no temporal padding
]


@pytest.mark.parametrize("kernel, strides, pads, bias, relu", [
    *STEMS, ((1, 7, 7), (1, 2, 2), (0, 3, 3, 0, 3, 3), True, "only")])  # the last, a Slow stem: one tap
@pytest.mark.parametrize("batch", [1, 3])
def test_a_narrow_stem_becomes_one_2d_convolution_with_its_taps_stacked(kernel, strides, pads, bias, relu, batch):
    model = stem_model(kernel, strides, pads, bias=bias, relu=relu)  # 8 output channels
    x = RNG.normal(size=(batch, 3, 9, 20, 20)).astype(np.float32) * 3
    rewritten = assert_same_outputs(model, {"x": x})
    (conv,) = [n for n in rewritten.graph.node if n.op_type == "Conv"]
    assert len(dict((a.name, a.ints) for a in conv.attribute)["kernel_shape"]) == 2
    weights = {init.name: init for init in rewritten.graph.initializer}
    assert list(weights[conv.input[1]].dims) == [kernel[0] * 8, 3, *kernel[1:]]  # every tap's 8 outputs
    taps = kernel[0] if kernel[0] > 1 or strides[0] > 1 else 0  # one slice of products a tap, where there is a choice
    sums = max(0, taps - 1) + (relu == "shared")  # the "shared" graph adds one of its own
    assert (op_types(rewritten).count("Slice"), op_types(rewritten).count("Add")) == (taps, sums)
    # the Relu moved next to the convolutions only where nothing else reads the conv output
    assert op_types(rewritten).count("Relu") == (0 if relu == "none" else 1)
    assert ("Neg" in op_types(rewritten)) == (relu == "shared")
    assert ("Pad" in op_types(rewritten)) == (pads[0] + pads[3] > 0)  # a copy only where time is padded
    assert "FusedConv" not in op_types(rewritten)  # the taps' sums add slices, not a convolution's output


@pytest.mark.parametrize("kernel, strides, pads, bias, relu", STEMS)
@pytest.mark.parametrize("batch", [1, 3])
def test_a_wide_stem_becomes_one_2d_convolution_per_tap(kernel, strides, pads, bias, relu, batch):
    model = stem_model(kernel, strides, pads, bias=bias, relu=relu, outputs=16)
    x = RNG.normal(size=(batch, 3, 9, 20, 20)).astype(np.float32) * 3
    rewritten = assert_same_outputs(model, {"x": x})
    convs = [n for n in rewritten.graph.node if n.op_type == "Conv"]
    assert len(convs) == kernel[0] and all(len(dict((a.name, a.ints) for a in n.attribute)["kernel_shape"]) == 2
                                           for n in convs)
    assert op_types(rewritten).count("Relu") == (0 if relu == "none" else 1)
    assert ("Pad" in op_types(rewritten)) == (pads[0] + pads[3] > 0)
    assert "FusedConv" not in op_types(rewritten)  # the per-tap sums stay Adds (see STEM)


@pytest.mark.parametrize("what", ["wide, one tap", "8 input channels", "grouped"])
def test_stems_that_gain_nothing_are_left_alone(what):
    kernel, channels, outputs, group = {"wide, one tap": ((1, 3, 3), 3, 24, 1), "8 input channels": ((3, 3, 3), 8, 8, 1),
                                        "grouped": ((3, 3, 3), 4, 8, 2)}[what]
    weight = RNG.normal(size=(outputs, channels // group, *kernel)).astype(np.float32)
    conv = helper.make_node("Conv", ["x", "w"], ["y"], kernel_shape=list(kernel), group=group,
                            pads=[k // 2 for k in kernel] * 2)
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", channels, 6, 10, 10])
    model = graph_model([conv], [x], {"w": weight})
    assert not rewrite_for_cpu(model)
    assert op_types(model) == ["Conv"]


def temporal_model(kernel, strides, pads, dilations=(1, 1, 1)) -> onnx.ModelProto:
    weight = RNG.normal(size=(16, 8, *kernel)).astype(np.float32) * 0.5
    conv = helper.make_node("Conv", ["x", "w", "b"], ["c"], kernel_shape=list(kernel), strides=list(strides),
                            pads=list(pads), dilations=list(dilations))
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 8, 16, 7, 9])
    return graph_model([conv, helper.make_node("Relu", ["c"], ["y"])], [x],
                       {"w": weight, "b": RNG.normal(size=16).astype(np.float32)})


@pytest.mark.parametrize("kernel, strides, pads, dilations", [
    ((1, 1, 1), (1, 1, 1), (0,) * 6, (1, 1, 1)),  # ResNet's 1x1x1
    ((3, 1, 1), (1, 1, 1), (1, 0, 0, 1, 0, 0), (1, 1, 1)),  # SlowFast's temporal 3x1x1
    ((5, 1, 1), (8, 1, 1), (2, 0, 0, 2, 0, 0), (1, 1, 1)),  # a Fast -> Slow lateral connection
    ((3, 1, 1), (1, 1, 1), (2, 0, 0, 1, 0, 0), (2, 1, 1)),  # temporal dilation, uneven padding
])
@pytest.mark.parametrize("batch", [1, 2])
def test_a_temporal_convolution_runs_as_2d_over_flattened_space(kernel, strides, pads, dilations, batch):
    model = temporal_model(kernel, strides, pads, dilations)
    x = RNG.normal(size=(batch, 8, 16, 7, 9)).astype(np.float32) * 2
    rewritten = assert_same_outputs(model, {"x": x})
    (conv,) = [n for n in rewritten.graph.node if n.op_type == "Conv"]
    assert dict((a.name, list(a.ints)) for a in conv.attribute)["kernel_shape"] == [kernel[0], 1]
    assert op_types(rewritten) == ["Reshape", "Conv", "Relu", "Reshape"]  # the Relu inside, next to its Conv


def test_a_relu_that_shares_the_convolution_s_output_stays_outside_the_flattened_view():
    weight = RNG.normal(size=(16, 8, 3, 1, 1)).astype(np.float32) * 0.5
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], kernel_shape=[3, 1, 1], pads=[1, 0, 0, 1, 0, 0]),
             helper.make_node("Relu", ["c"], ["r"]), helper.make_node("Neg", ["c"], ["n"]),
             helper.make_node("Add", ["r", "n"], ["y"])]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 8, 16, 7, 9])
    rewritten = assert_same_outputs(graph_model(nodes, [x], {"w": weight}),
                                    {"x": RNG.normal(size=(2, 8, 16, 7, 9)).astype(np.float32) * 2})
    assert op_types(rewritten)[:3] == ["Reshape", "Conv", "Reshape"]


@pytest.mark.parametrize("strides, pads", [((1, 2, 2), (0,) * 6), ((1, 1, 1), (0, 1, 1, 0, 1, 1))],
                         ids=["spatial stride", "spatial padding"])
def test_temporal_convolutions_that_touch_space_are_left_alone(strides, pads):
    model = temporal_model((1, 1, 1), strides, pads)
    assert not rewrite_for_cpu(model)
    assert op_types(model) == ["Conv", "Relu"]


def residual_model(shortcut_shape=(2, 16, 4, 6, 6), extra_reader=False, batch=2) -> onnx.ModelProto:
    """x -> Conv -> Add(shortcut) -> Relu, optionally with the conv output read by a second node;
    ``batch`` is x's batch axis (a name: unknown)."""
    inits = {"w": RNG.normal(size=(16, 8, 3, 1, 1)).astype(np.float32) * 0.3,
             "b": RNG.normal(size=16).astype(np.float32)}
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], kernel_shape=[3, 1, 1], pads=[1, 0, 0, 1, 0, 0]),
             helper.make_node("Add", ["c", "s"], ["a"]), helper.make_node("Relu", ["a"], ["r"])]
    if extra_reader:
        nodes += [helper.make_node("Mul", ["c", "r"], ["y"])]
    else:
        nodes += [helper.make_node("Identity", ["r"], ["y"])]
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 8, 4, 6, 6]),
              helper.make_tensor_value_info("s", TensorProto.FLOAT, list(shortcut_shape))]
    return graph_model(nodes, inputs, inits)


@pytest.mark.parametrize("batch, shortcut_batch", [(2, 2), ("batch", "unk__0")],
                         ids=["known batch", "the batch under two names"])
def test_a_residual_sum_and_its_relu_fold_into_the_convolution(batch, shortcut_batch):
    feeds = {"x": RNG.normal(size=(2, 8, 4, 6, 6)).astype(np.float32) * 2,
             "s": RNG.normal(size=(2, 16, 4, 6, 6)).astype(np.float32) * 2}
    rewritten = assert_same_outputs(residual_model((shortcut_batch, 16, 4, 6, 6), batch=batch), feeds)
    assert op_types(rewritten) == ["FusedConv", "Identity"]
    assert (rewritten.graph.node[0].domain, rewritten.graph.node[0].input[3]) == ("com.microsoft", "s")


@pytest.mark.parametrize("model", [residual_model(shortcut_shape=(2, 16, 1, 1, 1)), residual_model(extra_reader=True),
                                   residual_model(shortcut_shape=(1, 16, 4, 6, 6), batch="batch")],
                         ids=["broadcast shortcut", "conv output read elsewhere", "shortcut broadcast over the batch"])
def test_residual_sums_that_cannot_fold_are_left_alone(model):
    assert rewrite_for_cpu(model).residuals == 0
    assert "FusedConv" not in op_types(model) and op_types(model).count("Add") == 1


def test_slowfast_graphs_are_rewritten_and_keep_their_outputs(tmp_path):
    config = load_config("slowfast_tiny")
    clips = varied_clips(config.clip, 3)
    path = export_onnx(random_model(config, clips), config.clip, tmp_path / "tiny.onnx")
    model = onnx.load(str(path))
    done = rewrite_for_cpu(model)
    blocks = 2 * sum(config.model.kwargs["depth"])  # one residual sum per block, Slow and Fast
    # the stems, and the Fast pathway's 1x3x3 over 4 channels in res2
    assert (done.stems, done.residuals) == (3, blocks) and done.flattened >= blocks  # every block's first conv
    feeds = {spec.name: clips[spec.name] for spec in input_specs(config.clip)}
    before = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(["logits"], feeds)[0]
    after = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"],
                                 disabled_optimizers=list(DISABLED_OPTIMIZERS)).run(["logits"], feeds)[0]
    np.testing.assert_allclose(after, before, rtol=1e-4, atol=1e-4 * np.abs(before).max())
    assert before.std() > 0.5


# Every shipped SlowFast, Slow-only, I3D and X3D config at full depth; the other families' graphs, and
# which rewrites each gets, are checked on shallower examples by tests/test_models.py (CPU_REWRITES).
FULL_DEPTH_CONFIGS = [name for name in MODEL_CONFIGS if load_config(name).model.arch in ("slowfast", "x3d")
                      or name in ("slow_r50_8x8", "i3d_r50_8x8")]


@pytest.mark.parametrize("name", FULL_DEPTH_CONFIGS)
def test_every_shipped_model_keeps_its_outputs(name, tmp_path):
    """The whole family at a 32 px crop: SlowFast, Slow-only, I3D and X3D (depthwise and
    squeeze-excitation blocks, which the rewrites must leave alone)."""
    config = at_crop(load_config(name), 32)
    clips = varied_clips(config.clip, 2)
    path = export_onnx(random_model(config, clips), config.clip, tmp_path / f"{name}.onnx")
    model = onnx.load(str(path))
    done = rewrite_for_cpu(model)
    assert done.flattened and done.residuals  # every ResNet-style block has both
    assert bool(done.stems) == (config.clip.alpha is not None or name.startswith("i3d"))  # 5x7x7 or 3x5x5 RGB stems
    feeds = {spec.name: clips[spec.name] for spec in input_specs(config.clip)}
    before = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(["logits"], feeds)[0]
    after = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"],
                                 disabled_optimizers=list(DISABLED_OPTIMIZERS)).run(["logits"], feeds)[0]
    # float32 rounding alone moves deep nets' logits by 1e-4 to 3e-4 of their scale (measured: R50
    # 1.2e-4, R101 2.3e-4; PyTorch's own float32 is 1.6e-4 from float64 on R50, see test_backends);
    # a wrong rewrite (a dropped tap, a shifted pad) moves them by their whole scale
    assert np.abs(after - before).max() <= 1e-3 * np.abs(before).max()
    assert (after.argmax(1) == before.argmax(1)).all() and before.std() > 0.1


def test_a_graph_the_rewrite_fails_on_runs_as_exported_with_one_warning(tmp_path, monkeypatch, caplog):
    import streamrec.backends.cpu_graph as cpu_graph

    path = tmp_path / "stem.onnx"
    onnx.save(stem_model((3, 3, 3), (1, 1, 1), (1, 1, 1, 1, 1, 1)), str(path))

    def fail(model):
        raise ValueError("an operator it has never seen\nmore detail")

    monkeypatch.setattr(cpu_graph, "rewrite_for_cpu", fail)
    with caplog.at_level(logging.WARNING):
        assert cpu_session_inputs(path) == (str(path), [])
    (record,) = caplog.records
    assert record.getMessage() == ("cannot rewrite stem.onnx for ONNX Runtime's CPU kernels (an operator it has never "
                                   "seen); running it as exported (engine.cpu_graph: false skips the attempt)")


def test_without_the_onnx_package_the_graph_runs_as_exported(tmp_path, monkeypatch, caplog):
    model = stem_model((3, 3, 3), (1, 1, 1), (1, 1, 1, 1, 1, 1))
    path = tmp_path / "stem.onnx"
    onnx.save(model, str(path))
    monkeypatch.setitem(sys.modules, "onnx", None)  # import onnx now raises ImportError
    with caplog.at_level(logging.WARNING):
        assert cpu_session_inputs(path) == (str(path), [])
    assert "pip install onnx" in caplog.text


@pytest.mark.parametrize("backend, rewritten", [("onnxruntime", True), ("onnxruntime-plain", False)])
def test_the_rewrites_can_be_turned_off(backend, rewritten, tmp_path, monkeypatch, caplog):
    """``engine.cpu_graph: false`` (and the benchmark's ``onnxruntime-plain``) runs the exported graph."""
    monkeypatch.setenv("STREAMREC_ENGINE_DIR", str(tmp_path))
    with caplog.at_level(logging.INFO, logger="streamrec.backends.cpu_graph"):
        engine = open_engine(load_config("slowfast_tiny", ["engine.device=cpu"]), backend, "fp32", 2)
    assert ("onnxruntime cpu graph: 3 stem(s)" in caplog.text) == rewritten
    assert engine.infer(varied_clips(load_config("slowfast_tiny").clip, 2)).shape == (2, 7)


@pytest.mark.parametrize("spin_wait", [False, True])
def test_onnx_runtime_s_idle_threads_sleep_unless_told_to_spin(spin_wait, tmp_path, monkeypatch):
    """``engine.spin_wait`` (off by default): spinning threads take the CPU that capture threads
    and the pipeline's own need when they share a few cores (BENCHMARKS.md)."""
    monkeypatch.setenv("STREAMREC_ENGINE_DIR", str(tmp_path))
    config = load_config("slowfast_tiny", ["engine.device=cpu", f"engine.spin_wait={str(spin_wait).lower()}"])
    engine = open_engine(config, "onnxruntime", "fp32", 2)
    options = engine.session.get_session_options()
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == ("1" if spin_wait else "0")
