#!/usr/bin/env bash
# The GPU check, for a machine with an NVIDIA GPU: one command, one verdict.
#
#   1. installs what is missing and can be installed: the CUDA build of torch, TensorRT and
#      cuda-python for the driver's CUDA (12 or 13), pycuda, onnxruntime-gpu and ModelOpt
#      (onnxruntime-gpu replaces onnxruntime in the venv: the two packages share files);
#   2. runs tests/gpu with STREAMREC_REQUIRE_GPU=1, so a missing piece fails instead of skipping;
#   3. times SlowFast R50 8x8 at 224 px: `bench engine` for eager float32 against the torch
#      backend (folded batch norms, fp16/bf16, channels-last, CUDA graphs) and TensorRT fp16 at
#      batches 1 and 8, then `torch.compile` if time is left, then `bench pipeline --max-streams`
#      at hop 8;
#   4. writes $OUT/gpu-check.json and $OUT/gpu-check.md (one section, ready for BENCHMARKS.md),
#      with each step's log beside them ($OUT defaults to gpu-check/).
#
# Steps 2-3 are time-boxed to 8 minutes in all (STREAMREC_GPU_BUDGET_S); installing comes first
# and takes what the network takes. Exits non-zero if any install-independent step failed: a
# test, a benchmark, or the GPU itself missing. The speed target (the best GPU path at least 3x
# eager float32's batch-8 clips/s) is reported, not enforced.
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT_DIR=${OUT:-gpu-check}
BUDGET_S=${STREAMREC_GPU_BUDGET_S:-480}
PY=${STREAMREC_GPU_PYTHON:-.venv/bin/python}
CONFIG=slowfast_r50_8x8
mkdir -p "$OUT_DIR"
STEPS="$OUT_DIR/steps.tsv"
: > "$STEPS"
OUT_DIR=$(cd "$OUT_DIR" && pwd)  # absolute: the steps and the summary read it from anywhere
export STREAMREC_ENGINE_DIR=${STREAMREC_ENGINE_DIR:-$OUT_DIR/engines}  # bench engine and pipeline share builds
export PIP_DISABLE_PIP_VERSION_CHECK=1

record() { printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" >> "$STEPS"; }  # name, status, seconds, optional

# step NAME CAP_S OPTIONAL COMMAND...: run within min(CAP_S, what is left of the budget).
DEADLINE=0
step() {
  local name=$1 cap=$2 optional=$3
  shift 3
  local left=$((DEADLINE - $(date +%s)))
  if [ "$left" -lt 20 ]; then
    echo "== $name: not run, the ${BUDGET_S}s budget is spent"
    record "$name" "not run: budget spent" 0 "$optional"
    return
  fi
  local limit=$((cap < left ? cap : left)) started=$(date +%s) status
  echo "== $name (at most ${limit}s)"
  timeout --kill-after=15 "$limit" "$@" > "$OUT_DIR/$name.log" 2>&1
  local rc=$?
  tail -n 25 "$OUT_DIR/$name.log"
  case $rc in
    0) status=passed ;;
    124|137) status="timed out after ${limit}s" ;;
    *) status="failed (exit $rc)" ;;
  esac
  echo "-- $name: $status"
  record "$name" "$status" $(($(date +%s) - started)) "$optional"
}

install() {  # install NAME PIP-ARGS...: best effort, logged
  echo "== install $1"
  if timeout 900 "$PY" -m pip install -q "${@:2}" >> "$OUT_DIR/install.log" 2>&1; then
    record "install $1" passed 0 yes
  else
    echo "-- could not install $1 (see install.log)"
    record "install $1" "failed (see install.log)" 0 yes
  fi
}

has() { "$PY" -c "import $1" > /dev/null 2>&1; }

# ------------------------------------------------------------------ the GPU, and what to install
if ! nvidia-smi > "$OUT_DIR/nvidia-smi.txt" 2>&1; then
  echo "no NVIDIA GPU or driver answers (nvidia-smi failed): see $OUT_DIR/nvidia-smi.txt"
  record "nvidia-smi" "failed: no GPU or driver" 0 no
  GPU_OK=0
else
  GPU_OK=1
  cat "$OUT_DIR/nvidia-smi.txt"
fi
DRIVER_CUDA=$(sed -n 's/.*CUDA Version: *\([0-9]*\)\..*/\1/p' "$OUT_DIR/nvidia-smi.txt" | head -n 1)
EXTRA=tensorrt
[ "${DRIVER_CUDA:-12}" -ge 13 ] && EXTRA=tensorrt-cu13  # cuda-python 13 needs the CUDA 13 driver (580+)

if [ ! -x "$PY" ]; then
  python3 -m venv .venv && PY=.venv/bin/python
  install "the project" -e '.[torch,dev]'
fi
if [ "$GPU_OK" = 1 ]; then
  if ! "$PY" -c "import torch, sys; sys.exit(not torch.cuda.is_available())" > /dev/null 2>&1; then
    TORCH=$("$PY" -c "import torch; print(torch.__version__.split('+')[0])" 2>/dev/null || echo "")
    install "torch (CUDA build)" --force-reinstall "torch${TORCH:+==$TORCH}"
  fi
  has tensorrt && has cuda.bindings.runtime || install "TensorRT, cuda-python ($EXTRA)" -e ".[$EXTRA]"
  has pycuda.driver || install pycuda 'pycuda>=2021.1'
  if ! "$PY" -c "import modelopt.onnx.quantization" > /dev/null 2>&1 || \
     ! "$PY" -c "import onnxruntime as o, sys; sys.exit('CUDAExecutionProvider' not in o.get_available_providers())" \
       > /dev/null 2>&1; then
    timeout 120 "$PY" -m pip uninstall -y -q onnxruntime >> "$OUT_DIR/install.log" 2>&1
    install "ModelOpt and onnxruntime-gpu" 'nvidia-modelopt[onnx]>=0.42'
    has onnxruntime || install onnxruntime-gpu onnxruntime-gpu
  fi
fi

# ------------------------------------------------------------------ the checks, within the budget
DEADLINE=$(($(date +%s) + BUDGET_S))
if [ "$GPU_OK" = 1 ]; then
  step gpu-tests 250 no env STREAMREC_REQUIRE_GPU=1 "$PY" -m pytest -q -p no:cacheprovider tests/gpu \
    --junitxml="$OUT_DIR/gpu-tests.xml"
  step bench-engine-torch 60 no "$PY" run_stream.py bench engine --config "$CONFIG" --device cuda \
    --backend eager,torch --precision fp32,fp16,bf16 --batch 1,8 --iters 20 --warmup 3 \
    --json "$OUT_DIR/bench-engine-torch.json"
  step bench-engine-tensorrt 120 no "$PY" run_stream.py bench engine --config "$CONFIG" --device cuda \
    --backend eager,tensorrt --precision fp32,fp16 --batch 1,8 --iters 20 --warmup 3 \
    --json "$OUT_DIR/bench-engine-tensorrt.json"
  step bench-pipeline 80 no "$PY" run_stream.py bench pipeline --config "$CONFIG" --device cuda --backend auto \
    --precision fp16 --max-batch 8 --hop 8 --max-streams --max-streams-limit 256 --duration 3 \
    --engine-seconds 0.5 --json "$OUT_DIR/bench-pipeline.json"
  step bench-engine-compile 120 yes "$PY" run_stream.py bench engine --config "$CONFIG" --device cuda \
    --backend eager,torch-compile --precision fp32,fp16 --batch 8 --iters 20 --warmup 3 \
    --json "$OUT_DIR/bench-engine-compile.json"
fi

# ------------------------------------------------------------------ one JSON, one markdown section
"$PY" - "$OUT_DIR" "$CONFIG" <<'EOF'
import json, subprocess, sys, time, xml.etree.ElementTree as ET
from pathlib import Path

out, config = Path(sys.argv[1]), sys.argv[2]
steps = [dict(zip(("name", "status", "seconds", "optional"), line.split("\t")))
         for line in (out / "steps.tsv").read_text().splitlines() if line]
for s in steps:
    s["seconds"], s["optional"] = int(s["seconds"]), s["optional"] == "yes"

def gpu():
    try:
        query = "name,driver_version,memory.total"
        return subprocess.run(["nvidia-smi", f"--query-gpu={query}", "--format=csv,noheader"], capture_output=True,
                              text=True, timeout=20).stdout.strip().splitlines()
    except (OSError, subprocess.SubprocessError):
        return []

def versions():
    found = {}
    for module in ("torch", "tensorrt", "onnxruntime", "pycuda", "cuda.bindings", "modelopt"):
        try:
            found[module] = getattr(__import__(module, fromlist=["_"]), "__version__", "installed")
        except Exception as err:  # not installed, or broken: say which
            found[module] = f"missing ({type(err).__name__})"
    return found

tests = {}
if (out / "gpu-tests.xml").is_file():
    root = ET.parse(out / "gpu-tests.xml").getroot()
    suite = root if root.tag == "testsuite" else root.find("testsuite")
    tests = {key: int(suite.get(key, 0)) for key in ("tests", "failures", "errors", "skipped")}
    tests["failed"] = [f"{case.get('classname')}.{case.get('name')}: "
                       f"{(case.find('failure') if case.find('failure') is not None else case.find('error')).get('message', '')[:300]}"
                       for case in suite.iter("testcase")
                       if case.find("failure") is not None or case.find("error") is not None]

benches = {}
for name in ("bench-engine-torch", "bench-engine-tensorrt", "bench-engine-compile", "bench-pipeline"):
    if (out / f"{name}.json").is_file():
        benches[name] = json.loads((out / f"{name}.json").read_text())

engine_rows = [r for key in ("bench-engine-torch", "bench-engine-tensorrt", "bench-engine-compile")
               for r in benches.get(key, {}).get("results", [])]
eager8 = max((r["clips_per_s"] for r in engine_rows if r["backend"] == "eager" and r["batch"] == 8), default=None)
best8 = max((r for r in engine_rows if r["backend"] != "eager" and r["batch"] == 8),
            key=lambda r: r["clips_per_s"], default=None)
target = {"eager_fp32_batch8_clips_per_s": eager8,
          "best_batch8": {k: best8[k] for k in ("backend", "precision", "clips_per_s")} if best8 else None,
          "ratio": round(best8["clips_per_s"] / eager8, 2) if best8 and eager8 else None}
target["met"] = target["ratio"] is not None and target["ratio"] >= 3.0
pipeline = benches.get("bench-pipeline", {})
failed = [s["name"] for s in steps if s["status"] != "passed" and not s["optional"]]
document = {"check": "tests/gpu/run.sh", "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "config": config, "gpu": gpu(), "versions": versions(), "steps": steps, "tests": tests,
            "bench": benches, "target_3x_eager_batch8": target,
            "max_realtime_streams": pipeline.get("max_realtime_streams"), "failed_steps": failed}
(out / "gpu-check.json").write_text(json.dumps(document, indent=2, default=str))

lines = [f"## GPU check: {config} on {', '.join(document['gpu']) or 'no GPU'} ({document['date']})", "",
         f"Run by `bash tests/gpu/run.sh`; figures in `gpu-check.json`. Versions: "
         + ", ".join(f"{k} {v}" for k, v in document["versions"].items()) + ".", ""]
lines += ["| step | status | s |", "|---|---|---|"] + [f"| {s['name']} | {s['status']} | {s['seconds']} |" for s in steps]
if tests:
    lines += ["", f"GPU tests: {tests['tests']} run, {tests['failures'] + tests['errors']} failed, "
                  f"{tests['skipped']} skipped (STREAMREC_REQUIRE_GPU=1 turns skips into failures)."]
    lines += [f"- failed: {line}" for line in tests["failed"]]
if engine_rows:
    lines += ["", "| backend | precision | batch | clips/s | p50 ms | x eager same batch |", "|---|---|---|---|---|---|"]
    lines += [f"| {r['backend']} | {r['precision']} | {r['batch']} | {r['clips_per_s']:.1f} | {r['latency_ms_p50']:.1f} "
              f"| {r['speedup_vs_eager_same_batch']} |" for r in engine_rows]
if target["ratio"] is not None:
    lines += ["", f"Target, the best GPU path at least 3x eager float32 at batch 8: {target['best_batch8']['backend']} "
                  f"{target['best_batch8']['precision']} {target['ratio']}x ({'met' if target['met'] else 'not met'})."]
if pipeline:
    lines += ["", f"bench pipeline --max-streams, hop 8: {pipeline.get('max_realtime_streams')} streams in real time."]
lines += ["", "Verdict: " + ("all steps passed." if not failed else f"FAILED: {', '.join(failed)}.")]
(out / "gpu-check.md").write_text("\n".join(lines) + "\n")
print("\n".join(lines))
EOF

if [ "$GPU_OK" != 1 ] || awk -F'\t' '$2 != "passed" && $4 != "yes" {bad = 1} END {exit !bad}' "$STEPS"; then
  echo "GPU check FAILED: see $OUT_DIR/gpu-check.md"
  exit 1
fi
echo "GPU check passed: $OUT_DIR/gpu-check.md"
