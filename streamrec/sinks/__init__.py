"""Message-broker sinks: every event also goes to MQTT, Redis or NATS, named by a URL.

``run --sink mqtt://host:1883/site`` (repeatable; ``events.sinks`` in a config) hands every event
to the sink registered for the URL's scheme. Sinks are registered as models and backends are
(`streamrec.models`, `streamrec.backends`): adding a broker is one module in this package whose
factory is decorated with `register_sink` (its scheme, its URL options, the client library it
needs), plus the module's name in `SINK_MODULES`. A module imports its client library only
when its factory is called, so listing sinks, and a run without them, never needs one; a
missing library is one line saying what to install.

Every broker sink is a `BrokerSink` (`streamrec.sinks.buffered`): it holds events while its
broker is unreachable (up to ``buffer`` of them, then it drops the oldest and counts them),
reconnects on its own thread and never makes the pipeline wait. URLs are shown masked
(`streamrec.redaction.redact`) wherever they appear.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.util
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Mapping
from urllib.parse import parse_qsl, unquote, urlsplit

from streamrec.errors import StreamrecError
from streamrec.redaction import redact, split_userinfo

if TYPE_CHECKING:
    from streamrec.events import Sink

SINK_MODULES = ("mqtt", "redis", "nats")  # each registers one scheme; the CLI lists them in this order
INSTALL = "pip install 'streamrec[brokers]'"


@dataclass(frozen=True)
class Option:
    """A ``?name=value`` setting of a sink URL, with its type and allowed range."""

    default: Any
    kind: type  # int, float or str
    low: float | None = None
    high: float | None = None
    help: str = ""

    def parse(self, name: str, text: str, shown: str) -> Any:
        try:
            value = self.kind(text)
        except ValueError:
            raise StreamrecError(f"sink {shown}: {name}={text} must be a{'n' if self.kind is int else ''} "
                                 f"{self.kind.__name__}") from None
        out_of_range = (self.low is not None and not value >= self.low) or (self.high is not None and not value <= self.high)
        if out_of_range:  # written with `not` so that NaN is out of every range
            raise StreamrecError(f"sink {shown}: {name}={text} must be {self.low:.10g} to {self.high:.10g} "
                                 f"({self.help})")
        return value


# Options every broker sink takes (`streamrec.sinks.buffered.BrokerSink`).
COMMON_OPTIONS = {
    "buffer": Option(10_000, int, 1, 10_000_000, "events held while the broker is unreachable"),
    "flush_s": Option(5.0, float, 0, 3600, "seconds the end of a run waits for held events to leave"),
}


@dataclass(frozen=True)
class SinkURL:
    """A parsed ``--sink`` URL. ``text`` may hold credentials: show ``shown``."""

    text: str
    scheme: str
    host: str
    port: int
    path: str  # without the leading "/"
    username: str | None
    password: str | None
    options: Mapping[str, Any]

    @property
    def shown(self) -> str:
        return redact(self.text)


@dataclass(frozen=True)
class SinkKind:
    """A registered sink: its URL scheme, how to make it, and what it needs installed."""

    scheme: str
    create: Callable[[SinkURL], "Sink"]
    library: str  # the client library's import name
    package: str  # the client library's pip name
    default_port: int
    options: Mapping[str, Option] = field(default_factory=dict)  # its own, besides COMMON_OPTIONS
    path_help: str = ""  # what the URL's path names


_KINDS: dict[str, SinkKind] = {}


def register_sink(scheme: str, *, library: str, package: str, default_port: int,
                  options: Mapping[str, Option] | None = None, path_help: str = "",
                  ) -> Callable[[Callable[[SinkURL], "Sink"]], Callable[[SinkURL], "Sink"]]:
    """Register the decorated ``factory(url) -> Sink`` for URLs ``scheme://...``."""

    def decorator(factory: Callable[[SinkURL], "Sink"]) -> Callable[[SinkURL], "Sink"]:
        _KINDS[scheme] = SinkKind(scheme, factory, library, package, default_port, dict(options or {}), path_help)
        return factory

    return decorator


def sink_kinds() -> dict[str, SinkKind]:
    """Every registered sink by scheme, in `SINK_MODULES` order."""
    for module in SINK_MODULES:  # importing a sink's module registers it
        importlib.import_module(f"{__name__}.{module}")
    return dict(_KINDS)


def parse_sink_url(text: str) -> tuple[SinkKind, SinkURL]:
    """The sink a URL names and its checked settings, or one line saying what is wrong with it."""
    shown = redact(text)
    kinds = sink_kinds()
    userinfo, bare = split_userinfo(text)  # a password as typed may hold '/', '?', '#' or '@'
    try:
        parts = urlsplit(bare)
        port = parts.port
    except ValueError as exc:
        named = kinds.get(text.partition(":")[0].lower()) or kinds.get("redis") or next(iter(kinds.values()))
        raise StreamrecError(f"sink {shown} is not a valid URL ({redact(str(exc))}); e.g. "
                             f"{named.scheme}://127.0.0.1:{named.default_port}/{named.path_help}") from None
    kind = kinds.get(parts.scheme.lower())
    if kind is None or not parts.hostname:
        examples = ", ".join(f"{k.scheme}://HOST:{k.default_port}/{k.path_help}" for k in kinds.values())
        raise StreamrecError(f"sink {shown}: a sink is one of {examples}")
    allowed = {**COMMON_OPTIONS, **kind.options}
    options = {name: option.default for name, option in allowed.items()}
    for name, value in parse_qsl(parts.query, keep_blank_values=True):
        if name not in allowed:
            close = difflib.get_close_matches(name, list(allowed), n=1)
            hint = f"did you mean '{close[0]}'?" if close else f"it takes {', '.join(allowed)}"
            raise StreamrecError(f"sink {shown}: unknown option '{name}'; {hint}")
        options[name] = allowed[name].parse(name, value, shown)
    user, colon, password = (userinfo or "").partition(":")
    url = SinkURL(text, kind.scheme, parts.hostname, port or kind.default_port, parts.path.lstrip("/"),
                  unquote(user) if user else None, unquote(password) if colon and password else None, options)
    return kind, url


def check_sink_url(text: str) -> SinkKind:
    """Check a sink URL and that its client library is installed, connecting to nothing."""
    kind, _ = parse_sink_url(text)
    if not installed(kind.library):
        raise StreamrecError(f"sink {redact(text)} needs the {kind.package} package: {INSTALL}")
    return kind


def installed(library: str) -> bool:
    """Whether ``library`` (a dotted import name) can be imported, without importing it."""
    try:
        return importlib.util.find_spec(library) is not None
    except ModuleNotFoundError:  # its parent package is missing
        return False


def create_sink(text: str) -> "Sink":
    """The sink a URL names, started: it connects on its own thread and holds events until then."""
    kind = check_sink_url(text)
    _, url = parse_sink_url(text)
    return kind.create(url)
