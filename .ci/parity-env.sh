#!/usr/bin/env bash
# Create (or reuse) .venv-ref, the environment of the reference-parity tests (tests/parity):
#   - PyTorchVideo 0.1.5 needs torchvision, hence the torch 2.14.1 / torchvision 0.29.1 pair;
#   - slowfast 1.0 on PyPI is PySlowFast's model code. It declares detectron2 (not on PyPI), used
#     only by its detection head, so it is installed without dependencies, then with the ones its
#     model, config and checkpoint modules import; the tests stub detectron2.
#   - opencv and pyzmq: tests/conftest.py and streamrec import them.
# Idempotent: an env whose imports work is left as it is. Prints the env's python as its last line.
set -euo pipefail
cd "$(dirname "$0")/.."
ENV=.venv-ref
PY="$ENV/bin/python"

imports_work() {
  [ -x "$PY" ] && "$PY" - >/dev/null 2>&1 <<'PYEOF'
import sys, types
layers = types.ModuleType("detectron2.layers"); layers.ROIAlign = None
sys.modules.update({"detectron2": types.ModuleType("detectron2"), "detectron2.layers": layers})
import cv2, numpy, pytest, torch, torchvision, yaml, zmq
import pytorchvideo.models.hub, slowfast.models.video_model_builder, slowfast.utils.checkpoint
PYEOF
}

if ! imports_work; then
  python3 -m venv "$ENV"
  "$PY" -m pip install -q torch==2.14.1 torchvision==0.29.1
  "$PY" -m pip install -q pytorchvideo==0.1.5 fvcore iopath yacs simplejson termcolor matplotlib psutil \
    pytest numpy PyYAML pyzmq opencv-python-headless
  "$PY" -m pip install -q --no-deps slowfast==1.0
  imports_work || { echo "parity-env: .venv-ref was built but its imports fail" >&2; exit 1; }
fi
echo "$PY"
