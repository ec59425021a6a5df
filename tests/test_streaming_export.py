"""Streaming graphs (`streamrec.export.export_streaming`) in ONNX Runtime against PyTorch, across a
sequence of hops: state in, state out, a row per stream, rows reset and reordered between calls.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from streamrec.backends.cpu_graph import STEM, rewrite_for_cpu
from streamrec.backends.inputs import StateSpec, step_input_specs
from streamrec.backends.onnxruntime_backend import OnnxRuntimeEngine, tensorrt_profile
from streamrec.config import load_config
from streamrec.errors import StreamrecError
from streamrec.export import METADATA_KEY, export_config, export_streaming, folded_model
from streamrec.models.streaming import streaming_network

REPO = Path(__file__).resolve().parents[1]
TOLERANCE = 1e-4  # relative to the largest value compared (or 1, if smaller)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    config = load_config("slowfast_tiny")
    folder = tmp_path_factory.mktemp("streaming")
    graphs = {hop: export_streaming(config, folder / f"tiny_hop{hop}.onnx", hop_frames=hop) for hop in (8, 16)}
    model = folded_model(config)  # what the graphs were exported from
    networks = {hop: streaming_network(model, config.clip, units=hop // 8) for hop in (8, 16)}
    return config, graphs, networks


def engine(config, network, path, **options) -> OnnxRuntimeEngine:
    specs = step_input_specs(config.clip, network.frames_per_call())
    return OnnxRuntimeEngine(path, specs, config.model.num_classes, device="cpu", threads=1, max_batch=4, **options)


def frames(network, batch: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    fast = rng.integers(0, 256, (batch, network.frames_per_call()["fast"], 96, 96, 3), dtype=np.uint8)
    return {"slow": np.ascontiguousarray(fast[:, ::4]), "fast": fast}


def relative(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max() / max(1.0, float(np.abs(b).max())))


def test_the_graph_is_the_streaming_contract_with_its_metadata(tiny):
    config, graphs, networks = tiny
    graph = onnx.load(str(graphs[8])).graph
    inputs = {i.name: i.type.tensor_type for i in graph.input}
    outputs = {o.name: o.type.tensor_type for o in graph.output}
    size = networks[8].layout.size
    dims = lambda t: [d.dim_param or d.dim_value for d in t.shape.dim]  # noqa: E731
    assert list(inputs) == ["slow", "fast", "state"] and list(outputs) == ["logits", "new_state"]
    assert dims(inputs["slow"]) == ["batch", 1, 96, 96, 3] and dims(inputs["fast"]) == ["batch", 4, 96, 96, 3]
    assert inputs["slow"].elem_type == inputs["fast"].elem_type == onnx.TensorProto.UINT8
    assert dims(inputs["state"]) == dims(outputs["new_state"]) == ["batch", size]
    assert inputs["state"].elem_type == outputs["new_state"].elem_type == onnx.TensorProto.FLOAT
    readers = [node for node in graph.node if {"slow", "fast"} & set(node.input)]
    assert readers and all(n.op_type == "Cast" for n in readers)  # uint8 is cast before anything else
    metadata = json.loads(next(p.value for p in onnx.load(str(graphs[16])).metadata_props if p.key == METADATA_KEY))
    streaming = metadata["streaming"]
    assert streaming["units"] == 2 and streaming["frames_per_call"] == {"slow": 2, "fast": 8}
    assert (streaming["unit_frames"], streaming["delay_units"], streaming["warmup_units"]) == (8, 4, 8)
    assert streaming["state_size"] == size and streaming["state_layout"][0]["name"] == "counter"
    assert metadata["arch"] == "slowfast" and metadata["checkpoint"] == "model.pt"


@pytest.fixture(scope="module")
def tiny_causal(tmp_path_factory):
    config = load_config("slowfast_tiny")
    path = export_streaming(config, tmp_path_factory.mktemp("causal") / "tiny_causal.onnx", form="causal",
                            hop_frames=8)
    return config, path, streaming_network(folded_model(config), config.clip, form="causal")


@pytest.mark.parametrize("form, cpu_graph", [("delayed_exact", True), ("delayed_exact", False), ("causal", True)])
def test_onnxruntime_follows_pytorch_across_hops_with_rows_reset_and_reordered(form, cpu_graph, request):
    if form == "causal":
        config, path, network = request.getfixturevalue("tiny_causal")
    else:
        config, graphs, networks = request.getfixturevalue("tiny")
        path, network = graphs[8], networks[8]
    runtime = engine(config, network, path, cpu_graph=cpu_graph)
    assert runtime.state == StateSpec(network.layout.size)
    rng = np.random.default_rng(0)
    streams = {"a": runtime.state.zeros(1)[0], "b": runtime.state.zeros(1)[0], "c": runtime.state.zeros(1)[0]}
    reference = {name: network.zero_state(1) for name in streams}
    spread = []
    for call in range(12):
        names = ["a", "b", "c"] if call % 2 == 0 else ["c", "a"]  # b sits out every other call
        if call == 6:
            streams["a"][:] = 0.0  # an outage: stream a starts again
            reference["a"].zero_()
        batch = frames(network, len(names), rng)
        logits, new_state = runtime.step({**batch, "state": np.stack([streams[n] for n in names])})
        for row, name in enumerate(names):
            with torch.no_grad():
                expected, reference[name] = network(*(torch.from_numpy(batch[k][row:row + 1]) for k in ("slow", "fast")),
                                                    reference[name])
            assert relative(logits[row], expected[0].numpy()) <= TOLERANCE, (call, name)
            assert relative(new_state[row], reference[name][0].numpy()) <= TOLERANCE, (call, name)
            streams[name] = new_state[row]
            spread.append(logits[row])
    assert np.std(spread, axis=0).max() > 0.1  # the logits move from call to call: a real comparison


def test_the_cpu_rewrites_fold_every_block_s_residual_sum_in_both_forms(tiny, tiny_causal):
    """The state's reshapes leave shape inference a new name for the batch axis on each side of
    some sums; they are still one batch, and the fusion finds every block's sum (it once found 2
    of the causal graph's 10). Both stems and the Fast pathway's 1x3x3 over 4 channels run as 2-D
    convolutions, their sums left as Adds."""
    config, graphs, _ = tiny
    blocks = 2 * sum(config.model.kwargs["depth"])  # one residual sum per block, Slow and Fast
    for path in (graphs[8], tiny_causal[1]):
        model = onnx.load(str(path))
        done = rewrite_for_cpu(model)
        assert (done.stems, done.residuals) == (3, blocks), path.name
        fused = [node for node in model.graph.node if node.op_type == "FusedConv"]
        assert len(fused) == blocks and not any(f"/{STEM}/" in node.name for node in fused)


def test_graphs_for_two_hops_share_the_state(tiny):
    config, graphs, networks = tiny
    eight, sixteen = engine(config, networks[8], graphs[8]), engine(config, networks[16], graphs[16])
    assert eight.state == sixteen.state
    rng = np.random.default_rng(1)
    state = eight.state.zeros(2)
    for _ in range(5):  # a few calls in, so the state is not zeros
        _, state = eight.step({**frames(networks[8], 2, rng), "state": state})
    batch = frames(networks[16], 2, rng)
    logits_16, state_16 = sixteen.step({**batch, "state": state})
    halves = [{k: np.ascontiguousarray(v[:, i * v.shape[1] // 2:(i + 1) * v.shape[1] // 2]) for k, v in batch.items()}
              for i in range(2)]
    _, state_8 = eight.step({**halves[0], "state": state})
    logits_8, state_8 = eight.step({**halves[1], "state": state_8})
    assert relative(logits_16, logits_8) <= TOLERANCE and relative(state_16, state_8) <= TOLERANCE


def test_a_fixed_batch_export_pads_the_state_rows_too(tiny, tmp_path):
    config, graphs, networks = tiny
    fixed = export_streaming(config, tmp_path / "fixed.onnx", hop_frames=8, batch=3)
    dynamic, padded = engine(config, networks[8], graphs[8]), engine(config, networks[8], fixed)
    assert padded.max_batch == 3
    rng = np.random.default_rng(2)
    state = dynamic.state.zeros(2)
    for _ in range(3):
        batch = frames(networks[8], 2, rng)
        logits, new_state = padded.step({**batch, "state": state})
        expected, state = dynamic.step({**batch, "state": state})
        assert logits.shape == (2, 7) and new_state.shape == state.shape
        assert relative(logits, expected) <= TOLERANCE and relative(new_state, state) <= TOLERANCE


def one_line(err: pytest.ExceptionInfo) -> str:
    message = str(err.value)
    assert "\n" not in message
    return message


def test_state_mistakes_are_one_line(tiny, tmp_path):
    config, graphs, networks = tiny
    streaming = engine(config, networks[8], graphs[8])
    batch = frames(networks[8], 2, np.random.default_rng(3))
    size = streaming.state.size
    with pytest.raises(StreamrecError, match="run it with step") as err:
        streaming.infer(batch)
    one_line(err)
    with pytest.raises(StreamrecError, match="'state' is missing") as err:
        streaming.step(batch)
    one_line(err)
    with pytest.raises(StreamrecError, match=rf"float32 \[2, {size}\]") as err:
        streaming.step({**batch, "state": np.zeros((1, size), np.float32)})
    one_line(err)
    with pytest.raises(StreamrecError, match=rf"float32 \[2, {size}\]"):
        streaming.step({**batch, "state": np.zeros((2, size), np.float64)})
    broken = np.zeros((2, size), np.float32)
    broken[1, 5] = np.nan
    with pytest.raises(StreamrecError, match="state row 1 .* not a number") as err:
        streaming.step({**batch, "state": broken})
    one_line(err)

    clip_graph = export_config(config, tmp_path / "clip.onnx")
    from streamrec.backends.inputs import input_specs
    clip_engine = OnnxRuntimeEngine(clip_graph, input_specs(config.clip), 7, device="cpu", threads=1, max_batch=4)
    assert clip_engine.state is None
    clips = {"slow": np.zeros((1, 4, 96, 96, 3), np.uint8), "fast": np.zeros((1, 16, 96, 96, 3), np.uint8)}
    with pytest.raises(StreamrecError, match="carries no state") as err:
        clip_engine.infer({**clips, "state": np.zeros((1, 4), np.float32)})
    one_line(err)
    with pytest.raises(StreamrecError, match="run it with infer") as err:
        clip_engine.step(clips)
    one_line(err)
    with pytest.raises(StreamrecError, match=r"the config needs uint8 \[B, 4,.*\(a streaming graph: it runs with the "
                                             r"streaming: section and hop it was exported for\)") as err:  # clip specs
        OnnxRuntimeEngine(graphs[8], input_specs(config.clip), 7, device="cpu", threads=1, max_batch=4)
    one_line(err)
    with pytest.raises(StreamrecError, match=r"the config needs uint8 \[B, 16,") as err:  # a clip graph, other specs
        OnnxRuntimeEngine(clip_graph, input_specs(replace(config.clip, num_frames=64)), 7, device="cpu", threads=1)
    assert "streaming" not in str(err.value)


def test_the_tensorrt_provider_profile_bounds_the_state_with_the_batch(tiny):
    config, _, networks = tiny
    specs = step_input_specs(config.clip, networks[8].frames_per_call())
    profile = tensorrt_profile(specs, 4, state=StateSpec(123))
    assert profile["trt_profile_min_shapes"] == "slow:1x1x96x96x3,fast:1x4x96x96x3,state:1x123"
    assert profile["trt_profile_max_shapes"] == "slow:4x1x96x96x3,fast:4x4x96x96x3,state:4x123"


