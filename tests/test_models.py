"""The model family: every shipped config builds and classifies, the head averages as documented,
and the models export to ONNX with the same outputs (on weights whose logits differ from clip to
clip, `test_export.random_model`). Equivalence with the reference
implementations is proven in tests/parity (a separate environment)."""

from __future__ import annotations

import dataclasses
import inspect
import math
import typing

import numpy as np
import pytest
import torch
from test_export import FP32_TOLERANCE, assert_meaningful, onnx_logits, random_model, torch_logits, varied_clips

from streamrec.checkpoints import load_model
from streamrec.config import CONFIG_DIR, load_config
from streamrec.errors import StreamrecError
from streamrec.export import export_onnx
from streamrec.models import UInt8Clips, VideoNetwork, available_models, build_model, get_arch

MODEL_CONFIGS = sorted(p.stem for p in CONFIG_DIR.glob("*.yaml") if load_config(p.stem).model.arch in available_models())


def at_crop(config, crop: int, train_crop: int | None = None, **model_kwargs):
    """A config at a small crop (``train_crop`` fixes the head pooling; default: the crop)."""
    kwargs = config.model.kwargs | model_kwargs | ({"train_crop_size": train_crop} if train_crop else {})
    return config.replace(clip=dataclasses.replace(config.clip, crop_size=crop, short_side=crop),
                          model=dataclasses.replace(config.model, kwargs=kwargs))


def uint8_clips(config, batch: int = 1, seed: int = 0) -> tuple[torch.Tensor, ...]:
    generator = torch.Generator().manual_seed(seed)
    size = config.clip.crop_size
    frames = [config.clip.slow_frames, config.clip.num_frames] if config.clip.alpha else [config.clip.num_frames]
    return tuple(torch.randint(0, 256, (batch, t, size, size, 3), dtype=torch.uint8, generator=generator)
                 for t in frames)


def test_the_shipped_model_configs_are_all_there():
    expected = {"slowfast_tiny", "slowfast_r50_4x16", "slowfast_r50_8x8", "slowfast_r101_8x8", "slowfast_r101_16x8",
                "slow_r50_8x8", "i3d_r50_8x8", "x3d_xs", "x3d_s", "x3d_m"}
    assert expected <= set(MODEL_CONFIGS)


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


@pytest.mark.parametrize("name", ["slowfast_tiny", "x3d_xs", "i3d_r50_8x8"])
def test_exports_to_onnx_with_the_same_outputs(name, tmp_path):
    """Through the project's exporter, with weights whose logits spread across clips: an untrained
    network's are nearly constant, which would hide a wrong normalisation or channel order."""
    config = load_config(name)
    if name != "slowfast_tiny":
        config = at_crop(config, 64, head_average="softmax")  # export the log-softmax path too
    clips = varied_clips(config.clip, 8)
    model = random_model(config, clips)
    reference = torch_logits(model, config.clip, clips)
    assert_meaningful(reference)
    exported = onnx_logits(export_onnx(model, config.clip, tmp_path / f"{name}.onnx"), clips)
    assert np.abs(exported - reference).max() <= FP32_TOLERANCE * max(1.0, np.abs(reference).max())  # float32 depth


@pytest.mark.parametrize("name", ["slowfast_tiny", "x3d_xs", "i3d_r50_8x8"])
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
        assert {"num_classes", "head_average"} <= {p.name for p in parameters}
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
