"""The engine cache in ``engines/``: ONNX exports and TensorRT engines, named by what made them.

A cached file is reused only when everything that shaped it is unchanged, so each name
carries a digest of its key (see ``engines/README.md`` for the naming rules):

- an ONNX export: the model and clip sections of the config, the checkpoint's bytes, the
  precision and `streamrec.export.EXPORT_FORMAT`; for a streaming config also its form, hop
  (which fix the units a call takes: `streamrec.config.streaming_hop_frames`) and
  `STREAMING_EXPORT_FORMAT`;
- a TensorRT engine: the ONNX bytes, the TensorRT version, the GPU name and compute
  capability, the precision and the batch profile. A JSON record beside each engine keeps the
  full key and the plan's checksum, so a mismatch or a damaged file is explained in one line
  instead of failing inside TensorRT.

Nothing here imports torch or tensorrt.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import re
import secrets
from dataclasses import dataclass
from pathlib import Path

from streamrec.config import Config, runtime_dir, streaming_hop_frames
from streamrec.errors import StreamrecError, check_output_path
from streamrec.zoo import checkpoint_file

log = logging.getLogger(__name__)


def cache_dir() -> Path:
    """``$STREAMREC_ENGINE_DIR`` if set, else ``engines/`` of the checkout or of the user cache folder
    (`streamrec.config.runtime_dir` decides which)."""
    return Path(os.environ.get("STREAMREC_ENGINE_DIR") or runtime_dir("engines"))


# --------------------------------------------------------------------------- files


def write_atomically(path: Path, data: bytes, flag: str | None = None) -> Path:
    """Write to a temporary file beside ``path``, then rename: readers see all or nothing.

    The rename replaces whatever ``path`` is, so only a regular file or nothing may be there
    (`streamrec.errors.check_output_path`, naming ``flag`` in its error): never a device such as
    /dev/full, a FIFO or a folder, and never a URL turned into local folders."""
    path = check_output_path(path, flag)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    # Not mkstemp: its files are private (0600); an exported model is an ordinary file (the umask applies).
    handle = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(data)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def digest_of(fields: dict) -> str:
    """A stable digest of plain data (sorted JSON)."""
    return sha256_bytes(json.dumps(fields, sort_keys=True).encode())


def slug(text: str) -> str:
    """A file-name-safe form of a free text (a GPU name, a version)."""
    return re.sub(r"[^A-Za-z0-9.]+", "-", text).strip("-").lower() or "unknown"


# --------------------------------------------------------------------------- ONNX exports


def export_key(config: Config, precision: str) -> dict:
    """Everything an ONNX export of ``config`` depends on."""
    from streamrec.export import EXPORT_FORMAT, STREAMING_EXPORT_FORMAT  # torch only inside its functions

    checkpoint = checkpoint_file(config.checkpoint) if config.checkpoint else None  # a zoo name or URL: fetched once
    if checkpoint and not Path(checkpoint).is_file():
        raise StreamrecError(f"checkpoint '{checkpoint}' not found; fix the config's checkpoint path")
    data = config.to_dict()
    key = {
        "model": data["model"],
        "clip": data["clip"],
        "checkpoint_sha256": sha256_file(checkpoint) if checkpoint else None,
        "precision": precision,
        "export_format": EXPORT_FORMAT,
    }
    if config.streaming is not None:  # a clip config's key stays as it was: its cached exports stay valid
        key["streaming"] = {"form": config.streaming.form, "hop_frames": streaming_hop_frames(config),
                            "export_format": STREAMING_EXPORT_FORMAT}
        if config.streaming.average_units is not None:  # keys made before the option stay as they were
            key["streaming"]["average_units"] = config.streaming.average_units
    return key


def export_path(config: Config, precision: str) -> Path:
    """Where the dynamic-batch ONNX export of ``config`` at ``precision`` is cached (a streaming
    config's: its streaming form's)."""
    name = config.name or config.model.arch
    return cache_dir() / f"{slug(name)}.{precision}.{digest_of(export_key(config, precision))[:12]}.onnx"


def cached_export(config: Config, precision: str) -> Path:
    """The cached ONNX export of ``config``, exported now (this needs PyTorch) if missing."""
    if precision not in ("fp32", "fp16"):
        raise StreamrecError(f"ONNX exports are fp32 or fp16, not {precision}; an int8 graph is made with "
                             "`run_stream.py build-engine --precision int8 --calibration DIR`")
    path = export_path(config, precision)
    if path.is_file():
        log.info("reusing ONNX export %s", path)
        return path
    log.info("exporting %s (%s) to %s; later runs reuse it", config.name or config.model.arch, precision, path)
    from streamrec.export import export_config

    return export_config(config, path, fp16=precision == "fp16")


# --------------------------------------------------------------------------- TensorRT engines


@dataclass(frozen=True)
class BatchProfile:
    """TensorRT's one optimization profile on the batch axis: built for ``opt``, valid in [min, max]."""

    min: int
    opt: int
    max: int

    def __post_init__(self) -> None:
        if not 1 <= self.min <= self.opt <= self.max:
            raise StreamrecError(f"batch profile {self} needs 1 <= MIN <= OPT <= MAX")

    @classmethod
    def parse(cls, text: str) -> "BatchProfile":
        """``MIN:OPT:MAX`` (``1:4:8``), or one number N meaning ``1:N:N``."""
        parts = text.split(":")
        if len(parts) not in (1, 3) or not all(p.strip().isdigit() for p in parts):
            raise StreamrecError(f"batch profile '{text}' must be MIN:OPT:MAX (e.g. 1:4:8) or one number")
        numbers = [int(p) for p in parts]
        return cls(1, numbers[0], numbers[0]) if len(numbers) == 1 else cls(*numbers)

    def __str__(self) -> str:
        return f"{self.min}:{self.opt}:{self.max}"


@dataclass(frozen=True)
class EngineKey:
    """Everything a TensorRT engine depends on; engines with different keys are not interchangeable."""

    onnx_sha256: str
    tensorrt_version: str
    gpu_name: str
    compute_capability: str  # "8.7"
    precision: str
    batch: str  # BatchProfile as MIN:OPT:MAX

    @property
    def digest(self) -> str:
        return digest_of(dataclasses.asdict(self))

    def differences(self, other: "EngineKey") -> list[str]:
        """What changed from ``other`` to this key, in words (``TensorRT 10.3.0 -> 11.1.0``)."""
        labels = {
            "onnx_sha256": "ONNX file contents", "tensorrt_version": "TensorRT", "gpu_name": "GPU",
            "compute_capability": "compute capability", "precision": "precision", "batch": "batch profile",
        }
        changes = []
        for name, label in labels.items():
            old, new = getattr(other, name), getattr(self, name)
            if old != new:
                changes.append(label + (" changed" if name == "onnx_sha256" else f" {old} -> {new}"))
        return changes


@dataclass(frozen=True)
class EngineRecord:
    """The JSON file beside an engine: its key, where it came from, the plan's checksum, and
    the streamrec metadata of the graph it was built from (`streamrec.export.METADATA_KEY`;
    None for a graph without it), which a plan does not keep: an engine is checked against a
    config by it, and a streaming engine's calls are lined up with frames by it."""

    key: EngineKey
    onnx_file: str
    plan_sha256: str
    build_seconds: float
    metadata: dict | None = None

    @staticmethod
    def path_for(engine: Path) -> Path:
        return engine.with_suffix(".json")

    def save(self, engine: Path) -> None:
        write_atomically(self.path_for(engine), json.dumps(dataclasses.asdict(self), indent=2).encode())

    @classmethod
    def load(cls, engine: Path) -> "EngineRecord | None":
        """The record of ``engine``, or None for an engine built elsewhere (or a damaged record)."""
        path = cls.path_for(engine)
        try:
            data = json.loads(path.read_text())
            return cls(key=EngineKey(**data.pop("key")), **data)
        except FileNotFoundError:
            return None
        except (ValueError, TypeError, KeyError):
            log.warning("ignoring unreadable engine record %s", path)
            return None


def engine_path(onnx_file: Path, key: EngineKey) -> Path:
    """``engines/<onnx stem>.<precision>.b<min>-<opt>-<max>.<digest>.engine``."""
    batch = key.batch.replace(":", "-")
    return cache_dir() / f"{onnx_file.stem}.{key.precision}.b{batch}.{key.digest[:12]}.engine"


def timing_cache_path(key: EngineKey) -> Path:
    """One timing cache per TensorRT version and GPU: tactic timings carry over between models."""
    return cache_dir() / f"timing.trt{slug(key.tensorrt_version)}.{slug(key.gpu_name)}.sm{key.compute_capability}.cache"


def stale_engines(onnx_file: Path, key: EngineKey) -> list[tuple[Path, list[str]]]:
    """Engines already built from an ONNX file of the same name, with what differs from ``key``."""
    found = []
    for candidate in sorted(cache_dir().glob(f"{onnx_file.stem}.*.engine")):
        record = EngineRecord.load(candidate)
        if record is not None and record.key != key:
            found.append((candidate, key.differences(record.key)))
    return found
