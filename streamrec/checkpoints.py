"""Checkpoints: reading the formats users arrive with, and loading them into a config's model.

Formats, detected from the file itself:

- ``streamrec``: the project's own, a dict saved with `torch.save`::

      {"format": "streamrec", "version": 1, "config": Config.to_dict(), "labels": [...],
       "state_dict": {...}, "metadata": {...}}

- ``pyslowfast``: PySlowFast's ``.pyth`` (``{"model_state": ...}``, zip or pre-1.6 legacy torch
  format), whose names our models share;
- ``caffe2``: PySlowFast's Caffe2 model-zoo ``.pkl`` (``{"blobs": ...}``), renamed as PySlowFast's
  converter does (``res2_0_branch2a_bn_s`` -> ``s2.pathway0_res0.branch2.a_bn.weight``);
- ``pytorchvideo``: PyTorchVideo state dicts (``blocks.0.multipathway_blocks.0.conv.weight``),
  bare or under ``model_state``/``state_dict``, with or without a ``model.`` prefix.

Loading never executes code from the file: torch files are read with ``weights_only=True``,
bare pickles through `SafeUnpickler`, which admits only numpy arrays and plain containers. Loading
is strict: every tensor of the file is used and every tensor of the model is filled, with the
right shape, or the error lists what is missing, unexpected or mis-shaped.
"""

from __future__ import annotations

import pickle
import re
import zipfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from streamrec.config import Config, config_from_dict, labels_path, load_labels
from streamrec.errors import StreamrecError
from streamrec.models import UInt8Clips, build_model

FORMAT = "streamrec"
VERSION = 1

# How each origin averages a larger-than-training test crop (see `streamrec.models.resnet3d.Head`);
# PyTorchVideo's X3D builders end in a softmax, its ResNets and SlowFasts do not.
HEAD_AVERAGE_BY_ORIGIN = {"pyslowfast": "softmax", "caffe2": "softmax", "pytorchvideo": "logits"}
HEAD_AVERAGE_BY_ORIGIN_ARCH = {("pytorchvideo", "x3d"): "softmax"}


@dataclass
class Checkpoint:
    """Weights in the model's own names, and where they came from."""

    origin: str  # streamrec | pyslowfast | caffe2 | pytorchvideo
    state_dict: dict[str, torch.Tensor]
    config: dict[str, Any] | None = None  # streamrec only: the plain-data config of the weights
    labels: list[str] | None = None  # streamrec only
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def num_classes(self) -> int | None:
        bias = self.state_dict.get("head.projection.bias")
        return None if bias is None else int(bias.shape[0])


# --------------------------------------------------------------------------- the project's format


def save_checkpoint(path: str | Path, network: nn.Module, config: Config, labels: list[str] | None = None,
                    metadata: dict[str, Any] | None = None) -> None:
    """Write a network's weights with the config and label names that give them meaning."""
    if isinstance(network, UInt8Clips):
        network = network.network
    labels = load_labels(config) if labels is None else list(labels)
    if len(labels) != config.model.num_classes:
        raise StreamrecError(f"{len(labels)} label names for a {config.model.num_classes}-class model; "
                             "pass one name per class")
    recorded = config.replace(checkpoint=None).to_dict()
    head = getattr(network, "head", None)
    if getattr(head, "average", None):  # as built, perhaps from another checkpoint's origin: reloads give these outputs
        recorded["model"]["head_average"] = head.average
    payload = {
        "format": FORMAT,
        "version": VERSION,
        "config": recorded,
        "labels": labels,
        "state_dict": {k: v.detach().cpu() for k, v in network.state_dict().items()},
        "metadata": dict(metadata or {}),
    }
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    torch.save(payload, path)


def checkpoint_config(path: str | Path) -> Config:
    """The config a streamrec checkpoint was saved with, pointing at that checkpoint."""
    checkpoint = load_checkpoint(path)
    if checkpoint.config is None:
        raise StreamrecError(f"checkpoint {path} is a {checkpoint.origin} checkpoint and records no config; "
                             "pass the matching config (e.g. --config slowfast_r50_8x8)")
    return config_from_dict(checkpoint.config, source=str(path)).replace(checkpoint=str(path))


# --------------------------------------------------------------------------- reading any format


def load_checkpoint(path: str | Path) -> Checkpoint:
    """Read a checkpoint of any supported format, renamed to the project's module names."""
    path = Path(path)
    if not path.is_file():
        raise StreamrecError(f"checkpoint {path} not found; check the path given to --checkpoint")
    if zipfile.is_zipfile(path):  # torch.save's format since torch 1.6
        payload = _read_torch_file(path)
    else:  # a Caffe2 model-zoo pickle, or torch.save's legacy format, which opens with a magic number
        payload = _read_pickle(path)
        if payload == LEGACY_TORCH_MAGIC:
            payload = _read_torch_file(path)
    return _interpret(payload, path)


LEGACY_TORCH_MAGIC = 0x1950A86A20F9469CFC6C  # first object of a pre-1.6 torch.save file (older .pyth files)


def _read_torch_file(path: Path) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise StreamrecError(f"checkpoint {path} holds more than tensors and plain data, refused for safety "
                             f"({str(exc).splitlines()[0][:160]}); re-save its state dict alone") from None
    except Exception as exc:  # a corrupt archive: torch raises many types
        raise StreamrecError(f"checkpoint {path} cannot be read as a torch file ({type(exc).__name__}: {exc}); "
                             "check that the file is complete") from None


class RefusedGlobal(pickle.UnpicklingError):
    """A pickle names a callable outside `SafeUnpickler.ALLOWED`."""


class SafeUnpickler(pickle.Unpickler):
    """Unpickles numpy arrays and plain containers only: any other global is refused, so a
    malicious pickle cannot run code (``pickle.load`` would call whatever the file names)."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
        ("numpy", "ndarray"), ("numpy", "dtype"),
        ("collections", "OrderedDict"),
        ("_codecs", "encode"),  # how Python 3 writes bytes at pickle protocol 2: str -> bytes, nothing more
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self.ALLOWED:
            raise RefusedGlobal(f"{module}.{name}")
        return super().find_class(module, name)


def _read_pickle(path: Path) -> Any:
    try:
        with path.open("rb") as f:
            return SafeUnpickler(f, encoding="latin1").load()
    except RefusedGlobal as exc:
        raise StreamrecError(f"checkpoint {path} is refused: its pickle calls {exc}, and only numpy arrays and plain "
                             "containers are loaded so that no code from a file runs; convert it to a state dict") from None
    except Exception as exc:
        raise StreamrecError(f"checkpoint {path} is neither a torch file nor a Caffe2 pickle "
                             f"({type(exc).__name__}); pass a .pt/.pyth/.pkl checkpoint") from None


def _interpret(payload: Any, path: Path) -> Checkpoint:
    if isinstance(payload, dict) and payload.get("format") == FORMAT:
        if payload.get("version") != VERSION:
            raise StreamrecError(f"checkpoint {path} has streamrec format version {payload.get('version')}; "
                                 f"this streamrec reads version {VERSION}")
        return Checkpoint("streamrec", payload["state_dict"], payload["config"], payload["labels"],
                          payload.get("metadata", {}))
    if isinstance(payload, dict) and isinstance(payload.get("blobs"), dict):
        return Checkpoint("caffe2", convert_caffe2(payload["blobs"], path))
    state = payload
    for key in ("model_state", "state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
            break
    if not (isinstance(state, dict) and state and all(isinstance(v, torch.Tensor) for v in state.values())):
        raise StreamrecError(f"checkpoint {path} holds no state dict (looked for model_state, state_dict, "
                             "or a dict of tensors); pass a PySlowFast, PyTorchVideo or streamrec checkpoint")
    state = _strip_prefixes(state)
    if any(k.startswith("blocks.") for k in state):
        return Checkpoint("pytorchvideo", convert_pytorchvideo(state, path))
    if any(k.startswith(("s1.", "head.")) for k in state):
        return Checkpoint("pyslowfast", state)
    raise StreamrecError(f"checkpoint {path}: keys like '{next(iter(state))}' are neither PySlowFast (s1.*, head.*) "
                         "nor PyTorchVideo (blocks.*); pass a supported checkpoint")


def _strip_prefixes(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Drop the wrappers' prefixes: ``module.`` (DistributedDataParallel), ``model.`` (Lightning)."""
    for prefix in ("module.", "model."):
        if all(k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items()}
    return state


# --------------------------------------------------------------------------- Caffe2 names

_C2_PARAM = {"w": "weight", "b": "bias", "s": "weight", "rm": "running_mean", "riv": "running_var"}
_C2_BN = r"bn_(s|b|rm|riv)"
# Full Caffe2 blob names (after the Fast pathway's ``t_`` prefix) -> PySlowFast module paths.
_C2_RULES: list[tuple[re.Pattern[str], Callable[[re.Match[str], int], str]]] = [
    (re.compile(r"conv1_(w)"), lambda m, p: f"s1.pathway{p}_stem.conv"),
    (re.compile(rf"res_conv1_{_C2_BN}"), lambda m, p: f"s1.pathway{p}_stem.bn"),
    (re.compile(r"res(\d+)_(\d+)_branch1_(w)"), lambda m, p: f"s{m[1]}.pathway{p}_res{m[2]}.branch1"),
    (re.compile(rf"res(\d+)_(\d+)_branch1_{_C2_BN}"), lambda m, p: f"s{m[1]}.pathway{p}_res{m[2]}.branch1_bn"),
    (re.compile(r"res(\d+)_(\d+)_branch2([abc])_(w)"), lambda m, p: f"s{m[1]}.pathway{p}_res{m[2]}.branch2.{m[3]}"),
    (re.compile(rf"res(\d+)_(\d+)_branch2([abc])_{_C2_BN}"),
     lambda m, p: f"s{m[1]}.pathway{p}_res{m[2]}.branch2.{m[3]}_bn"),
    # Fast->Slow laterals hang off the Fast pathway's last block of a stage (or its pool1).
    (re.compile(r"pool1_subsample_(w)"), lambda m, p: "s1_fuse.conv_f2s"),
    (re.compile(rf"pool1_subsample_{_C2_BN}"), lambda m, p: "s1_fuse.bn"),
    (re.compile(r"res(\d+)_\d+_branch2c_bn_subsample_(w)"), lambda m, p: f"s{m[1]}_fuse.conv_f2s"),
    (re.compile(rf"res(\d+)_\d+_branch2c_bn_subsample_{_C2_BN}"), lambda m, p: f"s{m[1]}_fuse.bn"),
    (re.compile(r"pred_(w|b)"), lambda m, p: "head.projection"),
]
_C2_TRAINING_STATE = ("momentum", "lr", "model_iter")  # optimizer blobs, skipped as PySlowFast does


def caffe2_to_module_name(blob: str) -> str | None:
    """PySlowFast's module path for a Caffe2 blob name, or None if it names no known layer."""
    pathway, name = (1, blob[2:]) if blob.startswith("t_") else (0, blob)
    for pattern, module in _C2_RULES:
        match = pattern.fullmatch(name)
        if match and (pathway == 1 or "_fuse" not in module(match, pathway)):
            return f"{module(match, pathway)}.{_C2_PARAM[match[match.lastindex]]}"
    return None


def convert_caffe2(blobs: dict[str, Any], path: Path) -> dict[str, torch.Tensor]:
    state, unknown = {}, []
    for blob, value in blobs.items():
        if any(marker in blob for marker in _C2_TRAINING_STATE):
            continue
        name = caffe2_to_module_name(blob)
        if name is None or not isinstance(value, np.ndarray):
            unknown.append(blob)
            continue
        state[name] = torch.from_numpy(np.ascontiguousarray(value)).clone()
    if unknown:
        raise StreamrecError(f"Caffe2 checkpoint {path} has {len(unknown)} blob(s) no supported model uses "
                             f"({_first(unknown)}); non-local and detection models are not supported")
    return state


# --------------------------------------------------------------------------- PyTorchVideo names

_PTV_BLOCK = {  # inside a PyTorchVideo ResBlock -> PySlowFast's names
    "branch1_conv": "branch1", "branch1_norm": "branch1_bn",
    "branch2.conv_a": "branch2.a", "branch2.norm_a": "branch2.a_bn",
    "branch2.conv_b": "branch2.b", "branch2.norm_b": "branch2.b_bn",
    "branch2.conv_c": "branch2.c", "branch2.norm_c": "branch2.c_bn",
    # X3D: norm_b is Sequential(BatchNorm, SqueezeExcitation(block=[conv, relu, conv, sigmoid]))
    "branch2.norm_b.0": "branch2.b_bn",
    "branch2.norm_b.1.block.0": "branch2.se.fc1", "branch2.norm_b.1.block.2": "branch2.se.fc2",
}
_PTV_MODULE = {  # stems, fusions and heads -> PySlowFast's names
    "conv": "conv", "norm": "bn",
    # X3D's stem names its 1x3x3 conv conv_t and its depthwise Tx1x1 conv conv_xy (sic)
    "conv.conv_t": "conv_xy", "conv.conv_xy": "conv",
    "conv_fast_to_slow": "conv_f2s",
    "pool.pre_conv": "conv_5", "pool.pre_norm": "conv_5_bn", "pool.post_conv": "lin_5", "proj": "projection",
}
_PTV_KEY = re.compile(
    r"blocks\.(?P<block>\d+)\."
    r"(?:multipathway_blocks\.(?P<pathway>\d+)\.|(?P<fusion>multipathway_fusion)\.)?"
    r"(?:res_blocks\.(?P<index>\d+)\.)?"
    r"(?P<module>.+)\.(?P<param>weight|bias|running_mean|running_var|num_batches_tracked)"
)


def convert_pytorchvideo(state: dict[str, torch.Tensor], path: Path) -> dict[str, torch.Tensor]:
    """PyTorchVideo's ``blocks.N`` layout to PySlowFast's ``s1..s5``/``head`` names.

    Residual stages are numbered s2..s5 in order of their block index, which skips the
    parameter-free blocks some builders insert (I3D's pool after res2).
    """
    matches = {key: _PTV_KEY.fullmatch(key) for key in state}
    stage_blocks = sorted({int(m["block"]) for m in matches.values() if m and m["index"] is not None})
    stage_of = {block: f"s{i + 2}" for i, block in enumerate(stage_blocks)}
    converted, unknown = {}, []
    for key, m in matches.items():
        name = _pytorchvideo_name(m, stage_of) if m else None
        if name is None:
            unknown.append(key)
        else:
            converted[name] = state[key]
    if unknown:
        raise StreamrecError(f"PyTorchVideo checkpoint {path} has {len(unknown)} tensor(s) no supported model uses "
                             f"({_first(unknown)}); supported: SlowFast, Slow/I3D ResNets, X3D")
    return converted


def _pytorchvideo_name(m: re.Match[str], stage_of: dict[int, str]) -> str | None:
    block, module, param = int(m["block"]), m["module"], m["param"]
    if m["index"] is not None:  # a residual block
        inner = _PTV_BLOCK.get(module)
        pathway = m["pathway"] or "0"
        return inner and f"{stage_of[block]}.pathway{pathway}_res{m['index']}.{inner}.{param}"
    outer = _PTV_MODULE.get(module)
    if outer is None:
        return None
    if m["fusion"]:  # the Fast->Slow lateral after the stem (block 0) or a stage
        stage = "s1" if block == 0 else stage_of.get(block)
        return stage and f"{stage}_fuse.{outer}.{param}"
    if block == 0:
        return f"s1.pathway{m['pathway'] or '0'}_stem.{outer}.{param}"
    return f"head.{outer}.{param}"


# --------------------------------------------------------------------------- into a model


def _expand_caffe2_shapes(state: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Give Caffe2 blobs the model's trailing unit dims (an FC blob for a 1x1x1 conv), as PySlowFast's converter does."""
    expanded = dict(state)
    for name, value in state.items():
        target = expected.get(name)
        if target is not None and value.dim() < target.dim() and tuple(target.shape) == (
                tuple(value.shape) + (1,) * (target.dim() - value.dim())):
            expanded[name] = value.reshape(target.shape)
    return expanded


def load_state_dict_strictly(network: nn.Module, state_dict: dict[str, torch.Tensor], source: str) -> None:
    """Load every tensor, or say exactly which are missing, unexpected or the wrong shape.

    BatchNorm's ``num_batches_tracked`` counters may be absent (Caffe2 has none); they only
    matter for training with momentum=None.
    """
    expected = network.state_dict()
    missing = [k for k in expected if k not in state_dict and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state_dict if k not in expected]
    wrong_shape = [f"{k} {tuple(state_dict[k].shape)} vs {tuple(v.shape)}"
                   for k, v in expected.items() if k in state_dict and state_dict[k].shape != v.shape]
    problems = [(f"{len(names)} {what}", names) for what, names in
                (("missing", missing), ("unexpected", unexpected), ("with the wrong shape (file vs model)", wrong_shape))
                if names]
    if problems:
        detail = "; ".join(f"{title}: {_first(names)}" for title, names in problems)
        raise StreamrecError(f"checkpoint {source} does not fit the config's model ({detail}); "
                             "use the config the checkpoint was trained with")
    network.load_state_dict({**expected, **state_dict}, strict=True)


def _first(names: list[str], shown: int = 3) -> str:
    more = f", ... (+{len(names) - shown} more)" if len(names) > shown else ""
    return ", ".join(names[:shown]) + more


def load_model(config: Config) -> nn.Module:
    """The model of the engine contract (`UInt8Clips`), with the config's checkpoint loaded if it names one.

    Unless the config sets ``model.head_average``, the checkpoint picks it (PySlowFast averages
    probabilities, PyTorchVideo logits; a streamrec checkpoint records its own), so results match
    where the weights came from.
    """
    labels = load_labels(config)  # the label file must name every class
    if not config.checkpoint:
        return UInt8Clips(build_model(config), config.clip).eval()
    checkpoint = load_checkpoint(config.checkpoint)
    if checkpoint.num_classes is not None and checkpoint.num_classes != config.model.num_classes:
        raise StreamrecError(
            f"checkpoint {config.checkpoint} predicts {checkpoint.num_classes} classes but the config has "
            f"model.num_classes={config.model.num_classes} and labels '{labels_path(config.labels).name}'; "
            "use the config and label file the checkpoint was trained with"
        )
    if checkpoint.labels is not None and checkpoint.labels != labels:
        differing = next(i for i, (a, b) in enumerate(zip(checkpoint.labels, labels)) if a != b)
        raise StreamrecError(
            f"checkpoint {config.checkpoint} was trained with other class names than labels "
            f"'{labels_path(config.labels).name}' (class {differing}: '{checkpoint.labels[differing]}' vs "
            f"'{labels[differing]}'); set labels to the checkpoint's ({(checkpoint.config or {}).get('labels')})"
        )
    network = build_model(_with_origin_head_average(config, checkpoint))
    state = checkpoint.state_dict
    if checkpoint.origin == "caffe2":
        state = _expand_caffe2_shapes(state, network.state_dict())
    load_state_dict_strictly(network, state, config.checkpoint)
    return UInt8Clips(network, config.clip).eval()


def _with_origin_head_average(config: Config, checkpoint: Checkpoint) -> Config:
    model = config.model
    if checkpoint.origin == "streamrec":
        average = (checkpoint.config or {}).get("model", {}).get("head_average")
    else:
        average = HEAD_AVERAGE_BY_ORIGIN_ARCH.get((checkpoint.origin, model.arch),
                                                  HEAD_AVERAGE_BY_ORIGIN[checkpoint.origin])
    if average is None or "head_average" in model.kwargs:
        return config
    return config.replace(model=replace(model, kwargs={**model.kwargs, "head_average": average}))
