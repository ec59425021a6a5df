"""The GPU tests' shared fixtures: what each test needs, and the rule that turns a missing piece
into a verdict.

Without a GPU, or a library a test needs, the test skips and its reason names exactly what is
missing and how to install it. With ``STREAMREC_REQUIRE_GPU=1`` (``tests/gpu/run.sh`` sets it)
every such skip is a failure instead, as ``STREAMREC_REQUIRE_RTSP`` makes the RTSP tests fail:
on a GPU machine the first run gives a verdict, not a row of skips. Every GPU test reaches its
GPU and libraries through these fixtures (test modules import them by name: a second
``conftest.py`` would take the place of ``tests/conftest.py`` that other tests import).
"""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # test_export's helpers

REQUIRE = os.environ.get("STREAMREC_REQUIRE_GPU") == "1"


def need(available: bool, what: str) -> None:
    """Go on if ``available``; else skip saying ``what`` is missing, or fail under STREAMREC_REQUIRE_GPU=1."""
    if available:
        return
    if REQUIRE:
        pytest.fail(f"STREAMREC_REQUIRE_GPU=1, and this GPU test {what}")
    pytest.skip(what)


def imported(module: str, install: str):
    """``module``, or a skip naming it and its install."""
    try:
        return importlib.import_module(module)
    except ImportError as err:
        need(False, f"needs {module} ({err}): {install}")


@pytest.fixture
def cuda_torch():
    """torch with a CUDA GPU it can use."""
    import torch

    built = f"built for CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
    need(torch.cuda.is_available(), f"needs a CUDA GPU visible to PyTorch; torch {torch.__version__} is {built} and "
                                    "sees none (install the CUDA build: `pip install torch` from PyPI on Linux x86-64)")
    return torch


@pytest.fixture
def trt_api():
    """The real TensorRT, on a machine where a GPU answers."""
    imported("tensorrt", "`pip install -e '.[tensorrt]'` (CUDA 12 drivers) or '.[tensorrt-cu13]' (driver 580+); "
                         "JetPack ships it on a Jetson")
    from streamrec.backends.cuda_memory import gpu_count
    from streamrec.backends.trt_api import load_tensorrt

    need(gpu_count() > 0, "needs a CUDA GPU that pycuda or cuda-python can open (install one of them for the "
                          "driver's CUDA version; a logged warning says which, if it is the version)")
    return load_tensorrt()


MEMORY = {
    "pycuda": ("pycuda.driver", "PyCudaMemory", "`pip install pycuda` (builds with nvcc on the PATH)"),
    "cuda-python": ("cuda.bindings.runtime", "CudaPythonMemory",
                    "`pip install 'cuda-python>=12,<13'` for CUDA 12 drivers, '>=13,<14' for driver 580+"),
}


@pytest.fixture(params=list(MEMORY))
def memory(request):
    """GPU 0 through each `DeviceMemory` implementation in turn."""
    import streamrec.backends.cuda_memory as cuda_memory

    module, implementation, install = MEMORY[request.param]
    if request.param == "cuda-python":
        try:
            cuda_memory._import_cudart()
        except ImportError as err:
            need(False, f"needs cuda-python ({err}): {install}")
    else:
        imported(module, install)
    memory = getattr(cuda_memory, implementation)(0)
    yield memory
    memory.close()


@pytest.fixture
def onnxruntime_gpu():
    ort = imported("onnxruntime", "`pip install onnxruntime-gpu` (without the onnxruntime package beside it)")
    providers = ort.get_available_providers()
    need("CUDAExecutionProvider" in providers, f"needs onnxruntime-gpu; this onnxruntime {ort.__version__} has "
                                               f"{', '.join(providers)} (`pip uninstall -y onnxruntime && pip install "
                                               "onnxruntime-gpu`)")
    return ort


@pytest.fixture
def modelopt():
    from streamrec.backends.calibration import check_quantizer_install
    from streamrec.errors import StreamrecError

    imported("modelopt.onnx.quantization", "`pip install 'nvidia-modelopt[onnx]>=0.42'` (it brings onnxruntime-gpu)")
    try:
        check_quantizer_install()
    except StreamrecError as err:
        need(False, f"needs a usable ModelOpt install: {err}")


def bounded_top1(logits: np.ndarray, reference: np.ndarray, bound: float) -> None:
    """Top-1 must agree wherever the reference's lead over its second choice exceeds twice the
    error ``bound`` allows (closer calls may honestly flip), and on most clips at all."""
    ordered = np.sort(reference, axis=1)
    decisive = ordered[:, -1] - ordered[:, -2] > 2 * bound
    agree = logits.argmax(1) == reference.argmax(1)
    assert agree[decisive].all(), f"top-1 differs on decisive clips {np.flatnonzero(decisive & ~agree)}"
    assert decisive.sum() >= len(reference) // 2, "too few decisive clips: the check would be vacuous"


@pytest.fixture
def top1():
    return bounded_top1
