"""Checkpoint loading: the project's format round-trips, every mismatch is a clear one-line error,
and nothing in a checkpoint file ever runs. The reference formats (PySlowFast, Caffe2,
PyTorchVideo) are tested against the references' own code in tests/parity."""

from __future__ import annotations

import dataclasses
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from streamrec.checkpoints import (
    Checkpoint,
    checkpoint_config,
    load_checkpoint,
    load_model,
    model_state_dict,
    save_checkpoint,
)
from streamrec.config import config_from_dict, load_config
from streamrec.errors import StreamrecError
from streamrec.models import build_model, get_arch


@pytest.fixture(scope="module")
def tiny():
    return load_config("slowfast_tiny")


def clips(config, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    size = config.clip.crop_size
    return tuple(torch.randint(0, 256, (2, t, size, size, 3), dtype=torch.uint8, generator=generator)
                 for t in (config.clip.slow_frames, config.clip.num_frames))


def randomized(config):
    model = load_model(config)
    with torch.no_grad():
        for tensor in model.state_dict().values():
            if tensor.is_floating_point():
                tensor.copy_(torch.randn_like(tensor) * 0.1 + (1.0 if tensor.dim() == 1 else 0.0))
    return model


def test_own_format_round_trips_weights_labels_config_and_metadata(tmp_path, tiny):
    model = randomized(tiny)
    path = tmp_path / "tiny.pt"
    save_checkpoint(path, model, tiny, metadata={"epochs": 3, "data": "procedural"})

    loaded = load_model(tiny.replace(checkpoint=str(path)))
    with torch.inference_mode():
        assert torch.equal(loaded(*clips(tiny)), model(*clips(tiny)))
    checkpoint = load_checkpoint(path)
    assert checkpoint.origin == "streamrec"
    assert checkpoint.labels == (Path(__file__).parents[1] / "streamrec/labels/actions.txt").read_text().splitlines()
    assert checkpoint.metadata == {"epochs": 3, "data": "procedural"}
    restored = checkpoint_config(path)
    assert restored.model.kwargs == {**tiny.model.kwargs, "head_average": "logits"}  # the head as built
    assert restored.replace(model=tiny.model) == tiny.replace(checkpoint=str(path))


def test_a_checkpoint_records_no_camera_or_broker_of_the_run_that_made_it(tmp_path, tiny):
    """Weights get shared; the cameras and brokers of the config that trained them are a site's
    own, and their URLs carry credentials: the checkpoint records neither, and masks a URL in
    its metadata."""
    site = config_from_dict({**tiny.to_dict(), "streams": [{"id": "door", "source": "rtsp://admin:hunter2@10.0.0.7/1"}],
                             "events": {"sinks": ["redis://:s3cret@10.0.0.9:6379/0?stream=actions"],
                                        "event_log": "events.jsonl"}})
    path = tmp_path / "site.pt"
    save_checkpoint(path, load_model(tiny), site, metadata={"teacher": "https://me:t0ken@models.example/x.pyth"})
    raw = path.read_bytes()
    assert b"hunter2" not in raw and b"s3cret" not in raw and b"10.0.0." not in raw and b"t0ken" not in raw
    restored = checkpoint_config(path)
    assert (restored.streams, restored.events.sinks, restored.events.event_log) == ((), (), "events.jsonl")
    assert load_checkpoint(path).metadata == {"teacher": "https://me:***@models.example/x.pyth"}


def test_legacy_torch_files_load(tmp_path, tiny):
    """PySlowFast checkpoints from before torch 1.6 are in torch.save's legacy (non-zip) format."""
    model = randomized(tiny)
    path = tmp_path / "old.pyth"
    torch.save({"model_state": model.network.state_dict(), "epoch": 196}, path, _use_new_zipfile_serialization=False)
    loaded = load_model(tiny.replace(checkpoint=str(path)))
    with torch.inference_mode():
        assert torch.allclose(loaded(*clips(tiny)).softmax(-1), model(*clips(tiny)).softmax(-1), atol=1e-6)


def test_missing_unexpected_and_misshapen_tensors_are_listed(tmp_path, tiny):
    state = {k: v.clone() for k, v in load_model(tiny).network.state_dict().items()}
    del state["s2.pathway0_res0.branch2.a.weight"]
    state["s9.pathway0_res0.branch2.a.weight"] = torch.zeros(1)
    state["s1_fuse.conv_f2s.weight"] = torch.zeros(1, 2, 3)
    path = tmp_path / "bad.pyth"
    torch.save({"model_state": state}, path)
    with pytest.raises(StreamrecError) as error:
        load_model(tiny.replace(checkpoint=str(path)))
    message = str(error.value)
    assert "\n" not in message
    assert "1 missing: s2.pathway0_res0.branch2.a.weight" in message
    assert "1 unexpected: s9.pathway0_res0.branch2.a.weight" in message
    assert "s1_fuse.conv_f2s.weight (1, 2, 3) vs (8, 4, 5, 1, 1)" in message


def test_class_count_must_match_config_and_labels(tmp_path, tiny):
    config = tiny.replace(model=dataclasses.replace(tiny.model, num_classes=5))
    with pytest.raises(StreamrecError, match="label file .*actions.txt has 7 names but the model has 5 classes"):
        load_model(config)

    path = tmp_path / "seven.pt"
    save_checkpoint(path, load_model(tiny), tiny)
    wider = load_config("slowfast_tiny", ["model.num_classes=400", "labels=kinetics400"])
    with pytest.raises(StreamrecError, match="predicts 7 classes but the config has model.num_classes=400"):
        load_model(wider.replace(checkpoint=str(path)))


def test_class_names_must_match_a_streamrec_checkpoints(tmp_path, tiny):
    path = tmp_path / "tiny.pt"
    save_checkpoint(path, load_model(tiny), tiny)
    renamed = tmp_path / "renamed.txt"
    renamed.write_text("idle\n" + "\n".join(load_checkpoint(path).labels[1:]) + "\n")
    with pytest.raises(StreamrecError, match="class 0: 'standing still' vs 'idle'.*set labels to the checkpoint's"):
        load_model(tiny.replace(checkpoint=str(path), labels=str(renamed)))


def test_a_malicious_pickle_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "it-ran"

    class Exploit:
        def __reduce__(self):
            return (Path.touch, (marker,))

    path = tmp_path / "model_zoo.pkl"
    path.write_bytes(pickle.dumps({"blobs": {"conv1_w": Exploit()}}, protocol=2))
    with pytest.raises(StreamrecError, match="is refused: its pickle calls "):
        load_checkpoint(path)
    assert not marker.exists()


def test_a_malicious_torch_file_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "it-ran"

    class Exploit:
        def __reduce__(self):
            return (Path.touch, (marker,))

    path = tmp_path / "model.pyth"
    torch.save({"model_state": {"s1.x": torch.zeros(1)}, "extra": Exploit()}, path)
    marker.unlink(missing_ok=True)  # pickling does not run it; loading must not either
    with pytest.raises(StreamrecError, match="refused for safety"):
        load_checkpoint(path)
    assert not marker.exists()


class Python2Array:
    """Pickles an array as Python 2 did for the Caffe2 model zoo: data as a (latin-1) str, the
    reconstructor under its old module name."""

    def __init__(self, array: np.ndarray):
        self.array = array

    def __reduce__(self):
        from numpy.core.multiarray import _reconstruct

        a = self.array
        return _reconstruct, (np.ndarray, (0,), "b"), (1, a.shape, a.dtype, False, a.tobytes().decode("latin1"))


def python2_style_pickle(payload) -> bytes:
    data = pickle.dumps(payload, protocol=2)
    return data.replace(b"numpy._core.multiarray\n_reconstruct", b"numpy.core.multiarray\n_reconstruct")


@pytest.mark.parametrize("writer", ["python3", "python2"])
def test_caffe2_pickle_of_plain_arrays_is_read(tmp_path, writer):
    weight = np.arange(8 * 3 * 25, dtype=np.float32).reshape(8, 3, 1, 5, 5)
    blobs = {"conv1_w": weight, "lr": np.array([0.1], np.float32), "model_iter": np.array([10]),
             "conv1_w_momentum": np.zeros_like(weight)}
    path = tmp_path / "c2.pkl"
    if writer == "python3":
        path.write_bytes(pickle.dumps({"blobs": blobs}, protocol=2))
    else:
        path.write_bytes(python2_style_pickle({"blobs": {k: Python2Array(v) for k, v in blobs.items()}}))
        assert b"numpy.core.multiarray\n_reconstruct" in path.read_bytes()
    checkpoint = load_checkpoint(path)
    assert checkpoint.origin == "caffe2"
    state = checkpoint.state_dict_for("slowfast", path)
    assert list(state) == ["s1.pathway0_stem.conv.weight"]
    assert torch.equal(state["s1.pathway0_stem.conv.weight"], torch.from_numpy(weight))


def test_caffe2_blob_with_no_known_layer_is_named(tmp_path):
    path = tmp_path / "nonlocal.pkl"
    path.write_bytes(pickle.dumps({"blobs": {"nonlocal_conv3_1_theta_w": np.zeros(3, np.float32)}}, protocol=2))
    with pytest.raises(StreamrecError, match="1 blob.*nonlocal_conv3_1_theta_w"):
        load_checkpoint(path).state_dict_for("slowfast", path)


def test_an_arch_without_a_key_map_for_the_layout_says_so(tmp_path):
    checkpoint = Checkpoint("caffe2", {"conv1_w": torch.zeros(1)})
    with pytest.raises(StreamrecError, match="Caffe2 checkpoint, and arch 'x3d' reads PyTorchVideo checkpoints"):
        checkpoint.state_dict_for("x3d", "zoo.pkl")


@pytest.mark.parametrize("blob,name", [
    ("conv1_w", "s1.pathway0_stem.conv.weight"),
    ("t_conv1_w", "s1.pathway1_stem.conv.weight"),
    ("res_conv1_bn_riv", "s1.pathway0_stem.bn.running_var"),
    ("res2_0_branch2a_bn_s", "s2.pathway0_res0.branch2.a_bn.weight"),
    ("t_res4_5_branch2c_bn_rm", "s4.pathway1_res5.branch2.c_bn.running_mean"),
    ("res3_0_branch1_w", "s3.pathway0_res0.branch1.weight"),
    ("t_pool1_subsample_w", "s1_fuse.conv_f2s.weight"),
    ("t_res3_3_branch2c_bn_subsample_bn_b", "s3_fuse.bn.bias"),
    ("pred_w", "head.projection.weight"),
    ("pool1_subsample_w", None),  # laterals exist only on the Fast pathway
])
def test_caffe2_names(blob, name):
    """SlowFast's Caffe2 key map (`streamrec.models.slowfast`), as PySlowFast's converter names the blobs."""
    assert get_arch("slowfast").checkpoint_keys["caffe2"]([blob]) == {blob: name}


@pytest.mark.parametrize("content,message", [
    (b"not a checkpoint at all", "neither a torch file nor a Caffe2 pickle"),
    (pickle.dumps({"weights": [1, 2, 3]}), "holds no state dict"),
])
def test_files_that_are_not_checkpoints(tmp_path, content, message):
    path = tmp_path / "file.pt"
    path.write_bytes(content)
    with pytest.raises(StreamrecError, match=message):
        load_checkpoint(path)


def test_foreign_state_dict_names_are_reported(tmp_path):
    path = tmp_path / "other.pt"
    torch.save({"backbone.conv.weight": torch.zeros(1)}, path)
    with pytest.raises(StreamrecError, match="neither PySlowFast .* nor PyTorchVideo"):
        load_checkpoint(path)


def test_missing_file(tmp_path, tiny):
    with pytest.raises(StreamrecError, match="not found; check the path given to --checkpoint"):
        load_model(tiny.replace(checkpoint=str(tmp_path / "nope.pt")))


def test_checkpoint_without_config_cannot_stand_in_for_one(tmp_path, tiny):
    path = tmp_path / "zoo.pyth"
    torch.save({"model_state": load_model(tiny).network.state_dict()}, path)
    with pytest.raises(StreamrecError, match="pyslowfast checkpoint and records no config"):
        checkpoint_config(path)


@pytest.mark.parametrize("keys,origin", [
    (["s1.pathway0_stem.conv.weight", "head.projection.weight"], "pyslowfast"),
    (["patch_embed.proj.weight", "blocks.0.attn.qkv.weight", "head.projection.weight"], "pyslowfast"),  # MViT
    (["blocks.0.conv.weight", "blocks.5.proj.weight"], "pytorchvideo"),
    (["patch_embed.patch_model.weight", "cls_positional_encoding.cls_token", "blocks.0.attn.q.weight"], "pytorchvideo"),
    (["s1.pathway0_stem_conv_xy.kernel.conv.weight", "projection.model.weight"], "pytorchvideo"),  # the mobile X3D
    (["stem.0.weight", "layer1.0.conv1.0.0.weight", "fc.weight"], "torchvision"),
    (["features.0.0.0.weight", "classifier.1.weight"], "torchvision"),
    (["conv_proj.weight", "pos_encoding.class_token", "blocks.0.attn.qkv.weight", "head.1.weight"], "torchvision"),
])
def test_a_state_dicts_names_tell_its_layout(tmp_path, keys, origin):
    path = tmp_path / "weights.pth"
    torch.save({key: torch.zeros(1) for key in keys}, path)
    assert load_checkpoint(path).origin == origin


@pytest.mark.parametrize("arch,key,name", [
    ("r2plus1d", "stem.3.weight", "s1.pathway0_stem.conv.conv_t.weight"),
    ("r2plus1d", "layer2.0.conv1.0.0.weight", "s3.pathway0_res0.branch2.a.conv_xy.weight"),
    ("r2plus1d", "layer4.1.conv2.0.1.running_var", "s5.pathway0_res1.branch2.b.bn.running_var"),
    ("r2plus1d", "layer3.0.conv2.1.bias", "s4.pathway0_res0.branch2.b_bn.bias"),
    ("r2plus1d", "layer2.0.downsample.1.weight", "s3.pathway0_res0.branch1_bn.weight"),
    ("r2plus1d", "fc.bias", "head.projection.bias"),
    ("s3d", "features.0.1.1.running_mean", "conv1.temporal.bn.running_mean"),
    ("s3d", "features.2.0.weight", "conv2.conv.weight"),
    ("s3d", "features.8.branch1.1.1.0.weight", "mixed_4b.branch1.separable.temporal.conv.weight"),
    ("s3d", "features.15.branch3.1.1.bias", "mixed_5c.branch3.project.bn.bias"),
    ("s3d", "classifier.1.weight", "head.projection.weight"),
    ("mvit", "pos_encoding.temporal_pos", "pos_embed_temporal"),
    ("mvit", "blocks.3.attn.pool_k.norm_act.0.weight", "blocks.3.attn.norm_k.weight"),
    ("mvit", "blocks.3.attn.pool_q.pool.weight", "blocks.3.attn.pool_q.weight"),
    ("mvit", "blocks.1.mlp.3.bias", "blocks.1.mlp.fc2.bias"),
    ("mvit", "blocks.1.project.weight", "blocks.1.proj.weight"),
    ("mvit", "head.1.weight", "head.projection.weight"),
    ("mvit", "features.0.weight", None),
])
def test_torchvision_names(arch, key, name):
    """The torchvision key maps, as torchvision's video models (0.29) name their tensors."""
    assert get_arch(arch).checkpoint_keys["torchvision"]([key]) == {key: name}


@pytest.mark.parametrize("blob,name", [
    ("nonlocal_conv3_1_theta_w", "s3.pathway0_nonlocal1.conv_theta.weight"),
    ("nonlocal_conv4_5_out_b", "s4.pathway0_nonlocal5.conv_out.bias"),
    ("nonlocal_conv4_3_bn_riv", "s4.pathway0_nonlocal3.bn.running_var"),
    ("res4_5_branch2a_w", "s4.pathway0_res5.branch2.a.weight"),
])
def test_caffe2_non_local_names(blob, name):
    """The single-pathway ResNet's Caffe2 key map reads I3D NLN's blobs, as PySlowFast's converter names them."""
    assert get_arch("resnet3d").checkpoint_keys["caffe2"]([blob]) == {blob: name}


def test_separate_q_k_v_projections_load_as_one_fused_qkv():
    q, k, v = (torch.full((4, 4), float(i)) for i in range(3))
    biases = [torch.full((4,), float(i)) for i in range(3)]
    state = {"blocks.0.attn.q.weight": q, "blocks.0.attn.k.weight": k, "blocks.0.attn.v.weight": v,
             "blocks.0.attn.q.bias": biases[0], "blocks.0.attn.k.bias": biases[1], "blocks.0.attn.v.bias": biases[2],
             "blocks.0.attn.proj.weight": torch.zeros(4, 4)}
    renamed = Checkpoint("pytorchvideo", state).state_dict_for("mvit", "mvit.pyth")
    assert set(renamed) == {"blocks.0.attn.qkv.weight", "blocks.0.attn.qkv.bias", "blocks.0.attn.proj.weight"}
    assert torch.equal(renamed["blocks.0.attn.qkv.weight"], torch.cat([q, k, v]))
    assert torch.equal(renamed["blocks.0.attn.qkv.bias"], torch.cat(biases))


def test_foreign_tensors_take_the_models_shape_where_only_unit_dims_differ():
    """torchvision's S3D classifies with a 1x1x1 convolution; the model's classifier is a linear layer."""
    network = build_model(load_config("s3d", ["clip.crop_size=32", "clip.short_side=32", "clip.num_frames=16"]))
    weight, bias = torch.randn(400, 1024, 1, 1, 1), torch.randn(400)
    state = model_state_dict(Checkpoint("torchvision", {"classifier.1.weight": weight, "classifier.1.bias": bias}),
                             network, "s3d", "s3d.pth")
    assert torch.equal(state["head.projection.weight"], weight.reshape(400, 1024))
    misshapen = model_state_dict(Checkpoint("torchvision", {"classifier.1.weight": torch.randn(400, 1023, 1, 1, 1)}),
                                 network, "s3d", "s3d.pth")
    assert misshapen["head.projection.weight"].shape == (400, 1023, 1, 1, 1)  # left for the strict load to report
