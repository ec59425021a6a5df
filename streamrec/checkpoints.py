"""Loading weights into a model built from a config."""

from __future__ import annotations

from torch import nn

from streamrec.config import Config
from streamrec.models import UInt8Clips, build_model


def load_model(config: Config) -> nn.Module:
    """The model of the engine contract (`UInt8Clips`), with the config's checkpoint loaded if it names one."""
    network = build_model(config)
    if config.checkpoint:
        raise NotImplementedError("checkpoint loading arrives with the model issue")
    return UInt8Clips(network.eval(), config.clip)
