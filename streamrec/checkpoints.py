"""Checkpoints: reading the formats users arrive with, and loading them into a config's model.

Formats, detected from the file itself:

- ``streamrec``: the project's own, a dict saved with `torch.save`::

      {"format": "streamrec", "version": 1, "config": Config.to_dict(), "labels": [...],
       "state_dict": {...}, "metadata": {...}}

- ``pyslowfast``: PySlowFast's ``.pyth`` (``{"model_state": ...}``, zip or pre-1.6 legacy torch
  format), whose names our models share;
- ``caffe2``: PySlowFast's Caffe2 model-zoo ``.pkl`` (``{"blobs": ...}``, ``res2_0_branch2a_bn_s``);
- ``pytorchvideo``: PyTorchVideo state dicts (``blocks.0.multipathway_blocks.0.conv.weight``; its
  mobile X3D's ``s2.pathway0_res0.layers.conv_0.kernel.conv.weight``; its MViT's
  ``cls_positional_encoding.cls_token``), bare or under ``model_state``/``state_dict``, with or
  without a ``model.`` prefix;
- ``torchvision``: torchvision's video models' state dicts (``stem.0.weight``, ``features.0.0.0.weight``,
  ``conv_proj.weight``).

A file is read in its own names; which model layer a Caffe2 blob or a PyTorchVideo or torchvision
key is, is the arch's knowledge: `Checkpoint.state_dict_for` renames with the key map (and tensor
map) the arch registered (`streamrec.models.get_arch`). Tensors whose shapes differ from the model's
only by unit dimensions (a classifier stored as a 1x1x1 convolution) take the model's shape.

A checkpoint may also be named by URL or as ``zoo:NAME`` (`streamrec.zoo`): it is downloaded once
into the cache and read from there like any file.

Loading never executes code from the file: torch files are read with ``weights_only=True``,
bare pickles through `SafeUnpickler`, which admits only numpy arrays and plain containers. Loading
is strict: every tensor of the file is used and every tensor of the model is filled, with the
right shape, or the error lists what is missing, unexpected or mis-shaped.
"""

from __future__ import annotations

import logging
import pickle
import zipfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from streamrec.config import Config, config_from_dict, labels_path, load_config, load_labels, without_deployment
from streamrec.errors import StreamrecError, why_not_a_file
from streamrec.redaction import redact_data
from streamrec.models import UInt8Clips, VideoNetwork, build_model, get_arch
from streamrec.zoo import ZOO_PREFIX, checkpoint_file, zoo_entry

log = logging.getLogger(__name__)
FORMAT = "streamrec"
VERSION = 1

# How each origin averages a larger-than-training test crop (see `streamrec.models.resnet3d.Head`),
# unless the arch registered otherwise (`Arch.head_average_by_origin`).
HEAD_AVERAGE_BY_ORIGIN = {"pyslowfast": "softmax", "caffe2": "softmax", "pytorchvideo": "logits",
                          "torchvision": "logits"}
OWN_NAMES = ("streamrec", "pyslowfast")  # origins whose names are the models' own
_MODEL_HINT = "use the config of the checkpoint's model (each config in configs/ names its reference)"
FOREIGN_LAYOUTS = {  # the others: how an error names the format and its tensors
    "caffe2": ("Caffe2", "blob(s)", _MODEL_HINT),
    "pytorchvideo": ("PyTorchVideo", "tensor(s)", _MODEL_HINT),
    "torchvision": ("torchvision", "tensor(s)", _MODEL_HINT),
}
# How a state dict's names tell its layout, tried in this order (PySlowFast's and PyTorchVideo's MViTs
# share ``blocks.``; the mobile X3D of PyTorchVideo starts like PySlowFast, with ``s1.``).
LAYOUT_SIGNS = (
    ("torchvision", lambda key: key.startswith(("conv_proj.", "pos_encoding.", "stem.", "layer1.", "features."))),
    ("pytorchvideo", lambda key: ".kernel.conv." in key),
    ("pyslowfast", lambda key: key.startswith(("s1.", "head.projection.", "patch_embed.proj."))),
    ("pytorchvideo", lambda key: key.startswith(("blocks.", "cls_positional_encoding.", "patch_embed.patch_model.",
                                                 "detection_head."))),  # its detection models: model.blocks.*
)


@dataclass
class Checkpoint:
    """Weights in the file's own names, and where they came from."""

    origin: str  # streamrec | pyslowfast | caffe2 | pytorchvideo | torchvision
    state_dict: dict[str, torch.Tensor]
    config: dict[str, Any] | None = None  # streamrec only: the plain-data config of the weights
    labels: list[str] | None = None  # streamrec only
    metadata: dict[str, Any] = field(default_factory=dict)

    def state_dict_for(self, arch: str, source: str | Path) -> dict[str, torch.Tensor]:
        """The weights under the names of an ``arch`` model: rewritten by the arch's tensor map where
        it registered one for the file's layout, renamed by its key map where the layout is foreign
        (Caffe2, PyTorchVideo, torchvision)."""
        entry = get_arch(arch)
        state = self.state_dict
        if self.origin in entry.checkpoint_tensors:
            state = entry.checkpoint_tensors[self.origin](state)
        if self.origin in OWN_NAMES:
            return state
        layout, tensors, hint = FOREIGN_LAYOUTS[self.origin]
        registered = entry.checkpoint_keys
        if self.origin not in registered:
            readable = ", ".join(FOREIGN_LAYOUTS[o][0] for o in registered) or "no foreign"
            raise StreamrecError(f"checkpoint {source} is a {layout} checkpoint, and arch '{arch}' reads {readable} "
                                 "checkpoints besides PySlowFast and streamrec ones; pass one of those")
        names = registered[self.origin](list(state))
        unknown = [key for key, name in names.items() if name is None]
        if unknown:
            raise StreamrecError(f"{layout} checkpoint {source} has {len(unknown)} {tensors} no '{arch}' model uses "
                                 f"({_first(unknown)}); {hint}")
        return {names[key]: value for key, value in state.items()}


# --------------------------------------------------------------------------- the project's format


def save_checkpoint(path: str | Path, network: nn.Module, config: Config, labels: list[str] | None = None,
                    metadata: dict[str, Any] | None = None) -> None:
    """Write a network's weights with the config and label names that give them meaning (not the
    cameras and brokers of the run that made them: `without_deployment`), and ``metadata`` with
    any URL in it masked."""
    if isinstance(network, UInt8Clips):
        network = network.network
    labels = load_labels(config) if labels is None else list(labels)
    if len(labels) != config.model.num_classes:
        raise StreamrecError(f"{len(labels)} label names for a {config.model.num_classes}-class model; "
                             "pass one name per class")
    recorded = without_deployment(config).replace(checkpoint=None).to_dict()
    head = getattr(network, "head", None)
    if getattr(head, "average", None):  # as built, perhaps from another checkpoint's origin: reloads give these outputs
        recorded["model"]["head_average"] = head.average
    payload = {
        "format": FORMAT,
        "version": VERSION,
        "config": recorded,
        "labels": labels,
        "state_dict": {k: v.detach().cpu() for k, v in network.state_dict().items()},
        "metadata": redact_data(dict(metadata or {})),  # e.g. a teacher's checkpoint given as a URL
    }
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    torch.save(payload, path)


def checkpoint_config(path: str | Path, how_to_name_it: str = "--config slowfast_r50_8x8") -> Config:
    """The config a streamrec checkpoint was saved with, or the one a zoo entry names, pointing at
    that checkpoint; for any other, an error whose fix is ``how_to_name_it`` (the command's way of
    naming the config)."""
    checkpoint = load_checkpoint(path)
    if checkpoint.config is not None:
        return config_from_dict(checkpoint.config, source=str(path)).replace(checkpoint=str(path))
    if str(path).startswith(ZOO_PREFIX):
        return with_zoo_layout(load_config(zoo_entry(str(path)).config).replace(checkpoint=str(path)))
    raise StreamrecError(f"checkpoint {path} is a {checkpoint.origin} checkpoint and records no config; "
                         f"pass the matching config (e.g. {how_to_name_it})")


# --------------------------------------------------------------------------- reading any format


def load_checkpoint(path: str | Path) -> Checkpoint:
    """Read a checkpoint of any supported format, in its own names (see `Checkpoint.state_dict_for`);
    a URL or zoo name is fetched into the cache first (`streamrec.zoo.checkpoint_file`)."""
    path = checkpoint_file(path)
    if not path.is_file():
        raise StreamrecError(f"checkpoint {path} {why_not_a_file(path)}; check the path given to --checkpoint")
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
        return Checkpoint("caffe2", caffe2_tensors(payload["blobs"], path))
    state = payload
    for key in ("model_state", "state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
            break
    if not (isinstance(state, dict) and state and all(isinstance(v, torch.Tensor) for v in state.values())):
        raise StreamrecError(f"checkpoint {path} holds no state dict (looked for model_state, state_dict, "
                             "or a dict of tensors); pass a PySlowFast, PyTorchVideo or streamrec checkpoint")
    state = _strip_prefixes(state)
    for origin, sign in LAYOUT_SIGNS:
        if any(sign(key) for key in state):
            return Checkpoint(origin, state)
    raise StreamrecError(f"checkpoint {path}: keys like '{next(iter(state))}' are neither PySlowFast (s1.*, "
                         "head.projection.*), torchvision (stem.*, features.*, conv_proj.*) nor PyTorchVideo "
                         "(blocks.*); pass a supported checkpoint")


def _strip_prefixes(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Drop the wrappers' prefixes: ``module.`` (DistributedDataParallel), ``model.`` (Lightning)."""
    for prefix in ("module.", "model."):
        if all(k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items()}
    return state


# --------------------------------------------------------------------------- Caffe2 blobs

_C2_TRAINING_STATE = ("momentum", "lr", "model_iter")  # optimizer blobs, skipped as PySlowFast does


def caffe2_tensors(blobs: dict[str, Any], path: Path) -> dict[str, torch.Tensor]:
    """The model-zoo pickle's weight blobs as tensors, under their Caffe2 names."""
    state, not_arrays = {}, []
    for blob, value in blobs.items():
        if any(marker in blob for marker in _C2_TRAINING_STATE):
            continue
        if not isinstance(value, np.ndarray):
            not_arrays.append(blob)
            continue
        state[blob] = torch.from_numpy(np.ascontiguousarray(value)).clone()
    if not_arrays:
        raise StreamrecError(f"Caffe2 checkpoint {path} has {len(not_arrays)} blob(s) that are not arrays "
                             f"({_first(not_arrays)}); pass a model-zoo .pkl of weights")
    return state


# --------------------------------------------------------------------------- into a model


def model_state_dict(checkpoint: Checkpoint, network: VideoNetwork, arch: str,
                     source: str | Path) -> dict[str, torch.Tensor]:
    """The checkpoint as ``network``'s state dict: renamed for ``arch``, foreign tensors in the model's shapes."""
    state = checkpoint.state_dict_for(arch, source)
    if checkpoint.origin != "streamrec":
        state = _fit_unit_dims(state, network.state_dict())
    return state


def classifier_classes(network: VideoNetwork, state_dict: dict[str, torch.Tensor]) -> int | None:
    """How many classes a state dict's classifier (the network's `classifier_name`) predicts; None if it has none."""
    bias = state_dict.get(f"{network.classifier_name}.bias")
    return None if bias is None else int(bias.shape[0])


def _fit_unit_dims(state: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Give tensors the model's shape where the two differ only by dimensions of size 1: a Caffe2 FC blob
    for a 1x1x1 conv (as PySlowFast's converter does), torchvision's 1x1x1-conv classifier for a linear
    layer, its position embeddings without their leading 1."""
    fitted = dict(state)
    for name, value in state.items():
        target = expected.get(name)
        if (target is not None and value.shape != target.shape
                and [d for d in value.shape if d != 1] == [d for d in target.shape if d != 1]):
            fitted[name] = value.reshape(target.shape)
    return fitted


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
    config = with_zoo_layout(config)
    checkpoint = load_checkpoint(config.checkpoint)
    _check_streaming_weights(config, checkpoint)
    network = build_model(_with_origin_head_average(config, checkpoint))
    state = model_state_dict(checkpoint, network, config.model.arch, config.checkpoint)
    classes = classifier_classes(network, state)
    if classes is not None and classes != config.model.num_classes:
        raise StreamrecError(
            f"checkpoint {config.checkpoint} predicts {classes} classes but the config has "
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
    load_state_dict_strictly(network, state, config.checkpoint)
    return UInt8Clips(network, config.clip).eval()


def _check_streaming_weights(config: Config, checkpoint: Checkpoint) -> None:
    """Weights distilled for a streaming form (``train --stream-from`` records it) run only in that
    form: the causal form's kernels sit on the past side, and a shorter average is trained for.
    A clip model's weights run in the causal form compute another function: said, not refused
    (the undistilled causal form is a baseline the benchmarks measure)."""
    made = checkpoint.metadata.get("streaming")
    if not made:
        if config.streaming is not None and config.streaming.form == "causal":
            log.warning("checkpoint %s holds a clip model's weights, run in the causal streaming form undistilled: its "
                        "kernels only see the past, so it answers unlike the clip model (docs/streaming.md); distil "
                        "it first with `run_stream.py train --stream-from CONFIG --data VIDEOS`", config.checkpoint)
        return
    wanted = (made.get("form"), made.get("average_units"))
    have = None if config.streaming is None else (config.streaming.form, config.streaming.average_units)
    if have == wanted:
        return
    settings = f"streaming.form={wanted[0]}" + (f" and streaming.average_units={wanted[1]}" if wanted[1] else "")
    now = ("as a clip model" if have is None else
           f"with streaming.form={have[0]}" + (f" and streaming.average_units={have[1]}" if have[1] else ""))
    raise StreamrecError(f"checkpoint {config.checkpoint} was distilled for the {wanted[0]} streaming form"
                         f"{f' averaging {wanted[1]} units' if wanted[1] else ''}, not to run {now}; set {settings}")


def with_zoo_layout(config: Config) -> Config:
    """A config whose checkpoint is a zoo name, with the model values that file's layout needs (`ZooEntry.model`)."""
    if not (config.checkpoint or "").startswith(ZOO_PREFIX):
        return config
    needed = zoo_entry(config.checkpoint).model
    return config.replace(model=replace(config.model, kwargs={**config.model.kwargs, **needed})) if needed else config


def _with_origin_head_average(config: Config, checkpoint: Checkpoint) -> Config:
    model = config.model
    if checkpoint.origin == "streamrec":
        average = (checkpoint.config or {}).get("model", {}).get("head_average")
    else:
        average = get_arch(model.arch).head_average_by_origin.get(checkpoint.origin,
                                                                  HEAD_AVERAGE_BY_ORIGIN[checkpoint.origin])
    if average is None or "head_average" in model.kwargs:
        return config
    return config.replace(model=replace(model, kwargs={**model.kwargs, "head_average": average}))
