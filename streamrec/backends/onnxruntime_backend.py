"""ONNX Runtime engine: an exported graph on the CPU, or on CUDA / TensorRT where the installed
onnxruntime has those execution providers.

Runs without PyTorch (a Jetson or a small server installs onnxruntime alone); a test imports
this module in a fresh interpreter and checks that torch stays unimported. On the CPU provider
the graph is first rewritten for ONNX Runtime's CPU kernels (`cpu_graph`).

On a GPU the providers get the engine's device (``cuda:N`` as ``device_id``), and TensorRT's
provider gets the batch range up front (``trt_profile_*_shapes``), or it would build a new
engine, minutes long, for each larger batch it meets. ONNX Runtime drops a GPU provider it
cannot start (CUDA or cuDNN libraries missing) with a log line and runs on the CPU; the
engine checks which providers the session really has: ``device=cuda`` then refuses in one
line, ``auto`` says so and goes on on the CPU.

A graph with a ``boxes`` input is an RoI model's (see `streamrec.backends.inputs`): the engine
then takes boxes, returns one row of logits per box and tells the TensorRT provider their range.
A graph with a ``state`` input is a streaming model's: the engine runs it with ``step``, which
takes each stream's state row and returns its new one beside the logits.
"""

from __future__ import annotations

import json
import logging
import queue
from pathlib import Path
from typing import Mapping

import numpy as np

from streamrec.backends import parallel_calls_need_cpu
from streamrec.backends.cpu_graph import cpu_session_inputs
from streamrec.backends.cuda_memory import parse_device_index
from streamrec.backends.engine_cache import cache_dir
from streamrec.backends.inputs import (
    MAX_BOXES_PER_CLIP,
    BoxesSpec,
    InputSpec,
    StateSpec,
    StreamingSpec,
    checked_infer,
    checked_step,
)
from streamrec.errors import StreamrecError
from streamrec.export import METADATA_KEY

log = logging.getLogger(__name__)


GPU_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider")


def tensorrt_profile(specs: tuple[InputSpec, ...], max_batch: int, boxes: BoxesSpec | None = None,
                     state: StateSpec | None = None) -> dict[str, str]:
    """The TensorRT provider's one optimization profile: every clip input (and a streaming model's
    state) from batch 1 to ``max_batch``, tuned for ``max_batch``, and an RoI model's boxes from 1
    to their maximum (``name:DIMxDIM...`` joined by commas, as trtexec's ``--minShapes``)."""
    def shapes(batch: int, box_count: int) -> str:
        clips = [f"{s.name}:{'x'.join(map(str, (batch, *s.clip_shape)))}" for s in specs]
        return ",".join([*clips, *([f"{boxes.name}:{box_count}x{boxes.columns}"] if boxes else []),
                         *([f"{state.name}:{batch}x{state.size}"] if state else [])])

    most = boxes.max_boxes if boxes else 0
    return {"trt_profile_min_shapes": shapes(1, 1), "trt_profile_opt_shapes": shapes(max_batch, most),
            "trt_profile_max_shapes": shapes(max_batch, most)}


def choose_providers(available: list[str], device: str, specs: tuple[InputSpec, ...] = (),
                     max_batch: int | None = None, boxes: BoxesSpec | None = None,
                     state: StateSpec | None = None) -> list:
    """Execution providers, fastest first: TensorRT, CUDA, then the CPU, which is always there.

    ``device=cpu`` keeps to the CPU; ``device=cuda`` requires a GPU provider; ``cuda:N`` picks
    the GPU. The TensorRT provider caches its engines and timings in ``engines/onnxruntime-trt/``
    and, given the inputs (``specs``) and a dynamic batch up to ``max_batch``, builds one
    engine for every batch size (and, with ``boxes``, every number of boxes).
    """
    if device == "cpu":
        return ["CPUExecutionProvider"]
    device_id = parse_device_index(device)
    providers: list = []
    if "TensorrtExecutionProvider" in available:
        cache = str(cache_dir() / "onnxruntime-trt")
        options = {
            "device_id": device_id,
            "trt_engine_cache_enable": True, "trt_engine_cache_path": cache,
            "trt_timing_cache_enable": True, "trt_timing_cache_path": cache,
        }
        if specs and max_batch:
            options |= tensorrt_profile(specs, max_batch, boxes, state)
        providers.append(("TensorrtExecutionProvider", options))
    if "CUDAExecutionProvider" in available:
        providers.append(("CUDAExecutionProvider", {"device_id": device_id}))
    if device.startswith("cuda") and not providers:
        raise StreamrecError("engine.device=cuda but this onnxruntime has no CUDA or TensorRT provider; "
                             "install onnxruntime-gpu or use engine.device=cpu")
    return [*providers, "CPUExecutionProvider"]


def check_providers(asked: list, session, device: str, path: Path) -> None:
    """Compare the providers a session really runs with those asked for: a GPU provider ONNX
    Runtime could not start is one line for ``device=cuda``, and a warning for ``auto``."""
    names = [p if isinstance(p, str) else p[0] for p in asked]
    active = session.get_providers()
    missing = [name for name in names if name not in active]
    if not missing:
        return
    gpu_asked = [name for name in names if name in GPU_PROVIDERS]
    if device.startswith("cuda") and not any(name in active for name in GPU_PROVIDERS):
        raise StreamrecError(
            f"ONNX Runtime could not start {' or '.join(gpu_asked)} for {path.name} and would run it on the CPU "
            "(its log above says why: usually the CUDA 12 or cuDNN 9 libraries onnxruntime-gpu needs are not "
            "found); install them, or use engine.device=cpu")
    log.warning("ONNX Runtime could not start %s (its log above says why); %s runs on %s", ", ".join(missing),
                path.name, ", ".join(active))


def session_device(session) -> str:
    """Where a session computes: its first execution provider does the work (``cuda:N`` for the
    CUDA and TensorRT providers, with the device id they were given)."""
    provider = session.get_providers()[0]
    if provider == "CPUExecutionProvider":
        return "cpu"
    return f"cuda:{session.get_provider_options().get(provider, {}).get('device_id', 0)}"


def graph_inputs(path: Path) -> list | None:
    """The graph's inputs (ONNX ``ValueInfoProto``), read before a session is made, for the TensorRT
    provider's profile; None where the ``onnx`` package is missing to read them (the provider then
    gets no profile) or the file does not parse (ONNX Runtime says why, in one line, when it loads it)."""
    try:
        import onnx
    except ImportError:
        return None
    try:
        return list(onnx.load(str(path), load_external_data=False).graph.input)
    except Exception:
        return None


def state_of(inputs: list) -> StateSpec | None:
    """A streaming graph's state input, read from its ``ValueInfoProto`` inputs (for the profile)."""
    found = next((i for i in inputs if i.name == StateSpec.name), None)
    dims = found.type.tensor_type.shape.dim if found is not None else []
    return StateSpec(dims[1].dim_value) if len(dims) == 2 and dims[1].HasField("dim_value") else None


def fixed_batch_of(inputs: list | None) -> int | None:
    """The fixed batch size of a graph's first input, None for a dynamic one or unknown inputs."""
    dims = inputs[0].type.tensor_type.shape.dim if inputs else []
    return dims[0].dim_value if dims and dims[0].HasField("dim_value") else None


class OnnxRuntimeEngine:
    """An exported graph in ONNX Runtime. With ``parallel_calls`` > 1 it holds one session per
    call that may run at once, each with its own ``threads``: sessions sharing one intra-op pool
    would split its threads between concurrent calls."""

    name = "onnxruntime"

    def __init__(self, path: str | Path, specs: tuple[InputSpec, ...], num_classes: int, *, device: str = "auto",
                 threads: int = 0, max_batch: int = 64, cpu_graph: bool = True, parallel_calls: int = 1,
                 max_boxes: int | None = None, spin_wait: bool = False):
        """``max_boxes``: for an RoI model's graph, the most boxes a call takes (default:
        `MAX_BOXES_PER_CLIP` for each clip of ``max_batch``). ``spin_wait``: idle intra-op threads
        spin (ONNX Runtime's default) rather than sleep (`EngineConfig.spin_wait`)."""
        import onnxruntime as ort

        path = Path(path)
        if not path.is_file():
            raise StreamrecError(f"ONNX file {path} not found; export one with `run_stream.py export`")
        options = ort.SessionOptions()
        options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin_wait else "0")
        if threads > 0:
            options.intra_op_num_threads = threads
        available = ort.get_available_providers()
        inputs = graph_inputs(path) if device != "cpu" and "TensorrtExecutionProvider" in available else None
        profiled = inputs is not None and fixed_batch_of(inputs) is None
        self.max_boxes = max_boxes or max_batch * MAX_BOXES_PER_CLIP
        takes_boxes = any(i.name == BoxesSpec.name for i in inputs or [])
        boxes = BoxesSpec(specs[0].size, self.max_boxes) if takes_boxes else None
        providers = choose_providers(available, device, specs, max_batch if profiled else None, boxes,
                                     state_of(inputs or []))
        on_cpu = providers == ["CPUExecutionProvider"]
        if parallel_calls > 1 and not on_cpu:
            raise parallel_calls_need_cpu("onnxruntime")
        graph, disabled = cpu_session_inputs(path) if on_cpu and cpu_graph else (str(path), [])
        try:
            sessions = [ort.InferenceSession(graph, options, providers=providers, disabled_optimizers=disabled)
                        for _ in range(parallel_calls)]
        except Exception as err:  # onnxruntime raises its own exception types, one per failure kind
            first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise StreamrecError(f"ONNX Runtime cannot load {path}: {first_line}") from None
        self.session = sessions[0]  # what the graph is, for checks, metadata and providers
        check_providers(providers, self.session, device, path)
        self.device = session_device(self.session)
        self.parallel_calls = parallel_calls
        self._idle_sessions: queue.SimpleQueue = queue.SimpleQueue()
        for session in sessions:
            self._idle_sessions.put(session)
        self.specs = specs
        self.path = path
        self.num_classes = num_classes
        self.metadata = self._metadata()
        self.state = self._state_input()  # None: the model classifies whole clips
        self.streaming = StreamingSpec.of_graph(self.metadata, self.state)  # how calls line up with frames
        fixed_batch = self._check_graph(num_classes)
        self.fixed_batch = fixed_batch  # None: the batch axis is dynamic
        self.max_batch = fixed_batch or max_batch
        self.boxes = self._boxes_input()  # None: the model classifies whole clips
        log.info("onnxruntime engine %s on %s%s", path.name, ", ".join(self.session.get_providers()),
                 f", {parallel_calls} sessions" if parallel_calls > 1 else "")

    @property
    def takes_boxes(self) -> bool:
        return self.boxes is not None

    def infer(self, inputs: Mapping[str, np.ndarray]) -> np.ndarray:
        size, boxes = checked_infer(inputs, self.specs, self.max_batch, boxes=self.boxes, state=self.state,
                                    source=f"graph {self.path.name}")
        if boxes is not None and not len(boxes):
            return np.zeros((0, self.num_classes), np.float32)  # no one to classify
        feeds = self._clip_feeds(inputs, size)
        if boxes is not None:
            feeds[BoxesSpec.name] = boxes  # they name real clips only: the padding gets no rows
        (logits,) = self._run(["logits"], feeds)
        rows = len(boxes) if boxes is not None else size
        return logits[:rows].astype(np.float32, copy=False)

    def step(self, inputs: Mapping[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """One call of a streaming graph: each clip's new frames and its stream's ``state`` row in,
        ``(logits [B, num_classes], new_state [B, state size])`` out."""
        size, state = checked_step(inputs, self.specs, self.max_batch, state=self.state,
                                   source=f"graph {self.path.name}")
        feeds = self._clip_feeds({**inputs, StateSpec.name: state}, size, with_state=True)
        logits, new_state = self._run(["logits", StateSpec.output], feeds)
        return logits[:size].astype(np.float32, copy=False), new_state[:size].astype(np.float32, copy=False)

    def _clip_feeds(self, inputs: Mapping[str, np.ndarray], size: int, with_state: bool = False) -> dict:
        """The clips (and state) as ONNX Runtime takes them; a fixed-batch export's are padded
        with zeros, whose rows are dropped from what comes back."""
        names = [s.name for s in self.specs] + ([StateSpec.name] if with_state else [])
        feeds = {name: np.ascontiguousarray(inputs[name]) for name in names}
        if self.fixed_batch and size < self.fixed_batch:
            feeds = {name: np.concatenate([a, np.zeros((self.fixed_batch - size, *a.shape[1:]), a.dtype)])
                     for name, a in feeds.items()}
        return feeds

    def _run(self, outputs: list[str], feeds: dict) -> list[np.ndarray]:
        session = self._idle_sessions.get()  # more callers than sessions wait their turn here
        try:
            return session.run(outputs, feeds)
        finally:
            self._idle_sessions.put(session)

    def _metadata(self) -> dict | None:
        text = self.session.get_modelmeta().custom_metadata_map.get(METADATA_KEY)
        return json.loads(text) if text else None

    def _check_graph(self, num_classes: int) -> int | None:
        """Check the graph against the config's contract; returns its fixed batch size, if it has one."""
        graph_inputs = {i.name: i for i in self.session.get_inputs() if i.name not in (BoxesSpec.name, StateSpec.name)}
        wanted = [s.name for s in self.specs]
        if sorted(graph_inputs) != sorted(wanted):
            raise StreamrecError(f"{self.path} takes inputs {sorted(graph_inputs)} but the config's model takes "
                                 f"{wanted}; export it from this config with `run_stream.py export`")
        batches = set()
        for spec in self.specs:
            graph_input = graph_inputs[spec.name]
            batch, *clip_shape = graph_input.shape
            if graph_input.type != "tensor(uint8)" or tuple(clip_shape) != spec.clip_shape:
                streaming = " (a streaming graph: it runs with the streaming: section and hop it was exported for)"
                raise StreamrecError(
                    f"{self.path} input '{spec.name}' is {graph_input.type} {graph_input.shape}; the config needs "
                    f"uint8 [B, {', '.join(map(str, spec.clip_shape))}]: export it from this config"
                    f"{streaming if self.state else ''}")
            batches.add(batch if isinstance(batch, int) else None)
        outputs = {o.name: o for o in self.session.get_outputs()}
        if "logits" not in outputs or outputs["logits"].shape[-1] != num_classes:
            found = {name: o.shape for name, o in outputs.items()}
            raise StreamrecError(f"{self.path} must output logits [B or N, {num_classes}], has {found}; "
                                 "export it from this config")
        if len(batches) != 1:
            raise StreamrecError(f"{self.path} has inputs with different batch sizes; re-export it")
        return batches.pop()

    def _state_input(self) -> StateSpec | None:
        """The graph's ``state`` input, checked to be float32 [B, size] with a ``new_state`` output
        of the same shape, if it has one."""
        found = next((i for i in self.session.get_inputs() if i.name == StateSpec.name), None)
        if found is None:
            return None
        output = next((o for o in self.session.get_outputs() if o.name == StateSpec.output), None)
        size = found.shape[1] if len(found.shape) == 2 else None
        if found.type != "tensor(float)" or not isinstance(size, int) or output is None or \
                output.type != "tensor(float)" or list(output.shape[1:]) != [size]:
            raise StreamrecError(f"{self.path} has a 'state' input {found.type} {found.shape} but not the streaming "
                                 "contract (float32 [B, size] in, 'new_state' of that shape out): export it with "
                                 "streamrec.export.export_streaming")
        return StateSpec(size)

    def _boxes_input(self) -> BoxesSpec | None:
        """The graph's ``boxes`` input, checked to be the contract's float32 [N, 5], if it has one."""
        found = next((i for i in self.session.get_inputs() if i.name == BoxesSpec.name), None)
        if found is None:
            return None
        if found.type != "tensor(float)" or len(found.shape) != 2 or found.shape[1] != BoxesSpec.columns:
            raise StreamrecError(f"{self.path} input 'boxes' is {found.type} {found.shape}; an RoI model takes "
                                 "float32 [N, 5] boxes: export it with `run_stream.py export`")
        return BoxesSpec(self.specs[0].size, self.max_boxes)
