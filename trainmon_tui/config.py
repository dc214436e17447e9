"""Load and validate hosts.yaml into frozen dataclasses; every mistake is one `file:line: what is wrong` line.

The schema lives in one declarative place (the ``_Section`` tables below): each key names its kind, whether it
is required and its default. Adding a key is one ``_Field`` line plus a field on the matching dataclass.
YAML is read with ``yaml.SafeLoader`` semantics (no arbitrary tags, merge keys ``<<`` honoured), but walked
as a node tree so every error can name the line it comes from.
"""

from __future__ import annotations

import difflib
import math
import os
import re
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Final, NoReturn, TypeVar

import yaml
from yaml.constructor import SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from trainmon_tui.analysis.alerts import AlertKind, Severity
from trainmon_tui.analysis.health_settings import (
    DEFAULT_SETTINGS,
    HealthSettings,
    PatternRule,
    PlateauMode,
    PlateauSpec,
)

__all__ = [
    "Config",
    "ConfigError",
    "HostConfig",
    "MetricPattern",
    "RunConfig",
    "known_keys",
    "load_config",
    "parse_config",
]

LOCAL_ADDRESSES: Final = frozenset({"localhost", "local"})
DEFAULT_KNOWN_HOSTS: Final = "~/.ssh/known_hosts"
DEFAULT_CONNECT_TIMEOUT_S: Final = 10.0
DEFAULT_LOGIN_TIMEOUT_S: Final = 10.0
# With interval I and count N a silent host is declared dead after about I * (N + 1) s: 5 * 4 = 20 s.
DEFAULT_KEEPALIVE_INTERVAL_S: Final = 5.0
DEFAULT_KEEPALIVE_COUNT_MAX: Final = 3
DEFAULT_POLL_INTERVAL_S: Final = 2.0
DEFAULT_TAIL_LINES: Final = 500


class ConfigError(Exception):
    """A problem in a configuration file at ``path:line`` (line is None when the file could not be read)."""

    def __init__(self, path: str, line: int | None, message: str) -> None:
        # The CLI prints str(error) as the whole diagnostic, so it must stay on one line.
        self.path = path
        self.line = line
        self.message = " ".join(message.splitlines())
        super().__init__(path, line, self.message)

    def __str__(self) -> str:
        if self.line is None:
            return f"{self.path}: {self.message}"
        return f"{self.path}:{self.line}: {self.message}"


def _expanded_default_known_hosts() -> str:
    return os.path.expanduser(DEFAULT_KNOWN_HOSTS)


@dataclass(frozen=True, slots=True)
class HostConfig:
    """One machine to watch. ``user``, ``port``, ``identity_file`` None: "ssh_config or the SSH default"."""

    name: str
    address: str
    user: str | None = None
    port: int | None = None
    identity_file: str | None = None
    known_hosts: str = field(default_factory=_expanded_default_known_hosts)
    # The name of another host in the config, or an address-like string (see ``Config.resolve_jump``).
    jump: str | None = None
    # False for hosts listed only so others can jump through them: they are connected to, never polled.
    monitor: bool = True
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT_S
    login_timeout: float = DEFAULT_LOGIN_TIMEOUT_S
    keepalive_interval: float = DEFAULT_KEEPALIVE_INTERVAL_S
    keepalive_count_max: int = DEFAULT_KEEPALIVE_COUNT_MAX

    @property
    def is_local(self) -> bool:
        """True when the host is this machine: commands run as local processes, without SSH."""
        return self.address.lower() in LOCAL_ADDRESSES

    @property
    def unresponsive_after_s(self) -> float:
        """About how long a silent connection lasts before keepalive declares the host gone."""
        return self.keepalive_interval * (self.keepalive_count_max + 1)


@dataclass(frozen=True, slots=True)
class MetricPattern:
    """An extra value to pull out of log lines: ``pattern`` has a named group ``value`` holding the number."""

    name: str
    pattern: re.Pattern[str]


@dataclass(frozen=True, slots=True)
class RunConfig:
    """One training run: where it runs, which logs it writes and how to recognise its processes."""

    name: str
    hosts: tuple[str, ...]
    # Paths or globs on the hosts; `~` is left for the remote shell, not expanded here.
    logs: tuple[str, ...] = ()
    process: re.Pattern[str] | None = None
    total_steps: int | None = None
    metrics: tuple[MetricPattern, ...] = ()
    poll_interval: float = DEFAULT_POLL_INTERVAL_S
    tail_lines: int = DEFAULT_TAIL_LINES
    # Health rule thresholds, plateau metric, throughput target and user pattern alerts (`health`,
    # `plateau`, `target_throughput`, `throughput_metric`, `alerts`).
    health: HealthSettings = DEFAULT_SETTINGS


@dataclass(frozen=True, slots=True)
class Config:
    """Everything hosts.yaml says, validated. ``source`` names where it came from (a path or a label)."""

    hosts: tuple[HostConfig, ...]
    runs: tuple[RunConfig, ...]
    source: str

    @classmethod
    def local_default(cls) -> Config:
        """Watch only this machine (no SSH), with no runs: what the CLI uses when given no hosts file."""
        return cls(hosts=(HostConfig(name="local", address="local"),), runs=(), source="<local default>")

    @property
    def monitored_hosts(self) -> tuple[HostConfig, ...]:
        """The hosts to poll, in file order (jump-only hosts left out)."""
        return tuple(host for host in self.hosts if host.monitor)

    def host_named(self, name: str) -> HostConfig | None:
        return next((host for host in self.hosts if host.name == name), None)

    def resolve_jump(self, host: HostConfig) -> HostConfig | str | None:
        """The host to tunnel through: a configured host, an address for ssh_config/asyncssh, or None."""
        if host.jump is None:
            return None
        return self.host_named(host.jump) or host.jump

    def runs_on(self, host_name: str) -> tuple[RunConfig, ...]:
        return tuple(run for run in self.runs if host_name in run.hosts)


# ------------------------------------------------------------------------------------------------------------
# Reading YAML nodes

_TAG: Final = "tag:yaml.org,2002:"
_STR: Final = _TAG + "str"
_INT: Final = _TAG + "int"
_FLOAT: Final = _TAG + "float"
_BOOL: Final = _TAG + "bool"
_NULL: Final = _TAG + "null"
_MAP: Final = _TAG + "map"
_SEQ: Final = _TAG + "seq"
_MERGE: Final = _TAG + "merge"
_SCALAR_TYPE_NAMES: Final = MappingProxyType(
    {
        _STR: "string",
        _INT: "integer",
        _FLOAT: "number",
        _BOOL: "boolean",
        _TAG + "timestamp": "date",
        _TAG + "binary": "binary value",
    }
)
# Only the scalar constructors are used, and they need no loader state.
_SCALARS: Final = SafeConstructor()
_SHOWN_VALUE_CHARS: Final = 40


def _line(node: Node) -> int:
    return int(node.start_mark.line) + 1


def _show(text: str) -> str:
    if len(text) > _SHOWN_VALUE_CHARS:
        text = text[: _SHOWN_VALUE_CHARS - 3] + "..."
    return repr(text)


def _describe(node: Node) -> str:
    """How a wrong value is named in an error: "a list", "integer 22", "string 'x'"."""
    if isinstance(node, MappingNode):
        return "a mapping" if node.tag == _MAP else f"a mapping tagged {node.tag!r}"
    if isinstance(node, SequenceNode):
        return "a list" if node.tag == _SEQ else f"a list tagged {node.tag!r}"
    if node.tag == _NULL:
        return "nothing (null)"
    type_name = _SCALAR_TYPE_NAMES.get(node.tag)
    if type_name is None:
        return f"a value tagged {node.tag!r}"
    shown = _show(str(node.value)) if node.tag == _STR else str(node.value)
    return f"{type_name} {shown}"


def _is_null(node: Node) -> bool:
    return isinstance(node, ScalarNode) and node.tag == _NULL


def _closest(word: str, choices: list[str]) -> str | None:
    matches = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    return matches[0] if matches else None


@dataclass(frozen=True, slots=True)
class _Context:
    """Where an error is reported: the file, and which host/run/metric it is about."""

    source: str
    label: str = ""

    def child(self, label: str) -> _Context:
        return _Context(self.source, f"{self.label}: {label}" if self.label else label)

    def fail(self, at: Node | int, message: str) -> NoReturn:
        line = at if isinstance(at, int) else _line(at)
        raise ConfigError(self.source, line, f"{self.label}: {message}" if self.label else message)


# ------------------------------------------------------------------------------------------------------------
# Value kinds: each turns one YAML node into a checked Python value, or reports why it cannot.


class _Kind(ABC):
    def handles_null(self) -> bool:
        """Whether an explicit null reaches ``convert``; otherwise null means "not given, use the default"."""
        return False

    @abstractmethod
    def convert(self, node: Node, key: str, ctx: _Context) -> object: ...


def _scalar(node: Node, tags: frozenset[str], key: str, expected: str, ctx: _Context) -> ScalarNode:
    if not isinstance(node, ScalarNode) or node.tag not in tags:
        ctx.fail(node, f"`{key}` must be {expected}, got {_describe(node)}")
    return node


@dataclass(frozen=True, slots=True)
class _Text(_Kind):
    # Names and addresses are single words; spaces there are always a typo or a missing list.
    single_word: bool = False

    def convert(self, node: Node, key: str, ctx: _Context) -> str:
        text = str(_scalar(node, frozenset({_STR}), key, "a string", ctx).value)
        if not text.strip():
            ctx.fail(node, f"`{key}` must not be empty")
        if self.single_word and len(text.split()) != 1:
            ctx.fail(node, f"`{key}` must not contain spaces, got {_show(text)}")
        return text


@dataclass(frozen=True, slots=True)
class _Integer(_Kind):
    minimum: int
    maximum: int | None = None

    def convert(self, node: Node, key: str, ctx: _Context) -> int:
        scalar = _scalar(node, frozenset({_INT}), key, "an integer", ctx)
        try:
            value = _SCALARS.construct_yaml_int(scalar)
        except ValueError:
            # PyYAML's int pattern accepts a few spellings its constructor rejects, such as "0b_".
            ctx.fail(node, f"`{key}` must be an integer, got {_show(str(scalar.value))}")
        if self.maximum is not None and not self.minimum <= value <= self.maximum:
            ctx.fail(node, f"`{key}` must be between {self.minimum} and {self.maximum}, got {value}")
        if value < self.minimum:
            ctx.fail(node, f"`{key}` must be {self.minimum} or more, got {value}")
        return value


def _finite_number(node: Node, key: str, what: str, ctx: _Context) -> tuple[float, ScalarNode]:
    """A whole or decimal YAML number that is finite; ``what`` names it in errors ("number of seconds")."""
    scalar = _scalar(node, frozenset({_INT, _FLOAT}), key, f"a {what}", ctx)
    try:
        if scalar.tag == _INT:
            value = float(_SCALARS.construct_yaml_int(scalar))
        else:
            value = _SCALARS.construct_yaml_float(scalar)
    except (ValueError, OverflowError):
        ctx.fail(node, f"`{key}` must be a {what}, got {_show(str(scalar.value))}")
    if not math.isfinite(value):
        ctx.fail(node, f"`{key}` must be a finite {what}, got {scalar.value}")
    return value, scalar


@dataclass(frozen=True, slots=True)
class _Seconds(_Kind):
    def convert(self, node: Node, key: str, ctx: _Context) -> float:
        value, scalar = _finite_number(node, key, "number of seconds", ctx)
        if value <= 0:
            ctx.fail(node, f"`{key}` must be more than 0 seconds, got {scalar.value}")
        return value


@dataclass(frozen=True, slots=True)
class _Flag(_Kind):
    def convert(self, node: Node, key: str, ctx: _Context) -> bool:
        return _SCALARS.construct_yaml_bool(_scalar(node, frozenset({_BOOL}), key, "true or false", ctx))


@dataclass(frozen=True, slots=True)
class _Number(_Kind):
    """A finite number (whole or decimal) within bounds; ``above`` is exclusive, ``maximum`` inclusive."""

    above: float | None = None
    minimum: float | None = None
    maximum: float | None = None

    def convert(self, node: Node, key: str, ctx: _Context) -> float:
        value, scalar = _finite_number(node, key, "number", ctx)
        if self.above is not None and value <= self.above:
            ctx.fail(node, f"`{key}` must be more than {self.above:g}, got {scalar.value}")
        if self.minimum is not None and value < self.minimum:
            ctx.fail(node, f"`{key}` must be {self.minimum:g} or more, got {scalar.value}")
        if self.maximum is not None and value > self.maximum:
            ctx.fail(node, f"`{key}` must be {self.maximum:g} or less, got {scalar.value}")
        return value


@dataclass(frozen=True, slots=True)
class _Choice(_Kind):
    """One word out of a fixed set (a mode, a severity, an alert kind)."""

    choices: tuple[str, ...]

    def convert(self, node: Node, key: str, ctx: _Context) -> str:
        text = str(_scalar(node, frozenset({_STR}), key, f"one of {', '.join(self.choices)}", ctx).value)
        if text not in self.choices:
            suggestion = _closest(text, list(self.choices))
            did_you_mean = f" (did you mean {_show(suggestion)}?)" if suggestion else ""
            ctx.fail(
                node, f"`{key}` must be one of {', '.join(self.choices)}, got {_show(text)}{did_you_mean}"
            )
        return text


_DISABLED_SPELLINGS: Final = frozenset({"", "none", "null", "no", "off", "false", "ignore", "/dev/null"})


@dataclass(frozen=True, slots=True)
class _LocalPath(_Kind):
    """A file on this machine; `~` is expanded at load."""

    # For known_hosts: asyncssh treats None as "accept any host key", which we never allow.
    refuse_disabling: bool = False

    def handles_null(self) -> bool:
        return self.refuse_disabling

    def convert(self, node: Node, key: str, ctx: _Context) -> str:
        if self.refuse_disabling and isinstance(node, ScalarNode):
            spelled = str(node.value).strip()
            if node.tag in (_NULL, _BOOL) or spelled.lower() in _DISABLED_SPELLINGS:
                shown = _show(spelled) if spelled else "empty"
                ctx.fail(
                    node,
                    f"`{key}` cannot be {shown}: host keys are always verified; "
                    f"give the path of a known_hosts file (default {DEFAULT_KNOWN_HOSTS})",
                )
        text = _Text().convert(node, key, ctx)
        return os.path.expanduser(text)


@dataclass(frozen=True, slots=True)
class _TextList(_Kind):
    item: _Text | _Choice = field(default_factory=_Text)

    def convert(self, node: Node, key: str, ctx: _Context) -> tuple[str, ...]:
        if not isinstance(node, SequenceNode) or node.tag != _SEQ:
            hint = f" (write [{_show(str(node.value))}])" if isinstance(node, ScalarNode) else ""
            ctx.fail(node, f"`{key}` must be a list of strings, got {_describe(node)}{hint}")
        if not node.value:
            ctx.fail(node, f"`{key}` is an empty list: give at least one entry or leave the key out")
        items = [self.item.convert(item, f"{key}[{index}]", ctx) for index, item in enumerate(node.value)]
        seen: dict[str, Node] = {}
        for item_text, item_node in zip(items, node.value, strict=True):
            if item_text in seen:
                ctx.fail(
                    item_node,
                    f"`{key}` lists {_show(item_text)} twice (first at line {_line(seen[item_text])})",
                )
            seen[item_text] = item_node
        return tuple(items)


_REGEX_FAILURES: Final = (re.error, OverflowError, RecursionError)


@dataclass(frozen=True, slots=True)
class _Regex(_Kind):
    required_group: str | None = None

    def convert(self, node: Node, key: str, ctx: _Context) -> re.Pattern[str]:
        text = _Text().convert(node, key, ctx)
        try:
            compiled = re.compile(text)
        except _REGEX_FAILURES as error:
            ctx.fail(node, f"`{key}` is not a valid regular expression: {error}")
        if self.required_group is not None and self.required_group not in compiled.groupindex:
            ctx.fail(
                node,
                f"`{key}` needs a named group (?P<{self.required_group}>...) around the number, "
                f"got {_show(text)}",
            )
        return compiled


@dataclass(frozen=True, slots=True)
class _Records(_Kind):
    """A list of mappings, each read with ``section`` (one mapping, like ``defaults``, is a ``_Record``)."""

    section: _Section
    allow_empty: bool = True
    empty_hint: str = ""

    def convert(self, node: Node, key: str, ctx: _Context) -> tuple[_Values, ...]:
        if not isinstance(node, SequenceNode) or node.tag != _SEQ:
            ctx.fail(node, f"`{key}` must be a list of {self.section.noun}s, got {_describe(node)}")
        if not node.value and not self.allow_empty:
            ctx.fail(node, f"`{key}` is empty: {self.empty_hint}")
        records = []
        for index, item in enumerate(node.value):
            name = _peek_name(item)
            label = f"{self.section.noun} {_show(name)}" if name is not None else f"{key}[{index}]"
            records.append(_read_mapping(item, self.section, ctx.child(label)))
        return tuple(records)


@dataclass(frozen=True, slots=True)
class _Record(_Kind):
    section: _Section

    def convert(self, node: Node, key: str, ctx: _Context) -> _Values:
        return _read_mapping(node, self.section, ctx.child(f"`{key}`"))


# ------------------------------------------------------------------------------------------------------------
# The schema


@dataclass(frozen=True, slots=True)
class _Field:
    key: str
    kind: _Kind
    required: bool = False
    default: object = None
    # Said after "missing required key" / "is empty", to tell the user what to write.
    hint: str = ""


@dataclass(frozen=True, slots=True)
class _Section:
    name: str
    # How one item is called in messages: "a host must be a mapping", "a list of hosts".
    noun: str
    what: str
    fields: tuple[_Field, ...]

    def field_named(self, key: str) -> _Field | None:
        return next((spec for spec in self.fields if spec.key == key), None)

    @property
    def keys(self) -> tuple[str, ...]:
        return tuple(spec.key for spec in self.fields)


# Keys a host may set itself or inherit from `defaults`.
_CONNECTION_FIELDS: Final = (
    _Field("user", _Text(single_word=True)),
    _Field("port", _Integer(minimum=1, maximum=65535)),
    _Field("identity_file", _LocalPath()),
    _Field(
        "known_hosts",
        _LocalPath(refuse_disabling=True),
        default=DEFAULT_KNOWN_HOSTS,
    ),
    _Field("connect_timeout", _Seconds(), default=DEFAULT_CONNECT_TIMEOUT_S),
    _Field("login_timeout", _Seconds(), default=DEFAULT_LOGIN_TIMEOUT_S),
    _Field("keepalive_interval", _Seconds(), default=DEFAULT_KEEPALIVE_INTERVAL_S),
    _Field("keepalive_count_max", _Integer(minimum=1), default=DEFAULT_KEEPALIVE_COUNT_MAX),
)

_DEFAULTS_SECTION: Final = _Section("defaults", "defaults", "`defaults`", _CONNECTION_FIELDS)

_HOST_SECTION: Final = _Section(
    "host",
    "host",
    "a host",
    (
        _Field("name", _Text(single_word=True), required=True),
        _Field("address", _Text(single_word=True)),
        _Field("jump", _Text(single_word=True)),
        _Field("monitor", _Flag(), default=True),
        *_CONNECTION_FIELDS,
    ),
)

_METRIC_SECTION: Final = _Section(
    "metric",
    "metric",
    "a metric",
    (
        _Field("name", _Text(single_word=True), required=True),
        _Field("pattern", _Regex(required_group="value"), required=True),
    ),
)

_ALERT_KIND_NAMES: Final = tuple(kind.value for kind in AlertKind)
_PERCENT: Final = _Number(above=0.0, maximum=100.0)

# Health rule thresholds of a run (built-in defaults in trainmon_tui/analysis/health_settings.py).
_HEALTH_SECTION: Final = _Section(
    "health",
    "health",
    "`health`",
    (
        _Field("stall_after", _Seconds(), default=DEFAULT_SETTINGS.stall_min_s),
        _Field("stall_factor", _Number(above=0.0), default=DEFAULT_SETTINGS.stall_factor),
        _Field("idle_sm_pct", _Number(minimum=0.0, maximum=100.0), default=DEFAULT_SETTINGS.idle_sm_pct),
        _Field("idle_after", _Seconds(), default=DEFAULT_SETTINGS.idle_after_s),
        _Field("busy_sm_pct", _PERCENT, default=DEFAULT_SETTINGS.busy_sm_pct),
        _Field("duty_window", _Seconds(), default=DEFAULT_SETTINGS.duty_window_s),
        _Field("straggler_pct", _Number(above=0.0, maximum=99.0), default=DEFAULT_SETTINGS.straggler_pct),
        _Field("spike_factor", _Number(minimum=1.0), default=DEFAULT_SETTINGS.spike_factor),
        _Field("spike_sigmas", _Number(above=0.0), default=DEFAULT_SETTINGS.spike_sigmas),
        _Field("memory_imbalance_pct", _PERCENT, default=DEFAULT_SETTINGS.memory_imbalance_pct),
        _Field("stale_after", _Seconds(), default=DEFAULT_SETTINGS.stale_after_s),
        _Field("throughput_window", _Seconds(), default=DEFAULT_SETTINGS.throughput_window_s),
        _Field("disable", _TextList(_Choice(_ALERT_KIND_NAMES))),
    ),
)

_PLATEAU_SECTION: Final = _Section(
    "plateau",
    "plateau",
    "`plateau`",
    (
        _Field("metric", _Text(single_word=True), required=True, hint="the metric to watch, e.g. val_loss"),
        _Field("mode", _Choice(("min", "max")), required=True, hint="min (lower is better) or max"),
        _Field("window", _Seconds()),
        _Field("min_delta", _Number(minimum=0.0), default=0.0),
    ),
)

_ALERT_SECTION: Final = _Section(
    "alert",
    "alert",
    "an alert",
    (
        _Field("name", _Text(single_word=True), required=True),
        _Field("pattern", _Regex(), required=True),
        _Field("severity", _Choice(tuple(level.value for level in Severity)), default="warning"),
        _Field("max_per_epoch", _Integer(minimum=0)),
    ),
)

_RUN_SECTION: Final = _Section(
    "run",
    "run",
    "a run",
    (
        _Field("name", _Text(), required=True),
        _Field("hosts", _TextList(_Text(single_word=True))),
        _Field("logs", _TextList()),
        _Field("process", _Regex()),
        _Field("total_steps", _Integer(minimum=1)),
        _Field("metrics", _Records(_METRIC_SECTION)),
        _Field("poll_interval", _Seconds(), default=DEFAULT_POLL_INTERVAL_S),
        _Field("tail_lines", _Integer(minimum=0), default=DEFAULT_TAIL_LINES),
        _Field("target_throughput", _Number(above=0.0)),
        _Field("throughput_metric", _Text(single_word=True)),
        _Field("plateau", _Record(_PLATEAU_SECTION)),
        _Field("alerts", _Records(_ALERT_SECTION)),
        _Field("health", _Record(_HEALTH_SECTION)),
    ),
)

_TOP_SECTION: Final = _Section(
    "top",
    "top level",
    "the top level",
    (
        _Field("defaults", _Record(_DEFAULTS_SECTION)),
        _Field(
            "hosts",
            _Records(_HOST_SECTION, allow_empty=False, empty_hint="list at least one host"),
            required=True,
            hint="list at least one host",
        ),
        _Field("runs", _Records(_RUN_SECTION)),
    ),
)

_SECTIONS: Final = (
    _TOP_SECTION,
    _DEFAULTS_SECTION,
    _HOST_SECTION,
    _RUN_SECTION,
    _METRIC_SECTION,
    _HEALTH_SECTION,
    _PLATEAU_SECTION,
    _ALERT_SECTION,
)


def known_keys() -> Mapping[str, tuple[str, ...]]:
    """Every key the schema accepts, by section: "top", "defaults", "host", "run", "metric", and the run's
    "health", "plateau" and "alert" (one item of `alerts`)."""
    return MappingProxyType({section.name: section.keys for section in _SECTIONS})


# ------------------------------------------------------------------------------------------------------------
# Walking mappings


_V = TypeVar("_V")


@dataclass(frozen=True, slots=True)
class _Values:
    """The checked values of one mapping, with the line of each, and defaults from the schema."""

    section: _Section
    line: int
    given: Mapping[str, tuple[object, Node]]
    fallback: _Values | None = None

    def node_of(self, key: str) -> Node | None:
        entry = self.given.get(key)
        return entry[1] if entry is not None else None

    def line_of(self, key: str) -> int:
        node = self.node_of(key)
        return _line(node) if node is not None else self.line

    def _raw(self, key: str) -> object:
        if key in self.given:
            return self.given[key][0]
        if self.fallback is not None and key in self.fallback.given:
            return self.fallback.given[key][0]
        spec = self.section.field_named(key)
        if spec is None:
            raise KeyError(f"{key!r} is not in the {self.section.name} schema")
        return spec.default

    def get(self, key: str, kind: type[_V]) -> _V | None:
        value = self._raw(key)
        if value is None:
            return None
        if not isinstance(value, kind):
            raise TypeError(f"schema for {key!r} produced {type(value).__name__}, not {kind.__name__}")
        return value

    def need(self, key: str, kind: type[_V]) -> _V:
        value = self.get(key, kind)
        if value is None:
            raise TypeError(f"{key!r} has no value and no default")
        return value

    def with_fallback(self, fallback: _Values) -> _Values:
        return _Values(self.section, self.line, self.given, fallback)


def _peek_name(node: Node) -> str | None:
    """The plain `name:` of a mapping, read before validation so errors can say which host or run they hit."""
    if not isinstance(node, MappingNode):
        return None
    for key_node, value_node in node.value:
        if (
            isinstance(key_node, ScalarNode)
            and key_node.value == "name"
            and isinstance(value_node, ScalarNode)
            and value_node.tag == _STR
            and value_node.value.strip()
        ):
            return str(value_node.value)
    return None


def _key_text(key_node: Node, ctx: _Context) -> str:
    if not isinstance(key_node, ScalarNode) or key_node.tag != _STR:
        ctx.fail(key_node, f"keys must be strings, got {_describe(key_node)}")
    return str(key_node.value)


def _mapping_pairs(node: MappingNode, ctx: _Context, merging: frozenset[int]) -> dict[str, tuple[Node, Node]]:
    """Key -> (key node, value node), with `<<` merges applied: the mapping's own keys beat merged ones."""
    merged: dict[str, tuple[Node, Node]] = {}
    own: dict[str, tuple[Node, Node]] = {}
    for key_node, value_node in node.value:
        if isinstance(key_node, ScalarNode) and key_node.tag == _MERGE:
            sources = value_node.value if isinstance(value_node, SequenceNode) else [value_node]
            # In a merge list the earlier mappings win, so apply them last.
            for source in reversed(sources):
                if not isinstance(source, MappingNode) or source.tag != _MAP:
                    ctx.fail(
                        source, f"`<<` must merge a mapping or a list of mappings, got {_describe(source)}"
                    )
                if id(source) in merging or source is node:
                    ctx.fail(source, "`<<` merges a mapping into itself")
                merged.update(_mapping_pairs(source, ctx, merging | {id(node)}))
            continue
        key = _key_text(key_node, ctx)
        if key in own:
            ctx.fail(key_node, f"duplicate key `{key}` (first at line {_line(own[key][0])})")
        own[key] = (key_node, value_node)
    return {**merged, **own}


def _unknown_key_message(key: str, section: _Section) -> str:
    where = " at the top level" if section is _TOP_SECTION else ""
    suggestion = _closest(key, list(section.keys))
    if suggestion is not None:
        return f"unknown key `{key}`{where} (did you mean `{suggestion}`?)"
    homes = [other.what for other in _SECTIONS if other is not section and key in other.keys]
    if homes:
        return f"unknown key `{key}`{where} (it belongs in {homes[0]})"
    return f"unknown key `{key}`{where} (known keys: {', '.join(section.keys)})"


def _read_mapping(node: Node, section: _Section, ctx: _Context) -> _Values:
    if not isinstance(node, MappingNode) or node.tag != _MAP:
        ctx.fail(node, f"{section.what} must be a mapping of keys to values, got {_describe(node)}")
    given: dict[str, tuple[object, Node]] = {}
    for key, (key_node, value_node) in _mapping_pairs(node, ctx, frozenset()).items():
        spec = section.field_named(key)
        if spec is None:
            ctx.fail(key_node, _unknown_key_message(key, section))
        if _is_null(value_node) and not spec.kind.handles_null():
            if spec.required:
                hint = f": {spec.hint}" if spec.hint else ""
                ctx.fail(value_node, f"`{key}` is empty{hint}")
            # An explicit null means "not given": the default applies.
            continue
        given[key] = (spec.kind.convert(value_node, key, ctx), value_node)
    for spec in section.fields:
        if spec.required and spec.key not in given:
            hint = f": {spec.hint}" if spec.hint else ""
            ctx.fail(node, f"missing required key `{spec.key}`{hint}")
    return _Values(section, _line(node), MappingProxyType(given))


# ------------------------------------------------------------------------------------------------------------
# Building the config and checking references between hosts and runs

# A jump that is not the name of a configured host must look like an address, so a typo in a host name is an
# error rather than an SSH connection to a machine called "bastoin".
_ADDRESS_LIKE: Final = re.compile(r"[.@:]")


def _build_host(values: _Values) -> HostConfig:
    name = values.need("name", str)
    return HostConfig(
        name=name,
        address=values.get("address", str) or name,
        user=values.get("user", str),
        port=values.get("port", int),
        identity_file=values.get("identity_file", str),
        known_hosts=os.path.expanduser(values.need("known_hosts", str)),
        jump=values.get("jump", str),
        monitor=values.need("monitor", bool),
        connect_timeout=values.need("connect_timeout", float),
        login_timeout=values.need("login_timeout", float),
        keepalive_interval=values.need("keepalive_interval", float),
        keepalive_count_max=values.need("keepalive_count_max", int),
    )


def _check_jumps(hosts: list[HostConfig], host_values: list[_Values], ctx: _Context) -> None:
    by_name = {host.name: host for host in hosts}
    for host, values in zip(hosts, host_values, strict=True):
        if host.jump is None:
            continue
        where = ctx.child(f"host {_show(host.name)}")
        line = values.line_of("jump")
        if host.is_local:
            where.fail(line, f"`jump` makes no sense for a local host (address {_show(host.address)})")
        target = by_name.get(host.jump)
        if target is None and not _ADDRESS_LIKE.search(host.jump):
            suggestion = _closest(host.jump, list(by_name))
            did_you_mean = f" (did you mean {_show(suggestion)}?)" if suggestion else ""
            where.fail(
                line,
                f"`jump` {_show(host.jump)} is not a host in `hosts` and does not look like an address"
                f"{did_you_mean}; list it under `hosts` (with `monitor: false` if it only relays) "
                "or write user@host, host:port or a dotted name",
            )
        if host.jump == host.name:
            where.fail(line, "`jump` names the host itself")
        if target is not None and target.is_local:
            where.fail(line, f"`jump` {_show(host.jump)} is a local host; jump through an SSH host instead")
        chain = [host.name]
        while target is not None:
            chain.append(target.name)
            if target.name in chain[:-1]:
                where.fail(line, f"`jump` goes round in a circle: {' -> '.join(chain)}")
            target = by_name.get(target.jump) if target.jump is not None else None


def _build_metrics(values: _Values, ctx: _Context) -> tuple[MetricPattern, ...]:
    records = values.get("metrics", tuple) or ()
    metrics: list[MetricPattern] = []
    first_line: dict[str, int] = {}
    for record in records:
        if not isinstance(record, _Values):
            raise TypeError("metrics schema produced a non-mapping")
        name = record.need("name", str)
        if name in first_line:
            ctx.fail(
                record.line_of("name"),
                f"metric name {_show(name)} is used twice (first at line {first_line[name]})",
            )
        first_line[name] = record.line_of("name")
        metrics.append(MetricPattern(name=name, pattern=record.need("pattern", re.Pattern)))
    return tuple(metrics)


def _build_alerts(values: _Values, ctx: _Context) -> tuple[PatternRule, ...]:
    rules: list[PatternRule] = []
    first_line: dict[str, int] = {}
    for record in values.get("alerts", tuple) or ():
        if not isinstance(record, _Values):
            raise TypeError("alerts schema produced a non-mapping")
        name = record.need("name", str)
        if name in first_line:
            ctx.fail(
                record.line_of("name"),
                f"alert name {_show(name)} is used twice (first at line {first_line[name]})",
            )
        first_line[name] = record.line_of("name")
        rules.append(
            PatternRule(
                name=name,
                pattern=record.need("pattern", re.Pattern),
                severity=Severity(record.need("severity", str)),
                max_per_epoch=record.get("max_per_epoch", int),
            )
        )
    return tuple(rules)


def _build_health(values: _Values, ctx: _Context) -> HealthSettings:
    """The run's rule settings: `health` thresholds, `plateau`, `target_throughput`, `alerts`."""
    health = values.get("health", _Values) or _Values(_HEALTH_SECTION, values.line, MappingProxyType({}))
    plateau_values = values.get("plateau", _Values)
    plateau = DEFAULT_SETTINGS.plateau
    if plateau_values is not None:
        plateau = PlateauSpec(
            metric=plateau_values.need("metric", str),
            mode=PlateauMode(plateau_values.need("mode", str)),
            window_s=plateau_values.get("window", float),
            min_delta=plateau_values.need("min_delta", float),
        )
    target = values.get("target_throughput", float)
    throughput_metric = values.get("throughput_metric", str)
    if throughput_metric is not None and target is None:
        ctx.fail(
            values.line_of("throughput_metric"),
            "`throughput_metric` without `target_throughput`: give the target it is compared with",
        )
    disabled: tuple[str, ...] = health.get("disable", tuple) or ()
    return HealthSettings(
        stall_min_s=health.need("stall_after", float),
        stall_factor=health.need("stall_factor", float),
        idle_sm_pct=health.need("idle_sm_pct", float),
        idle_after_s=health.need("idle_after", float),
        busy_sm_pct=health.need("busy_sm_pct", float),
        duty_window_s=health.need("duty_window", float),
        straggler_pct=health.need("straggler_pct", float),
        spike_factor=health.need("spike_factor", float),
        spike_sigmas=health.need("spike_sigmas", float),
        memory_imbalance_pct=health.need("memory_imbalance_pct", float),
        stale_after_s=health.need("stale_after", float),
        target_throughput=target,
        throughput_metric=throughput_metric,
        throughput_window_s=health.need("throughput_window", float),
        plateau=plateau,
        patterns=_build_alerts(values, ctx),
        disabled=frozenset(disabled),
    )


def _build_run(values: _Values, hosts: list[HostConfig], ctx: _Context) -> RunConfig:
    name = values.need("name", str)
    where = ctx.child(f"run {_show(name)}")
    by_name = {host.name: host for host in hosts}
    listed: tuple[str, ...] | None = values.get("hosts", tuple)
    if listed is None:
        run_hosts = tuple(host.name for host in hosts if host.monitor)
    else:
        list_node = values.node_of("hosts")
        item_nodes = list_node.value if isinstance(list_node, SequenceNode) else []
        for host_name, item_node in zip(listed, item_nodes, strict=True):
            host = by_name.get(host_name)
            if host is None:
                suggestion = _closest(host_name, list(by_name))
                did_you_mean = f" (did you mean {_show(suggestion)}?)" if suggestion else ""
                where.fail(item_node, f"unknown host {_show(host_name)} in `hosts`{did_you_mean}")
            if not host.monitor:
                where.fail(
                    item_node, f"host {_show(host_name)} has `monitor: false`, so no run can be watched on it"
                )
        run_hosts = tuple(listed)
    process = values.get("process", re.Pattern)
    logs: tuple[str, ...] = values.get("logs", tuple) or ()
    if not logs and process is None:
        where.fail(values.line, "nothing to watch: give `logs`, `process` or both")
    return RunConfig(
        name=name,
        hosts=run_hosts,
        logs=logs,
        process=process,
        total_steps=values.get("total_steps", int),
        metrics=_build_metrics(values, where),
        poll_interval=values.need("poll_interval", float),
        tail_lines=values.need("tail_lines", int),
        health=_build_health(values, where),
    )


def _first_seen_check(names: dict[str, int], name: str, line: int, noun: str, ctx: _Context) -> None:
    if name in names:
        ctx.fail(line, f"{noun} name {_show(name)} is used twice (first at line {names[name]})")
    names[name] = line


def _build_config(root: Node, source: str) -> Config:
    ctx = _Context(source)
    if not isinstance(root, MappingNode):
        ctx.fail(root, f"the top level must be a mapping with a `hosts` list, got {_describe(root)}")
    top = _read_mapping(root, _TOP_SECTION, ctx)
    defaults = top.get("defaults", _Values) or _Values(_DEFAULTS_SECTION, top.line, MappingProxyType({}))

    hosts: list[HostConfig] = []
    host_values: list[_Values] = []
    host_names: dict[str, int] = {}
    for record in top.need("hosts", tuple):
        if not isinstance(record, _Values):
            raise TypeError("hosts schema produced a non-mapping")
        values = record.with_fallback(defaults)
        host = _build_host(values)
        _first_seen_check(host_names, host.name, values.line_of("name"), "host", ctx)
        hosts.append(host)
        host_values.append(values)
    _check_jumps(hosts, host_values, ctx)
    if not any(host.monitor for host in hosts):
        ctx.fail(top.line_of("hosts"), "every host has `monitor: false`: nothing to watch")

    runs: list[RunConfig] = []
    run_names: dict[str, int] = {}
    for record in top.get("runs", tuple) or ():
        if not isinstance(record, _Values):
            raise TypeError("runs schema produced a non-mapping")
        run = _build_run(record, hosts, ctx)
        _first_seen_check(run_names, run.name, record.line_of("name"), "run", ctx)
        runs.append(run)
    return Config(hosts=tuple(hosts), runs=tuple(runs), source=source)


# ------------------------------------------------------------------------------------------------------------
# Entry points


def _yaml_error(error: yaml.YAMLError, text: str, source: str) -> ConfigError:
    if isinstance(error, yaml.MarkedYAMLError):
        mark = error.problem_mark or error.context_mark
        line = int(mark.line) + 1 if mark is not None else None
        problem = error.problem or "unreadable YAML"
        context = f" ({error.context})" if error.context else ""
        return ConfigError(source, line, f"invalid YAML: {problem}{context}")
    if isinstance(error, yaml.reader.ReaderError):
        line = text.count("\n", 0, error.position) + 1
        character = f"#x{error.character:04x}" if isinstance(error.character, int) else repr(error.character)
        return ConfigError(source, line, f"invalid YAML: unacceptable character {character}: {error.reason}")
    return ConfigError(source, None, f"invalid YAML: {error}")


def parse_config(text: str, source: str = "<string>") -> Config:
    """Parse hosts.yaml text; ``source`` is the name errors start with. Raises ConfigError only."""
    try:
        # The reader checks for unprintable characters already in the constructor.
        loader = yaml.SafeLoader(text)
        try:
            root = loader.get_single_node()
        finally:
            loader.dispose()
    except yaml.YAMLError as error:
        raise _yaml_error(error, text, source) from None
    except RecursionError:
        raise ConfigError(source, None, "invalid YAML: nested too deeply") from None
    if root is None:
        raise ConfigError(source, 1, "the file is empty: it needs at least a `hosts` list")
    try:
        return _build_config(root, source)
    except RecursionError:
        raise ConfigError(source, None, "invalid YAML: `<<` merges nested too deeply") from None


def load_config(path: str | os.PathLike[str]) -> Config:
    """Read and parse a hosts.yaml file; errors name the path as given. Raises ConfigError only."""
    shown = os.fspath(path)
    try:
        with open(path, "rb") as stream:
            data = stream.read()
    except OSError as error:
        raise ConfigError(shown, None, f"cannot read: {error.strerror or error}") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        raise ConfigError(
            shown, line, f"cannot read: not UTF-8 text (byte {data[error.start]:#04x})"
        ) from None
    return parse_config(text, shown)
