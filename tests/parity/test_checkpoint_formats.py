"""Every checkpoint format, written in the exact reference layout from the reference models' own
state dicts (by the references' own savers where they have one), loads to identical logits."""

from __future__ import annotations

import pickle
import re

import pytest

pytest.importorskip("pytorchvideo")
pytest.importorskip("slowfast")

import numpy as np  # noqa: E402
import torch  # noqa: E402

import references as ref  # noqa: E402
from slowfast.utils import checkpoint as pyslowfast_checkpoint  # noqa: E402
from slowfast.utils.c2_model_loading import get_name_convert_func  # noqa: E402
from streamrec.checkpoints import load_checkpoint, load_model, save_checkpoint  # noqa: E402
from streamrec.config import LABELS_DIR  # noqa: E402

TOLERANCE = 1e-4


def max_difference(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape
    return (a - b).abs().max().item()


def network_from(config) -> torch.nn.Module:
    """The float network `load_model` builds (its engine wrapper only adds uint8 normalisation)."""
    return load_model(config).network


@pytest.mark.parametrize("name", ["slowfast_r50_4x16", "i3d_r50_8x8", "i3d_nln_r50_8x8"])
def test_pyslowfast_pyth_saved_by_pyslowfast(tmp_path, name):
    reference = ref.pyslowfast_model(name)
    optimizer = torch.optim.SGD(reference.parameters(), lr=0.1, momentum=0.9)
    path = pyslowfast_checkpoint.save_checkpoint(str(tmp_path), reference, optimizer, 9, ref.pyslowfast_cfg(name))

    config = ref.project_config(name).replace(checkpoint=path)
    ours = network_from(config)
    assert ours.head.average == "softmax", "a PySlowFast checkpoint defaults to PySlowFast's head"
    inputs = ref.clip_inputs(config)
    with torch.no_grad():
        probabilities = reference([x.clone() for x in inputs])
        assert max_difference(ours(inputs), probabilities.log()) <= TOLERANCE

    # ... and the project's own format keeps exactly those weights and that head.
    own = tmp_path / "own.pt"
    save_checkpoint(own, ours, config, metadata={"source": path})
    reloaded = network_from(config.replace(checkpoint=str(own)))
    assert load_checkpoint(own).metadata == {"source": path}
    with torch.no_grad():
        assert max_difference(reloaded(inputs), ours(inputs)) == 0.0


def caffe2_blobs(state_dict: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    """A PySlowFast state dict in the Caffe2 model zoo's blob names (verified below by PySlowFast's own converter)."""
    last_fast_block = {}
    for key in state_dict:
        if m := re.match(r"s(\d)\.pathway1_res(\d+)\.", key):
            last_fast_block[m[1]] = max(last_fast_block.get(m[1], 0), int(m[2]))
    bn = {"weight": "s", "bias": "b", "running_mean": "rm", "running_var": "riv"}
    blobs = {}
    for key, value in state_dict.items():
        module, _, param = key.rpartition(".")
        if param == "num_batches_tracked":
            continue  # Caffe2 has no such counter
        t = "t_" if "pathway1" in module else ""
        if m := re.fullmatch(r"s1\.pathway\d_stem\.(conv|bn)", module):
            name = f"{t}conv1_w" if m[1] == "conv" else f"{t}res_conv1_bn_{bn[param]}"
        elif m := re.fullmatch(r"s(\d)\.pathway\d_res(\d+)\.(branch1|branch1_bn|branch2\.([abc])(_bn)?)", module):
            branch = "branch1" if m[3].startswith("branch1") else f"branch2{m[4]}"
            is_bn = m[3] == "branch1_bn" or m[5]
            name = f"{t}res{m[1]}_{m[2]}_{branch}_" + (f"bn_{bn[param]}" if is_bn else "w")
        elif m := re.fullmatch(r"s(\d)\.pathway0_nonlocal(\d+)\.(conv_theta|conv_phi|conv_g|conv_out|bn)", module):
            base = f"nonlocal_conv{m[1]}_{m[2]}"
            name = f"{base}_bn_{bn[param]}" if m[3] == "bn" else f"{base}_{m[3][len('conv_'):]}_{param[0]}"
        elif m := re.fullmatch(r"s(\d)_fuse\.(conv_f2s|bn)", module):
            base = "t_pool1_subsample" if m[1] == "1" else f"t_res{m[1]}_{last_fast_block[m[1]]}_branch2c_bn_subsample"
            name = f"{base}_w" if m[2] == "conv_f2s" else f"{base}_bn_{bn[param]}"
        elif module == "head.projection":
            name = f"pred_{param[0]}"
        else:
            raise AssertionError(f"no Caffe2 name for {key}")
        blobs[name] = value.numpy().copy()
    return blobs


@pytest.mark.parametrize("name", ["slowfast_r50_8x8", "slow_r50_8x8", "i3d_nln_r50_8x8"])
def test_caffe2_pkl(tmp_path, name):
    reference = ref.pyslowfast_model(name)
    blobs = caffe2_blobs(reference.state_dict())
    to_pytorch = get_name_convert_func()
    expected_keys = {k for k in reference.state_dict() if not k.endswith("num_batches_tracked")}
    assert {to_pytorch(blob) for blob in blobs} == expected_keys, "blob names PySlowFast's converter does not map"
    # Training state the model-zoo files also carry, which loading skips.
    blobs |= {"lr": np.array([0.1], np.float32), "model_iter": np.array([196000], np.int64),
              "conv1_w_momentum": np.zeros_like(blobs["conv1_w"])}
    path = tmp_path / f"{name}.pkl"
    with path.open("wb") as f:
        pickle.dump({"blobs": blobs}, f, protocol=2)

    config = ref.project_config(name).replace(checkpoint=str(path))
    ours = network_from(config)
    fresh = ref.pyslowfast_model(name, seed=7)  # PySlowFast's own Caffe2 loader on the same file
    pyslowfast_checkpoint.load_checkpoint(str(path), fresh, data_parallel=False, convert_from_caffe2=True)
    inputs = ref.clip_inputs(config)
    with torch.no_grad():
        expected = reference([x.clone() for x in inputs]).log()
        assert max_difference(fresh([x.clone() for x in inputs]).log(), expected) <= TOLERANCE
        assert max_difference(ours(inputs), expected) <= TOLERANCE


LAYOUTS = {
    "hub": lambda sd: {"model_state": sd},  # what PyTorchVideo's hub downloads
    "lightning": lambda sd: {"state_dict": {f"model.{k}": v for k, v in sd.items()}, "epoch": 3},
    "bare": lambda sd: sd,
}


SOFTMAX_HEADS = {"x3d_xs", "x3d_l", "r2plus1d_r50"}  # the hub's X3D and R(2+1)D end in softmax


@pytest.mark.parametrize("name,layout", [("slowfast_r50_8x8", "hub"), ("slowfast_r50_8x8", "lightning"),
                                         ("i3d_r50_8x8", "bare"), ("x3d_xs", "hub"), ("x3d_l", "hub"),
                                         ("c2d_r50", "hub"), ("csn_r101", "hub"), ("r2plus1d_r50", "hub"),
                                         ("efficient_x3d_xs", "bare"), ("mvit_b_16x4", "hub")])
def test_pytorchvideo_state_dicts(tmp_path, name, layout):
    """As PyTorchVideo's hub loads them (``model_state``; the mobile X3D's files are bare)."""
    frames = ref.SHORT_CLIPS.get(name)
    reference = ref.pytorchvideo_model(name, frames=frames)
    path = tmp_path / "model.pt"
    torch.save(LAYOUTS[layout](reference.state_dict()), path)
    config = ref.project_config(name, frames=frames).replace(checkpoint=str(path))
    assert load_checkpoint(path).origin == "pytorchvideo"
    ours = network_from(config)
    inputs = ref.clip_inputs(config)
    with torch.no_grad():
        theirs = reference(ref.reference_input(inputs))
        expected = theirs.log() if name in SOFTMAX_HEADS else theirs
        assert max_difference(ours(inputs), expected) <= TOLERANCE


@pytest.mark.parametrize("name", ["r2plus1d_18", "mvit_b_16x4"])
def test_torchvision_state_dicts(tmp_path, name):
    """As torchvision publishes them: a bare state dict (``torch.save(model.state_dict())``)."""
    frames = ref.SHORT_CLIPS.get(name)
    reference = ref.torchvision_model(name, frames=frames)
    path = tmp_path / "model.pth"
    torch.save(reference.state_dict(), path)
    extra = {"pool_norm_eps": 1e-6} if name.startswith("mvit") else {}  # torchvision's MViT (zoo entries set it too)
    config = ref.project_config(name, frames=frames, **extra).replace(checkpoint=str(path))
    assert load_checkpoint(path).origin == "torchvision"
    ours = network_from(config)
    inputs = ref.clip_inputs(config)
    with torch.no_grad():
        assert max_difference(ours(inputs), reference(ref.reference_input(inputs))) <= TOLERANCE


def test_kinetics400_labels_match_torchvisions_copy():
    from torchvision.models._meta import _KINETICS400_CATEGORIES

    shipped = (LABELS_DIR / "kinetics400.txt").read_text().splitlines()
    assert shipped == list(_KINETICS400_CATEGORIES)

