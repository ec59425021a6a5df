"""The reference implementations, built as their own code builds them, and the project's twins.

Imported only by the parity tests, after ``pytest.importorskip("pytorchvideo")`` and
``pytest.importorskip("slowfast")``: these need ``.venv-ref`` (``.ci/parity-env.sh``), which has
torchvision too. Spatial sizes are small (32 px crops; 64 and 96 px where the head's spatial
pooling is tested) to keep CPU time low; widths and depths are the real ones, and frame counts
too but for the long clips of CSN (32), S3D (128) and MViT, which `SHORT_CLIPS` shortens.
"""

from __future__ import annotations

import dataclasses
import sys
import types
from unittest import mock

import torch
from torch import nn

from streamrec.config import load_config
from streamrec.models import build_model

CROP = 32  # training crop of the parity models: 1x1 final maps (the larger-crop tests use 64 and 96)


def _stub_detectron2() -> None:
    """slowfast 1.0 imports detectron2's ROIAlign for its detection head, which these tests never build."""
    if "detectron2" in sys.modules:
        return
    detectron2, layers = types.ModuleType("detectron2"), types.ModuleType("detectron2.layers")
    layers.ROIAlign = None
    detectron2.layers = layers
    sys.modules.update({"detectron2": detectron2, "detectron2.layers": layers})


_stub_detectron2()

import pytorchvideo.models.hub as ptv_hub  # noqa: E402
import pytorchvideo.models.hub.csn as ptv_hub_csn  # noqa: E402
import torchvision.models.video as tv_video  # noqa: E402
from pytorchvideo.models.csn import create_csn  # noqa: E402
from pytorchvideo.models.resnet import create_resnet  # noqa: E402
from pytorchvideo.models.slowfast import create_slowfast  # noqa: E402
from pytorchvideo.models.x3d import create_x3d  # noqa: E402
from slowfast.config.defaults import get_cfg  # noqa: E402
from slowfast.models.video_model_builder import ResNetModel, SlowFastModel  # noqa: E402


def randomize(model: nn.Module, seed: int) -> nn.Module:
    """Random weights AND BatchNorm statistics, so no layer is an identity; activations stay O(1).
    Layer norms get random affine terms, and every other parameter (class tokens, position
    embeddings, relative position tables) random values of the scale the references train."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.LayerNorm):
                module.weight.copy_(torch.rand(module.weight.shape, generator=generator) + 0.5)
                module.bias.copy_(torch.randn(module.bias.shape, generator=generator) * 0.1)
            elif not isinstance(module, (nn.Conv3d, nn.Linear, nn.BatchNorm3d)):
                for parameter in module.parameters(recurse=False):
                    parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.2)
            if isinstance(module, (nn.Conv3d, nn.Linear)):
                fan_in = module.weight[0].numel()
                module.weight.copy_(torch.randn(module.weight.shape, generator=generator) * (2.0 / fan_in) ** 0.5)
                if module.bias is not None:
                    module.bias.copy_(torch.randn(module.bias.shape, generator=generator) * 0.1)
            elif isinstance(module, nn.BatchNorm3d):
                shape = module.weight.shape
                module.weight.copy_(torch.rand(shape, generator=generator) * 0.5 + 0.25)
                module.bias.copy_(torch.randn(shape, generator=generator) * 0.1)
                module.running_mean.copy_(torch.randn(shape, generator=generator) * 0.1)
                module.running_var.copy_(torch.rand(shape, generator=generator) + 0.5)
                module.num_batches_tracked.fill_(1000)
    return model.eval()


def calibrate_batch_norms(model: nn.Module, inputs: list[torch.Tensor]) -> nn.Module:
    """Batch-norm statistics of ``inputs``' own activations: a network without residual paths (S3D)
    loses the input's signal through many randomly normalised layers, and every clip gives the same
    output; normalised by the clips' statistics, each layer passes it on."""
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm3d):
                module.reset_running_stats()
                module.momentum = None  # a cumulative average: after one batch, its statistics
        model.train()
        model(reference_input(inputs))
    return model.eval()


def clip_inputs(config, batch: int = 2, crop: int = CROP, seed: int = 1) -> list[torch.Tensor]:
    """Normalised float pathway tensors ``[B, 3, T, H, W]`` for a config's clip contract."""
    generator = torch.Generator().manual_seed(seed)
    frames = [config.clip.slow_frames, config.clip.num_frames] if config.clip.alpha else [config.clip.num_frames]
    return [torch.randn(batch, 3, t, crop, crop, generator=generator) for t in frames]


def project_config(name: str, crop: int = CROP, train_crop: int | None = None, frames: int | None = None,
                   **model_kwargs):
    """A shipped config at a small crop (``train_crop`` fixes the head pooling; default: the crop) and,
    given ``frames``, a shorter clip."""
    config = load_config(name)
    model = config.model.kwargs | model_kwargs | ({"train_crop_size": train_crop} if train_crop else {})
    return config.replace(
        clip=dataclasses.replace(config.clip, crop_size=crop, short_side=crop,
                                 num_frames=frames or config.clip.num_frames),
        model=dataclasses.replace(config.model, kwargs=model),
    )


def project_model(config) -> nn.Module:
    return build_model(config).eval()


# --------------------------------------------------------------------------- PySlowFast (slowfast 1.0)

# The PySlowFast model-zoo configs (configs/Kinetics/c2/*.yaml) of the shipped configs.
PYSLOWFAST = {
    "slowfast_r50_4x16": dict(ARCH="slowfast", DEPTH=50, NUM_FRAMES=32, ALPHA=8, FUSION_KERNEL_SZ=5,
                              NUM_BLOCK_TEMP_KERNEL=[[3, 3], [4, 4], [6, 6], [3, 3]]),
    "slowfast_r50_8x8": dict(ARCH="slowfast", DEPTH=50, NUM_FRAMES=32, ALPHA=4, FUSION_KERNEL_SZ=7,
                             NUM_BLOCK_TEMP_KERNEL=[[3, 3], [4, 4], [6, 6], [3, 3]]),
    "slowfast_r101_8x8": dict(ARCH="slowfast", DEPTH=101, NUM_FRAMES=32, ALPHA=4, FUSION_KERNEL_SZ=5,
                              NUM_BLOCK_TEMP_KERNEL=[[3, 3], [4, 4], [23, 23], [3, 3]]),
    "slowfast_r101_16x8": dict(ARCH="slowfast", DEPTH=101, NUM_FRAMES=64, ALPHA=4, FUSION_KERNEL_SZ=5,
                               NUM_BLOCK_TEMP_KERNEL=[[3, 3], [4, 4], [6, 6], [3, 3]]),
    "slow_r50_8x8": dict(ARCH="slowonly", DEPTH=50, NUM_FRAMES=8, NUM_BLOCK_TEMP_KERNEL=[[3], [4], [6], [3]]),
    "i3d_r50_8x8": dict(ARCH="i3d", DEPTH=50, NUM_FRAMES=8, NUM_BLOCK_TEMP_KERNEL=[[3], [4], [6], [3]]),
    "c2d_r50": dict(ARCH="c2d", DEPTH=50, NUM_FRAMES=8, NUM_BLOCK_TEMP_KERNEL=[[3], [4], [6], [3]]),
    "i3d_nln_r50_8x8": dict(ARCH="i3d", DEPTH=50, NUM_FRAMES=8, NUM_BLOCK_TEMP_KERNEL=[[3], [4], [6], [3]],
                            NONLOCAL_LOCATION=[[[]], [[1, 3]], [[1, 3, 5]], [[]]], NONLOCAL_INSTANTIATION="softmax"),
}


def pyslowfast_cfg(name: str, crop: int = CROP):
    spec = PYSLOWFAST[name]
    cfg = get_cfg()
    cfg.NUM_GPUS = 0
    cfg.MODEL.ARCH = spec["ARCH"]
    cfg.MODEL.NUM_CLASSES = 400
    cfg.RESNET.DEPTH = spec["DEPTH"]
    cfg.RESNET.NUM_BLOCK_TEMP_KERNEL = spec["NUM_BLOCK_TEMP_KERNEL"]
    cfg.DATA.NUM_FRAMES = spec["NUM_FRAMES"]
    cfg.DATA.CROP_SIZE = crop
    cfg.DATA.TRAIN_CROP_SIZE = crop
    if spec["ARCH"] == "slowfast":
        cfg.SLOWFAST.ALPHA = spec["ALPHA"]
        cfg.SLOWFAST.BETA_INV = 8
        cfg.SLOWFAST.FUSION_CONV_CHANNEL_RATIO = 2
        cfg.SLOWFAST.FUSION_KERNEL_SZ = spec["FUSION_KERNEL_SZ"]
        cfg.DATA.INPUT_CHANNEL_NUM = [3, 3]
        cfg.RESNET.SPATIAL_STRIDES = [[1, 1], [2, 2], [2, 2], [2, 2]]
        cfg.RESNET.SPATIAL_DILATIONS = [[1, 1], [1, 1], [1, 1], [1, 1]]
        cfg.NONLOCAL.LOCATION = [[[], []]] * 4
        cfg.NONLOCAL.GROUP = [[1, 1]] * 4
        cfg.NONLOCAL.POOL = [[[1, 2, 2], [1, 2, 2]]] * 4
    else:
        cfg.DATA.INPUT_CHANNEL_NUM = [3]
    if "NONLOCAL_LOCATION" in spec:  # as configs/Kinetics/c2/I3D_NLN_8x8_R50.yaml sets it; POOL is the default
        cfg.NONLOCAL.LOCATION = spec["NONLOCAL_LOCATION"]
        cfg.NONLOCAL.GROUP = [[1], [1], [1], [1]]
        cfg.NONLOCAL.INSTANTIATION = spec["NONLOCAL_INSTANTIATION"]
    return cfg


def pyslowfast_model(name: str, crop: int = CROP, seed: int = 0) -> nn.Module:
    cfg = pyslowfast_cfg(name, crop)
    model = SlowFastModel(cfg) if cfg.MODEL.ARCH == "slowfast" else ResNetModel(cfg)
    return randomize(model, seed)


# --------------------------------------------------------------------------- PyTorchVideo (0.1.5)


def _pool(frames: int, crop: int) -> tuple[int, int, int]:
    return (frames, crop // 32, crop // 32)


# Frames of the long-clip models in these tests (the others use their config's): a shorter clip of
# the same architecture, as the head pooling (PyTorchVideo) or the token maps (MViT) follow it.
SHORT_CLIPS = {"csn_r101": 8, "s3d": 16, "mvit_b_16x4": 4, "mvit_b_32x3": 4, "mvitv2_s_16x4": 4, "mvitv2_b_32x3": 4}


def hub_arguments(hub_function) -> dict:
    """The arguments a PyTorchVideo hub function passes to its builder, captured, so that tests can
    change the few that fix input sizes (head pooling, X3D's crop) and keep every other one."""
    module = sys.modules[hub_function.__module__]
    private = {"slowfast": "_slowfast", "resnet": "_resnet", "x3d": "_x3d"}[hub_function.__module__.rsplit(".", 1)[1]]
    with mock.patch.object(module, private, side_effect=lambda **kwargs: kwargs):
        arguments = hub_function()
    for key in ("pretrained", "progress", "checkpoint_path"):
        arguments.pop(key)
    return arguments


def csn_arguments() -> dict:
    """What ``hub.csn_r101`` passes to ``create_csn``, captured like `hub_arguments`."""
    with mock.patch.object(ptv_hub_csn, "create_csn", side_effect=lambda **kwargs: kwargs):
        return ptv_hub.csn_r101()


def pytorchvideo_model(name: str, crop: int = CROP, seed: int = 0, frames: int | None = None,
                       **overrides) -> nn.Module:
    """The hub model of a shipped config, at a small crop (4x16 is not in the hub: ``create_slowfast``);
    ``frames``: the clip length where a test shortens it (`SHORT_CLIPS`)."""
    if name == "slowfast_r50_4x16":
        model = create_slowfast(slowfast_fusion_conv_kernel_size=(5, 1, 1), slowfast_fusion_conv_stride=(8, 1, 1),
                                head_pool_kernel_sizes=(_pool(4, crop), _pool(32, crop)), **overrides)
        return randomize(model, seed)
    if name == "csn_r101":  # 4 of every 32 frames reach the head, as (4, 7, 7) says at 224 px
        return randomize(create_csn(**(csn_arguments() | {"head_pool_kernel_size": _pool(frames // 8, crop)}
                                       | overrides)), seed)
    if name == "r2plus1d_r50":
        return randomize(ptv_hub.r2plus1d_r50(head_pool_kernel_size=_pool(16 // 4, crop), **overrides), seed)
    if name in ("efficient_x3d_xs", "efficient_x3d_s"):  # pools the whole final map: any size
        return randomize(getattr(ptv_hub, name)(**overrides), seed)
    if name in ("mvit_b_16x4", "mvit_b_32x3"):
        hub_function = {"mvit_b_16x4": ptv_hub.mvit_base_16x4, "mvit_b_32x3": ptv_hub.mvit_base_32x3}[name]
        return randomize(hub_function(spatial_size=crop, temporal_size=frames, **overrides), seed)
    hub_function, sizes = {
        "slowfast_r50_8x8": (ptv_hub.slowfast_r50, {"head_pool_kernel_sizes": (_pool(8, crop), _pool(32, crop))}),
        "slowfast_r101_8x8": (ptv_hub.slowfast_r101, {"head_pool_kernel_sizes": (_pool(8, crop), _pool(32, crop))}),
        "slowfast_r101_16x8": (ptv_hub.slowfast_16x8_r101_50_50,
                               {"head_pool_kernel_sizes": (_pool(16, crop), _pool(64, crop))}),
        "slow_r50_8x8": (ptv_hub.slow_r50, {"head_pool_kernel_size": _pool(8, crop)}),
        "i3d_r50_8x8": (ptv_hub.i3d_r50, {"head_pool_kernel_size": _pool(4, crop)}),
        "x3d_xs": (ptv_hub.x3d_xs, {"input_crop_size": crop}),
        "x3d_s": (ptv_hub.x3d_s, {"input_crop_size": crop}),
        "x3d_m": (ptv_hub.x3d_m, {"input_crop_size": crop}),
        "x3d_l": (ptv_hub.x3d_l, {"input_crop_size": crop}),
        "c2d_r50": (ptv_hub.c2d_r50, {"head_pool_kernel_size": _pool(4, crop)}),
    }[name]
    arguments = hub_arguments(hub_function)
    builder = arguments.pop("model_builder", None) or {
        "slowfast": create_slowfast, "resnet": create_resnet, "x3d": create_x3d,
    }[hub_function.__module__.rsplit(".", 1)[1]]
    return randomize(builder(**(arguments | sizes | overrides)), seed)


def reference_input(inputs: list[torch.Tensor]) -> list[torch.Tensor] | torch.Tensor:
    """A copy for a reference net, which may overwrite its input list in place; PyTorchVideo's
    single-pathway nets take a bare tensor."""
    return [x.clone() for x in inputs] if len(inputs) > 1 else inputs[0].clone()


# --------------------------------------------------------------------------- torchvision (0.29)

# MViTv2-B 32x3 (PySlowFast's MVITv2_B_32x3.yaml: depth 24, width and heads doubled and queries
# pooled at blocks 2, 5 and 21) in torchvision's block settings, written out as torchvision writes
# mvit_v2_s's: torchvision has the architecture but not this size.
_V2_B_HEADS = [1] * 2 + [2] * 3 + [4] * 16 + [8] * 3
_V2_B_IN = [96] * 3 + [192] * 3 + [384] * 16 + [768] * 2
_V2_B_OUT = [96] * 2 + [192] * 3 + [384] * 16 + [768] * 3
_V2_B_STRIDE_Q = [[1, 2, 2] if i in (2, 5, 21) else [1, 1, 1] for i in range(24)]
_V2_B_STRIDE_KV = [[1, 8, 8]] * 2 + [[1, 4, 4]] * 3 + [[1, 2, 2]] * 16 + [[1, 1, 1]] * 3


def mvit_v2_b(**kwargs) -> nn.Module:
    blocks = [tv_video.mvit.MSBlockConfig(num_heads=h, input_channels=i, output_channels=o, kernel_q=[3, 3, 3],
                                          kernel_kv=[3, 3, 3], stride_q=q, stride_kv=kv)
              for h, i, o, q, kv in zip(_V2_B_HEADS, _V2_B_IN, _V2_B_OUT, _V2_B_STRIDE_Q, _V2_B_STRIDE_KV)]
    return tv_video.mvit.MViT(block_setting=blocks, residual_pool=True, residual_with_cls_embed=False,
                              rel_pos_embed=True, proj_after_attn=True, **kwargs)


def mvit_arguments(builder) -> dict:
    """What torchvision's ``mvit_v1_b``/``mvit_v2_s`` pass on to build their MViT, captured like
    `hub_arguments`: they fix the input size, which these tests shrink."""
    with mock.patch.object(tv_video.mvit, "_mvit", side_effect=lambda **kwargs: kwargs):
        arguments = builder()
    for key in ("weights", "progress", "spatial_size", "temporal_size"):
        arguments.pop(key)
    return {"rel_pos_embed": False, "proj_after_attn": False} | arguments  # _mvit's defaults


def torchvision_model(name: str, crop: int = CROP, seed: int = 0, frames: int | None = None) -> nn.Module:
    """torchvision's model of a shipped config, random weights, at a small crop (and clip, for MViT)."""
    if name == "r2plus1d_18":
        model = tv_video.r2plus1d_18()
    elif name == "s3d":
        model = tv_video.s3d()
    elif name == "mvitv2_b_32x3":
        model = mvit_v2_b(spatial_size=(crop, crop), temporal_size=frames)
    else:
        builder = {"mvit_b_16x4": tv_video.mvit_v1_b, "mvitv2_s_16x4": tv_video.mvit_v2_s}[name]
        model = tv_video.mvit.MViT(spatial_size=(crop, crop), temporal_size=frames, **mvit_arguments(builder))
    return randomize(model, seed)
