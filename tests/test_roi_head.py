"""The RoI models (streamrec/models/roi_head.py) and their RoIAlign (streamrec/models/roi_align.py):
one row of logits per person box, from that box's clip and region only; no boxes, no rows;
boxes outside the frame as RoIAlign defines them; the configs, checkpoint layouts and AVA labels.

Parity with PySlowFast and PyTorchVideo (and RoIAlign's with torchvision's, through them) is in
tests/parity/test_roi_parity.py; here RoIAlign is checked against a direct, sample-by-sample
transcription of its definition.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import typing

import numpy as np
import pytest
import torch

from streamrec.checkpoints import Checkpoint, load_checkpoint, load_model, load_state_dict_strictly, model_state_dict
from streamrec.config import LABELS_DIR, load_config, load_labels
from streamrec.errors import StreamrecError
from streamrec.models import UInt8Clips, VideoNetwork, build_model, get_arch
from streamrec.models.roi_align import roi_align
from streamrec.models.roi_head import ResNet3DRoI, SlowFastRoI

ROI_CONFIGS = ["slowfast_tiny_roi", "slowfast_r50_detection", "slow_r50_detection", "slowfast_r101_ava_32x2"]


def with_model(config, **model_kwargs):
    return config.replace(model=dataclasses.replace(config.model, kwargs=config.model.kwargs | model_kwargs))


def tiny(**model_kwargs):
    return with_model(load_config("slowfast_tiny_roi"), **model_kwargs)


def small(name: str, crop: int = 64):
    """A shipped config at a small crop."""
    config = load_config(name)
    return config.replace(clip=dataclasses.replace(config.clip, crop_size=crop, short_side=crop))


def pathways(config, batch: int, seed: int = 0) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    frames = [config.clip.slow_frames, config.clip.num_frames] if config.clip.alpha else [config.clip.num_frames]
    size = config.clip.crop_size
    return [torch.randn(batch, 3, t, size, size, generator=generator) for t in frames]


def spread_head(model: torch.nn.Module) -> torch.nn.Module:
    """A projection whose logits differ clearly between regions (an untrained one's barely do)."""
    with torch.no_grad():
        model.head.projection.weight.normal_(0, 1.0, generator=torch.Generator().manual_seed(3))
    return model.eval()


# --------------------------------------------------------------------------- RoIAlign


def roi_align_by_definition(features: torch.Tensor, boxes: torch.Tensor, output_size: int, spatial_scale: float,
                            aligned: bool) -> torch.Tensor:
    """RoIAlign sample by sample, as torchvision's CPU kernel defines it (roi_align_kernel.cpp)."""
    _, channels, height, width = features.shape
    out = torch.zeros((len(boxes), channels, output_size, output_size), dtype=torch.float64)
    data = features.double()

    def bilinear(map_: torch.Tensor, y: float, x: float) -> torch.Tensor:
        if y < -1.0 or y > height or x < -1.0 or x > width:
            return torch.zeros(channels, dtype=torch.float64)
        y, x = max(y, 0.0), max(x, 0.0)
        y_low, x_low = int(y), int(x)
        if y_low >= height - 1:
            y_high = y_low = height - 1
            y = float(y_low)
        else:
            y_high = y_low + 1
        if x_low >= width - 1:
            x_high = x_low = width - 1
            x = float(x_low)
        else:
            x_high = x_low + 1
        ly, lx = y - y_low, x - x_low
        return ((1 - ly) * (1 - lx) * map_[:, y_low, x_low] + (1 - ly) * lx * map_[:, y_low, x_high]
                + ly * (1 - lx) * map_[:, y_high, x_low] + ly * lx * map_[:, y_high, x_high])

    for n, (index, x1, y1, x2, y2) in enumerate(boxes.double().tolist()):
        offset = 0.5 if aligned else 0.0
        start_x, start_y = x1 * spatial_scale - offset, y1 * spatial_scale - offset
        roi_w, roi_h = x2 * spatial_scale - offset - start_x, y2 * spatial_scale - offset - start_y
        if not aligned:
            roi_w, roi_h = max(roi_w, 1.0), max(roi_h, 1.0)
        bin_w, bin_h = roi_w / output_size, roi_h / output_size
        grid_w, grid_h = math.ceil(roi_w / output_size), math.ceil(roi_h / output_size)
        count = max(grid_w * grid_h, 1)
        for ph in range(output_size):
            for pw in range(output_size):
                total = torch.zeros(channels, dtype=torch.float64)
                for iy in range(grid_h):
                    y = start_y + ph * bin_h + (iy + 0.5) * bin_h / grid_h
                    for ix in range(grid_w):
                        x = start_x + pw * bin_w + (ix + 0.5) * bin_w / grid_w
                        total += bilinear(data[int(index)], y, x)
                out[n, :, ph, pw] = total / count
    return out.float()


@pytest.mark.parametrize("aligned", [True, False])
def test_roi_align_follows_its_definition(aligned):
    """Boxes inside, across and outside the edges, smaller than a feature pixel, larger than the
    map, and of zero width; maps of 1 to 9 pixels a side; several scales."""
    generator = torch.Generator().manual_seed(0)
    for trial in range(24):
        height, width = (int(v) for v in torch.randint(1, 10, (2,), generator=generator))
        scale = (1 / 16, 1 / 4, 1.0)[trial % 3]
        features = torch.randn(3, 4, height, width, generator=generator)
        corner = torch.rand(6, 2, generator=generator) * torch.tensor([width, height]) / scale * 1.4 - 4 / scale
        size = torch.rand(6, 2, generator=generator) * torch.tensor([width, height]) / scale
        size[0] = 0.1  # below a feature pixel
        size[1, 0] = 0.0  # zero width
        boxes = torch.cat([torch.randint(0, 3, (6, 1), generator=generator).float(), corner, corner + size], 1)
        for output_size in (7, 2):
            ours = roi_align(features, boxes[:, 1:], boxes[:, 0].long(), output_size=output_size,
                             spatial_scale=scale, aligned=aligned)
            expected = roi_align_by_definition(features, boxes, output_size, scale, aligned)
            assert (ours - expected).abs().max() < 1e-5


def test_roi_align_of_no_boxes_is_empty():
    out = roi_align(torch.randn(2, 5, 4, 4), torch.zeros(0, 4), torch.zeros(0, dtype=torch.long), output_size=7,
                    spatial_scale=1 / 16, aligned=True)
    assert out.shape == (0, 5, 7, 7)


def test_roi_align_passes_gradients_to_the_features():
    """The demo model is trained through it."""
    features = torch.randn(1, 2, 6, 6, requires_grad=True)
    out = roi_align(features, torch.tensor([[8.0, 8.0, 40.0, 56.0]]), torch.zeros(1, dtype=torch.long),
                    output_size=3, spatial_scale=1 / 8, aligned=True)
    out.sum().backward()
    assert features.grad is not None and features.grad.abs().sum() > 0
    assert features.grad[0, :, 0].abs().sum() == 0  # rows the box does not reach get nothing


# --------------------------------------------------------------------------- the networks


@pytest.mark.parametrize("name", ["slowfast_tiny_roi", "slow_r50_detection"])
def test_one_row_per_box_from_its_own_clip_and_region(name):
    config = tiny() if name == "slowfast_tiny_roi" else with_model(small(name), depth=[1, 1, 1, 1], width=16)
    model = spread_head(build_model(config))
    size = config.clip.crop_size
    inputs = pathways(config, batch=3)
    boxes = torch.tensor([[0, 0.0, 0.0, size / 2, size], [2, size / 2, 0.0, size, size], [2, 0.0, 0.0, size / 2, size],
                          [1, 10.0, 12.0, 40.0, 50.0]])
    with torch.no_grad():
        logits = model(inputs, boxes)
        assert logits.shape == (4, config.model.num_classes) and torch.isfinite(logits).all()
        # each row depends on its own clip and box only: alone, or with the others in another order
        for row in range(len(boxes)):
            assert torch.allclose(model(inputs, boxes[row:row + 1])[0], logits[row], atol=1e-5)
        assert torch.allclose(model(inputs, boxes.flip(0)), logits.flip(0), atol=1e-5)
        # ... and another clip's content or another region changes it
        assert (logits[1] - logits[2]).abs().max() > 1e-3
        moved = boxes.clone()
        moved[0, 0] = 1
        assert (model(inputs, moved)[0] - logits[0]).abs().max() > 1e-3


def test_no_boxes_means_no_rows_and_none_means_whole_frames():
    config = tiny()
    model = spread_head(build_model(config))
    inputs = pathways(config, batch=2)
    size = config.clip.crop_size
    with torch.no_grad():
        assert model(inputs, torch.zeros(0, 5)).shape == (0, 7)
        whole = torch.tensor([[0, 0.0, 0.0, size, size], [1, 0.0, 0.0, size, size]])
        assert torch.equal(model(inputs), model(inputs, whole))


def test_a_box_beyond_the_frame_reads_the_edge_and_one_far_outside_reads_nothing():
    """RoIAlign's rule: samples within a feature pixel of the map read its edge, farther ones zero."""
    config = tiny()
    model = spread_head(build_model(config))
    inputs = pathways(config, batch=1)
    size = config.clip.crop_size
    with torch.no_grad():
        inside = model(inputs, torch.tensor([[0, 48.0, 8.0, size, 80.0]]))
        beyond = model(inputs, torch.tensor([[0, 48.0, 8.0, size + 40.0, 80.0]]))
        far = model(inputs, torch.tensor([[0, 3.0 * size, 3.0 * size, 4.0 * size, 4.0 * size]]))
        nothing = model.head.projection(torch.zeros(1, model.head.projection.in_features))
    assert torch.isfinite(beyond).all() and (beyond - inside).abs().max() > 1e-4
    assert torch.allclose(far, nothing, atol=1e-6)


def test_the_engine_wrapper_passes_boxes_through():
    config = tiny()
    network = spread_head(build_model(config))
    model = UInt8Clips(network, config.clip).eval()
    generator = torch.Generator().manual_seed(1)
    clips = [torch.randint(0, 256, (2, t, 96, 96, 3), dtype=torch.uint8, generator=generator) for t in (4, 16)]
    boxes = torch.tensor([[1, 5.0, 5.0, 50.0, 90.0]])
    with torch.no_grad():
        assert model(*clips, boxes).shape == (1, 7)
        assert model(*clips).shape == (2, 7)  # whole frames
        assert torch.allclose(model(*clips, boxes), model(*clips[:1], clips[1], boxes))


def test_ava_layout_keeps_res5_at_a_sixteenth_of_the_frame():
    """PySlowFast's AVA SPATIAL_STRIDES [.., 1] and SPATIAL_DILATIONS [.., 2]: 256 px frames give 16x16 maps."""
    model = build_model(load_config("slowfast_r50_detection"))
    assert model.head.spatial_scale == 1 / 16 and model.head.resolution == 7 and model.head.aligned is False
    middle = model.s5.pathway0_res0.branch2.b
    assert (middle.stride, middle.dilation, middle.padding) == ((1, 1, 1), (1, 2, 2), (0, 2, 2))
    assert model.s5.pathway1_res0.branch1.stride == (1, 1, 1)
    assert model.s5.pathway1_res2.branch2.b.dilation == (1, 2, 2)
    assert model.s4.pathway0_res0.branch2.b.stride == (1, 2, 2)  # the earlier stages are the Kinetics ones
    config = small("slowfast_r50_detection", crop=64)
    config = with_model(config, depth=[1, 1, 1, 1])
    maps = []
    small_model = build_model(config).eval()
    small_model.s5.register_forward_hook(lambda _m, _args, output: maps.append(output))
    with torch.no_grad():
        small_model(pathways(config, batch=1))
    assert [tuple(x.shape[-2:]) for x in maps[0]] == [(4, 4), (4, 4)]


def test_r101_ava_has_the_zoo_models_non_local_blocks():
    model = build_model(load_config("slowfast_r101_ava_32x2"))
    blocks = {name for name, _ in model.named_modules() if "nonlocal" in name and name.count(".") == 1}
    assert blocks == {"s4.pathway0_nonlocal6", "s4.pathway0_nonlocal13", "s4.pathway0_nonlocal20"}
    assert model.s4.pathway0_nonlocal6.instantiation == "dot_product"
    assert model.s4.pathway0_nonlocal6.pool.kernel_size == (2, 2, 2)


@pytest.mark.parametrize("name", ROI_CONFIGS)
def test_config_builds_and_scores_people(name):
    config = small(name, crop=32)
    model = load_model(config)
    assert model.network.takes_boxes and model.network.head_activation == "sigmoid"
    generator = torch.Generator().manual_seed(0)
    frames = [config.clip.slow_frames, config.clip.num_frames] if config.clip.alpha else [config.clip.num_frames]
    clips = [torch.randint(0, 256, (1, t, 32, 32, 3), dtype=torch.uint8, generator=generator) for t in frames]
    with torch.inference_mode():
        logits = model(*clips, torch.tensor([[0, 2.0, 3.0, 20.0, 30.0], [0, 10.0, 0.0, 32.0, 32.0]]))
    assert logits.shape == (2, config.model.num_classes) and torch.isfinite(logits).all()
    assert len(load_labels(config)) == config.model.num_classes


@pytest.mark.parametrize("arch", ["slowfast_roi", "resnet3d_roi"])
def test_builders_are_keyword_only_and_typed_and_the_classifier_can_be_replaced(arch):
    builder = get_arch(arch).builder
    network_class = typing.get_type_hints(builder)["return"]
    assert issubclass(network_class, VideoNetwork) and network_class.takes_boxes
    for function in (builder, network_class.__init__):
        parameters = [p for p in inspect.signature(function).parameters.values() if p.name != "self"]
        untyped = [p.name for p in parameters if p.kind is not p.KEYWORD_ONLY or p.annotation is p.empty]
        assert not untyped, f"{function.__qualname__}: positional or untyped {untyped}"
    config = tiny() if arch == "slowfast_roi" else small("slow_r50_detection", crop=32)
    model = build_model(config).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.reset_classifier(3)
    assert model.get_classifier() is model.head.projection and model.head.projection.out_features == 3
    with torch.no_grad():
        assert model(pathways(config, batch=1), torch.tensor([[0, 1.0, 1.0, 20.0, 20.0]])).shape == (1, 3)
    after = model.state_dict()
    assert all(torch.equal(after[k], v) for k, v in before.items() if not k.startswith("head.projection."))


@pytest.mark.parametrize("kwargs, message", [
    ({"head_activation": "softmax2"}, "model.head_activation 'softmax2' is not one of: sigmoid, softmax"),
    ({"res5_spatial_stride": 3}, "model.res5_spatial_stride must be from 1 to 2, got 3"),
    ({"nonlocal_instantiation": "gaussian"}, "model.nonlocal_instantiation 'gaussian'"),
    ({"head_average": "logits"}, "unknown config key.*model.head_average.*valid: depth"),
])
def test_bad_options_are_one_line(kwargs, message):
    with pytest.raises(StreamrecError, match=message):
        build_model(tiny(**kwargs))


def test_single_pathway_roi_arch_refuses_alpha():
    config = small("slow_r50_detection")
    with pytest.raises(StreamrecError, match="'resnet3d_roi' is single-pathway"):
        build_model(config.replace(clip=dataclasses.replace(config.clip, alpha=4, num_frames=8)))


# --------------------------------------------------------------------------- checkpoints


def pytorchvideo_detection_state(model: SlowFastRoI | ResNet3DRoI) -> dict[str, torch.Tensor]:
    """A model's weights in the layout of PyTorchVideo's DetectionBBoxNetwork, written from its module
    names (pytorchvideo/models/{net,resnet,slowfast,head}.py); tests/parity checks the real ones."""
    two_pathways = isinstance(model, SlowFastRoI)
    res_names = {"branch1": "branch1_conv", "branch1_bn": "branch1_norm", "branch2.a": "branch2.conv_a",
                 "branch2.a_bn": "branch2.norm_a", "branch2.b": "branch2.conv_b", "branch2.b_bn": "branch2.norm_b",
                 "branch2.c": "branch2.conv_c", "branch2.c_bn": "branch2.norm_c"}

    def where(pathway: int) -> str:
        return f"multipathway_blocks.{pathway}." if two_pathways else ""

    state = {}
    for key, value in model.state_dict().items():
        module, _, param = key.rpartition(".")
        parts = module.split(".")
        if module == "head.projection":
            name = f"detection_head.proj.{param}"
        elif parts[0] == "s1":
            pathway = int(parts[1][len("pathway")])
            name = f"model.blocks.0.{where(pathway)}{'conv' if parts[2] == 'conv' else 'norm'}.{param}"
        elif parts[0].endswith("_fuse"):
            block = int(parts[0][1]) - 1
            fusion = "conv_fast_to_slow" if parts[1] == "conv_f2s" else "norm"
            name = f"model.blocks.{block}.multipathway_fusion.{fusion}.{param}"
        else:
            stage, (pathway, index) = int(parts[0][1]) - 1, parts[1][len("pathway"):].split("_res")
            inner = res_names[".".join(parts[2:])]
            name = f"model.blocks.{stage}.{where(int(pathway))}res_blocks.{index}.{inner}.{param}"
        state[name] = value
    return state


@pytest.mark.parametrize("name", ["slowfast_tiny_roi", "slow_r50_detection"])
def test_pytorchvideo_detection_layout_loads_strictly(tmp_path, name):
    config = tiny() if name == "slowfast_tiny_roi" else small(name, crop=32)
    source = spread_head(build_model(config))
    path = tmp_path / "detection.pyth"
    torch.save({"model_state": pytorchvideo_detection_state(source)}, path)
    assert load_checkpoint(path).origin == "pytorchvideo"
    loaded = load_model(config.replace(checkpoint=str(path))).network
    inputs, boxes = pathways(config, batch=1), torch.tensor([[0, 1.0, 2.0, 25.0, 30.0]])
    with torch.no_grad():
        assert torch.equal(loaded(inputs, boxes), source(inputs, boxes))

    extra = {**pytorchvideo_detection_state(source), "detection_head.proj2.weight": torch.zeros(1)}
    torch.save(extra, path)
    with pytest.raises(StreamrecError, match="has 1 tensor.*no 'slowfast_roi|resnet3d_roi' model uses.*proj2"):
        load_model(config.replace(checkpoint=str(path)))


def test_caffe2_blobs_of_a_non_local_slowfast_are_named():
    """The Caffe2 AVA SlowFast's blob names (tests/parity checks them with PySlowFast's converter)."""
    keys = get_arch("slowfast_roi").checkpoint_keys["caffe2"]
    names = keys(["nonlocal_conv4_6_theta_w", "nonlocal_conv4_13_bn_riv", "t_res5_2_branch2c_bn_s", "pred_w",
                  "t_pool1_subsample_w", "res4_22_branch2b_w", "t_nonlocal_conv4_6_g_b"])
    assert names == {
        "nonlocal_conv4_6_theta_w": "s4.pathway0_nonlocal6.conv_theta.weight",
        "nonlocal_conv4_13_bn_riv": "s4.pathway0_nonlocal13.bn.running_var",
        "t_res5_2_branch2c_bn_s": "s5.pathway1_res2.branch2.c_bn.weight",
        "pred_w": "head.projection.weight",
        "t_pool1_subsample_w": "s1_fuse.conv_f2s.weight",
        "res4_22_branch2b_w": "s4.pathway0_res22.branch2.b.weight",
        "t_nonlocal_conv4_6_g_b": None,  # the Fast pathway has none
    }


def test_a_streamrec_checkpoint_of_an_roi_model_round_trips(tmp_path):
    from streamrec.checkpoints import save_checkpoint

    config = tiny()
    source = spread_head(build_model(config))
    save_checkpoint(tmp_path / "roi.pt", source, config)
    loaded = load_model(config.replace(checkpoint=str(tmp_path / "roi.pt"))).network
    state = model_state_dict(Checkpoint("streamrec", source.state_dict()), loaded, "slowfast_roi", "x")
    load_state_dict_strictly(loaded, state, "x")
    inputs, boxes = pathways(config, batch=1), torch.tensor([[0, 1.0, 2.0, 25.0, 30.0]])
    with torch.no_grad():
        assert torch.equal(loaded(inputs, boxes), source(inputs, boxes))


# --------------------------------------------------------------------------- AVA labels


def test_ava_labels_are_the_80_actions_and_the_60_evaluated_are_among_them_in_order():
    names = (LABELS_DIR / "ava_v2.2.txt").read_text().splitlines()
    evaluated = (LABELS_DIR / "ava_v2.2_evaluated.txt").read_text().splitlines()
    assert len(names) == len(set(names)) == 80 and all(n == n.strip() and n for n in names)
    assert len(evaluated) == len(set(evaluated)) == 60
    positions = [names.index(n) for n in evaluated]  # raises for a name not among the 80
    assert positions == sorted(positions)
    # spot checks against the dataset's ids (AVA ids are 1-based: model output i is id i + 1)
    assert names[0] == "bend/bow (at the waist)" and names[4] == "fall down" and names[79] == "watch (a person)"
    assert "crawl" in names and "crawl" not in evaluated  # id 2, one of the 20 not evaluated
    assert np.array_equal(np.array(positions[:5]), np.array([0, 2, 3, 4, 5]))  # ids 1, 3, 4, 5, 6
