"""What a benchmark ran on, and how busy the machine was: a figure without these cannot be compared.

Also the two resource meters the benchmarks share: the peak resident memory of a stretch of
work (`PeakRss`) and a background sampler of memory and CPU use over time (`ResourceSampler`).
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil

LIBRARIES = ("numpy", "torch", "onnxruntime", "onnxruntime-gpu", "onnx", "opencv-python-headless", "opencv-python",
             "tensorrt", "pycuda", "cuda-python", "pyzmq")
CPU_FEATURES = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "avx_vnni", "amx_tile", "asimd", "asimdhp")
MIB = 2**20


def describe_machine() -> dict:
    """CPU, memory, GPUs, OS and library versions, plus the load average at the time of the call."""
    memory = psutil.virtual_memory()
    return {
        "cpu_model": cpu_model(),
        "cpu_cores_physical": psutil.cpu_count(logical=False),
        "cpu_cores_logical": psutil.cpu_count(logical=True),
        "cpu_features": cpu_features(),
        "memory_gib": round(memory.total / 2**30, 1),
        "gpus": gpus(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "libraries": library_versions(),
        "load_average": load_average(),
    }


def cpu_model() -> str:
    """The CPU's marketing name (``/proc/cpuinfo`` on Linux; on a VM this may be generic)."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("model name", "Model", "Hardware") and value.strip():
                return value.strip()
    if sys.platform == "darwin":
        result = _run(["sysctl", "-n", "machdep.cpu.brand_string"])
        if result:
            return result
    return platform.processor() or platform.machine()


def cpu_features() -> list[str]:
    """The vector-instruction features that decide which CPU kernels run (Linux only; else empty)."""
    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.is_file():
        return []
    for line in cpuinfo.read_text(errors="replace").splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            present = set(value.split())
            return [feature for feature in CPU_FEATURES if feature in present]
    return []


def gpus() -> list[dict]:
    """NVIDIA GPUs as ``nvidia-smi`` reports them (name, driver, memory), or the Jetson module; else empty."""
    output = _run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader,nounits"])
    found = []
    for line in (output or "").splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) == 3:
            found.append({"name": parts[0], "driver": parts[1], "memory_mib": _number(parts[2])})
    return found or jetson()


def jetson() -> list[dict]:
    """A Jetson's module name and L4T release (its GPU shares the system memory; nvidia-smi may be absent)."""
    model, release = Path("/proc/device-tree/model"), Path("/etc/nv_tegra_release")
    if not model.is_file() or "jetson" not in model.read_text(errors="replace").lower():
        return []
    driver = release.read_text(errors="replace").splitlines()[0].strip("# ") if release.is_file() else None
    return [{"name": model.read_text(errors="replace").strip("\x00\n "), "driver": driver, "memory_mib": None}]


def library_versions() -> dict:
    """Installed versions of the libraries that shape the figures, read without importing them."""
    versions = {}
    for name in LIBRARIES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    if "torch" in sys.modules:  # only if a benchmark already imported it: importing it costs seconds
        torch = sys.modules["torch"]
        versions["torch_cuda"] = torch.version.cuda
        if torch.cuda.is_available():
            versions["cudnn"] = torch.backends.cudnn.version()
    return versions


def load_average() -> list[float] | None:
    """1, 5 and 15 minute load averages: above the core count, other work shared the CPU."""
    try:
        return [round(value, 2) for value in os.getloadavg()]
    except OSError:
        return None


def device_memory_mib(pid: int | None = None) -> float | None:
    """GPU memory this process holds now, as the driver reports it (any library's allocations)."""
    output = _run(["nvidia-smi", "--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"])
    pid = os.getpid() if pid is None else pid
    used = [_number(line.split(",")[1]) for line in (output or "").splitlines()
            if line.split(",")[0].strip() == str(pid)]
    return sum(u for u in used if u is not None) if used else None


def current_rss_mib() -> float:
    return psutil.Process().memory_info().rss / MIB


def _run(command: list[str]) -> str | None:
    if shutil.which(command[0]) is None:
        return None
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return result.stdout.strip() if result.returncode == 0 else None


def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


class PeakRss:
    """The peak resident memory of this process while the ``with`` block runs, in MiB.

    On Linux the kernel's own high-water mark is reset at entry (``/proc/self/clear_refs``) and
    read at exit, which catches peaks inside a single library call at no cost. Elsewhere, or
    where the reset is not permitted, a thread samples the RSS every 10 ms.
    """

    def __init__(self) -> None:
        self.peak_mib: float | None = None
        self._sampler: ResourceSampler | None = None

    def __enter__(self) -> "PeakRss":
        if not _reset_high_water_mark():
            self._sampler = ResourceSampler(interval_s=0.01).start()
        return self

    def __exit__(self, *exc) -> None:
        if self._sampler is None:
            self.peak_mib = _high_water_mark_mib()
        else:
            self._sampler.stop()
            self.peak_mib = self._sampler.peak_rss_mib()


def _reset_high_water_mark() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return _high_water_mark_mib() is not None


def _high_water_mark_mib() -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


class ResourceSampler:
    """Samples this process's RSS and CPU use, and the whole machine's CPU use, in a thread.

    CPU percentages are psutil's: for the process 100 means one core fully busy; for the
    system, 100 means every core busy.
    """

    def __init__(self, interval_s: float = 0.5):
        self.interval_s = interval_s
        self.samples: list[dict] = []  # {"t": seconds since start, "rss_mib", "process_cpu", "system_cpu"}
        self._process = psutil.Process()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="resource-sampler", daemon=True)
        self._start = 0.0

    def start(self) -> "ResourceSampler":
        self._start = time.monotonic()
        self._process.cpu_percent(None)  # the first call only sets the reference point
        psutil.cpu_percent(None)
        self._thread.start()
        return self

    def stop(self) -> "ResourceSampler":
        self._stop.set()
        self._thread.join()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.samples.append({
                "t": round(time.monotonic() - self._start, 3),
                "rss_mib": round(self._process.memory_info().rss / MIB, 1),
                "process_cpu": self._process.cpu_percent(None),
                "system_cpu": psutil.cpu_percent(None),
            })

    def peak_rss_mib(self) -> float:
        current = self._process.memory_info().rss / MIB
        return max([s["rss_mib"] for s in self.samples] + [current])

    def mean(self, key: str) -> float | None:
        values = [s[key] for s in self.samples]
        return round(sum(values) / len(values), 1) if values else None
