"""Same random weights, same input: the project's models give the references' logits (float32, 1e-4).

Weights reach the project's model through `streamrec.checkpoints` (PySlowFast names load as they
are, PyTorchVideo and torchvision names are renamed by the arch's key map), so these tests prove
architecture and renaming together.
"""

from __future__ import annotations

import pytest

pytest.importorskip("pytorchvideo")
pytest.importorskip("slowfast")

import torch  # noqa: E402
from torch import nn  # noqa: E402

import references as ref  # noqa: E402
from streamrec.checkpoints import Checkpoint, load_state_dict_strictly, model_state_dict  # noqa: E402

TOLERANCE = 1e-4
PYSLOWFAST_MODELS = sorted(ref.PYSLOWFAST)
PYTORCHVIDEO_MODELS = ["slowfast_r50_4x16", "slowfast_r50_8x8", "slowfast_r101_8x8", "slowfast_r101_16x8",
                       "slow_r50_8x8", "i3d_r50_8x8", "c2d_r50", "csn_r101", "r2plus1d_r50", "x3d_xs", "x3d_s", "x3d_m",
                       "x3d_l", "efficient_x3d_xs", "efficient_x3d_s", "mvit_b_16x4", "mvit_b_32x3"]
# torchvision's S3D pools a fixed 2x7x7 window: it needs the 224 px crop.
TORCHVISION_MODELS = {"r2plus1d_18": ref.CROP, "s3d": 224, "mvit_b_16x4": ref.CROP, "mvitv2_s_16x4": ref.CROP,
                      "mvitv2_b_32x3": ref.CROP}
# PyTorchVideo's heads that end in a softmax (compared as logits with it removed, and as built below)
SOFTMAX_HEADS = {"x3d_xs", "x3d_s", "x3d_m", "x3d_l", "r2plus1d_r50"}


def assert_close(ours: torch.Tensor, theirs: torch.Tensor) -> None:
    assert ours.shape == theirs.shape
    assert theirs.abs().max() > 0.1, "degenerate reference output: the comparison would prove nothing"
    if len(theirs) > 1:
        assert theirs.std(dim=0).max() > 1e-3, "every clip gives the same output: the comparison would prove little"
    difference = (ours - theirs).abs().max().item()
    assert difference <= TOLERANCE, f"max abs difference {difference:.3g}"


def with_weights(config, state_dict) -> nn.Module:
    model = ref.project_model(config)
    load_state_dict_strictly(model, state_dict, "reference")
    return model


def renamed(config, origin: str, reference: nn.Module) -> nn.Module:
    """The project's model with the reference's weights, as `streamrec.checkpoints` loads a file of that layout."""
    model = ref.project_model(config)
    state = model_state_dict(Checkpoint(origin, reference.state_dict()), model, config.model.arch, "reference")
    load_state_dict_strictly(model, state, "reference")
    return model


def from_pytorchvideo(config, reference: nn.Module) -> dict[str, torch.Tensor]:
    """The reference's state dict under the project's names, by the config's arch's key map."""
    return Checkpoint("pytorchvideo", reference.state_dict()).state_dict_for(config.model.arch, "reference")


@pytest.mark.parametrize("name", PYSLOWFAST_MODELS)
def test_pyslowfast_logits(name):
    reference = ref.pyslowfast_model(name)
    config = ref.project_config(name, head_average="softmax")
    ours = with_weights(config, reference.state_dict())
    inputs = ref.clip_inputs(config)
    with torch.no_grad():
        probabilities = reference([x.clone() for x in inputs])  # PySlowFast's eval output is softmax
        log_probabilities = ours(inputs)
        reference.head.act = nn.Identity()  # ... its logits, for the logits head
        logits = reference([x.clone() for x in inputs])
        ours.head.average = "logits"
        our_logits = ours(inputs)
    assert_close(log_probabilities, probabilities.log())
    assert_close(our_logits, logits)


@pytest.mark.parametrize("name", PYTORCHVIDEO_MODELS)
def test_pytorchvideo_logits(name):
    frames = ref.SHORT_CLIPS.get(name)
    reference = ref.pytorchvideo_model(name, frames=frames,
                                       **({"head_activation": None} if name in SOFTMAX_HEADS else {}))
    config = ref.project_config(name, frames=frames, head_average="logits")
    ours = renamed(config, "pytorchvideo", reference)
    inputs = ref.clip_inputs(config)
    with torch.no_grad():
        assert_close(ours(inputs), reference(ref.reference_input(inputs)))


@pytest.mark.parametrize("name", ["x3d_xs", "x3d_s", "r2plus1d_r50"])
def test_pytorchvideo_softmax_heads_as_built_by_the_hub(name):
    reference = ref.pytorchvideo_model(name)
    config = ref.project_config(name)  # the shipped config: head_average softmax
    ours = renamed(config, "pytorchvideo", reference)
    inputs = ref.clip_inputs(config)
    with torch.no_grad():
        assert_close(ours(inputs), reference(ref.reference_input(inputs)).log())


@pytest.mark.parametrize("name", sorted(TORCHVISION_MODELS))
def test_torchvision_logits(name):
    crop, frames = TORCHVISION_MODELS[name], ref.SHORT_CLIPS.get(name)
    reference = ref.torchvision_model(name, crop=crop, frames=frames)
    # torchvision's MViT normalises its pooled tokens with epsilon 1e-6 (the shipped MViT-B config: PyTorchVideo's 1e-5)
    eps = {"pool_norm_eps": 1e-6} if name.startswith("mvit") else {}
    config = ref.project_config(name, crop=crop, frames=frames, head_average="logits", **eps)
    inputs = ref.clip_inputs(config, crop=crop)
    if name == "s3d":
        ref.calibrate_batch_norms(reference, inputs)
    ours = renamed(config, "torchvision", reference)
    with torch.no_grad():
        assert_close(ours(inputs), reference(ref.reference_input(inputs)))


# A test crop larger than the training crop leaves 2x2 positions: the references disagree there.
TRAIN_CROP, LARGER_CROP = 64, 96


@pytest.mark.parametrize("name", ["slowfast_r50_8x8", "i3d_r50_8x8"])
def test_larger_test_crop_pyslowfast_averages_probabilities(name):
    reference = ref.pyslowfast_model(name, crop=TRAIN_CROP)
    config = ref.project_config(name, crop=LARGER_CROP, train_crop=TRAIN_CROP, head_average="softmax")
    ours = with_weights(config, reference.state_dict())
    inputs = ref.clip_inputs(config, batch=1, crop=LARGER_CROP)
    with torch.no_grad():
        assert_close(ours(inputs), reference([x.clone() for x in inputs]).log())


@pytest.mark.parametrize("name", ["slowfast_r50_8x8", "x3d_xs"])
def test_larger_test_crop_pytorchvideo(name):
    reference = ref.pytorchvideo_model(name, crop=TRAIN_CROP)  # ResNets average logits; X3D ends in softmax
    average = "softmax" if name.startswith("x3d") else "logits"
    config = ref.project_config(name, crop=LARGER_CROP, train_crop=TRAIN_CROP, head_average=average)
    ours = with_weights(config, from_pytorchvideo(config, reference))
    inputs = ref.clip_inputs(config, batch=1, crop=LARGER_CROP)
    with torch.no_grad():
        theirs = reference(ref.reference_input(inputs))
        assert_close(ours(inputs), theirs.log() if average == "softmax" else theirs)
        ours.head.average = "logits" if average == "softmax" else "softmax"
        assert (ours(inputs) - (theirs.log() if average == "softmax" else theirs)).abs().max() > 1e-3, \
            "the other head average should differ at this crop, or the test distinguishes nothing"
