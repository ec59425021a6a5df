"""ONNX export: the engine contract in the graph, checked with ONNX Runtime against PyTorch.

Parity is only meaningful on a model whose logits differ from clip to clip; an untrained
model's logits are nearly constant. `random_model` therefore calibrates its batch norms on
the test clips and draws a head whose logits spread with standard deviation 1 across clips
and classes, and the tests check that spread and that the clips do not all share a top-1.
"""

from __future__ import annotations

import cv2
import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch import nn

from streamrec.backends.onnxruntime_backend import OnnxRuntimeEngine
from streamrec.backends.inputs import input_specs
from streamrec.checkpoints import load_model
from streamrec.cli import main as cli_main
from streamrec.config import ClipConfig, Config, load_config
from streamrec.export import export_config, export_onnx
from streamrec.sampling import split_pathways

FP32_TOLERANCE = 1e-4
FP16_TOLERANCE = 1e-2


def varied_clips(clip: ClipConfig, count: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Engine inputs of ``count`` clips that differ in colour, scale of detail and brightness."""
    rng = np.random.default_rng(seed)
    clips = []
    for _ in range(count):
        grid = int(rng.integers(2, 9))
        coarse = rng.uniform(0, 255, (clip.num_frames, grid, grid, 3)).astype(np.float32) * rng.uniform(0.3, 1)
        frames = np.stack([cv2.resize(f, (clip.crop_size, clip.crop_size), interpolation=cv2.INTER_CUBIC)
                           for f in coarse])
        clips.append(np.clip(frames + rng.normal(0, 10, frames.shape), 0, 255).astype(np.uint8))
    return split_pathways(clip, np.stack(clips))


def random_model(config: Config, clips: dict[str, np.ndarray], seed: int = 0) -> nn.Module:
    """The config's model with random weights that make well-spread, clip-dependent logits on ``clips``."""
    torch.manual_seed(seed)
    model = load_model(config)
    tensors = [torch.from_numpy(clips[name]) for name in config.clip.input_names]
    with torch.no_grad():
        for norm in model.modules():
            if isinstance(norm, nn.modules.batchnorm._BatchNorm):
                norm.reset_running_stats()
                norm.momentum = None  # running statistics = these clips' statistics
                norm.weight.uniform_(0.5, 1.5)
                norm.bias.normal_(0.0, 0.2)
        head = [m for m in model.modules() if isinstance(m, nn.Linear)][-1]
        features = []
        hook = head.register_forward_hook(lambda _m, args, _out: features.append(args[0].reshape(-1, head.in_features)))
        model.train()
        for dropout in model.modules():
            if isinstance(dropout, nn.Dropout):
                dropout.eval()
        model(*tensors)  # batch norms learn these clips' statistics; the hook sees the head's input
        hook.remove()
        model.eval()
        features = torch.cat(features)
        common = features.mean(0) / features.mean(0).norm()
        weight = torch.randn(head.weight.shape)
        weight -= torch.outer(weight @ common, common)  # no class wins just by the features all clips share
        head.weight.copy_(weight / (features @ weight.T).std())
        head.bias.zero_()
    return model


def torch_logits(model: nn.Module, clip: ClipConfig, clips: dict[str, np.ndarray]) -> np.ndarray:
    with torch.no_grad():
        return model(*[torch.from_numpy(clips[name]) for name in clip.input_names]).numpy()


def onnx_logits(path, clips: dict[str, np.ndarray]) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(["logits"], clips)[0]


def assert_meaningful(reference: np.ndarray) -> None:
    """Guards against a vacuous comparison: logits that spread, and clips with different top-1."""
    assert reference.std() > 0.5
    assert len(set(reference.argmax(1))) >= 3


@pytest.fixture(scope="module")
def tiny() -> tuple[Config, dict[str, np.ndarray], nn.Module, np.ndarray]:
    config = load_config("slowfast_tiny")
    clips = varied_clips(config.clip, 8)
    model = random_model(config, clips)
    reference = torch_logits(model, config.clip, clips)
    assert_meaningful(reference)
    return config, clips, model, reference


def test_fp32_export_is_the_engine_contract_and_matches_pytorch(tiny, tmp_path):
    config, clips, model, reference = tiny
    path = export_onnx(model, config.clip, tmp_path / "tiny.onnx")
    graph = onnx.load(str(path)).graph

    inputs = {i.name: i.type.tensor_type for i in graph.input}
    assert list(inputs) == ["slow", "fast"]
    for spec in input_specs(config.clip):
        assert inputs[spec.name].elem_type == onnx.TensorProto.UINT8
        dims = [d.dim_param or d.dim_value for d in inputs[spec.name].shape.dim]
        assert dims == ["batch", *spec.clip_shape]
    (output,) = graph.output
    assert output.name == "logits" and output.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    # uint8 is cast to float before anything else touches it (no uint8 slicing in TensorRT)
    readers = [node for node in graph.node if set(node.input) & set(inputs)]
    assert readers and all(n.op_type == "Cast" and n.attribute[0].i == onnx.TensorProto.FLOAT for n in readers)

    logits = onnx_logits(path, clips)
    assert np.abs(logits - reference).max() <= FP32_TOLERANCE
    assert (logits.argmax(1) == reference.argmax(1)).all()


def test_fp16_export_computes_in_half_precision_within_tolerance(tiny, tmp_path):
    config, clips, model, reference = tiny
    path = export_onnx(model, config.clip, tmp_path / "tiny16.onnx", fp16=True)
    graph = onnx.load(str(path)).graph
    kinds = {t.data_type for t in graph.initializer if t.data_type in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16)}
    assert kinds == {onnx.TensorProto.FLOAT16}
    assert graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT  # logits stay float32
    assert all(i.type.tensor_type.elem_type == onnx.TensorProto.UINT8 for i in graph.input)

    logits = onnx_logits(path, clips)
    assert logits.dtype == np.float32
    assert np.abs(logits - reference).max() <= FP16_TOLERANCE
    assert (logits.argmax(1) == reference.argmax(1)).all()


def test_single_pathway_model_takes_one_input_named_frames(tmp_path):
    small = ["model.depth=[1,1,1,1]", "model.width=8", "clip.crop_size=64", "clip.short_side=80"]
    config = load_config("slow_r50_8x8", small)
    clips = varied_clips(config.clip, 6)
    assert list(clips) == ["frames"]
    model = random_model(config, clips)
    reference = torch_logits(model, config.clip, clips)
    assert_meaningful(reference)
    path = export_onnx(model, config.clip, tmp_path / "slow.onnx")
    assert [i.name for i in onnx.load(str(path)).graph.input] == ["frames"]
    assert np.abs(onnx_logits(path, clips) - reference).max() <= FP32_TOLERANCE


def test_fixed_batch_export_pads_smaller_batches(tiny, tmp_path):
    config, clips, model, reference = tiny
    path = export_onnx(model, config.clip, tmp_path / "b4.onnx", batch=4)
    dims = [d.dim_value for d in onnx.load(str(path)).graph.input[0].type.tensor_type.shape.dim]
    assert dims[0] == 4
    engine = OnnxRuntimeEngine(path, input_specs(config.clip), config.model.num_classes, device="cpu")
    assert engine.max_batch == 4
    three = {name: array[:3] for name, array in clips.items()}
    assert np.abs(engine.infer(three) - reference[:3]).max() <= FP32_TOLERANCE


def test_export_records_the_config_it_was_made_from(tmp_path):
    config = load_config("slowfast_tiny")
    path = export_config(config, tmp_path / "tiny.onnx")
    engine = OnnxRuntimeEngine(path, input_specs(config.clip), config.model.num_classes, device="cpu")
    assert engine.metadata["arch"] == "slowfast"
    assert engine.metadata["clip"]["num_frames"] == config.clip.num_frames
    assert engine.metadata["precision"] == "fp32"


def test_export_command_writes_the_file(tmp_path, capsys):
    output = tmp_path / "cli.onnx"
    assert cli_main(["export", "--config", "slowfast_tiny", "--output", str(output), "--batch", "2"]) == 0
    assert [d.dim_value for d in onnx.load(str(output)).graph.input[1].type.tensor_type.shape.dim] == [2, 16, 96, 96, 3]
    assert str(output) in capsys.readouterr().out


def test_export_command_writes_a_streaming_configs_streaming_graph_not_its_clip_model(tmp_path, capsys, engine_dir):
    from streamrec.backends.engine_cache import cached_export
    from streamrec.backends.inputs import step_input_specs

    config = load_config("slowfast_tiny_causal")  # its checkpoint was distilled for the causal form
    output = tmp_path / "causal.onnx"
    assert cli_main(["export", "--config", "slowfast_tiny_causal", "--output", str(output)]) == 0
    said = capsys.readouterr().out
    assert "slow [batch, 1, 96, 96, 3] uint8, fast [batch, 4, 96, 96, 3] uint8, state [batch, " in said
    assert "-> logits [batch, 7] float32, new_state [batch, " in said
    cached = cached_export(config, "fp32")  # what `run` runs for this config
    clips = {"slow": np.random.default_rng(0).integers(0, 256, (2, 1, 96, 96, 3), dtype=np.uint8),
             "fast": np.random.default_rng(1).integers(0, 256, (2, 4, 96, 96, 3), dtype=np.uint8)}
    runs = []
    for path in (output, cached):
        engine = OnnxRuntimeEngine(path, step_input_specs(config.clip, {"slow": 1, "fast": 4}), 7, device="cpu")
        assert engine.metadata["streaming"]["form"] == "causal"
        state, logits = engine.state.zeros(2), []
        for _ in range(3):  # the state carried from call to call
            out, state = engine.step({**clips, "state": state})
            logits.append(out)
        runs.append(np.stack(logits))
    np.testing.assert_array_equal(runs[0], runs[1])


def test_export_command_rejects_a_bad_batch(tmp_path, capsys):
    assert cli_main(["export", "--config", "slowfast_tiny", "--output", str(tmp_path / "x.onnx"),
                     "--batch", "many"]) == 2
    assert "--batch" in capsys.readouterr().err


# --------------------------------------------------------------------------- RoI models: boxes in, a row per box out


def person_boxes(size: int) -> np.ndarray:
    """Boxes on three clips: two people on clip 0, none on clip 1, three on clip 2, one of them
    reaching past the frame (the graph takes any box; engines clip them first), in input pixels."""
    return np.array([[0, 4, 6, 40, 80], [0, 30.5, 10.25, 90, 60], [2, 0, 0, size, size], [2, 50, 50, 70, 95],
                     [2, -12, 40, 30, size + 20]], np.float32)


def roi_logits(model: nn.Module, clip: ClipConfig, clips: dict[str, np.ndarray], boxes: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(*[torch.from_numpy(clips[n]) for n in clip.input_names], torch.from_numpy(boxes)).numpy()


def roi_model(aligned: bool = True) -> tuple[Config, dict[str, np.ndarray], nn.Module]:
    config = load_config("slowfast_tiny_roi", [f"model.aligned={str(aligned).lower()}", "clip.short_side=96",
                                               "clip.crop_size=96"])
    clips = varied_clips(config.clip, 3)
    return config, clips, random_model(config, clips)  # calibrated on whole-frame boxes


@pytest.mark.parametrize("aligned, mode", [(True, b"half_pixel"), (False, b"output_half_pixel")])
def test_roi_export_is_one_roi_align_in_the_references_convention_and_matches_pytorch(aligned, mode, tmp_path):
    """ONNX RoiAlign's ``half_pixel`` shifts the scaled box by -0.5 as ``aligned=True`` does;
    ``output_half_pixel`` is the unshifted one. Every attribute TensorRT's parser reads is written
    out (it takes a missing sampling_ratio as 1, not ONNX's 0)."""
    config, clips, model = roi_model(aligned)
    path = export_onnx(model, config.clip, tmp_path / "roi.onnx")
    graph = onnx.load(str(path))
    assert max(o.version for o in graph.opset_import if o.domain in ("", "ai.onnx")) >= 16
    inputs = {i.name: [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim] for i in graph.graph.input}
    assert inputs == {"slow": ["batch", 4, 96, 96, 3], "fast": ["batch", 16, 96, 96, 3], "boxes": ["boxes", 5]}
    assert graph.graph.input[2].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert [d.dim_param or d.dim_value for d in graph.graph.output[0].type.tensor_type.shape.dim] == ["boxes", 7]
    (roi,) = [n for n in graph.graph.node if n.op_type == "RoiAlign"]
    attributes = {a.name: onnx.helper.get_attribute_value(a) for a in roi.attribute}
    assert attributes == {"coordinate_transformation_mode": mode, "mode": b"avg", "output_height": 7,
                          "output_width": 7, "sampling_ratio": 0, "spatial_scale": pytest.approx(1 / 16)}

    boxes = person_boxes(config.clip.crop_size)
    reference = roi_logits(model, config.clip, clips, boxes)
    assert reference.std() > 0.1 and len(set(reference.argmax(1))) >= 2
    assert np.abs(onnx_logits(path, {**clips, "boxes": boxes}) - reference).max() <= FP32_TOLERANCE


def test_roi_export_takes_any_batch_and_any_number_of_boxes(tmp_path):
    """One graph, dynamic on both axes: 1 clip and 1 box, 3 clips and 5, 2 clips and 9, and no boxes."""
    config, clips, model = roi_model()
    path = export_onnx(model, config.clip, tmp_path / "roi.onnx")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(1)
    for batch, count in ((1, 1), (3, 5), (2, 9), (3, 0)):
        some = {name: array[:batch] for name, array in clips.items()}
        corners = rng.uniform(-10, 90, (count, 2))
        boxes = np.concatenate([rng.integers(0, batch, (count, 1)), corners, corners + rng.uniform(1, 60, (count, 2))],
                               1).astype(np.float32)
        (logits,) = session.run(["logits"], {**some, "boxes": boxes})
        assert logits.shape == (count, 7)
        if count:
            assert np.abs(logits - roi_logits(model, config.clip, some, boxes)).max() <= FP32_TOLERANCE


def test_roi_fp16_export_casts_boxes_to_half_inside(tmp_path):
    config, clips, model = roi_model()
    path = export_onnx(model, config.clip, tmp_path / "roi16.onnx", fp16=True)
    graph = onnx.load(str(path)).graph
    assert {i.name: i.type.tensor_type.elem_type for i in graph.input}["boxes"] == onnx.TensorProto.FLOAT
    assert any(n.op_type == "Cast" and n.input == ["boxes"] for n in graph.node)
    boxes = person_boxes(config.clip.crop_size)
    reference = roi_logits(model, config.clip, clips, boxes)
    logits = onnx_logits(path, {**clips, "boxes": boxes})
    tolerance = FP16_TOLERANCE * max(1.0, np.abs(reference).max())  # half precision is relative
    assert logits.dtype == np.float32 and np.abs(logits - reference).max() <= tolerance
    assert (logits.argmax(1) == reference.argmax(1)).all()


def test_cpu_graph_rewrites_leave_roi_align_alone(tmp_path):
    """The CPU provider's rewrites (backends/cpu_graph.py) change the trunk's convolutions, never
    the RoiAlign node or what feeds it its boxes; the rewritten graph computes the same."""
    from streamrec.backends.cpu_graph import rewrite_for_cpu

    config, clips, model = roi_model()
    path = export_onnx(model, config.clip, tmp_path / "roi.onnx")
    original = onnx.load(str(path))
    (roi,) = [n for n in original.graph.node if n.op_type == "RoiAlign"]
    rewritten = onnx.load(str(path))
    done = rewrite_for_cpu(rewritten)
    assert done.stems and done.flattened and done.residuals
    (after,) = [n for n in rewritten.graph.node if n.op_type == "RoiAlign"]
    assert after == roi
    producers = {o: n for n in rewritten.graph.node for o in n.output}
    assert all(producers[name] == {o: n for n in original.graph.node for o in n.output}[name] for name in roi.input[1:])
    boxes = np.clip(person_boxes(config.clip.crop_size), 0, [2, 96, 96, 96, 96]).astype(np.float32)
    engine = OnnxRuntimeEngine(path, input_specs(config.clip), 7, device="cpu")  # rewrites for the CPU
    assert np.abs(engine.infer({**clips, "boxes": boxes}) - roi_logits(model, config.clip, clips, boxes)).max() \
        <= FP32_TOLERANCE
