"""Checkpoints: the project's own format, and loading weights into a model built from a config.

The project's format is a plain dict saved with `torch.save` and read back with
``weights_only=True``, so loading never runs code from the file::

    {"format": "streamrec", "version": 1, "config": Config.to_dict(), "labels": [...],
     "state_dict": {...}, "metadata": {...}}
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from streamrec.config import Config, load_labels
from streamrec.errors import StreamrecError
from streamrec.models import UInt8Clips, build_model

FORMAT = "streamrec"
VERSION = 1


@dataclass
class Checkpoint:
    state_dict: dict[str, torch.Tensor]
    config: dict[str, Any] | None = None  # the plain-data config the weights were trained with
    labels: list[str] | None = None
    metadata: dict[str, Any] = field(default_factory=dict)


def save_checkpoint(path: str | Path, network: nn.Module, config: Config, labels: list[str] | None = None,
                    metadata: dict[str, Any] | None = None) -> None:
    """Write a network's weights with the config and label names that give them meaning."""
    if isinstance(network, UInt8Clips):
        network = network.network
    labels = load_labels(config) if labels is None else list(labels)
    if len(labels) != config.model.num_classes:
        raise StreamrecError(f"{len(labels)} label names for a {config.model.num_classes}-class model; pass one name per class")
    payload = {
        "format": FORMAT,
        "version": VERSION,
        "config": config.to_dict(),
        "labels": labels,
        "state_dict": {k: v.detach().cpu() for k, v in network.state_dict().items()},
        "metadata": dict(metadata or {}),
    }
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    torch.save(payload, path)


def load_checkpoint(path: str | Path) -> Checkpoint:
    """Read a checkpoint in the project's format without executing anything from the file."""
    path = Path(path)
    if not path.is_file():
        raise StreamrecError(f"checkpoint {path} not found; check the path given to --checkpoint")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a corrupt or foreign file: torch raises many types
        raise StreamrecError(f"checkpoint {path} cannot be read as a torch file ({type(exc).__name__}); "
                             "pass a streamrec .pt checkpoint") from None
    if not (isinstance(payload, dict) and payload.get("format") == FORMAT):
        raise StreamrecError(f"checkpoint {path} is not in streamrec's format; save it with save_checkpoint")
    if payload.get("version") != VERSION:
        raise StreamrecError(f"checkpoint {path} has format version {payload.get('version')}; "
                             f"this streamrec reads version {VERSION}")
    return Checkpoint(payload["state_dict"], payload["config"], payload["labels"], payload.get("metadata", {}))


def load_state_dict_strictly(network: nn.Module, state_dict: dict[str, torch.Tensor], source: str) -> None:
    """Load every tensor, or say exactly which are missing, unexpected or the wrong shape."""
    expected = network.state_dict()
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    wrong_shape = [f"{k} {tuple(state_dict[k].shape)} vs {tuple(v.shape)}"
                   for k, v in expected.items() if k in state_dict and state_dict[k].shape != v.shape]
    problems = [(f"{len(names)} {what}", names) for what, names in
                (("missing", missing), ("unexpected", unexpected), ("with the wrong shape (file vs model)", wrong_shape))
                if names]
    if problems:
        detail = "; ".join(f"{title}: {_first(names)}" for title, names in problems)
        raise StreamrecError(f"checkpoint {source} does not fit model.arch '{type(network).__name__}' "
                             f"({detail}); use the config the checkpoint was trained with")
    network.load_state_dict(state_dict, strict=True)


def _first(names: list[str], shown: int = 3) -> str:
    more = f", ... (+{len(names) - shown})" if len(names) > shown else ""
    return ", ".join(names[:shown]) + more


def load_model(config: Config) -> nn.Module:
    """The model of the engine contract (`UInt8Clips`), with the config's checkpoint loaded if it names one."""
    network = build_model(config)
    if config.checkpoint:
        checkpoint = load_checkpoint(config.checkpoint)
        load_state_dict_strictly(network, checkpoint.state_dict, config.checkpoint)
    return UInt8Clips(network.eval(), config.clip)
