"""Configuration: one YAML file per model, strictly checked, overridable from the command line.

A config has these sections (see ``configs/*.yaml``):

- ``model``: ``arch`` (a name in the model registry), ``num_classes`` and the builder's own
  keyword arguments, checked against the builder's signature when the model is built;
- ``clip``: the input contract of the model (frames, sampling rate, alpha, sizes, mean/std,
  training fps);
- ``labels``: a packaged label set name (``kinetics400``) or a path to a text file, one name a line;
- ``postprocess``, ``pipeline``, ``reconnect``, ``events``, ``engine``: runtime behaviour;
- ``streaming`` (optional): run the model's streaming form, each hop's new frames and a carried
  state per call instead of the whole clip (docs/streaming.md); absent: whole clips;
- ``streams``: the sources to read, each with an id.

Unknown keys are errors with a "did you mean" hint, never silently ignored: a mistyped
threshold that is quietly dropped is a bug a user finds weeks later.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import math
import os
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import yaml

from streamrec.detection.config import DetectionConfig
from streamrec.detection.config import problems as detection_problems
from streamrec.errors import StreamrecError, why_not_a_file
from streamrec.zoo import is_remote
from streamrec.redaction import QUERY_KEY, redact
from streamrec.sources import parse_source

PACKAGE_DIR = Path(__file__).resolve().parent
# The folder holding the package: the checkout, or site-packages once installed. Paths in the
# configs (``checkpoint: streamrec/weights/...``) are written from here, so they resolve in both.
REPO_ROOT = PACKAGE_DIR.parent


def in_checkout() -> bool:
    """Running from a checkout (a clone or an editable install: ``pyproject.toml`` beside the
    package), not from an installed wheel."""
    return (REPO_ROOT / "pyproject.toml").is_file()


# The configs users read and edit: the checkout's configs/, or the copy a wheel installs as
# streamrec/configs (pyproject.toml's package-dir mapping).
CONFIG_DIR = REPO_ROOT / "configs" if in_checkout() else PACKAGE_DIR / "configs"
LABELS_DIR = PACKAGE_DIR / "labels"
DEFAULT_CONFIG = "slowfast_tiny"

CHECKOUT_FOLDERS = {"engines": "engines", "videos": ".cache"}  # runtime_dir's kinds, as named in a checkout


def runtime_dir(kind: str) -> Path:
    """Where streamrec writes what it makes at run time: ``engines`` (the engine cache) or ``videos``
    (the generated demo video). Running from a checkout (`in_checkout`) they stay in it, as
    ``engines/`` and ``.cache/``; running from an installed package they go to
    ``$XDG_CACHE_HOME/streamrec/<kind>`` (``~/.cache/streamrec/<kind>`` when unset), never into
    site-packages."""
    if in_checkout():
        return REPO_ROOT / CHECKOUT_FOLDERS[kind]
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "streamrec" / kind


@dataclass(frozen=True)
class ClipConfig:
    """What the model sees: PySlowFast's DATA.* and SLOWFAST.ALPHA."""

    num_frames: int  # frames of the Fast pathway (or of the only pathway)
    sampling_rate: int  # source frames between two Fast frames, at train_fps
    alpha: int | None = None  # Fast/Slow frame-rate ratio; None for single-pathway models
    short_side: int = 256  # resize the short side to this ...
    crop_size: int = 224  # ... then take this centre crop
    # "crop": as above (whole-frame classification); "pad": the whole frame, its long side scaled to
    # crop_size and centred on the mean colour, so nobody at the edges is cut off (per-person mode)
    fit: str = "crop"
    mean: tuple[float, float, float] = (0.45, 0.45, 0.45)
    std: tuple[float, float, float] = (0.225, 0.225, 0.225)
    train_fps: float = 30.0

    @property
    def span(self) -> int:
        """Source frames (at train_fps) covered by one clip."""
        return self.num_frames * self.sampling_rate

    @property
    def input_names(self) -> tuple[str, ...]:
        """Engine input names: ``slow``/``fast`` for two pathways, ``frames`` for one."""
        return ("slow", "fast") if self.alpha else ("frames",)

    @property
    def slow_frames(self) -> int:
        return self.num_frames // self.alpha if self.alpha else self.num_frames


@dataclass(frozen=True)
class ModelConfig:
    arch: str
    num_classes: int
    kwargs: dict[str, Any] = field(default_factory=dict)  # the builder's own arguments


@dataclass(frozen=True)
class ClassThreshold:
    enter: float
    exit: float


@dataclass(frozen=True)
class PostprocessConfig:
    """Turning per-hop scores into action segments."""

    smoothing_hops: int = 3  # average probabilities over the last N hops
    enter_threshold: float = 0.6  # an action starts when its smoothed score rises above this
    exit_threshold: float = 0.4  # ... and ends when it falls below this
    top_k: int = 3
    background_labels: tuple[str, ...] = ()  # labels that never start an action (e.g. "idle")
    thresholds: dict[str, ClassThreshold] = field(default_factory=dict)  # per-class overrides


@dataclass(frozen=True)
class PipelineConfig:
    hop_frames: int = 8  # predict every N source frames ...
    hop_seconds: float | None = None  # ... or every N seconds (takes precedence)
    realtime: bool = False  # files: pace at the file's fps and drop frames like a camera
    max_batch: int = 8  # views from several streams go to the engine together
    max_wait_ms: float = 5.0  # how long a partial batch may wait for more streams
    buffer_slack: int = 8  # extra ring-buffer frames beyond span + hop
    status_interval_s: float = 5.0
    # A live source without a steady run of frames for this long is reported stalled, and reopened at 2x.
    stall_timeout_s: float = 5.0
    # Frames missing for longer than this many frame intervals (an outage, a freeze, a timestamp jump)
    # break the stream: open actions end, smoothing restarts and a whole window refills first.
    max_gap_frames: int = 10
    assumed_fps: float = 30.0  # for sources that do not report their frame rate


@dataclass(frozen=True)
class ReconnectConfig:
    """Exponential backoff for network and camera sources."""

    initial_delay_s: float = 0.5
    max_delay_s: float = 10.0
    multiplier: float = 2.0
    max_retries: int = 5  # consecutive failed opens before the stream is given up; -1 = forever
    open_timeout_s: float = 10.0  # a network source that has not answered by then counts as a failed open


@dataclass(frozen=True)
class EventsConfig:
    publish: str | None = "tcp://127.0.0.1:5555"  # ZeroMQ PUB address; null disables
    send_hwm: int = 10000  # messages queued per subscriber before ZeroMQ drops for it
    stdout: bool = True
    predictions: bool = False  # also emit a `prediction` event every hop
    event_log: str | None = None  # append-only JSONL log of every event
    event_log_max_mb: float = 64.0
    # CURVE encryption and authentication (see docs/events.md): the publisher's secret key file and a
    # folder of the public keys of the subscribers allowed in. Make both with `run_stream.py keys`.
    curve_secret_key: str | None = None
    curve_allowed_clients: str | None = None
    # Publishing to a broker (publish: connect:tcp://...) with CURVE: the broker's public key file.
    curve_server_key: str | None = None
    metrics: str | None = None  # serve Prometheus metrics at HOST:PORT (e.g. 127.0.0.1:9108)
    # URLs are shown with their password and every query value masked (streamrec.redaction);
    # the values of these query keys show as they are (e.g. [channel, subtype]).
    show_query_keys: tuple[str, ...] = ()
    # Rotated parts of the event log kept (FILE.1 is the newest); null keeps every part, deleting none.
    event_log_keep: int | None = None
    # Message brokers that also receive every event, by URL: mqtt://, redis://, nats:// (streamrec.sinks).
    sinks: tuple[str, ...] = ()


@dataclass(frozen=True)
class EngineConfig:
    backend: str = "torch"  # a registered backend (streamrec.backends: torch, onnxruntime, tensorrt) or auto
    device: str = "auto"  # cpu | cuda | cuda:N | auto
    precision: str = "fp32"  # fp32 | fp16 | bf16 | int8: each backend registers those it runs
    threads: int = 0  # CPU threads per engine call; 0 = the library's default, or the cores split over parallel_calls
    # Engine calls that run at once, CPU engines only. On a few cores, two calls of one thread each
    # keep the cores busier than one call of two threads (which wait for each other at every layer,
    # and for any other thread that takes one of their cores): more clips/s, longer calls.
    parallel_calls: int = 1
    engine_file: str | None = None  # a prebuilt .onnx / TensorRT engine
    # ONNX Runtime on the CPU: rewrite the graph for its CPU kernels as it loads (backends/cpu_graph.py);
    # false runs the exported graph as it is
    cpu_graph: bool = True
    # ONNX Runtime: let its idle threads spin for work instead of sleeping. A lone engine's calls end
    # a little sooner; beside capture threads on a few cores the spinning takes the CPU they need.
    spin_wait: bool = False


STREAMING_FORMS = ("delayed_exact", "causal")  # streamrec.models.streaming's forms (it imports torch)
STREAMING_ARCHS = ("slowfast", "resnet3d")  # the archs whose networks have a streaming form


@dataclass(frozen=True)
class StreamingConfig:
    """Run the model's streaming form (`streamrec.models.streaming`): one engine call a hop takes
    the hop's new frames and each stream's carried state, not the whole clip. The hop is then in
    source frames at ``clip.train_fps`` (`streaming_hop_frames`), a whole number of units."""

    form: str = "delayed_exact"  # delayed_exact (symmetric kernels, answers later) | causal (distilled)
    # causal only: the head averages the last this many units of per-step features instead of a
    # clip's length; fewer answer sooner (a checkpoint distilled so records it: train --average-units)
    average_units: int | None = None


@dataclass(frozen=True)
class StreamConfig:
    id: str
    source: str
    hop_frames: int | None = None  # per-stream override of pipeline.hop_frames
    # Only look at this part of the frame: [x, y, width, height] as fractions of the frame,
    # so it survives a change of resolution (e.g. [0.5, 0, 0.5, 1] is the right half).
    region: tuple[float, ...] | None = None
    thresholds: dict[str, ClassThreshold] = field(default_factory=dict)  # per-class, over postprocess's


@dataclass(frozen=True)
class Config:
    model: ModelConfig
    clip: ClipConfig
    labels: str
    checkpoint: str | None = None
    postprocess: PostprocessConfig = PostprocessConfig()
    pipeline: PipelineConfig = PipelineConfig()
    reconnect: ReconnectConfig = ReconnectConfig()
    events: EventsConfig = EventsConfig()
    engine: EngineConfig = EngineConfig()
    streams: tuple[StreamConfig, ...] = ()
    # Per-person mode (an RoI-head model): find people on each clip's keyframe, track them, and
    # recognise what each one does (streamrec.persons); absent: one label set for the whole frame.
    detection: DetectionConfig | None = None
    streaming: StreamingConfig | None = None  # None: whole clips every hop
    name: str = ""  # the config's file stem, for engine cache names

    def replace(self, **changes: Any) -> "Config":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """Plain-data form, as loaded from YAML (round-trips through `config_from_dict`)."""
        data = dataclasses.asdict(self)
        model = data.pop("model")
        data["model"] = {"arch": model["arch"], "num_classes": model["num_classes"], **model["kwargs"]}
        return _plain(data)


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


# --------------------------------------------------------------------------- loading


def resolve_config_path(name_or_path: str | Path) -> Path:
    """A config is named by path or by stem in ``configs/`` (``slowfast_r50_8x8``)."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    candidate = CONFIG_DIR / f"{path.name}.yaml" if path.suffix == "" else CONFIG_DIR / path.name
    if candidate.is_file():
        return candidate
    known = sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))
    raise StreamrecError(
        f"config '{name_or_path}' {why_not_a_file(path)}; pass a YAML path or one of: {', '.join(known)}"
    )


def load_config(name_or_path: str | Path = DEFAULT_CONFIG, overrides: list[str] | None = None,
                values: Mapping[str, Any] | None = None, flags: Mapping[str, str] | None = None) -> Config:
    """Load a config file, set ``values`` (typed, by dotted path) and apply ``key.path=value``
    overrides (values parsed as YAML); see `config_from_dict`."""
    path = resolve_config_path(name_or_path)
    try:
        data = read_yaml(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise StreamrecError(f"config {path} is not valid YAML: {yaml_problem(exc)}; fix the syntax there "
                             "(close every bracket and quote, indent with spaces, each key in step with its "
                             "section's)") from None
    except UnicodeDecodeError:
        raise StreamrecError(f"config {path} is not a text file; pass a YAML config (a checkpoint goes in "
                             "--checkpoint)") from None
    if not isinstance(data, dict):
        raise StreamrecError(f"config {path} must be a mapping of sections; see configs/slowfast_tiny.yaml")
    data.setdefault("name", path.stem)
    return config_from_dict(data, source=str(path), overrides=overrides, values=values, flags=flags)


class ConfigLoader(yaml.SafeLoader):
    """YAML as configs and ``--set`` read it: PyYAML follows YAML 1.1, where ``1e-4`` (no dot) is
    a string, and a user writing a learning rate or a threshold that way means the number."""


ConfigLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"), list("-+0123456789"))


def read_yaml(text: str) -> Any:
    """One YAML document, read with `ConfigLoader`."""
    return yaml.load(text, Loader=ConfigLoader)


def yaml_problem(exc: yaml.YAMLError, lines: bool = True) -> str:
    """PyYAML's error in one line: what is wrong, where (line and column, counted from 1; the
    column alone with ``lines=False``, for a one-line value) and what it was reading, as in
    ``expected ',' or ']', but got ':' at line 3, column 5, while parsing a flow sequence from line 2,
    column 16``. PyYAML's own message spans several lines and quotes the text around the mistake
    (which may hold a secret): only its words are kept."""

    def at(mark: Any) -> str:
        return f"line {mark.line + 1}, column {mark.column + 1}" if lines else f"column {mark.column + 1}"

    problem = getattr(exc, "problem", None)
    if not problem:  # not a marked error: its first line
        return " ".join((str(exc).strip().splitlines() or [type(exc).__name__])[0].split())
    mark, context, context_mark = (getattr(exc, name, None) for name in ("problem_mark", "context", "context_mark"))
    text = f"{problem} at {at(mark)}" if mark is not None else problem
    if context:
        text += f", {context}" + (f" from {at(context_mark)}" if context_mark is not None else "")
    return " ".join(text.split())


def set_value(data: dict[str, Any], path: str, value: Any) -> None:
    """Set ``value`` at a dotted ``path`` (``events.event_log``) of plain config data, as it is:
    never parsed, so a file name from the command line stays that file name. `config_from_dict`
    then checks it like any value from a file."""
    *sections, key = path.split(".")
    if not all(part.strip() for part in (*sections, key)):
        raise StreamrecError(f"cannot set '{path}': a key path is names joined by single dots, e.g. "
                             "pipeline.hop_frames")
    node = data
    for part in sections:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise StreamrecError(f"cannot set '{path}': '{part}' is not a section")
    node[key] = value


def apply_override(data: dict[str, Any], item: str) -> None:
    """Set ``a.b.c=value`` in a nested dict; the value is parsed as YAML (``0.7``, ``[1,2]``)."""
    key, sep, raw = item.partition("=")
    if not sep or not key:
        raise StreamrecError(f"override '{item}' must look like section.key=value (e.g. pipeline.hop_frames=4)")
    try:
        value = read_yaml(raw)
    except yaml.YAMLError as exc:
        problem = yaml_problem(exc, lines=False)
        raise StreamrecError(f"override '{item}': the value is not valid YAML ({problem}); quote it") from None
    set_value(data, key.strip(), value)


def config_from_dict(data: dict[str, Any], source: str = "config", overrides: list[str] | None = None,
                     values: Mapping[str, Any] | None = None, flags: Mapping[str, str] | None = None) -> Config:
    """A checked config from plain data (a YAML file's, or a checkpoint's).

    ``values`` (typed, by dotted path: the command line's flags) are set first, then the
    ``overrides`` (``key.path=value`` strings, values parsed as YAML: ``--set``), so ``--set``
    has the last word; the result is checked as a whole. ``flags`` names the flag that set
    each of ``values`` (by dotted path), so that a bad value is reported against the flag the
    user typed (``--hop``, ``--set``), and against ``source`` only when it came from there.
    """
    data = copy.deepcopy(data)
    origins = Origins(source, dict(flags or {}))
    for path, value in (values or {}).items():
        set_value(data, path, value)
    for item in overrides or []:
        apply_override(data, item)
        origins.flags[item.partition("=")[0].strip()] = "--set"
    model = data.get("model")
    if not isinstance(model, dict) or "arch" not in model or "num_classes" not in model:
        raise StreamrecError(f"{origins.of('model')}: section 'model' needs at least 'arch' and 'num_classes'")
    arch, num_classes = model.pop("arch"), model.pop("num_classes")
    data["model"] = {"arch": arch, "num_classes": num_classes, "kwargs": model}
    streams = data.get("streams") or []
    if not isinstance(streams, list):
        raise StreamrecError(f"{origins.of('streams')}: 'streams' must be a list of {{id, source}} entries")
    data["streams"] = [parse_stream_entry(entry, i, origins.of("streams")) for i, entry in enumerate(streams)]
    if data.get("checkpoint") is not None and not isinstance(data["checkpoint"], str):
        raise StreamrecError(f"{origins.of('checkpoint')}: 'checkpoint' must be a file path, zoo:NAME or URL, "
                             f"got {redact(repr(data['checkpoint']))}")
    if data.get("checkpoint") and not is_remote(data["checkpoint"]):  # a zoo name or URL is fetched when loaded
        data["checkpoint"] = str(found_path(data["checkpoint"]))
    config = _build(Config, data, origins, "")
    validate(config, source, origins)
    return config


@dataclass
class Origins:
    """Where a config's values came from, for error messages: the flag that set a dotted path
    (``--hop``, ``--set``), else ``source`` (the config file)."""

    source: str
    flags: dict[str, str] = field(default_factory=dict)  # dotted path: flag

    def of(self, *paths: str) -> str:
        """The flag that set the first of ``paths`` a flag set (or a section holding it), else the source."""
        for path in paths:
            setters = [given for given in self.flags if path == given or path.startswith(given + ".")]
            if setters:
                return self.flags[max(setters, key=len)]
        return self.source


def parse_stream_entry(entry: Any, index: int, source: str = "command line") -> dict[str, Any]:
    """A stream is ``{id, source}``, a bare source string, or ``ID=SOURCE``. An entry without an
    id is ``cam<index>``, ``index`` being its position in the list (0-based), so that naming one
    stream never renames another."""
    if isinstance(entry, dict):
        entry = dict(entry)
        entry.setdefault("id", f"cam{index}")
        return entry
    if isinstance(entry, (str, int)):
        text = str(entry)
        # Anything before the first '=' without ':', '/' or a backslash is an id (checked in `validate`);
        # a path or URL holding '=' keeps it ("./a=b.mp4", "rtsp://host/s?user=a").
        match = re.match(r"^([^=:/\\]+)=(.+)$", text)
        if match:
            return {"id": match.group(1), "source": match.group(2)}
        return {"id": f"cam{index}", "source": text}
    raise StreamrecError(f"{source}: stream entry {redact(repr(entry))} must be a source string or {{id, source}}")


def _build(cls: type, data: Any, origins: Origins, where: str) -> Any:
    if not isinstance(data, dict):
        raise StreamrecError(f"{origins.of(where)}: '{where or 'config'}' must be a mapping, got {redact(repr(data))}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for key, value in data.items():
        full = f"{where}.{key}" if where else key
        if key not in fields:
            close = difflib.get_close_matches(key, list(fields), n=1)
            hint = f"; did you mean '{close[0]}'?" if close else f"; valid keys: {', '.join(fields)}"
            raise StreamrecError(f"{origins.of(full)}: unknown config key '{full}'{hint}")
        kwargs[key] = _coerce(hints[key], value, origins, full)
    missing = [
        name
        for name, f in fields.items()
        if name not in kwargs and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise StreamrecError(f"{origins.of(where)}: section '{where or 'config'}' is missing required key(s): "
                             f"{', '.join(missing)}")
    return cls(**kwargs)


def _coerce(hint: Any, value: Any, origins: Origins, where: str) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(inner[0], value, origins, where)
    if dataclasses.is_dataclass(hint):
        if hint is ClassThreshold and isinstance(value, (list, tuple)) and len(value) == 2:
            value = {"enter": value[0], "exit": value[1]}
        return _build(hint, value, origins, where)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise StreamrecError(f"{origins.of(where)}: '{where}' must be a list, got {redact(repr(value))}")
        item_type = args[0]
        return tuple(_coerce(item_type, v, origins, where) for v in value)
    if origin is dict:
        if not isinstance(value, dict):
            raise StreamrecError(f"{origins.of(where)}: '{where}' must be a mapping, got {redact(repr(value))}")
        return {str(k): _coerce(args[1], v, origins, f"{where}.{k}") for k, v in value.items()}
    if hint is Any:
        return value
    if hint is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if hint is str and isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)  # a camera index written as a number
    if hint in (int, float, str, bool) and not (isinstance(value, hint) and not (hint is int and isinstance(value, bool))):
        raise StreamrecError(f"{origins.of(where)}: '{where}' must be {hint.__name__}, got {redact(repr(value))}")
    return value


# Every numeric value's allowed range, both ends included: a value outside is refused before
# anything starts, never found by a crashed thread or a flood of events.
RANGES: dict[str, tuple[float, float]] = {
    "model.num_classes": (1, 100_000),
    "clip.num_frames": (1, 1024),
    "clip.sampling_rate": (1, 100),
    "clip.alpha": (1, 64),
    "clip.short_side": (16, 4096),
    "clip.crop_size": (16, 4096),
    "clip.train_fps": (1, 1000),
    "postprocess.smoothing_hops": (1, 1000),
    "streaming.average_units": (1, 1000),  # and at most the clip's units, checked when the network is built
    "postprocess.top_k": (1, 1000),
    "pipeline.hop_frames": (1, 100_000),
    "pipeline.hop_seconds": (0.001, 3600),
    "pipeline.max_batch": (1, math.inf),  # bounded by memory: see _memory_problems
    "pipeline.max_wait_ms": (0, 10_000),
    "pipeline.buffer_slack": (0, math.inf),  # bounded by memory: see _memory_problems
    "pipeline.status_interval_s": (0.1, 86_400),
    # A stall shorter than a second is a slow frame (a 1 fps camera, network jitter), not a stall.
    "pipeline.stall_timeout_s": (1, 3600),
    "pipeline.max_gap_frames": (2, 10_000),
    "pipeline.assumed_fps": (1, 1000),
    "reconnect.initial_delay_s": (0.01, 3600),
    "reconnect.max_delay_s": (0.01, 3600),
    "reconnect.multiplier": (1, 10),
    "reconnect.max_retries": (-1, 1_000_000),  # -1: forever
    "reconnect.open_timeout_s": (0.1, 600),
    "events.send_hwm": (1, 10_000_000),  # ZeroMQ reads 0 as no limit: unbounded memory
    "events.event_log_max_mb": (0.001, 1_048_576),
    "events.event_log_keep": (1, 1_000_000),  # null: every part
    "engine.threads": (0, 1024),
    "engine.parallel_calls": (1, 64),
}
# Host memory that one batch of clips, or one stream's ring buffer, may take.
MEMORY_LIMIT_BYTES = 8 * 2**30
STREAM_ID = re.compile(r"[\w-]+")  # letters, digits, '_', '-': an id starts each event's topic, ID.TYPE
ZMQ_TRANSPORTS = ("tcp", "ipc", "inproc", "pgm", "epgm", "ws", "wss", "tipc", "vmci")


def validate(config: Config, source: str, origins: Origins | None = None) -> None:
    """Every value in its range (`RANGES`) and consistent with the others, or one line naming
    the value, where it came from (a flag, ``--set`` or the config file) and what is allowed.
    Reads the file system only for the CURVE folder of a publishing config."""
    origins = origins or Origins(source)
    for paths, message in _problems(config):
        raise StreamrecError(f"{origins.of(*paths)}: {message}")
    from streamrec.backends import AUTO, backend_names, unknown_backend  # the registry reads this module

    if config.engine.backend not in (*backend_names(), AUTO):
        raise StreamrecError(f"{origins.of('engine.backend')}: {unknown_backend(config.engine.backend)}")


Problems = typing.Iterator[tuple[tuple[str, ...], str]]  # (the config paths involved, what is wrong)


def _problems(config: Config) -> Problems:
    clip, post, engine = config.clip, config.postprocess, config.engine
    checks = [  # (paths, ok, message)
        (("engine.threads", "engine.parallel_calls"), engine.threads >= 0 and engine.parallel_calls >= 1,
         "engine.threads must be >= 0 (0: the default) and engine.parallel_calls >= 1"),
        (("postprocess.exit_threshold", "postprocess.enter_threshold"),
         0.0 <= post.exit_threshold <= post.enter_threshold <= 1.0,
         "postprocess needs 0 <= exit_threshold <= enter_threshold <= 1"),
        (("postprocess.thresholds",), all(0 <= t.exit <= t.enter <= 1 for t in post.thresholds.values()),
         "postprocess.thresholds entries need 0 <= exit <= enter <= 1"),
    ]
    for paths, ok, message in checks:
        if not ok:
            yield paths, message
    for path in RANGES:
        value = _value(config, path)
        problem = None if value is None else range_problem(path, value)
        if problem:
            yield (path,), problem
    checks = [
        (("clip.alpha", "clip.num_frames"), clip.alpha is None or clip.num_frames % clip.alpha == 0,
         "clip.num_frames must be a multiple of clip.alpha"),
        (("clip.crop_size", "clip.short_side"), clip.crop_size <= clip.short_side,
         "clip.crop_size must not exceed clip.short_side"),
        (("clip.fit",), clip.fit in ("crop", "pad"), f"clip.fit must be crop or pad, got {clip.fit!r}"),
        (("clip.mean", "clip.std"), len(clip.mean) == 3 and len(clip.std) == 3,
         "clip.mean and clip.std need 3 values (R, G, B)"),
        (("clip.mean",), all(0 <= m <= 1 for m in clip.mean), "clip.mean values must be from 0 to 1 (pixels scaled to 0..1)"),
        (("clip.std",), all(0.001 <= s <= 1 for s in clip.std), "clip.std values must be from 0.001 to 1"),
        (("reconnect.max_delay_s", "reconnect.initial_delay_s"),
         config.reconnect.initial_delay_s <= config.reconnect.max_delay_s,
         "reconnect.initial_delay_s must not exceed reconnect.max_delay_s"),
    ]
    for paths, ok, message in checks:
        if not ok:
            yield paths, message
    yield from _memory_problems(config)
    yield from _stream_problems(config)
    yield from _events_problems(config)
    if config.detection is not None:
        yield from detection_problems(config.detection)
    if config.streaming is not None:
        yield from _streaming_problems(config)


def range_problem(path: str, value: float) -> str | None:
    """What is wrong with ``value`` as the numeric config value at ``path`` (its range in `RANGES`),
    or None when it is in range; for a command's own flag that takes the same value
    (``bench engine --parallel-calls LIST``) as much as for the config."""
    low, high = RANGES[path]
    if low <= value <= high:  # nan is not
        return None
    allowed = f"at least {_number(low)}" if high == math.inf else f"from {_number(low)} to {_number(high)}"
    return f"{path} must be {allowed}, got {_number(value)}"


def _value(config: Config, path: str) -> Any:
    """The value at ``path``, or None inside an optional section the config does not have."""
    node: Any = config
    for part in path.split("."):
        if node is None:
            return None
        node = getattr(node, part)
    return node


def _number(value: float) -> str:
    return str(value) if isinstance(value, int) else f"{value:g}"


def _memory_problems(config: Config) -> Problems:
    """A batch of clips and a stream's ring buffer are allocated whole: each must fit in
    `MEMORY_LIMIT_BYTES`, whatever the clip size makes of ``max_batch`` and ``buffer_slack``."""
    clip, pipe = config.clip, config.pipeline
    frame_bytes = clip.crop_size * clip.crop_size * 3
    view_bytes = (clip.num_frames + (clip.slow_frames if clip.alpha else 0)) * frame_bytes
    limit = f"{MEMORY_LIMIT_BYTES / 2**30:g} GiB"
    most = MEMORY_LIMIT_BYTES // view_bytes
    if pipe.max_batch > most:
        yield ("pipeline.max_batch",), (
            f"pipeline.max_batch must be from 1 to {most}, got {pipe.max_batch}: a batch of {clip.crop_size}x"
            f"{clip.crop_size} clips takes {view_bytes / 2**20:.2f} MiB a clip, and one batch may take {limit}")
    # The ring buffer holds a clip's span, a hop and the slack, at the training frame rate
    # (a faster source needs proportionally more).
    hops = [pipe.hop_frames, *(s.hop_frames for s in config.streams if s.hop_frames)]
    if pipe.hop_seconds:
        hops.append(math.ceil(pipe.hop_seconds * max(pipe.assumed_fps, clip.train_fps)))
    frames = clip.span + max(hops) + pipe.buffer_slack
    if frames * frame_bytes > MEMORY_LIMIT_BYTES:
        yield ("pipeline.buffer_slack", "pipeline.hop_frames", "pipeline.hop_seconds", "streams"), (
            f"a stream's ring buffer would hold {frames} frames ({frames * frame_bytes / 2**30:.1f} GiB: the clip's "
            f"span, the hop and pipeline.buffer_slack {pipe.buffer_slack}); at most {limit}: lower "
            "pipeline.buffer_slack or the hop")


def _stream_problems(config: Config) -> Problems:
    seen: set[str] = set()
    for stream in config.streams:
        if not STREAM_ID.fullmatch(stream.id):
            yield ("streams",), (
                f"stream id {stream.id!r} may hold only letters, digits, '_' and '-': it starts each event's topic "
                "(ID.TYPE), where '.' separates, and brokers read / # + * > as separators or wildcards; rename it "
                "(a file whose name holds '=': pass it as ./NAME)")
        if stream.id in seen:
            yield ("streams",), (
                f"stream id '{stream.id}' is used twice; an unnamed source is cam<N>, N its position among the "
                "sources (0, 1, ...): name the streams with ID=SOURCE")
        seen.add(stream.id)
        try:
            parse_source(stream.source)
        except StreamrecError as err:
            yield ("streams",), f"stream '{stream.id}': {err}"
        if stream.hop_frames is not None and not 1 <= stream.hop_frames <= RANGES["pipeline.hop_frames"][1]:
            yield ("streams",), (f"stream '{stream.id}': hop_frames must be from 1 to "
                                 f"{RANGES['pipeline.hop_frames'][1]}, got {stream.hop_frames}")
        region = stream.region
        if region is not None and not (len(region) == 4 and all(0 <= v <= 1 for v in region)
                                       and region[2] > 0 and region[3] > 0
                                       and region[0] + region[2] <= 1 and region[1] + region[3] <= 1):
            yield ("streams",), "a stream's region is [x, y, width, height] as fractions of the frame, inside [0, 1]"
        if not all(0 <= t.exit <= t.enter <= 1 for t in stream.thresholds.values()):
            yield ("streams",), "a stream's thresholds entries need 0 <= exit <= enter <= 1"


def without_deployment(config: Config) -> Config:
    """``config`` without what belongs to one deployment rather than to a model: its cameras
    (``streams``) and its brokers (``events.sinks``), whose URLs may hold credentials. What a
    checkpoint and a training run's ``config.yaml`` record, so that weights can be shared."""
    return config.replace(streams=(), events=dataclasses.replace(config.events, sinks=()))


def write_config(path: str | Path, config: Config) -> None:
    """``config`` as YAML that `load_config` reads back, without its deployment: the
    ``config.yaml`` a training or distillation run leaves beside the weights it made."""
    Path(path).write_text(yaml.safe_dump(without_deployment(config).to_dict(), sort_keys=False))


def streaming_hop_frames(config: Config) -> int:
    """A streaming config's hop in source frames at ``clip.train_fps`` (its unit grid's frames):
    ``pipeline.hop_seconds`` at that rate, else ``pipeline.hop_frames``."""
    pipe = config.pipeline
    return max(1, round(pipe.hop_seconds * config.clip.train_fps)) if pipe.hop_seconds else pipe.hop_frames


def _streaming_problems(config: Config) -> Problems:
    """The streaming form runs SlowFast and the bottleneck ResNet, whole-frame, at one hop of
    whole units (a SlowFast unit is one Slow frame: ``sampling_rate * alpha`` frames; a
    single-pathway ResNet's unit depends on its temporal strides and is checked when its engine
    is made)."""
    form, arch = config.streaming.form, config.model.arch
    if form not in STREAMING_FORMS:
        close = difflib.get_close_matches(form, STREAMING_FORMS, n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        yield ("streaming.form",), f"streaming.form must be {' or '.join(STREAMING_FORMS)}, got {form!r}{hint}"
    if arch not in STREAMING_ARCHS or config.model.kwargs.get("nonlocal_blocks"):
        yield ("model.arch", "streaming"), (
            f"model {arch} has no streaming form (only SlowFast and the bottleneck ResNet without non-local blocks "
            "run over carried state: docs/streaming.md); drop the streaming: section to run whole clips")
    if config.streaming.average_units is not None and form != "causal":
        yield ("streaming.average_units",), (
            "streaming.average_units shortens the causal form's running average; the delayed-exact form averages a "
            "whole clip, as the clip model does: set streaming.form=causal or drop average_units")
    if config.detection is not None:
        yield ("detection", "streaming"), ("per-person mode (detection:) classifies boxes on whole clips and has no "
                                           "streaming form; drop the streaming: section or the detection: section")
    hop = streaming_hop_frames(config)
    others = sorted({s.hop_frames for s in config.streams if s.hop_frames and s.hop_frames != hop})
    if others:
        yield ("streams",), (f"a streaming config runs one hop for every stream ({hop} frames), but streams ask for "
                             f"{', '.join(map(str, others))}; drop the streams' hop_frames or set pipeline.hop_frames")
    clip = config.clip
    if clip.alpha and arch == "slowfast":
        unit = clip.sampling_rate * clip.alpha
        if hop < unit or hop % unit:
            given = (f"pipeline.hop_seconds {config.pipeline.hop_seconds:g} ({hop} frames at clip.train_fps "
                     f"{clip.train_fps:g})" if config.pipeline.hop_seconds else f"pipeline.hop_frames {hop}")
            yield ("pipeline.hop_frames", "pipeline.hop_seconds"), (
                f"{given} is not a whole number of units: a streaming SlowFast advances one Slow frame, "
                f"{unit} frames (clip.sampling_rate {clip.sampling_rate} x clip.alpha {clip.alpha}), at a time; "
                f"use a hop of {unit}, {2 * unit}, {3 * unit}, ... frames")


def _events_problems(config: Config) -> Problems:
    events = config.events
    binds = events.publish is not None and not events.publish.startswith("connect:")  # connect: through a broker
    if events.publish is not None:
        endpoint = events.publish.removeprefix("connect:").removeprefix("bind:")
        if problem := zmq_address_problem(endpoint, bind=binds):
            yield ("events.publish",), f"events.publish {problem}"
    if events.metrics is not None:
        port = events.metrics.rpartition(":")[2]  # no host: 127.0.0.1
        if not (port.isdigit() and 1 <= int(port) <= 65535):
            yield ("events.metrics",), (f"events.metrics '{events.metrics}' must be HOST:PORT with a port from 1 to "
                                        "65535, e.g. 127.0.0.1:9108")
    for key in events.show_query_keys:
        if not QUERY_KEY.fullmatch(key):
            yield ("events.show_query_keys",), (f"events.show_query_keys holds {key!r}: a query key, without "
                                                "'=', '&', '?', '#' or white space (e.g. channel)")
    if binds:
        yield from _curve_problems(events)


def _curve_problems(events: EventsConfig) -> Problems:
    """A bound publisher's CURVE is on with both files, off with neither: half of it would publish
    in the clear."""
    secret, allowed = events.curve_secret_key, events.curve_allowed_clients
    if allowed and not secret:
        yield ("events.curve_allowed_clients", "events.curve_secret_key"), (
            "events.curve_allowed_clients is set but events.curve_secret_key is not, so events would go out "
            "unencrypted to anyone; pass the publisher's .key_secret too (--curve-secret-key; make one with "
            "`run_stream.py keys server`)")
    elif secret and not allowed:
        yield ("events.curve_secret_key", "events.curve_allowed_clients"), (
            "CURVE needs events.curve_allowed_clients: a folder of the subscribers' public *.key files (make them "
            "with `run_stream.py keys`)")
    elif allowed and not Path(allowed).is_dir():
        yield ("events.curve_allowed_clients",), (
            f"events.curve_allowed_clients '{allowed}' is not a folder; make one holding the subscribers' public "
            "*.key files (made by `run_stream.py keys`)")
    elif allowed and not any(Path(allowed).glob("*.key")):
        yield ("events.curve_allowed_clients",), (
            f"events.curve_allowed_clients '{allowed}' holds no public key (*.key), so no subscriber could ever "
            "connect; copy the subscribers' .key files (made by `run_stream.py keys NAME`) into it")


def zmq_address_problem(address: str, bind: bool) -> str | None:
    """Why ``address`` is not a ZeroMQ endpoint to bind (or connect) to, or None."""
    transport, sep, rest = address.partition("://")
    if not sep or transport not in ZMQ_TRANSPORTS or not rest:
        return (f"'{redact(address)}' is not a ZeroMQ address; write it as tcp://HOST:PORT (e.g. "
                "tcp://127.0.0.1:5555) or ipc://PATH")
    if transport == "tcp":
        host, colon, port = rest.rpartition(":")
        if not (colon and host and (port.isdigit() and 1 <= int(port) <= 65535 or bind and port == "*")):
            return (f"'{redact(address)}' needs a host and a port from 1 to 65535: tcp://HOST:PORT, e.g. "
                    "tcp://127.0.0.1:5555")
    return None


# --------------------------------------------------------------------------- labels


def found_path(path: str | Path) -> Path:
    """A relative path as given if it exists from here, else from the repository root (where the
    configs' own paths are written from), so running from another folder still finds them."""
    path = Path(path)
    if path.exists() or path.is_absolute() or not (REPO_ROOT / path).exists():
        return path
    return REPO_ROOT / path


def labels_path(labels: str) -> Path:
    """A packaged label set (``kinetics400``) or a path to a text file."""
    packaged = LABELS_DIR / f"{labels}.txt"
    if packaged.is_file():
        return packaged
    path = found_path(labels)
    if path.is_file():
        return path
    known = sorted(p.stem for p in LABELS_DIR.glob("*.txt"))
    raise StreamrecError(f"label file '{labels}' not found; give a path or one of: {', '.join(known)}")


def load_labels(config: Config) -> list[str]:
    """Class names, checked against the model's class count."""
    path = labels_path(config.labels)
    try:
        names = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    except UnicodeDecodeError:
        raise StreamrecError(f"label file {path} is not a text file; give one class name a line") from None
    if len(names) != config.model.num_classes:
        raise StreamrecError(
            f"label file {path} has {len(names)} names but the model has {config.model.num_classes} classes; "
            "use the label file the checkpoint was trained with or set model.num_classes"
        )
    return names
