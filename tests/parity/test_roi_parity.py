"""The RoI models (streamrec/models/roi_head.py) against PySlowFast's and PyTorchVideo's detection
models: same random weights, same clips and person boxes, the same logits and sigmoid scores
(float32, 1e-4); and each reference's checkpoint layout loads to those outputs.

PySlowFast's RoI head imports detectron2's ``ROIAlign``, which is not installable here. Its
source (detectron2/layers/roi_align.py) is a module whose forward calls torchvision's
``roi_align(input, rois, output_size, spatial_scale, sampling_ratio, aligned)`` with its own
arguments; the signatures differ only in the default of ``aligned`` (detectron2 True, torchvision
False), which PySlowFast always passes. So the stub's ``ROIAlign`` is torchvision's ``RoIAlign``.
"""

from __future__ import annotations

import pickle
import sys

import pytest

pytest.importorskip("pytorchvideo")
pytest.importorskip("slowfast")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402
from torchvision.ops import RoIAlign  # noqa: E402

import references as ref  # noqa: E402  (stubs detectron2)

sys.modules["detectron2.layers"].ROIAlign = RoIAlign
import slowfast.models.head_helper as pyslowfast_heads  # noqa: E402

pyslowfast_heads.ROIAlign = RoIAlign  # bound at its import, from the stub

import pytorchvideo.models.hub as ptv_hub  # noqa: E402
from slowfast.config.defaults import get_cfg  # noqa: E402
from slowfast.models.video_model_builder import ResNetModel, SlowFastModel  # noqa: E402
from slowfast.utils import checkpoint as pyslowfast_checkpoint  # noqa: E402
from slowfast.utils.c2_model_loading import get_name_convert_func  # noqa: E402
from streamrec.checkpoints import (  # noqa: E402
    Checkpoint,
    load_checkpoint,
    load_model,
    load_state_dict_strictly,
    model_state_dict,
)
from test_checkpoint_formats import caffe2_blobs  # noqa: E402

TOLERANCE = 1e-4
CROP = 64  # a 4x4 final map at 1/16: boxes cover one to all of its cells

# PySlowFast's AVA configs (configs/AVA/*.yaml) of the shipped configs, as DETECTION-enabled models.
AVA = {
    # SLOWFAST_32x2_R50_SHORT.yaml (ALIGNED: True), the layout of PyTorchVideo's slowfast_r50_detection
    "slowfast_r50_detection": dict(ARCH="slowfast", DEPTH=50, NUM_FRAMES=32, ALPHA=4, FUSION_KERNEL_SZ=7,
                                   NUM_BLOCK_TEMP_KERNEL=[[3, 3], [4, 4], [6, 6], [3, 3]], ALIGNED=True),
    # c2/SLOWFAST_32x2_R101_50_50.yaml
    "slowfast_r101_ava_32x2": dict(ARCH="slowfast", DEPTH=101, NUM_FRAMES=32, ALPHA=4, FUSION_KERNEL_SZ=5,
                                   NUM_BLOCK_TEMP_KERNEL=[[3, 3], [4, 4], [6, 6], [3, 3]], ALIGNED=False,
                                   NONLOCAL=dict(LOCATION=[[[], []], [[], []], [[6, 13, 20], []], [[], []]],
                                                 INSTANTIATION="dot_product", POOL=[[[2, 2, 2], [2, 2, 2]]] * 4)),
    # c2/SLOW_8x8_R50.yaml (4 frames at stride 16; ARCH "slow", named "slowonly" in slowfast 1.0),
    # the layout of PyTorchVideo's slow_r50_detection
    "slow_r50_detection": dict(ARCH="slowonly", DEPTH=50, NUM_FRAMES=4, NUM_BLOCK_TEMP_KERNEL=[[3], [4], [6], [3]],
                               ALIGNED=False),
}


def pyslowfast_ava_cfg(name: str):
    spec = AVA[name]
    cfg = get_cfg()
    cfg.NUM_GPUS = 0
    cfg.MODEL.ARCH = spec["ARCH"]
    cfg.MODEL.NUM_CLASSES = 80
    cfg.DETECTION.ENABLE = True
    cfg.DETECTION.ALIGNED = spec["ALIGNED"]
    cfg.RESNET.DEPTH = spec["DEPTH"]
    cfg.RESNET.NUM_BLOCK_TEMP_KERNEL = spec["NUM_BLOCK_TEMP_KERNEL"]
    cfg.DATA.NUM_FRAMES = spec["NUM_FRAMES"]
    cfg.DATA.CROP_SIZE = cfg.DATA.TRAIN_CROP_SIZE = cfg.DATA.TEST_CROP_SIZE = CROP
    pathways = 2 if spec["ARCH"] == "slowfast" else 1
    cfg.DATA.INPUT_CHANNEL_NUM = [3] * pathways
    cfg.RESNET.SPATIAL_STRIDES = [[1] * pathways, [2] * pathways, [2] * pathways, [1] * pathways]
    cfg.RESNET.SPATIAL_DILATIONS = [[1] * pathways] * 3 + [[2] * pathways]
    cfg.NONLOCAL.LOCATION = [[[]] * pathways] * 4
    cfg.NONLOCAL.GROUP = [[1] * pathways] * 4
    cfg.NONLOCAL.POOL = [[[1, 2, 2]] * pathways] * 4
    for key, value in spec.get("NONLOCAL", {}).items():
        setattr(cfg.NONLOCAL, key, value)
    if pathways == 2:
        cfg.SLOWFAST.ALPHA = spec["ALPHA"]
        cfg.SLOWFAST.BETA_INV = 8
        cfg.SLOWFAST.FUSION_CONV_CHANNEL_RATIO = 2
        cfg.SLOWFAST.FUSION_KERNEL_SZ = spec["FUSION_KERNEL_SZ"]
    return cfg


def pyslowfast_ava_model(name: str, seed: int = 0) -> nn.Module:
    cfg = pyslowfast_ava_cfg(name)
    model = SlowFastModel(cfg) if cfg.MODEL.ARCH == "slowfast" else ResNetModel(cfg)
    return calibrated(ref.randomize(model, seed), list(ref.clip_inputs(project(name))))


def pytorchvideo_detection_model(name: str, seed: int = 0) -> nn.Module:
    """The hub's detection model as it builds it (the RoI head needs no input size)."""
    hub = {"slowfast_r50_detection": ptv_hub.slowfast_r50_detection, "slow_r50_detection": ptv_hub.slow_r50_detection}
    return calibrated(ref.randomize(hub[name](), seed), ref.reference_input(ref.clip_inputs(project(name))))


def calibrated(model: nn.Module, inputs: list[torch.Tensor] | torch.Tensor) -> nn.Module:
    """Batch-norm statistics of the test clips' own activations (`references.calibrate_batch_norms`,
    with boxes): through R101's 33 blocks and dot-product non-local blocks, random statistics grow
    the logits to 1e11, where every sigmoid saturates and float32 keeps no 1e-4 of them."""
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm3d):
                module.reset_running_stats()
                module.momentum = None  # a cumulative average: after one batch, its statistics
        model.train()
        model(inputs, person_boxes())
    return model.eval()


def project(name: str, **model_kwargs):
    return ref.project_config(name, crop=CROP, **model_kwargs)


def person_boxes() -> torch.Tensor:
    """Boxes of people on two clips, in input pixels: 1 to 3 per clip, of many sizes, one of them
    partly outside the frame (RoIAlign reads the edge there), none on whole feature cells."""
    return torch.tensor([[0, 4.0, 6.5, 40.0, 60.0], [0, 20.25, 2.0, 63.0, 50.5], [0, 30.0, 30.0, 41.0, 39.0],
                         [1, 0.0, 0.0, 64.0, 64.0], [1, -8.0, 40.0, 20.0, 75.0]])


def assert_close(ours: torch.Tensor, theirs: torch.Tensor) -> None:
    assert ours.shape == theirs.shape == (len(person_boxes()), 80)
    assert theirs.abs().max() > 0.1, "degenerate reference output: the comparison would prove nothing"
    assert theirs.std(dim=0).max() > 1e-3, "every box gives the same output: the comparison would prove little"
    assert theirs.abs().max() < 100, "logits this large saturate every sigmoid"
    difference = (ours - theirs).abs().max().item()
    assert difference <= TOLERANCE, f"max abs difference {difference:.3g}"


def ours_with(config, origin: str, reference: nn.Module) -> nn.Module:
    """The project's model with the reference's weights, as `streamrec.checkpoints` loads that layout."""
    model = ref.project_model(config)
    state = model_state_dict(Checkpoint(origin, reference.state_dict()), model, config.model.arch, "reference")
    load_state_dict_strictly(model, state, "reference")
    return model


@pytest.mark.parametrize("name", sorted(AVA))
def test_pyslowfast_roi_logits_and_scores(name):
    reference = pyslowfast_ava_model(name)
    config = project(name, aligned=AVA[name]["ALIGNED"])
    ours = ours_with(config, "pyslowfast", reference)
    inputs, boxes = ref.clip_inputs(config), person_boxes()
    with torch.no_grad():
        scores = reference([x.clone() for x in inputs], boxes.clone())  # PySlowFast's RoI head ends in a sigmoid
        logits = ours(inputs, boxes)
        reference.head.act = nn.Identity()
        assert_close(logits, reference([x.clone() for x in inputs], boxes.clone()))
    assert_close(logits.sigmoid(), scores)


@pytest.mark.parametrize("name", ["slowfast_r50_detection", "slow_r50_detection"])
def test_pytorchvideo_roi_logits_and_scores(name):
    reference = pytorchvideo_detection_model(name)
    config = project(name)
    ours = ours_with(config, "pytorchvideo", reference)
    inputs, boxes = ref.clip_inputs(config), person_boxes()
    with torch.no_grad():
        scores = reference(ref.reference_input(inputs), boxes.clone())  # its head ends in a sigmoid
        logits = ours(inputs, boxes)
        reference.detection_head.activation = None
        assert_close(logits, reference(ref.reference_input(inputs), boxes.clone()))
    assert_close(logits.sigmoid(), scores)


def test_aligned_matters_at_these_boxes():
    """The two references' RoIAlign conventions give different logits here, so the tests above
    tell them apart (each config names its reference's)."""
    reference = pytorchvideo_detection_model("slow_r50_detection")
    inputs, boxes = ref.clip_inputs(project("slow_r50_detection")), person_boxes()
    reference.detection_head.activation = None
    aligned = ours_with(project("slow_r50_detection", aligned=True), "pytorchvideo", reference)
    with torch.no_grad():
        difference = (aligned(inputs, boxes) - reference(ref.reference_input(inputs), boxes.clone())).abs().max()
    assert difference > 1e-2


# --------------------------------------------------------------------------- checkpoint files


def network_from(config) -> nn.Module:
    return load_model(config).network


def test_pyslowfast_ava_pyth_saved_by_pyslowfast(tmp_path):
    name = "slowfast_r50_detection"
    reference = pyslowfast_ava_model(name)
    optimizer = torch.optim.SGD(reference.parameters(), lr=0.1, momentum=0.9)
    path = pyslowfast_checkpoint.save_checkpoint(str(tmp_path), reference, optimizer, 3, pyslowfast_ava_cfg(name))
    config = project(name, aligned=True).replace(checkpoint=path)
    assert load_checkpoint(path).origin == "pyslowfast"
    ours = network_from(config)
    inputs, boxes = ref.clip_inputs(config), person_boxes()
    with torch.no_grad():
        assert_close(ours(inputs, boxes).sigmoid(), reference([x.clone() for x in inputs], boxes.clone()))


def test_caffe2_ava_pkl_with_non_local_blocks(tmp_path):
    """SLOWFAST_32x2_R101_50_50.pkl's layout: the Kinetics blobs, the Slow pathway's
    ``nonlocal_conv4_*`` blobs and ``pred_*``, checked against PySlowFast's own converter and loader."""
    name = "slowfast_r101_ava_32x2"
    reference = pyslowfast_ava_model(name)
    blobs = caffe2_blobs(reference.state_dict())
    to_pytorch = get_name_convert_func()
    expected_keys = {k for k in reference.state_dict() if not k.endswith("num_batches_tracked")}
    assert {to_pytorch(blob) for blob in blobs} == expected_keys, "blob names PySlowFast's converter does not map"
    assert {"nonlocal_conv4_6_theta_w", "nonlocal_conv4_20_bn_riv", "pred_w"} <= set(blobs)
    path = tmp_path / "SLOWFAST_32x2_R101_50_50.pkl"
    with path.open("wb") as f:
        pickle.dump({"blobs": blobs | {"model_iter": np.array([1000], np.int64)}}, f, protocol=2)

    config = project(name).replace(checkpoint=str(path))
    ours = network_from(config)
    fresh = pyslowfast_ava_model(name, seed=7)  # PySlowFast's own Caffe2 loader on the same file
    pyslowfast_checkpoint.load_checkpoint(str(path), fresh, data_parallel=False, convert_from_caffe2=True)
    inputs, boxes = ref.clip_inputs(config), person_boxes()
    with torch.no_grad():
        expected = reference([x.clone() for x in inputs], boxes.clone())
        assert_close(fresh([x.clone() for x in inputs], boxes.clone()), expected)
        assert_close(ours(inputs, boxes).sigmoid(), expected)


@pytest.mark.parametrize("name,layout", [("slowfast_r50_detection", "hub"), ("slow_r50_detection", "bare")])
def test_pytorchvideo_detection_state_dicts(tmp_path, name, layout):
    """As the hub loads SLOWFAST_8x8_R50_DETECTION.pyth / SLOW_4x16_R50_DETECTION.pyth (``model_state``),
    and bare: keys ``model.blocks.*`` and ``detection_head.proj.*``."""
    reference = pytorchvideo_detection_model(name)
    state = reference.state_dict()
    assert "detection_head.proj.weight" in state and any(k.startswith("model.blocks.") for k in state)
    path = tmp_path / "model.pyth"
    torch.save({"model_state": state} if layout == "hub" else state, path)
    assert load_checkpoint(path).origin == "pytorchvideo"
    config = project(name).replace(checkpoint=str(path))
    ours = network_from(config)
    inputs, boxes = ref.clip_inputs(config), person_boxes()
    with torch.no_grad():
        assert_close(ours(inputs, boxes).sigmoid(), reference(ref.reference_input(inputs), boxes.clone()))
