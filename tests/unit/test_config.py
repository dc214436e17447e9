"""hosts.yaml loading: parsed values with defaults applied, one exact `file:line: message` per mistake."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trainmon_tui.config import (
    Config,
    ConfigError,
    HostConfig,
    MetricPattern,
    RunConfig,
    known_keys,
    load_config,
    parse_config,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = REPO_ROOT / "hosts.example.yaml"


def lines(*text: str) -> str:
    """YAML from explicit lines, so line N of the document is argument N."""
    return "\n".join(text) + "\n"


def error_of(text: str) -> str:
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "hosts.yaml")
    return str(caught.value)


@pytest.fixture(autouse=True)
def fake_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    home = tmp_path / "home"
    monkeypatch.setenv("HOME", str(home))
    return home


# ------------------------------------------------------------------------------------------------------------
# Valid configurations

BRIEF_EXAMPLE = lines(
    "defaults: {user: alice, port: 22, identity_file: ~/.ssh/id_ed25519, known_hosts: ~/.ssh/known_hosts}",
    "hosts:",
    "  - {name: node-0, address: 10.0.0.10, port: 22, user: alice, jump: bastion}",
    "  - {name: node-1, address: 10.0.0.11, port: 2200, user: bob, keepalive_interval: 2.5}",
    "  - {name: bastion, address: bastion.example.org, monitor: false}",
    "runs:",
    "  - name: llama-7b",
    "    hosts: [node-0, node-1]",
    '    logs: ["/data/run/logs/rank*.log"]',
    '    process: "train\\\\.py"',
    "    total_steps: 20000",
    "    metrics: [{name: grad_norm, pattern: 'grad_norm=(?P<value>\\S+)'}]",
    "  - name: everywhere",
    "    process: torchrun",
    "    poll_interval: 0.5",
    "    tail_lines: 0",
)


def test_full_config_parses_with_defaults_applied_and_home_expanded(fake_home: Path) -> None:
    config = parse_config(BRIEF_EXAMPLE, "hosts.yaml")

    assert config.source == "hosts.yaml"
    node0, node1, bastion = config.hosts
    assert node0 == HostConfig(
        name="node-0",
        address="10.0.0.10",
        user="alice",
        port=22,
        identity_file=f"{fake_home}/.ssh/id_ed25519",
        known_hosts=f"{fake_home}/.ssh/known_hosts",
        jump="bastion",
        monitor=True,
        connect_timeout=10.0,
        login_timeout=10.0,
        keepalive_interval=5.0,
        keepalive_count_max=3,
    )
    assert (node1.user, node1.port, node1.keepalive_interval, node1.jump) == ("bob", 2200, 2.5, None)
    assert node1.identity_file == f"{fake_home}/.ssh/id_ed25519"
    assert (bastion.monitor, bastion.user, bastion.address) == (False, "alice", "bastion.example.org")
    assert config.monitored_hosts == (node0, node1)

    llama, everywhere = config.runs
    assert llama == RunConfig(
        name="llama-7b",
        hosts=("node-0", "node-1"),
        logs=("/data/run/logs/rank*.log",),
        process=re.compile(r"train\.py"),
        total_steps=20000,
        metrics=(MetricPattern(name="grad_norm", pattern=re.compile(r"grad_norm=(?P<value>\S+)")),),
        poll_interval=2.0,
        tail_lines=500,
    )
    assert llama.process is not None and llama.process.search("python train.py --lr 3e-4")
    assert not llama.process.search("python trainXpy")
    metric_match = llama.metrics[0].pattern.search("step 10 loss 2.1 grad_norm=0.873")
    assert metric_match is not None and metric_match.group("value") == "0.873"
    # A run without `hosts` spans every monitored host, never the jump-only one.
    assert everywhere.hosts == ("node-0", "node-1")
    assert (everywhere.logs, everywhere.total_steps, everywhere.metrics) == ((), None, ())
    assert (everywhere.poll_interval, everywhere.tail_lines) == (0.5, 0)


def test_minimal_config_uses_builtin_defaults(fake_home: Path) -> None:
    config = parse_config(lines("hosts:", "  - name: gpu-box"))

    (host,) = config.hosts
    assert host == HostConfig(
        name="gpu-box",
        address="gpu-box",
        user=None,
        port=None,
        identity_file=None,
        known_hosts=f"{fake_home}/.ssh/known_hosts",
        jump=None,
        monitor=True,
        connect_timeout=10.0,
        login_timeout=10.0,
        keepalive_interval=5.0,
        keepalive_count_max=3,
    )
    assert host.unresponsive_after_s == 20.0
    assert config.runs == ()
    assert config.source == "<string>"


def test_host_values_override_defaults_and_null_means_default() -> None:
    config = parse_config(
        lines(
            "defaults:",
            "  user: alice",
            "  connect_timeout: 3",
            "  keepalive_count_max: 5",
            "hosts:",
            "  - name: a",
            "    user: root",
            "    connect_timeout: 1.5",
            "    port:",
            "  - name: b",
            "    user: ~",
            "runs:",
        )
    )
    a, b = config.hosts
    assert (a.user, a.connect_timeout, a.keepalive_count_max, a.port) == ("root", 1.5, 5, None)
    # An explicit null on a host falls back to `defaults`, like leaving the key out.
    assert (b.user, b.connect_timeout) == ("alice", 3.0)
    assert config.runs == ()


@pytest.mark.parametrize(
    ("address", "is_local"),
    [("localhost", True), ("local", True), ("LocalHost", True), ("127.0.0.1", False), ("gpu-box", False)],
)
def test_is_local_only_for_localhost_and_local(address: str, is_local: bool) -> None:
    (host,) = parse_config(lines("hosts:", f"  - {{name: h, address: {address}}}")).hosts
    assert host.is_local is is_local


def test_jump_resolves_to_listed_host_or_address_string() -> None:
    config = parse_config(
        lines(
            "hosts:",
            "  - {name: relay, address: relay.example.org, user: ops, monitor: false}",
            "  - {name: a, jump: relay}",
            "  - {name: b, jump: ops@10.1.2.3:2222}",
            "  - {name: c, jump: gateway.lab}",
            "  - {name: d, jump: a}",
            "  - {name: e}",
        )
    )
    relay, a, b, c, d, e = config.hosts
    assert config.resolve_jump(a) == relay
    assert config.resolve_jump(b) == "ops@10.1.2.3:2222"
    assert config.resolve_jump(c) == "gateway.lab"
    # Chains are allowed as long as they end.
    assert config.resolve_jump(d) == a
    assert config.resolve_jump(e) is None
    assert config.host_named("relay") == relay
    assert config.host_named("nope") is None


def test_merge_keys_apply_with_own_keys_winning() -> None:
    config = parse_config(
        lines(
            "hosts:",
            "  - &gpu {name: a, user: trainer, port: 2222, connect_timeout: 4}",
            "  - {<<: *gpu, name: b, port: 22}",
            "  - <<: [{port: 1}, *gpu]",
            "    name: c",
        )
    )
    a, b, c = config.hosts
    assert (a.user, a.port, a.connect_timeout) == ("trainer", 2222, 4.0)
    assert (b.user, b.port, b.connect_timeout) == ("trainer", 22, 4.0)
    # In a merge list the first mapping wins.
    assert (c.user, c.port) == ("trainer", 1)


def test_runs_on_and_local_default() -> None:
    config = parse_config(BRIEF_EXAMPLE)
    assert [run.name for run in config.runs_on("node-1")] == ["llama-7b", "everywhere"]
    assert config.runs_on("bastion") == ()

    local = Config.local_default()
    (host,) = local.hosts
    assert host.is_local and host.monitor
    assert local.monitored_hosts == (host,)
    assert local.runs == ()


def test_load_config_reads_a_file_like_parse_config(tmp_path: Path) -> None:
    path = tmp_path / "hosts.yaml"
    path.write_bytes(b"\xef\xbb\xbf" + BRIEF_EXAMPLE.encode())
    loaded = load_config(path)
    assert loaded == parse_config(BRIEF_EXAMPLE, str(path))
    assert loaded.source == str(path)


def test_example_file_loads_and_documents_every_key() -> None:
    config = load_config(EXAMPLE)
    assert [host.name for host in config.hosts] == ["node-0", "node-1", "bastion", "workstation"]
    assert config.host_named("workstation") is not None
    assert [run.name for run in config.runs] == ["llama-7b", "local-finetune"]

    text = EXAMPLE.read_text()
    text_lines = text.splitlines()
    root = yaml.compose(text, Loader=yaml.SafeLoader)
    seen: dict[str, dict[str, list[int]]] = {section: {} for section in known_keys()}

    def collect(node: yaml.Node, section: str) -> None:
        assert isinstance(node, yaml.MappingNode)
        for key_node, value_node in node.value:
            seen[section].setdefault(key_node.value, []).append(key_node.start_mark.line)
            child = {("top", "defaults"): "defaults", ("top", "hosts"): "host", ("top", "runs"): "run"}
            child[("run", "metrics")] = "metric"
            child.update(
                {("run", "health"): "health", ("run", "plateau"): "plateau", ("run", "alerts"): "alert"}
            )
            inner = child.get((section, key_node.value))
            if inner is None:
                continue
            if isinstance(value_node, yaml.SequenceNode):
                for item in value_node.value:
                    collect(item, inner)
            else:
                collect(value_node, inner)

    assert root is not None
    collect(root, "top")

    def documented(line_index: int) -> bool:
        above = text_lines[line_index - 1].strip() if line_index > 0 else ""
        return "#" in text_lines[line_index] or above.startswith("#")

    defaults_keys = set(known_keys()["defaults"])
    for section, keys in known_keys().items():
        # A host inherits every `defaults` key; showing those once, under `defaults`, documents them.
        shown_elsewhere = set(seen["defaults"]) & defaults_keys if section == "host" else set()
        assert set(keys) - set(seen[section]) - shown_elsewhere == set(), section
        for key in keys:
            # Connection keys are documented once, in `defaults`; hosts may repeat them without comments.
            all_lines = [line for occurrences in seen.values() for line in occurrences.get(key, [])]
            assert any(documented(line) for line in all_lines), f"{section}.{key} has no comment"


def test_known_keys_lists_every_section() -> None:
    keys = known_keys()
    assert keys["top"] == ("defaults", "hosts", "runs")
    assert "keepalive_interval" in keys["defaults"] and "keepalive_interval" in keys["host"]
    assert {"name", "address", "jump", "monitor"} <= set(keys["host"])
    assert keys["metric"] == ("name", "pattern")
    assert {"poll_interval", "tail_lines", "total_steps", "process", "logs", "hosts"} <= set(keys["run"])


# ------------------------------------------------------------------------------------------------------------
# Errors: every one is `hosts.yaml:LINE: message`

HOST_A = "  - {name: a}"
KH_HINT = "host keys are always verified; give the path of a known_hosts file (default ~/.ssh/known_hosts)"

ERROR_CASES = {
    # Unknown keys
    "unknown host key with suggestion": (
        lines("hosts:", "  - name: a", "    adress: 10.0.0.1"),
        "hosts.yaml:3: host 'a': unknown key `adress` (did you mean `address`?)",
    ),
    "unknown top-level key": (
        lines("hosts:", HOST_A, "colour: blue"),
        "hosts.yaml:3: unknown key `colour` at the top level (known keys: defaults, hosts, runs)",
    ),
    "unknown top-level key close to a known one": (
        lines("host:", HOST_A),
        "hosts.yaml:1: unknown key `host` at the top level (did you mean `hosts`?)",
    ),
    "key from another section": (
        lines("hosts:", "  - {name: a, total_steps: 3}"),
        "hosts.yaml:2: host 'a': unknown key `total_steps` (it belongs in a run)",
    ),
    "unknown defaults key": (
        lines("defaults:", "  prot: 22", "hosts:", HOST_A),
        "hosts.yaml:2: `defaults`: unknown key `prot` (did you mean `port`?)",
    ),
    "unknown metric key": (
        lines(
            "hosts:",
            HOST_A,
            "runs:",
            "  - name: r",
            "    process: x",
            "    metrics:",
            "      - name: m",
            "        regex: 'v=(?P<value>.*)'",
        ),
        "hosts.yaml:8: run 'r': metric 'm': unknown key `regex` (known keys: name, pattern)",
    ),
    # Wrong types
    "port as string": (
        lines("hosts:", "  - name: a", "    port: '22'"),
        "hosts.yaml:3: host 'a': `port` must be an integer, got string '22'",
    ),
    "port as float": (
        lines("hosts:", "  - {name: a, port: 22.5}"),
        "hosts.yaml:2: host 'a': `port` must be an integer, got number 22.5",
    ),
    "port spelled so PyYAML cannot build it": (
        lines("hosts:", "  - {name: a, port: 0b_}"),
        "hosts.yaml:2: host 'a': `port` must be an integer, got '0b_'",
    ),
    "logs as a single string": (
        lines("hosts:", HOST_A, "runs:", "  - name: r", "    logs: /data/log.txt"),
        "hosts.yaml:5: run 'r': `logs` must be a list of strings, got string '/data/log.txt' "
        "(write ['/data/log.txt'])",
    ),
    "user as a list": (
        lines("hosts:", "  - {name: a, user: [x]}"),
        "hosts.yaml:2: host 'a': `user` must be a string, got a list",
    ),
    "monitor as a string": (
        lines("hosts:", "  - {name: a, monitor: 'no'}", HOST_A.replace("a", "b")),
        "hosts.yaml:2: host 'a': `monitor` must be true or false, got string 'no'",
    ),
    "hosts as a mapping": (
        lines("hosts:", "  name: a"),
        "hosts.yaml:2: `hosts` must be a list of hosts, got a mapping",
    ),
    "host as a string": (
        lines("hosts:", "  - node-0"),
        "hosts.yaml:2: hosts[0]: a host must be a mapping of keys to values, got string 'node-0'",
    ),
    "timeout as a date": (
        lines("hosts:", "  - {name: a, login_timeout: 2024-01-01}"),
        "hosts.yaml:2: host 'a': `login_timeout` must be a number of seconds, got date 2024-01-01",
    ),
    "name with spaces": (
        lines("hosts:", "  - name: gpu box"),
        "hosts.yaml:2: host 'gpu box': `name` must not contain spaces, got 'gpu box'",
    ),
    "integer key": (
        lines("hosts:", "  - {name: a, 22: port}"),
        "hosts.yaml:2: host 'a': keys must be strings, got integer 22",
    ),
    "custom tag": (
        lines("hosts:", "  - {name: a, port: !port 22}"),
        "hosts.yaml:2: host 'a': `port` must be an integer, got a value tagged '!port'",
    ),
    # Missing / empty required keys
    "missing hosts": (
        lines("defaults:", "  user: alice"),
        "hosts.yaml:1: missing required key `hosts`: list at least one host",
    ),
    "empty hosts list": (lines("hosts: []"), "hosts.yaml:1: `hosts` is empty: list at least one host"),
    "hosts with no value": (
        lines("runs: []", "hosts:"),
        "hosts.yaml:2: `hosts` is empty: list at least one host",
    ),
    "host without name": (
        lines("hosts:", HOST_A, "  - address: 10.0.0.2"),
        "hosts.yaml:3: hosts[1]: missing required key `name`",
    ),
    "host with empty name": (
        lines("hosts:", "  - {name: '', address: x}"),
        "hosts.yaml:2: hosts[0]: `name` must not be empty",
    ),
    "host with null name": (
        lines("hosts:", "  - {name: , address: x}"),
        "hosts.yaml:2: hosts[0]: `name` is empty",
    ),
    "run without name": (
        lines("hosts:", HOST_A, "runs:", "  - logs: [x]"),
        "hosts.yaml:4: runs[0]: missing required key `name`",
    ),
    "metric without pattern": (
        lines("hosts:", HOST_A, "runs:", "  - name: r", "    process: x", "    metrics: [{name: m}]"),
        "hosts.yaml:6: run 'r': metric 'm': missing required key `pattern`",
    ),
    "run with nothing to watch": (
        lines("hosts:", HOST_A, "runs:", "  - name: r", "    total_steps: 10"),
        "hosts.yaml:4: run 'r': nothing to watch: give `logs`, `process` or both",
    ),
    "empty logs list": (
        lines("hosts:", HOST_A, "runs:", "  - {name: r, logs: []}"),
        "hosts.yaml:4: run 'r': `logs` is an empty list: give at least one entry or leave the key out",
    ),
    # Duplicates
    "duplicate host names": (
        lines(
            "hosts:", "  - {name: a, address: 10.0.0.1}", "  - {name: b}", "  - {name: a, address: 10.0.0.3}"
        ),
        "hosts.yaml:4: host name 'a' is used twice (first at line 2)",
    ),
    "duplicate run names": (
        lines("hosts:", HOST_A, "runs:", "  - {name: r, logs: [x]}", "  - name: r", "    logs: [y]"),
        "hosts.yaml:5: run name 'r' is used twice (first at line 4)",
    ),
    "duplicate metric names": (
        lines(
            "hosts:",
            HOST_A,
            "runs:",
            "  - name: r",
            "    process: x",
            "    metrics:",
            "      - {name: m, pattern: 'a=(?P<value>.*)'}",
            "      - {name: m, pattern: 'b=(?P<value>.*)'}",
        ),
        "hosts.yaml:8: run 'r': metric name 'm' is used twice (first at line 7)",
    ),
    "duplicate key in one mapping": (
        lines("hosts:", "  - name: a", "    port: 22", "    port: 2222"),
        "hosts.yaml:4: host 'a': duplicate key `port` (first at line 3)",
    ),
    "host listed twice in a run": (
        lines(
            "hosts:", HOST_A, "runs:", "  - name: r", "    process: x", "    hosts:", "      - a", "      - a"
        ),
        "hosts.yaml:8: run 'r': `hosts` lists 'a' twice (first at line 7)",
    ),
    # References
    "run names an unknown host": (
        lines(
            "hosts:",
            "  - {name: node-0}",
            "runs:",
            "  - name: r",
            "    logs: [x]",
            "    hosts:",
            "      - node-0",
            "      - node-O",
        ),
        "hosts.yaml:8: run 'r': unknown host 'node-O' in `hosts` (did you mean 'node-0'?)",
    ),
    "run names a jump-only host": (
        lines(
            "hosts:",
            HOST_A,
            "  - {name: relay, monitor: false}",
            "runs:",
            "  - {name: r, logs: [x], hosts: [a, relay]}",
        ),
        "hosts.yaml:5: run 'r': host 'relay' has `monitor: false`, so no run can be watched on it",
    ),
    "every host jump-only": (
        lines("hosts:", "  - {name: a, monitor: false}"),
        "hosts.yaml:2: every host has `monitor: false`: nothing to watch",
    ),
    "jump to an unknown bare name": (
        lines("hosts:", "  - {name: bastion, monitor: false}", "  - name: a", "    jump: bastoin"),
        "hosts.yaml:4: host 'a': `jump` 'bastoin' is not a host in `hosts` and does not look like an address "
        "(did you mean 'bastion'?); list it under `hosts` (with `monitor: false` if it only relays) "
        "or write user@host, host:port or a dotted name",
    ),
    "jump to itself": (
        lines("hosts:", "  - {name: a, jump: a}"),
        "hosts.yaml:2: host 'a': `jump` names the host itself",
    ),
    "jump cycle": (
        lines("hosts:", "  - {name: a, jump: b}", "  - {name: b, jump: c}", "  - {name: c, jump: a}"),
        "hosts.yaml:2: host 'a': `jump` goes round in a circle: a -> b -> c -> a",
    ),
    "local host with a jump": (
        lines("hosts:", "  - {name: me, address: localhost, jump: relay.example.org}"),
        "hosts.yaml:2: host 'me': `jump` makes no sense for a local host (address 'localhost')",
    ),
    "jump through a local host": (
        lines("hosts:", "  - {name: me, address: local}", "  - {name: a, jump: me}"),
        "hosts.yaml:3: host 'a': `jump` 'me' is a local host; jump through an SSH host instead",
    ),
    # Regular expressions
    "bad process regex": (
        lines("hosts:", HOST_A, "runs:", "  - name: r", "    process: 'train(.py'"),
        "hosts.yaml:5: run 'r': `process` is not a valid regular expression: "
        "missing ), unterminated subpattern at position 5",
    ),
    "process regex too large for re": (
        lines("hosts:", HOST_A, "runs:", "  - {name: r, process: 'a{99999999999}'}"),
        "hosts.yaml:4: run 'r': `process` is not a valid regular expression: "
        "the repetition number is too large",
    ),
    "bad metric regex": (
        lines(
            "hosts:",
            HOST_A,
            "runs:",
            "  - name: r",
            "    process: x",
            "    metrics:",
            "      - {name: m, pattern: '[0-9'}",
        ),
        "hosts.yaml:7: run 'r': metric 'm': `pattern` is not a valid regular expression: "
        "unterminated character set at position 0",
    ),
    "metric regex without a value group": (
        lines(
            "hosts:",
            HOST_A,
            "runs:",
            "  - name: r",
            "    process: x",
            "    metrics:",
            "      - name: grad_norm",
            "        pattern: 'grad_norm=(\\S+)'",
        ),
        "hosts.yaml:8: run 'r': metric 'grad_norm': `pattern` needs a named group (?P<value>...) around the "
        "number, got 'grad_norm=(\\\\S+)'",
    ),
    "empty process regex": (
        lines("hosts:", HOST_A, "runs:", "  - {name: r, process: ''}"),
        "hosts.yaml:4: run 'r': `process` must not be empty",
    ),
    # Numbers out of range
    "port zero": (
        lines("hosts:", "  - {name: a, port: 0}"),
        "hosts.yaml:2: host 'a': `port` must be between 1 and 65535, got 0",
    ),
    "port too large": (
        lines("defaults: {port: 70000}", "hosts:", HOST_A),
        "hosts.yaml:1: `defaults`: `port` must be between 1 and 65535, got 70000",
    ),
    "negative tail_lines": (
        lines("hosts:", HOST_A, "runs:", "  - {name: r, logs: [x], tail_lines: -5}"),
        "hosts.yaml:4: run 'r': `tail_lines` must be 0 or more, got -5",
    ),
    "negative timeout": (
        lines("hosts:", "  - {name: a, connect_timeout: -1}"),
        "hosts.yaml:2: host 'a': `connect_timeout` must be more than 0 seconds, got -1",
    ),
    "zero keepalive interval": (
        lines("defaults:", "  keepalive_interval: 0.0", "hosts:", HOST_A),
        "hosts.yaml:2: `defaults`: `keepalive_interval` must be more than 0 seconds, got 0.0",
    ),
    "infinite poll interval": (
        lines("hosts:", HOST_A, "runs:", "  - {name: r, logs: [x], poll_interval: .inf}"),
        "hosts.yaml:4: run 'r': `poll_interval` must be a finite number of seconds, got .inf",
    ),
    "zero keepalive count": (
        lines("hosts:", "  - {name: a, keepalive_count_max: 0}"),
        "hosts.yaml:2: host 'a': `keepalive_count_max` must be 1 or more, got 0",
    ),
    "zero total_steps": (
        lines("hosts:", HOST_A, "runs:", "  - {name: r, logs: [x], total_steps: 0}"),
        "hosts.yaml:4: run 'r': `total_steps` must be 1 or more, got 0",
    ),
    # Host keys are always verified
    "known_hosts none": (
        lines("defaults:", "  known_hosts: none", "hosts:", HOST_A),
        f"hosts.yaml:2: `defaults`: `known_hosts` cannot be 'none': {KH_HINT}",
    ),
    "known_hosts null": (
        lines("hosts:", "  - name: a", "    known_hosts:"),
        f"hosts.yaml:3: host 'a': `known_hosts` cannot be empty: {KH_HINT}",
    ),
    "known_hosts false": (
        lines("hosts:", "  - {name: a, known_hosts: false}"),
        f"hosts.yaml:2: host 'a': `known_hosts` cannot be 'false': {KH_HINT}",
    ),
    "known_hosts /dev/null": (
        lines("hosts:", "  - {name: a, known_hosts: /dev/null}"),
        f"hosts.yaml:2: host 'a': `known_hosts` cannot be '/dev/null': {KH_HINT}",
    ),
    # YAML itself
    "unclosed flow sequence": (
        lines("hosts:", "  - {name: a, port: 22", "runs: []"),
        "hosts.yaml:3: invalid YAML: expected ',' or '}', but got ':' (while parsing a flow mapping)",
    ),
    "mapping value in a plain scalar": (
        lines("hosts:", "  - name: a: b"),
        "hosts.yaml:2: invalid YAML: mapping values are not allowed here",
    ),
    "bad indentation": (
        lines("hosts:", "  - name: a", "   port: 22"),
        "hosts.yaml:3: invalid YAML: expected <block end>, but found '<block mapping start>' "
        "(while parsing a block collection)",
    ),
    "two documents": (
        lines("hosts:", HOST_A, "---", "hosts: []"),
        "hosts.yaml:3: invalid YAML: but found another document (expected a single document in the stream)",
    ),
    "undefined alias": (
        lines("hosts:", "  - *node"),
        "hosts.yaml:2: invalid YAML: found undefined alias 'node'",
    ),
    "control character": (
        lines("hosts:", "  - {name: a\x07}"),
        "hosts.yaml:2: invalid YAML: unacceptable character #x0007: special characters are not allowed",
    ),
    "merge of a scalar": (
        lines("hosts:", "  - {<<: 3, name: a}"),
        "hosts.yaml:2: host 'a': `<<` must merge a mapping or a list of mappings, got integer 3",
    ),
    # Whole-file shape
    "empty file": ("", "hosts.yaml:1: the file is empty: it needs at least a `hosts` list"),
    "only comments": (
        lines("# nothing here yet", "# hosts:"),
        "hosts.yaml:1: the file is empty: it needs at least a `hosts` list",
    ),
    "top level is a list": (
        lines("- name: a", "- name: b"),
        "hosts.yaml:1: the top level must be a mapping with a `hosts` list, got a list",
    ),
    "top level is a scalar": (
        lines("", "node-0"),
        "hosts.yaml:2: the top level must be a mapping with a `hosts` list, got string 'node-0'",
    ),
}


@pytest.mark.parametrize(("text", "expected"), list(ERROR_CASES.values()), ids=list(ERROR_CASES))
def test_error_names_file_line_and_problem(text: str, expected: str) -> None:
    assert error_of(text) == expected


def test_config_error_attributes() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(lines("hosts:", "  - {name: a, port: 0}"), "conf/hosts.yaml")
    error = caught.value
    assert (error.path, error.line) == ("conf/hosts.yaml", 2)
    assert error.message == "host 'a': `port` must be between 1 and 65535, got 0"
    assert str(error) == "conf/hosts.yaml:2: host 'a': `port` must be between 1 and 65535, got 0"


def test_missing_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as caught:
        load_config("hosts.yaml")
    assert str(caught.value) == "hosts.yaml: cannot read: No such file or directory"
    assert caught.value.line is None


def test_directory_instead_of_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(tmp_path)
    assert str(caught.value) == f"{tmp_path}: cannot read: Is a directory"


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_unreadable_file(tmp_path: Path) -> None:
    path = tmp_path / "hosts.yaml"
    path.write_text("hosts: [{name: a}]\n")
    path.chmod(0)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert str(caught.value) == f"{path}: cannot read: Permission denied"


def test_file_that_is_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "hosts.yaml"
    path.write_bytes(b"hosts:\n  - name: caf\xe9\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert str(caught.value) == f"{path}:2: cannot read: not UTF-8 text (byte 0xe9)"


def test_yaml_nested_too_deeply() -> None:
    assert error_of("hosts: " + "[" * 5000) == "hosts.yaml: invalid YAML: nested too deeply"


def test_error_in_merged_mapping_points_at_the_anchor() -> None:
    text = lines(
        "x-common: &common",
        "  prot: 22",
        "hosts:",
        "  - {<<: *common, name: a}",
    )
    # `x-common` itself is unknown too; the first problem met is reported.
    assert (
        error_of(text)
        == "hosts.yaml:1: unknown key `x-common` at the top level (known keys: defaults, hosts, runs)"
    )
    text = lines("defaults: &common", "  user: alice", "hosts:", "  - {<<: *common, name: a, prot: 1}")
    assert error_of(text) == "hosts.yaml:4: host 'a': unknown key `prot` (did you mean `port`?)"
    text = lines("defaults: &common", "  user: [alice]", "hosts:", "  - {<<: *common, name: a}")
    assert error_of(text) == "hosts.yaml:2: `defaults`: `user` must be a string, got a list"


# ------------------------------------------------------------------------------------------------------------
# Properties: whatever the text, only ConfigError comes out, and always as one line with a sane line number


def check_only_config_errors(text: str) -> None:
    try:
        config = parse_config(text, "hosts.yaml")
    except ConfigError as error:
        assert "\n" not in str(error)
        assert str(error).startswith("hosts.yaml")
        assert (
            error.line is None or 1 <= error.line <= len(re.split(r"\r\n|[\r\n\x85\u2028\u2029]", text)) + 1
        )
    else:
        assert config.hosts
        assert all(run.hosts for run in config.runs)


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_arbitrary_text_raises_only_config_error(text: str) -> None:
    check_only_config_errors(text)


_KEYS = sorted({key for keys in known_keys().values() for key in keys} | {"<<", "nme"})
_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(["a", "b", "node-0", "local", "x.y", "(?P<value>\\d+)", "(", "none", "~/k", ""]),
    st.text(max_size=8),
)
_VALUES = st.recursive(
    _SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(_KEYS), inner, max_size=4),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.sampled_from(_KEYS), _VALUES, max_size=4))
def test_structured_yaml_raises_only_config_error(document: dict[str, object]) -> None:
    check_only_config_errors(yaml.safe_dump(document))


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_mutated_example_raises_only_config_error(data: st.DataObject) -> None:
    text = EXAMPLE.read_text()
    for _ in range(data.draw(st.integers(min_value=1, max_value=3))):
        position = data.draw(st.integers(min_value=0, max_value=len(text)))
        cut = data.draw(st.integers(min_value=0, max_value=3))
        insert = data.draw(
            st.sampled_from(["", ":", "-", " ", "\n", "[", "{", "'", "#", "&a", "*a", "<<: 1"])
        )
        text = text[:position] + insert + text[position + cut :]
    check_only_config_errors(text)
