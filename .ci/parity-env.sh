#!/usr/bin/env bash
# Create (or reuse) .venv-ref: the reference implementations the parity tests compare against.
#   PyTorchVideo 0.1.5 needs torchvision, which needs the torch 2.14.1 / torchvision 0.29.1 pair;
#   slowfast 1.0 on PyPI is PySlowFast's model code (its detectron2 import is stubbed in the tests).
# Idempotent: an env whose imports already work is left alone. Prints the env's python path last.
set -euo pipefail
cd "$(dirname "$0")/.."
ENV=.venv-ref
PY="$ENV/bin/python"
check='import torch, torchvision, pytorchvideo.models.hub, slowfast.models.video_model_builder' 
if [ -x "$PY" ] && "$PY" - >/dev/null 2>&1 <<PYEOF
import sys, types
sys.modules.setdefault("detectron2", types.ModuleType("detectron2"))
$check
PYEOF
then
  echo "$PY"; exit 0
fi
python3 -m venv "$ENV"
"$PY" -m pip install -q --upgrade pip >/dev/null
"$PY" -m pip install -q torch==2.14.1 torchvision==0.29.1
"$PY" -m pip install -q pytorchvideo==0.1.5 slowfast==1.0 fvcore iopath simplejson psutil pytest numpy PyYAML
echo "$PY"
