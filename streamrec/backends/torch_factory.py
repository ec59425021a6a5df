"""The ``torch`` backend: the config's model and checkpoint run directly in PyTorch (`torch_backend`).

``auto`` picks it last, where neither TensorRT nor ONNX Runtime can run; it takes no engine
file. torch is imported only when an engine is made. A streaming config's engine runs the
model's streaming form (`TorchStreamingEngine`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from streamrec.backends import register_backend

if TYPE_CHECKING:
    from streamrec.backends import Engine
    from streamrec.config import Config


@register_backend("torch", precisions=("fp32", "fp16", "bf16"), auto_rank=2,
                  available=lambda engine: True)  # the last resort: without torch, its import error says so
def create(config: Config) -> Engine:
    from streamrec.backends.torch_backend import TorchEngine, TorchStreamingEngine

    if config.streaming is not None:
        return TorchStreamingEngine.from_config(config)
    return TorchEngine.from_config(config)
