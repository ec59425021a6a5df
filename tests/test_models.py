"""The model family: every shipped config builds and classifies, the head averages as documented,
and the models export to ONNX with the same outputs (on weights whose logits differ from clip to
clip, `test_export.random_model`). Equivalence with the reference
implementations is proven in tests/parity (a separate environment)."""

from __future__ import annotations

import copy
import dataclasses
import inspect
import math
import types
import typing

import numpy as np
import onnx
import pytest
import torch
from conftest import run_cli
from test_export import FP32_TOLERANCE, assert_meaningful, onnx_logits, random_model, torch_logits, varied_clips

from streamrec.backends.cpu_graph import rewrite_for_cpu
from streamrec.backends.inputs import input_specs
from streamrec.backends.onnxruntime_backend import OnnxRuntimeEngine
from streamrec.checkpoints import load_model
from streamrec.config import CONFIG_DIR, load_config
from streamrec.errors import StreamrecError
from streamrec.export import export_onnx
from streamrec.models import (Rows, UInt8Clips, VideoNetwork, available_models, build_model, builder_ranges,
                              check_builder_options, get_arch)

MODEL_CONFIGS = sorted(p.stem for p in CONFIG_DIR.glob("*.yaml") if load_config(p.stem).model.arch in available_models())
# A shipped config for every registered arch, and for each family an arch's options make (C2D, non-local
# I3D, CSN, R(2+1)D-50, mobile X3D, MViTv1): the export and classifier tests run them all.
ARCH_EXAMPLES = {"slowfast": "slowfast_tiny", "resnet3d": "i3d_r50_8x8", "x3d": "x3d_xs", "r2plus1d": "r2plus1d_18",
                 "s3d": "s3d", "mvit": "mvitv2_s_16x4"}
FAMILY_EXAMPLES = sorted({*ARCH_EXAMPLES.values(), "c2d_r50", "i3d_nln_r50_8x8", "csn_r101", "r2plus1d_r50",
                          "efficient_x3d_xs", "mvit_b_16x4"})
# The CPU graph rewrites (streamrec/backends/cpu_graph.py) each family's graph gets: "stems" where a
# stem convolves time and space over RGB (I3D, CSN, SlowFast's Fast pathway, MViT's patch embedding),
# "flattened" for its kt x 1 x 1 convolutions, "residuals" for Conv + Add + ReLU (not S3D's concatenated
# branches, nor MViT, whose only convolutions are its patch embedding and depthwise pools).
CPU_REWRITES = {
    "slowfast_tiny": {"stems", "flattened", "residuals"}, "i3d_r50_8x8": {"stems", "flattened", "residuals"},
    "i3d_nln_r50_8x8": {"stems", "flattened", "residuals"}, "csn_r101": {"stems", "flattened", "residuals"},
    "c2d_r50": {"flattened", "residuals"}, "r2plus1d_r50": {"flattened", "residuals"},
    "r2plus1d_18": {"flattened", "residuals"}, "x3d_xs": {"flattened", "residuals"},
    "efficient_x3d_xs": {"flattened", "residuals"}, "s3d": {"flattened"}, "mvit_b_16x4": {"stems"},
    "mvitv2_s_16x4": {"stems"},
}
# Exported shallower, with every kind of layer they have, at a fraction of the cost: the single-pathway
# ResNet variants with one block per stage (i3d_r50_8x8 keeps its depth), the MViTs with four blocks
# that widen and pool as theirs do.
_MVIT_4 = {"depth": 4, "dim_mul": [[1, 2.0], [3, 2.0]], "head_mul": [[1, 2.0], [3, 2.0]]}
SHALLOW = {name: {"depth": [1, 1, 1, 1]} for name in ("c2d_r50", "csn_r101", "r2plus1d_r50")} | {
    "i3d_nln_r50_8x8": {"depth": [1, 1, 1, 1], "nonlocal_blocks": [[], [0], [0], []]},
    "mvit_b_16x4": _MVIT_4 | {"pool_q_stride": [[1, 1, 2, 2], [3, 1, 2, 2]]},
    "mvitv2_s_16x4": _MVIT_4 | {"pool_q_stride": [[0, 1, 1, 1], [1, 1, 2, 2], [2, 1, 1, 1], [3, 1, 2, 2]]},
}
# Shorter clips for the tests of the long-clip models (same architecture; the head pooling follows).
SHORT_CLIPS = {"csn_r101": 8, "s3d": 16, "r2plus1d_18": 8, "mvit_b_16x4": 4, "mvit_b_32x3": 4, "mvitv2_s_16x4": 4,
               "mvitv2_b_32x3": 4}


def at_crop(config, crop: int, train_crop: int | None = None, **model_kwargs):
    """A config at a small crop (``train_crop`` fixes the head pooling; default: the crop), its clip
    shortened where `SHORT_CLIPS` says."""
    kwargs = config.model.kwargs | model_kwargs | ({"train_crop_size": train_crop} if train_crop else {})
    frames = SHORT_CLIPS.get(config.name, config.clip.num_frames)
    return config.replace(clip=dataclasses.replace(config.clip, crop_size=crop, short_side=crop, num_frames=frames),
                          model=dataclasses.replace(config.model, kwargs=kwargs))


def float64_logits(model: torch.nn.Module, clip, clips: dict[str, np.ndarray]) -> np.ndarray:
    """The model's logits computed in float64: what float32 rounding is measured against."""
    exact = copy.deepcopy(model).double()
    with torch.no_grad():
        return exact(*[torch.from_numpy(clips[name]) for name in clip.input_names]).numpy()


def uint8_clips(config, batch: int = 1, seed: int = 0) -> tuple[torch.Tensor, ...]:
    generator = torch.Generator().manual_seed(seed)
    size = config.clip.crop_size
    frames = [config.clip.slow_frames, config.clip.num_frames] if config.clip.alpha else [config.clip.num_frames]
    return tuple(torch.randint(0, 256, (batch, t, size, size, 3), dtype=torch.uint8, generator=generator)
                 for t in frames)


def test_the_shipped_model_configs_are_all_there():
    expected = {"slowfast_tiny", "slowfast_r50_4x16", "slowfast_r50_8x8", "slowfast_r101_8x8", "slowfast_r101_16x8",
                "slow_r50_8x8", "i3d_r50_8x8", "x3d_xs", "x3d_s", "x3d_m",
                "mvitv2_s_16x4", "mvitv2_b_32x3", "mvit_b_16x4", "mvit_b_32x3", "r2plus1d_18", "r2plus1d_r50",
                "csn_r101", "s3d", "c2d_r50", "i3d_nln_r50_8x8", "x3d_l", "efficient_x3d_xs", "efficient_x3d_s"}
    assert expected <= set(MODEL_CONFIGS)


def test_every_registered_arch_has_an_example_the_tests_run():
    """Every arch of the clip contract (uint8 clips in, logits out); networks that also take person
    boxes have an engine contract of their own and tests of their own."""
    clip_archs = {arch for arch in available_models()
                  if not getattr(typing.get_type_hints(get_arch(arch).builder)["return"], "takes_boxes", False)}
    assert set(ARCH_EXAMPLES) == clip_archs
    assert all(load_config(name).model.arch == arch for arch, name in ARCH_EXAMPLES.items())


@pytest.mark.parametrize("name", MODEL_CONFIGS)
def test_config_builds_and_classifies(name):
    config = at_crop(load_config(name), 32)
    model = load_model(config)
    with torch.inference_mode():
        logits = model(*uint8_clips(config))
    assert logits.shape == (1, config.model.num_classes)
    assert torch.isfinite(logits).all()


def test_tiny_model_is_tiny_and_names_seven_actions():
    config = load_config("slowfast_tiny")
    parameters = sum(p.numel() for p in build_model(config).parameters())
    assert 100_000 < parameters < 1_000_000
    assert config.model.num_classes == 7
    assert config.postprocess.background_labels == ("standing still",)


def test_head_averages_positions_as_documented():
    """At a larger test crop, 'logits' is the mean of per-position logits and 'softmax' the log of
    the mean per-position probability; at the training crop both give the same probabilities."""
    config = at_crop(load_config("slowfast_tiny"), 96, train_crop=64)
    model = build_model(config).eval()
    with torch.no_grad():  # logits far enough apart that the two averages differ
        model.head.projection.weight.normal_(0, 3.0)
    positions = []
    model.head.projection.register_forward_hook(lambda module, args, output: positions.append(output))
    inputs = [torch.randn(2, 3, 4, 96, 96), torch.randn(2, 3, 16, 96, 96)]
    with torch.no_grad():
        model.head.average = "logits"
        mean_logits = model(inputs)
        model.head.average = "softmax"
        log_mean_probability = model(inputs)
    per_position = positions[0]  # [B, t, h, w, K]
    assert per_position.shape[1:4] == (1, 2, 2)
    assert torch.allclose(mean_logits, per_position.mean(dim=(1, 2, 3)), atol=1e-6)
    expected = per_position.softmax(-1).mean(dim=(1, 2, 3)).log()
    assert torch.allclose(log_mean_probability, expected, atol=1e-5)
    assert not torch.allclose(mean_logits.softmax(-1), log_mean_probability.softmax(-1), atol=1e-4)

    at_training_crop = build_model(at_crop(load_config("slowfast_tiny"), 64)).eval()
    small = [x[..., :64, :64] for x in inputs]
    with torch.no_grad():
        at_training_crop.head.average = "logits"
        logits = at_training_crop(small)
        at_training_crop.head.average = "softmax"
        assert torch.allclose(at_training_crop(small), logits.log_softmax(-1), atol=1e-5)


@pytest.mark.parametrize("name", FAMILY_EXAMPLES)
def test_exports_to_onnx_with_the_same_outputs(name, tmp_path):
    """Through the project's exporter, with weights whose logits spread across clips: an untrained
    network's are nearly constant, which would hide a wrong normalisation or channel order."""
    config = load_config(name)
    if name != "slowfast_tiny":  # export the log-softmax path too
        config = at_crop(config, 64, head_average="softmax", **SHALLOW.get(name, {}))
    clips = varied_clips(config.clip, 8)
    model = random_model(config, clips)
    reference = torch_logits(model, config.clip, clips)
    assert_meaningful(reference)
    path = export_onnx(model, config.clip, tmp_path / f"{name}.onnx")
    # float32 depth; the deep networks (CSN R101, R(2+1)D-50) round more than that in PyTorch itself:
    # there the export may differ by twice PyTorch's own float32 error (against float64)
    float32_error = np.abs(reference - float64_logits(model, config.clip, clips)).max()
    tolerance = max(FP32_TOLERANCE * max(1.0, np.abs(reference).max()), 2 * float32_error)
    assert np.abs(onnx_logits(path, clips) - reference).max() <= tolerance
    # ... and through ONNX Runtime's CPU engine, which rewrites the graph (backends/cpu_graph.py)
    rewrites = rewrite_for_cpu(onnx.load(str(path)))
    assert {kind for kind, count in vars(rewrites).items() if count} == CPU_REWRITES[name]
    engine = OnnxRuntimeEngine(path, input_specs(config.clip), config.model.num_classes, device="cpu")
    assert np.abs(engine.infer(clips) - reference).max() <= tolerance


@pytest.mark.parametrize("name", sorted(ARCH_EXAMPLES.values()))
def test_every_arch_names_its_classifier_and_can_replace_it(name):
    """`reset_classifier` (fine-tuning's --new-head) changes the class count and nothing before the classifier."""
    config = at_crop(load_config(name), 32)
    model = build_model(config).eval()
    classifier = model.get_classifier()
    assert classifier is model.get_submodule(model.classifier_name)
    assert isinstance(classifier, torch.nn.Linear) and classifier.out_features == config.model.num_classes
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.reset_classifier(3)
    assert model.get_classifier() is not classifier and model.get_classifier().out_features == 3
    with torch.no_grad():
        assert UInt8Clips(model, config.clip)(*uint8_clips(config, batch=2)).shape == (2, 3)
    prefix = f"{model.classifier_name}."
    after = model.state_dict()
    assert {k for k in after if k.startswith(prefix)} == {f"{prefix}weight", f"{prefix}bias"}
    assert all(torch.equal(after[k], v) for k, v in before.items() if not k.startswith(prefix))


@pytest.mark.parametrize("arch", available_models())
def test_builders_and_model_constructors_are_keyword_only_and_typed(arch):
    builder = get_arch(arch).builder
    network_class = typing.get_type_hints(builder)["return"]
    assert issubclass(network_class, VideoNetwork)
    for function in (builder, network_class.__init__):
        parameters = [p for p in inspect.signature(function).parameters.values() if p.name != "self"]
        # An RoI head pools each box's region: no positions to average, so no head_average.
        needed = {"num_classes"} if network_class.takes_boxes else {"num_classes", "head_average"}
        assert needed <= {p.name for p in parameters}
        untyped = [p.name for p in parameters if p.kind is not p.KEYWORD_ONLY or p.annotation is p.empty]
        assert not untyped, f"{function.__qualname__}: positional or untyped {untyped}"


def test_unknown_builder_argument_names_the_valid_ones():
    config = load_config("slowfast_tiny")
    config = config.replace(model=dataclasses.replace(config.model, kwargs={**config.model.kwargs, "widht": 8}))
    with pytest.raises(StreamrecError, match="model.widht.*valid: depth, width"):
        build_model(config)


@pytest.mark.parametrize("depth,message", [(34, "not a standard ResNet depth"), ([1, 2, 3], "four block counts")])
def test_bad_depth_is_a_clear_error(depth, message):
    config = load_config("slowfast_tiny")
    config = config.replace(model=dataclasses.replace(config.model, kwargs={**config.model.kwargs, "depth": depth}))
    with pytest.raises(StreamrecError, match=message):
        build_model(config)


def with_options(name: str, **options):
    config = load_config(name)
    return config.replace(model=dataclasses.replace(config.model, kwargs={**config.model.kwargs, **options}))


@pytest.mark.parametrize("name,options,message", [
    ("slowfast_tiny", {"width": -4}, "model.width must be from 1 to 4096, got -4"),
    ("slowfast_tiny", {"depth": [1, 1, 0, 1]}, r"model.depth values must each be from 1 to 1000, got 0 in \[1, 1, 0, 1\]"),
    ("slowfast_tiny", {"dropout": 2}, "model.dropout must be at least 0 and below 1, got 2"),
    ("slowfast_tiny", {"dropout": math.nan}, "model.dropout must be at least 0 and below 1, got nan"),
    ("slowfast_tiny", {"fusion_kernel": 4}, "model.fusion_kernel must be odd, from 1 to 15, got 4"),
    ("slowfast_tiny", {"stem_temporal_kernels": [1, 3, 5]}, r"model.stem_temporal_kernels needs 2 values, got \[1, 3, 5\]"),
    ("slowfast_tiny", {"beta_inv": 16}, "model.beta_inv 16 leaves the Fast pathway no channels at model.width 8"),
    ("slowfast_tiny", {"beta_inv": 0}, "model.beta_inv must be from 1 to 64, got 0"),
    ("slowfast_tiny", {"fusion_channel_ratio": 0}, "model.fusion_channel_ratio must be from 1 to 64, got 0"),
    ("slowfast_tiny", {"width": 6, "beta_inv": 4, "groups": 2}, "model.groups 2 does not divide the Fast pathway's 3 "),
    ("slowfast_tiny", {"train_crop_size": 8}, "model.train_crop_size must be from 16 to 4096, got 8"),
    ("slowfast_tiny_roi", {"roi_resolution": 0}, "model.roi_resolution must be from 1 to 64, got 0"),
    ("i3d_r50_8x8", {"temporal_strides": [1, 1, 1, 0]}, "model.temporal_strides values must each be from 1 to 4"),
    ("x3d_xs", {"width_factor": 0}, "model.width_factor must be above 0 and at most 64, got 0"),
    ("x3d_xs", {"se_ratio": -1}, "model.se_ratio must be from 0 to 4, got -1"),
    ("s3d", {"head_frames": 0}, "model.head_frames must be from 1 to 128, got 0"),
    ("r2plus1d_18", {"stem_mid_channels": 0}, "model.stem_mid_channels must be from 1 to 4096, got 0"),
    ("mvit_b_16x4", {"num_heads": 0}, "model.num_heads must be from 1 to 1024, got 0"),
    ("mvit_b_16x4", {"dim_mul": [[1, 0]]}, r"model.dim_mul rows are \[block, factor\], each factor above 0 and at most "
                                           r"64; got factor 0 in \[1, 0\]"),
    ("mvit_b_16x4", {"depth": 4, "dim_mul": [[1, 2.0]], "head_mul": [[9, 2.0]]}, r"model.head_mul names block 9; blocks are 0..4"),
    # a non-local block after a block its stage does not have was left out of the network, silently
    ("i3d_nln_r50_8x8", {"nonlocal_blocks": [[], [1, 4], [], []]},
     r"model.nonlocal_blocks: res3 has 4 blocks \(0 to 3\), got \[4\]"),
    ("slowfast_r101_ava_32x2", {"nonlocal_blocks": [[], [], [30], []]},
     r"model.nonlocal_blocks: res4 has 23 blocks \(0 to 22\), got \[30\]"),
])
def test_out_of_range_builder_arguments_are_one_line_naming_the_key_the_range_and_the_value(name, options, message):
    """What ``--set model.KEY=VALUE`` reaches: refused before anything is built, never a traceback from
    torch (a negative width, a dropout of 2) nor a network that fails on its first clip (an even temporal
    kernel, padded by half of it, makes a pathway a frame longer than its residual or the other pathway)."""
    with pytest.raises(StreamrecError, match=message) as caught:
        build_model(with_options(name, **options))
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("options,message", [
    ({"width": "abc"}, "model.width must be a whole number, got 'abc'"),
    ({"width": 8.5}, "model.width must be a whole number, got 8.5"),
    ({"width": None}, "model.width must be a whole number, got null"),
    ({"dropout": True}, "model.dropout must be a number, got true"),
    ({"depth": [1, "a", 1, 1]}, r"model.depth must be a whole number or a list of whole numbers, got \[1, 'a', 1, 1\]"),
    ({"temporal_kernels": 3}, "model.temporal_kernels must be a list of lists of lists of whole numbers, got 3"),
    ({"train_crop_size": "big"}, "model.train_crop_size must be a whole number or null, got 'big'"),
])
def test_builder_arguments_of_the_wrong_type_are_named_with_what_they_take(options, message):
    with pytest.raises(StreamrecError, match=message):
        build_model(with_options("slowfast_tiny", **options))


def _numeric(hint) -> bool:
    return hint in (int, float) or any(_numeric(arg) for arg in typing.get_args(hint))


def _out_of_range(hint, spec):
    """A value of ``hint``'s shape whose first number is below ``spec``'s range."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return _out_of_range(args[0], spec)
    if isinstance(spec, Rows):
        return [[column.low - 1 for column in spec.columns]]
    if hint in (int, float):
        return hint(spec.low if spec.low_open else spec.low - 1)
    return [_out_of_range(args[0], spec)] * (spec.length or 1)


@pytest.mark.parametrize("arch", available_models())
def test_every_numeric_builder_argument_has_a_range_and_it_is_enforced(arch):
    """A builder argument that takes a number has its range in `BUILDER_RANGES` (or the arch's own), so
    a new one cannot slip past the check; a value below it is refused naming the key."""
    entry = get_arch(arch)
    hints = typing.get_type_hints(entry.builder)
    ranges = builder_ranges(entry)
    numeric = [k for k, hint in hints.items() if k not in ("clip", "num_classes", "return") and _numeric(hint)]
    assert not [k for k in numeric if k not in ranges], f"{arch}: builder arguments without a range"
    for key in numeric:
        with pytest.raises(StreamrecError, match=rf"^model\.{key} .*got "):
            check_builder_options(entry, {key: _out_of_range(hints[key], ranges[key])})


def test_every_shipped_config_s_builder_arguments_are_in_range():
    for name in MODEL_CONFIGS:
        config = load_config(name)
        check_builder_options(get_arch(config.model.arch), config.model.kwargs)


def test_run_refuses_an_out_of_range_model_option_in_one_line():
    done = run_cli("run", "--publish", "none", "--quiet", "--set", "model.width=-4")
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert done.stderr.strip().splitlines()[-1] == "error: model.width must be from 1 to 4096, got -4"


def test_a_crop_smaller_than_the_training_crop_is_refused():
    with pytest.raises(StreamrecError, match="clip.crop_size 64 is smaller than model.train_crop_size 96"):
        build_model(at_crop(load_config("slowfast_tiny"), 64, train_crop=96))


def test_single_pathway_arch_refuses_alpha():
    config = load_config("x3d_xs")
    config = config.replace(clip=dataclasses.replace(config.clip, alpha=4, num_frames=4))
    with pytest.raises(StreamrecError, match="single-pathway"):
        build_model(config)


def test_head_pooling_is_fixed_by_the_training_crop():
    """A 224 px training crop pools a 7x7 map: PySlowFast's and PyTorchVideo's head pool size."""
    model = build_model(load_config("slowfast_r50_8x8"))
    assert model.head.pathway0_avgpool.kernel_size == (8, 7, 7)
    assert model.head.pathway1_avgpool.kernel_size == (32, 7, 7)
    x3d = build_model(load_config("x3d_s"))
    assert x3d.head.avg_pool.kernel_size == (13, math.ceil(160 / 32), math.ceil(160 / 32))


# Parameter counts the references publish for their 400-class Kinetics models: torchvision's weights
# metadata (num_params, exact), PyTorchVideo's docs/source/model_zoo.md (millions, 2 decimals),
# PySlowFast's MODEL_ZOO.md and projects/mvitv2/README.md (millions, 1 decimal).
PUBLISHED_PARAMETERS = {
    "r2plus1d_18": (31505325, 0), "s3d": (8320048, 0), "mvit_b_16x4": (36610672, 0), "mvitv2_s_16x4": (34537744, 0),
    "c2d_r50": (24.33e6, 2), "i3d_r50_8x8": (28.04e6, 2), "csn_r101": (22.21e6, 2), "r2plus1d_r50": (28.11e6, 2),
    "x3d_l": (6.15e6, 2), "mvit_b_32x3": (36.61e6, 2), "slowfast_r50_8x8": (34.57e6, 2),
    "mvitv2_b_32x3": (51.2e6, 1), "efficient_x3d_xs": (3.8e6, 1),
}


@pytest.mark.parametrize("name", sorted(PUBLISHED_PARAMETERS))
def test_parameter_counts_match_the_references_published_figures(name):
    """An architecture check that needs no reference installed: a missing block, a wrong width or a
    wrongly sized position table changes the count (MViT's tables depend on the clip: full size here)."""
    count, decimals = PUBLISHED_PARAMETERS[name]
    config = load_config(name)
    if config.model.arch != "mvit":
        config = at_crop(config, 32)  # convolution weights do not depend on the input size
    parameters = sum(p.numel() for p in build_model(config).parameters())
    if decimals:
        assert round(parameters / 1e6, decimals) == round(count / 1e6, decimals)
    else:
        assert parameters == count


def test_mvitv2_has_pyslowfasts_tensor_names():
    """PySlowFast's MViTv2 is not installable (PyPI's slowfast 1.0 predates it), so its .pyth layout is
    checked against the structure its source defines (slowfast/models/video_model_builder.py ``MViT``,
    attention.py ``MultiScaleBlock``; configs/Kinetics/MVITv2_S_16x4.yaml), shapes derived by hand:
    an 8x56x56 patch map; block 1 widens 96 -> 192 in its attention and pools queries 2x, keys 4x."""
    shapes = {k: tuple(v.shape) for k, v in build_model(load_config("mvitv2_s_16x4")).state_dict().items()}
    expected = {
        "patch_embed.proj.weight": (96, 3, 3, 7, 7), "patch_embed.proj.bias": (96,), "cls_token": (1, 1, 96),
        "blocks.0.norm1.weight": (96,), "blocks.0.attn.qkv.weight": (288, 96), "blocks.0.attn.proj.weight": (96, 96),
        "blocks.0.attn.pool_q.weight": (96, 1, 3, 3, 3), "blocks.0.attn.norm_q.weight": (96,),
        "blocks.0.attn.pool_k.weight": (96, 1, 3, 3, 3), "blocks.0.attn.norm_v.bias": (96,),
        "blocks.0.attn.rel_pos_h": (111, 96), "blocks.0.attn.rel_pos_w": (111, 96), "blocks.0.attn.rel_pos_t": (15, 96),
        "blocks.0.mlp.fc1.weight": (384, 96), "blocks.0.mlp.fc2.weight": (96, 384),
        "blocks.1.attn.qkv.weight": (576, 96), "blocks.1.attn.proj.weight": (192, 192),
        "blocks.1.proj.weight": (192, 96),
        "blocks.1.attn.rel_pos_h": (55, 96), "blocks.1.norm2.weight": (192,), "blocks.1.mlp.fc1.weight": (768, 192),
        "norm.weight": (768,), "head.projection.weight": (400, 768),
    }
    assert {k: shapes.get(k) for k in expected} == expected
    assert not [k for k in shapes if k.startswith("pos_embed")], "MViTv2 (USE_ABS_POS: False) has no absolute positions"
    assert "blocks.1.pool_skip.weight" not in shapes and "blocks.0.proj.weight" not in shapes
