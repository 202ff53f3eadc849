"""Fuzzing: the YAML policy loader, and the env file round trip through systemd's reader.

Policy loader: `cortex_hook.policy.parse_policy(text, path)` must return a Policy or raise
PolicyError, whatever the text; a PolicyError message is one line (as the CLI prints it: no
character `str.splitlines` breaks on) starting with the path. Nothing else may escape: any other
exception is a failure. The documents come from
  - arbitrary text, YAML-ish text and arbitrary bytes (through `load_policy` and a real file);
  - documents built from the real schema (every top-level and service key, with valid values,
    wrong types, unknown keys, huge ints, NaN/inf, control characters, sizes, durations),
    dumped by PyYAML with random styles; repeated objects become anchors and aliases;
  - hand-assembled text with anchors, aliases, `<<` merge keys (single, lists, recursive,
    undefined), explicit tags (`!!bool maybe`, `!!int ""`, `!!timestamp x`, ...) and alias bombs;
  - a fixed corpus of tricky documents (one test each, so every distinct bug shows on its own);
  - a few dozen random documents through the real `cortex-hook validate FILE`.

Env files: `render_env` output parsed by a reference parser written from systemd 252's
EnvironmentFile= rules (not from our code) gives back exactly the values.

bench/stress.py imports the strategies and `policy_outcome` from here for its long fuzz run;
CORTEX_HOOK_FUZZ_SCALE multiplies every example count (default 1: a few thousand in all).
"""

import json
import math
import os
import subprocess
import sys
import time

import pytest
import yaml
from hypothesis import HealthCheck, Phase, assume, example, given, settings
from hypothesis import strategies as st

from cortex_hook.systemd.envfile import render_env
from cortex_hook.errors import PolicyError, UsageError
from cortex_hook.model import Policy
from cortex_hook.policy.parse import HEALTH_KEYS, SCORING_KEYS, SERVICE_KEYS, TOP_KEYS, parse_policy
from cortex_hook.policy.load import load_policy

from .helpers.box import assert_one_line_error

SCALE = float(os.environ.get("CORTEX_HOOK_FUZZ_SCALE", "1"))


def examples(n):
    return max(1, int(n * SCALE))


def fuzz_settings(n, shrink=True):
    """N examples (times SCALE). SHRINK=False for the big generated documents: shrinking them
    costs more than the whole run (a failure is reported as found; TRICKY has the small cases)."""
    phases = list(Phase) if shrink else [Phase.explicit, Phase.reuse, Phase.generate, Phase.target]
    return settings(max_examples=examples(n), deadline=None, phases=phases,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.filter_too_much])


# =================================================================================================
# systemd 252 EnvironmentFile= reader (reference implementation, written from the rules)
# =================================================================================================
# Rules (systemd 252, src/basic/env-file.c, as documented and as it behaves):
#  - a line whose first non-blank character is `#` or `;` is a comment; in systemd <= 253 a
#    backslash inside a comment escapes the next character, so a comment line ending in `\`
#    swallows the line after it (v254 changed that);
#  - `NAME=VALUE`; blanks around NAME and before VALUE are skipped; a line without `=` is dropped;
#  - VALUE in double quotes: `\` before one of " \ ` $ gives that character, `\` before a
#    newline removes both, any other `\` is kept together with the character after it, and a
#    literal newline is kept;
#  - VALUE in single quotes: literal up to the next `'`;
#  - unquoted VALUE: up to the newline, trailing blanks dropped, `\` escapes the next character
#    and `\`-newline continues the line;
#  - quoted and unquoted pieces may follow one another (`A="x"'y'z` is `xyz`);
#  - the file is read up to the first NUL; names and values must be valid UTF-8.
from .helpers.envrules import _valid_env_name, env_as_systemd_reads, parse_env_252


# -- the reference parser itself (so a mistake in it cannot hide one in render_env) -------------
@pytest.mark.parametrize("text, expected", [
    ('A="x"\n', [("A", "x")]),
    ('A="a\\"b\\\\c\\`d\\$e"\n', [("A", 'a"b\\c`d$e')]),
    ('A="a\\nb"\n', [("A", "a\\nb")]),  # other backslashes stay, with their character
    ('A="a\\\nb"\n', [("A", "ab")]),  # backslash-newline vanishes
    ('A="a\nb"\n', [("A", "a\nb")]),  # a literal newline is kept
    ("# c\nA=1\n; c\nB='x y' \n", [("A", "1"), ("B", "x y")]),
    ("  A  =  v v  \n", [("A", "v v")]),
    ("# ends in a backslash \\\nA=hidden\nB=seen\n", [("B", "seen")]),  # systemd <= 253
])
def test_reference_env_parser_follows_systemd_rules(text, expected):
    pairs, complete = parse_env_252(text)
    assert pairs == expected and complete


@pytest.mark.parametrize("text", ['A="x', 'A="x"', "A=x", "JUNK\n", "1A=x\n"])
def test_reference_env_parser_reports_incomplete_files(text):
    assert parse_env_252(text)[1] is False


# =================================================================================================
# env file round trip
# =================================================================================================
_SPECIAL = '\\"$`\'\n\r\t #;={}%!*?[]~&|<>()'
env_names = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,24}", fullmatch=True)
# valid UTF-8 without NUL: every code point except surrogates (not encodable) and U+0000
env_values = st.text(alphabet=st.one_of(
    st.sampled_from(_SPECIAL),
    st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00")), max_size=60)
unit_names = st.from_regex(r"[A-Za-z0-9:_.\\-]{1,40}(@[A-Za-z0-9:_.\\-]{1,20})?", fullmatch=True) \
    .map(lambda s: s + ".service")


@fuzz_settings(600)
@given(env=st.dictionaries(env_names, env_values, max_size=8), unit=unit_names)
def test_env_file_round_trip_through_systemd_rules(env, unit):
    """What render_env writes, systemd reads back byte for byte (with the header allocate uses)."""
    header = f"written by cortex-hook for {unit} at 2024-05-01 12:00:00; do not edit"
    text = render_env(env, header)
    text.encode("utf-8")  # what write_atomic writes: must encode
    assert text.endswith("\n")
    assert list(env_as_systemd_reads(text).items()) == list(env.items())
    pairs, complete = parse_env_252(text)
    assert complete and [n for n, _ in pairs] == list(env)  # each name exactly once, in order


@fuzz_settings(300)
@given(env=st.dictionaries(env_names, env_values, min_size=1, max_size=4),
       header=st.text(alphabet=st.one_of(st.sampled_from(_SPECIAL), st.characters(
           blacklist_categories=("Cs",), blacklist_characters="\x00")), max_size=40))
@example(env={"CUDA_VISIBLE_DEVICES": "GPU-1"}, header="copied from C:\\")  # a line ending in a backslash
def test_env_file_header_never_hides_a_variable(env, header):
    """render_env takes any header text: no header may change what systemd reads."""
    assert env_as_systemd_reads(render_env(env, header)) == env


@fuzz_settings(200)
@given(env=st.dictionaries(env_names, env_values, max_size=3),
       bad=st.one_of(
           st.tuples(st.text(max_size=8).filter(lambda n: not _valid_env_name(n) or not n.isascii()),
                     env_values),
           st.tuples(env_names, st.text(max_size=8).map(lambda s: s + "\0"))))
def test_render_env_refuses_what_systemd_would_alter(env, bad):
    name, value = bad
    if name in env:
        env.pop(name)
    env[name] = value
    with pytest.raises(UsageError):
        render_env(env)


# =================================================================================================
# policy loader
# =================================================================================================
POLICY_PATH = "/etc/cortex-hook/policy.yaml"
PATHS = [POLICY_PATH, "policy.yaml", "/srv/pölicy dir/p.yaml"]


def policy_outcome(text, path=POLICY_PATH):
    """Run parse_policy; -> ("ok", Policy) | ("policy-error", message) | ("bad-message", message)
    | ("crash", "ExcType: message"). Only the first two are acceptable."""
    try:
        policy = parse_policy(text, path)
    except PolicyError as exc:
        message = str(exc)
        if not message.startswith(path) or len(message.splitlines()) != 1:
            return "bad-message", message
        return "policy-error", message
    except RecursionError as exc:
        return "crash", f"RecursionError: {exc}"
    except Exception as exc:  # noqa: BLE001 - any other exception is the finding
        return "crash", f"{type(exc).__name__}: {exc}"
    if not isinstance(policy, Policy):
        return "crash", f"returned {type(policy).__name__}, not a Policy"
    return "ok", policy


def assert_policy_outcome(text, path=POLICY_PATH):
    kind, detail = policy_outcome(text, path)
    assert kind in ("ok", "policy-error"), f"{kind}: {detail!r}\ndocument: {text!r}"
    return kind, detail


# -- building blocks --------------------------------------------------------------------------------
HUGE = 10 ** 400
SIZES = ["20GiB", "512MiB", "24GB", "1.5G", "0", "1", "90%", "100%", "0%", "101%", "-1", "-1%",
         "nan%", "inf%", "1e3GiB", "20 GiB", " 7 k ", "12XB", "", "%", "1.", ".5G", "9" * 400 + "GiB",
         "9" * 400, "9" * 400 + "%", "0x10", "20GiB ", "½GiB"]
DURATIONS = ["10s", "5m", "1h 30m", "1min30s", "250ms", "0s", "0", "-1s", "1d", "2 days", "1h30",
             "5 parsecs", "", " ", "9" * 400 + "s", "9" * 400, "1.5.5s", "s", "99999999999", "1e3s"]
ON_UNAVAILABLE = ["fail", "cpu", "wait 5m", "wait", "wait 0s", "wait -1s", "wait 1x",
                  "wait " + "9" * 400, " wait  90s ", "WAIT 5m", "waiting 5m", "sleep", "wait 1h 2m"]
READINESS = ["http://127.0.0.1:8080/health", "tcp://localhost:8000", "http://h:99999", "ftp://x:1",
             "http://[::1]:80/", "http://a:1/\x7f", "", "http://a:1/ä"]
GLOBS = ["*", "vllm@*.service", "llama-server.service", "triton", "a?c", "[ab]*", "[", "a b",
         "ü.service", "x\\x2dy.service", "", "@", "*.socket", "a\nb", "a/b", "chat", "chat.service"]
SERVERS = ["generic", "vllm", "llama.cpp", "triton", "sglang", "tgi", "ollama", "Vllm", "",
           "x" * 70, "no-such-server", "v llm"]
UUIDS = ["GPU-00000000-0000-4000-8000-000000000001", "MIG-4f1c2a00-8d3e-4b6a-9f10-0000000000a3",
         "GPU-xyz", "0", "", "gpu-00000000-0000-4000-8000-00000000000g"]
NEAR_MISS_KEYS = ["servics", "verison", "gpu", "match ", "Match", "<<", "class_", "sharing:",
                  "health.max_temperature", "", " ", "\t", "a\nb", "k\u2028y", "é", "\x85", "~"]

# text with control characters, unicode line separators, quotes, YAML punctuation
weird_text = st.text(alphabet=st.one_of(
    st.characters(blacklist_categories=("Cs",)),
    st.sampled_from("\x00\x01\x07\x08\x0b\x0c\x1b\x1c\x7f\x85\u2028\u2029\ufeff\t\r\n :#&*!|>'\"%@`{}[],-?")),
    max_size=16)
huge_ints = st.one_of(st.integers(min_value=-HUGE, max_value=HUGE),
                      st.sampled_from([2 ** 63, -2 ** 63 - 1, 2 ** 64, HUGE, -HUGE, 10 ** 20]))
floats = st.floats(allow_nan=True, allow_infinity=True)
scalars = st.one_of(st.none(), st.booleans(), st.integers(-3, 2000), huge_ints, floats, weird_text,
                    st.sampled_from(SIZES + DURATIONS + ON_UNAVAILABLE + READINESS + GLOBS + SERVERS))
unknown_keys = st.one_of(st.sampled_from(NEAR_MISS_KEYS), weird_text, st.integers(-5, 5), st.booleans(),
                         st.none(), floats)
anything = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(unknown_keys, inner, max_size=3)), max_leaves=8)


def _mostly(valid, p_valid=3):
    """VALID most of the time, anything else otherwise."""
    return st.one_of(*([valid] * p_valid), anything)


# per key: the values a sysadmin might write (valid ones and near misses)
SERVICE_POOLS = {
    "match": st.one_of(st.sampled_from(GLOBS), st.from_regex(r"[a-z]{1,6}(@\*)?", fullmatch=True)),
    "server": st.sampled_from(SERVERS),
    "gpus": st.one_of(st.integers(0, 1100), st.just("all"), st.sampled_from([True, HUGE, -1, "2", 1.0])),
    "min_free_memory": st.one_of(st.sampled_from(SIZES), st.integers(-1, 2 ** 40), huge_ints),
    "sharing": st.sampled_from(["exclusive", "shared", "Shared", "share"]),
    "visible_devices": st.sampled_from(["uuid", "index", "indices"]),
    "topology": st.sampled_from(["any", "prefer-nvlink", "require-nvlink", "nvlink"]),
    "same_model": st.sampled_from([True, False, "true", "yes", 1, None, "same"]),
    "class": st.sampled_from(["critical", "normal", "batch", "Critical", "low"]),
    "on_unavailable": st.sampled_from(ON_UNAVAILABLE),
    "install": st.sampled_from(["env", "exec", "supervise", "yes", True]),
    "readiness": st.sampled_from(READINESS),
    "watchdog": st.one_of(st.sampled_from(DURATIONS), st.integers(-5, 10 ** 6), huge_ints, floats),
    "on_gpu_fault": st.sampled_from(["restart", "stop", "ignore", "Restart", "reboot", True]),
    "placement": st.sampled_from(["pack", "spread", "Pack", "binpack", None]),
    "preempt": st.sampled_from(["never", "lower", "Lower", "higher", True, None]),
    "cdi": st.sampled_from([True, False, "yes", None]),
    "when_preempted": st.sampled_from(["requeue", "stop", "never", "kill", False]),
    "preempt_grace": st.one_of(st.sampled_from(DURATIONS), st.integers(-5, 10 ** 7), huge_ints, floats),
    "options": st.dictionaries(st.one_of(st.from_regex(r"[a-z_]{1,12}", fullmatch=True), unknown_keys),
                               scalars, max_size=3),
}
TOP_POOLS = {
    "version": st.just(1),
    "inventory": st.one_of(st.just("nvml"), st.just({"simulated": "gpus.json"}),
                           st.dictionaries(st.sampled_from(["simulated", "file"]), scalars, max_size=2)),
    "discovery_timeout": st.one_of(st.sampled_from(DURATIONS), st.integers(-5, 10 ** 12), huge_ints, floats),
    "history_limit": st.one_of(st.integers(-2, 10 ** 6), huge_ints),
    "isolate": st.booleans(),
    "placement": st.sampled_from(["pack", "spread", "fill", 1]),
    "handoff_timeout": st.one_of(st.sampled_from(DURATIONS), st.integers(-5, 10 ** 12), huge_ints, floats),
    "metrics": st.fixed_dictionaries({}, optional={
        "listen": st.sampled_from(["127.0.0.1:9772", "[::1]:9772", "localhost:1", "0.0.0.0:9772", "10.1.2.3:80",
                                   "127.0.0.1:0", "127.0.0.1:65536", "host:9772", ":9772", "127.0.0.1"]),
        "allow_remote": st.sampled_from([True, False, "yes"]),
        "job_mapping_dir": st.sampled_from(["/run/cortex-hook/dcgm-job-map", "relative/dir", "/a/../b", "", "/x\n"]),
    }),
    "health": st.fixed_dictionaries({}, optional={
        **{k: st.booleans() for k in HEALTH_KEYS},
        "max_temperature": st.one_of(st.none(), st.integers(-5, 200), huge_ints, floats),
        **{k: st.lists(st.one_of(st.integers(-1, 200), huge_ints, st.sampled_from(["79", 7.9, None])), max_size=5)
           for k in ("fatal_xids", "ignore_xids")},
        **{k: st.one_of(st.sampled_from(DURATIONS + ["never", "Never"]), st.integers(-5, 10 ** 7), huge_ints, floats)
           for k in ("poll", "recover", "fault_restart_window", "demote_window")},
        **{k: st.one_of(st.integers(-1, 100), huge_ints, floats)
           for k in ("max_fault_restarts", "demote_corrected_ecc")}}),
    "scoring": st.fixed_dictionaries({}, optional={
        k: st.one_of(st.integers(-2, 10), floats, huge_ints) for k in SCORING_KEYS}),
    "reservations": st.dictionaries(
        st.one_of(st.sampled_from(UUIDS), weird_text),
        st.one_of(st.sampled_from(GLOBS), st.lists(st.sampled_from(GLOBS), max_size=3)), max_size=3),
}
# ... and, a quarter of the time, anything at all (wrong types, nesting, unknown keys inside)
SERVICE_VALUES = {k: _mostly(v) for k, v in SERVICE_POOLS.items()}
TOP_VALUES = {k: (st.one_of(v, v, v, v, anything) if k == "version" else _mostly(v)) for k, v in TOP_POOLS.items()}


@st.composite
def service_dicts(draw, values, junk=True):
    keys = draw(st.lists(st.sampled_from(SERVICE_KEYS), unique=True, max_size=len(SERVICE_KEYS)))
    if "match" not in keys and (not junk or draw(st.integers(0, 9)) < 8):
        keys.insert(0, "match")
    svc = {k: draw(values[k]) for k in keys}
    if junk and draw(st.integers(0, 3)) == 0:
        svc[draw(unknown_keys)] = draw(anything)
    return svc


@st.composite
def schema_documents(draw, top=None, values=None, junk=True):
    """A Python object shaped like a policy: every key of the schema, with values from TOP and
    VALUES; with JUNK, also unknown keys, wrong types and documents that are not mappings."""
    top, values = top or TOP_VALUES, values or SERVICE_VALUES
    if junk and draw(st.integers(0, 19)) == 0:
        return draw(anything)  # not a mapping at all
    doc = {}
    if not junk or draw(st.integers(0, 9)) < 9:
        doc["version"] = draw(top["version"])
    for key in draw(st.lists(st.sampled_from([k for k in TOP_KEYS if k not in ("version", "services")]),
                             unique=True, max_size=4)):
        doc[key] = draw(top[key])
    services = draw(st.lists(service_dicts(values, junk), max_size=4))
    if services and draw(st.booleans()):  # the same object twice: PyYAML writes an anchor and an alias
        services.append(services[draw(st.integers(0, len(services) - 1))])
    if not junk or draw(st.integers(0, 9)) < 8:
        doc["services"] = services if not junk or draw(st.integers(0, 9)) else draw(anything)
    if junk and draw(st.integers(0, 5)) == 0:
        doc[draw(unknown_keys)] = draw(anything)
    order = draw(st.permutations(list(doc)))
    return {k: doc[k] for k in order}


@st.composite
def dumped(draw, objects):
    """OBJECTS dumped as YAML with random styles."""
    obj = draw(objects)
    return yaml.safe_dump(obj, default_flow_style=draw(st.sampled_from([False, True, None])),
                          allow_unicode=draw(st.booleans()), width=draw(st.sampled_from([20, 80, 10 ** 6])),
                          explicit_start=draw(st.booleans()), indent=draw(st.sampled_from([2, 4])),
                          sort_keys=False)


def flow(value):
    """VALUE as one line of YAML flow syntax."""
    return yaml.safe_dump([value], default_flow_style=True, width=10 ** 9, allow_unicode=True).strip()[1:-1]


TAGS = ["!!bool", "!!int", "!!float", "!!null", "!!str", "!!timestamp", "!!binary", "!!set", "!!omap",
        "!!pairs", "!!seq", "!!map", "!!merge", "!local", "!!python/object:os.system",
        "!<tag:yaml.org,2002:int>", "!!value", "!!yaml"]
TAGGED_CONTENT = ["", "-", "+", "maybe", "yes", "0x", "0b", "0o", "1_000", "1:30", "2001-12-14", "x",
                  "1", ".inf", ".nan", "YWJj", "@@", "~", "1e400", "-0"]
tagged_values = st.builds(lambda tag, content, quoted: f"{tag} {json.dumps(content)}" if quoted else
                          f"{tag} {content}".rstrip(),
                          st.sampled_from(TAGS), st.one_of(st.sampled_from(TAGGED_CONTENT), weird_text.map(str)),
                          st.booleans())


@st.composite
def value_text(draw, key, values):
    """The text of a value for KEY: flow YAML of a schema value, or an explicitly tagged scalar."""
    if draw(st.integers(0, 5)) == 0:
        text = draw(tagged_values)
        return text if "\n" not in text else json.dumps(text)
    return flow(draw(values[key]))


@st.composite
def anchored_documents(draw):
    """Hand-assembled YAML with anchors, aliases, `<<` merges (also recursive and undefined),
    explicit tags and small alias/merge bombs."""
    lines = []
    if draw(st.integers(0, 9)) < 9:
        lines.append("version: " + draw(st.one_of(st.just("1"), st.just("&v 1"), value_text("version", TOP_VALUES))))
    for key in draw(st.lists(st.sampled_from(["history_limit", "discovery_timeout", "isolate", "health",
                                              "scoring", "reservations", "inventory"]), unique=True, max_size=3)):
        lines.append(f"{key}: {draw(value_text(key, TOP_VALUES))}")
    if draw(st.integers(0, 5)) == 0:  # a merge key at the top level
        lines.append("<<: " + draw(st.sampled_from(["{history_limit: 5}", "*v", "[{isolate: true}, {isolate: false}]",
                                                    "5", "*nowhere", "{services: []}"])))
    lines.append("services:" if draw(st.integers(0, 9)) else "services: &all")
    anchors = []
    for i in range(draw(st.integers(0, 5))):
        kind = draw(st.sampled_from(["plain", "anchor", "anchor", "merge", "merge-list", "alias", "recursive",
                                     "merge-scalar", "undefined"]))
        keys = draw(st.lists(st.sampled_from(SERVICE_KEYS), unique=True, max_size=4))
        if kind in ("plain", "anchor") and "match" not in keys:
            keys.insert(0, "match")
        body = "{" + ", ".join(f"{k}: {draw(value_text(k, SERVICE_VALUES))}" for k in keys) + "}"
        overrides = [f"  {k}: {draw(value_text(k, SERVICE_VALUES))}" for k in keys]
        if kind == "plain" or (kind in ("merge", "merge-list", "alias") and not anchors):
            lines.append(f"- {body}")
        elif kind == "anchor":
            anchors.append(f"s{i}")
            lines.append(f"- &s{i} {body}")
        elif kind == "merge":
            lines += [f"- <<: *{draw(st.sampled_from(anchors))}"] + overrides
        elif kind == "merge-list":
            refs = draw(st.lists(st.sampled_from(anchors), min_size=1, max_size=4))
            lines += ["- <<: [" + ", ".join("*" + r for r in refs) + "]"] + overrides
        elif kind == "alias":
            lines.append(f"- *{draw(st.sampled_from(anchors))}")
        elif kind == "recursive":
            lines.append(f"- &r{i} {{match: r{i}, <<: *r{i}}}")
        elif kind == "merge-scalar":
            lines += ["- <<: " + draw(st.sampled_from(["5", "[1, 2]", "~", "*all", "[*all]"]))] + overrides
        else:
            lines += ["- <<: *undefined"] + overrides
    if draw(st.integers(0, 7)) == 0:  # a small merge bomb: fan-out ** depth merged mappings
        fan, depth = draw(st.integers(2, 6)), draw(st.integers(2, 6))
        lines.append("- &m0 {match: bomb, gpus: 1}")
        for d in range(1, depth + 1):
            lines.append(f"- &m{d} {{<<: [" + ", ".join([f"*m{d - 1}"] * fan) + "]}")
    if draw(st.integers(0, 9)) == 0:  # nesting well below what could exhaust the C stack
        n = draw(st.integers(1, 2000))
        lines.append("- " + draw(st.sampled_from(["[" * n + "]" * n, "{a: " * n + "1" + "}" * n])))
    return "\n".join(lines) + "\n"


@st.composite
def mutated(draw, texts):
    """TEXTS with a few characters replaced, inserted or deleted."""
    text = draw(texts)
    for _ in range(draw(st.integers(1, 3))):
        pos = draw(st.integers(0, len(text)))
        op = draw(st.sampled_from(["insert", "delete", "replace"]))
        ch = draw(st.sampled_from(list(":-[]{}&*!|>'\"#%@` \t\n\x00\x85\u2028\\,?<=")))
        if op == "insert":
            text = text[:pos] + ch + text[pos:]
        elif op == "delete":
            text = text[:pos] + text[pos + 1:]
        else:
            text = text[:pos] + ch + text[pos + 1:]
    return text


YAMLISH_TOKENS = list("versionsmatchgpuall: -[]{}&*!|>'\"#%@`,?<=\\\t\n 0123456789.~") + [
    "\r", "\x00", "\x08", "\u2028", "\ufeff", "\x85", "<<", "version: 1\n", "services:\n", "- match: ", "&a ", "*a",
    "!!int ", "!!bool ", "---\n", "...\n", "? "]
yamlish_text = st.lists(st.sampled_from(YAMLISH_TOKENS), max_size=80).map("".join)
structured_text = dumped(schema_documents())
plausible_text = dumped(schema_documents(TOP_POOLS, SERVICE_POOLS, junk=False))  # accepted more often
policy_documents = st.one_of(structured_text, anchored_documents(), mutated(structured_text),
                             mutated(anchored_documents()), yamlish_text)


# -- in-process fuzz tests ------------------------------------------------------------------------
@fuzz_settings(500)
@given(text=st.text(max_size=300), path=st.sampled_from(PATHS))
def test_policy_from_arbitrary_text(text, path):
    assert_policy_outcome(text, path)


@fuzz_settings(400)
@given(text=yamlish_text)
def test_policy_from_yamlish_text(text):
    assert_policy_outcome(text)


@pytest.fixture(scope="module")
def fuzz_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("policyfuzz")
    os.chmod(d, 0o755)
    return d


@fuzz_settings(300)
@given(data=st.one_of(st.binary(max_size=300),
                      st.builds(lambda t, b, i: (t.encode()[:i] + b + t.encode()[i:]),
                                structured_text, st.binary(min_size=1, max_size=3), st.integers(0, 400))))
def test_policy_from_arbitrary_bytes_through_a_file(fuzz_dir, data):
    """Bytes on disk go through load_policy (UTF-8 decoding, size limit) and then the parser."""
    path = str(fuzz_dir / "policy.yaml")
    with open(path, "wb") as f:
        f.write(data)
    try:
        policy = load_policy(path, check_owner=False)
    except PolicyError as exc:
        message = str(exc)
        assert message.startswith(path) and len(message.splitlines()) == 1, (message, data)
    else:
        assert isinstance(policy, Policy)


@fuzz_settings(700, shrink=False)
@given(text=st.one_of(structured_text, plausible_text), path=st.sampled_from(PATHS))
def test_policy_from_schema_shaped_documents(text, path):
    assert_policy_outcome(text, path)


@fuzz_settings(700)
@given(text=anchored_documents())
def test_policy_with_anchors_merges_tags_and_bombs(text):
    started = time.monotonic()
    assert_policy_outcome(text)
    assert time.monotonic() - started < 5, "a small document took over 5 s (alias/merge bomb?)"


@fuzz_settings(300, shrink=False)
@given(text=st.one_of(mutated(structured_text), mutated(anchored_documents())))
def test_policy_from_mutated_documents(text):
    assert_policy_outcome(text)


def _finite_or_none(x):
    return x is None or (isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x))


@fuzz_settings(250, shrink=False)
@given(text=plausible_text)
def test_accepted_policies_hold_usable_values(text):
    """What the loader accepts, the rest of cortex-hook can use: the types it promises, and
    durations and sizes that are finite numbers (an infinite timeout cannot be waited on)."""
    kind, policy = policy_outcome(text)
    assume(kind == "ok")
    assert policy.inventory in ("nvml", "simulated")
    assert isinstance(policy.history_limit, int) and policy.history_limit >= 1
    assert isinstance(policy.discovery_timeout, float) and 0 < policy.discovery_timeout
    assert math.isfinite(policy.discovery_timeout), text
    assert 1 <= policy.handoff_timeout_seconds and math.isfinite(policy.handoff_timeout_seconds), text
    for svc in policy.services:
        assert svc.gpus == "all" or (isinstance(svc.gpus, int) and 1 <= svc.gpus <= 1024)
        assert svc.match.endswith((".service", "*")) and "\n" not in svc.match
        assert svc.min_free_memory is None or (isinstance(svc.min_free_memory, int) and svc.min_free_memory >= 0)
        assert svc.min_free_fraction is None or 0 <= svc.min_free_fraction <= 1
        assert _finite_or_none(svc.watchdog_seconds), (svc.watchdog_seconds, text)
        assert _finite_or_none(svc.wait_seconds), (svc.wait_seconds, text)
        assert svc.same_model in (None, True, False), (svc.same_model, text)
        assert svc.preempt in ("never", "lower") and svc.when_preempted in ("requeue", "stop", "never"), text
        assert not (svc.preempt == "lower" and svc.klass == "batch"), text
        assert 1 <= svc.preempt_grace_seconds and math.isfinite(svc.preempt_grace_seconds), text


# -- a corpus of tricky documents: one test each ---------------------------------------------------
TRICKY = {
    "empty": "",
    "only-comment": "# nothing\n",
    "document-end-only": "...\n",
    "two-documents": "version: 1\n---\nversion: 1\n",
    "bom": "\ufeffversion: 1\n",
    "crlf": "version: 1\r\nservices:\r\n  - match: a\r\n",
    "nul": "version: 1\x00\n",
    "tab-indent": "version: 1\nservices:\n\t- match: a\n",
    "scalar-root": "just text\n",
    "list-root": "- version: 1\n",
    "version-huge": f"version: {HUGE}\n",
    "version-nan": "version: .nan\n",
    "version-true": "version: true\n",
    "key-with-newline": 'version: 1\n"foo\\nbar": 1\n',
    "key-with-line-separator": 'version: 1\n"foo\\u2028bar": 1\n',
    "option-key-with-newline": 'version: 1\nservices:\n  - match: a\n    options: {"k\\ny": [1]}\n',
    "reservation-key-with-newline": 'version: 1\nreservations:\n  "GPU-\\nx": [a]\n',
    "complex-key": "version: 1\n? [a, b]\n: 1\n",
    "bool-tag-maybe": "version: !!bool maybe\n",
    "int-tag-empty": 'version: !!int ""\n',
    "int-tag-minus": 'version: !!int "-"\n',
    "float-tag-empty": 'version: 1\nhistory_limit: !!float ""\n',
    "timestamp-tag-garbage": "version: 1\ndiscovery_timeout: !!timestamp x\n",
    "unknown-local-tag": "version: !foo 1\n",
    "python-tag": "version: !!python/object/apply:os.system [true]\n",
    "options-not-a-mapping": "version: 1\nservices:\n  - match: a\n    options: [1]\n",
    "options-left-empty": "version: 1\nservices:\n  - match: a\n    options:\n    #  flags: ours\n",
    "reservations-not-a-mapping": "version: 1\nreservations: 5\n",
    "recursive-options": "version: 1\nservices: &a\n  - match: a\n    options: *a\n",
    "recursive-merge": "version: 1\nservices:\n  - &r {match: a, <<: *r}\n",
    "merge-of-scalar": "version: 1\nservices:\n  - <<: 5\n    match: a\n",
    "undefined-alias": "version: 1\nservices:\n  - *nowhere\n",
    "min-free-memory-huge-digits": "version: 1\nservices:\n  - match: a\n    min_free_memory: " + "9" * 400 + "GiB\n",
    "min-free-memory-huge-int": f"version: 1\nservices:\n  - match: a\n    min_free_memory: {HUGE}\n",
    "watchdog-huge-int": f"version: 1\nservices:\n  - match: a\n    watchdog: {HUGE}\n",
    "discovery-timeout-huge-int": f"version: 1\ndiscovery_timeout: {HUGE}\n",
    "scoring-huge-int": f"version: 1\nscoring: {{free_memory: {HUGE}}}\n",
    "max-temperature-huge": f"version: 1\nhealth: {{max_temperature: {HUGE}}}\n",
    "gpus-huge": f"version: 1\nservices:\n  - match: a\n    gpus: {HUGE}\n",
    "wait-huge": "version: 1\nservices:\n  - match: a\n    on_unavailable: wait " + "9" * 400 + "\n",
    "percent-nan": "version: 1\nservices:\n  - match: a\n    min_free_memory: nan%\n",
    "nesting-2000": "version: 1\nservices: " + "[" * 2000 + "]" * 2000 + "\n",
    "alias-bomb": "version: 1\nservices:\n  - &m0 {match: bomb}\n" + "".join(
        f"  - &m{d} {{<<: [" + ", ".join([f"*m{d - 1}"] * 10) + "]}\n" for d in range(1, 10)),
}


@pytest.mark.parametrize("name", sorted(TRICKY))
def test_tricky_policy_document(name):
    started = time.monotonic()
    assert_policy_outcome(TRICKY[name])
    assert time.monotonic() - started < 5


# -- the real CLI --------------------------------------------------------------------------------
def _cli_env():
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CORTEX_HOOK_", "JOURNAL_STREAM"))}
    env["CORTEX_HOOK_RUNTIME_DIR"] = "/nonexistent/cortex-hook-fuzz"  # no policy cache, ever
    return env


def run_validate(path, timeout=60):
    return subprocess.run([sys.executable, "-m", "cortex_hook", "validate", path], env=_cli_env(),
                          capture_output=True, text=True, timeout=timeout)


def assert_validate_outcome(r, path):
    assert "Traceback" not in r.stderr, r.stderr
    assert r.returncode in (0, 78), (r.returncode, r.stdout, r.stderr)
    if r.returncode == 0:
        assert r.stdout.startswith(f"{path}: ok ("), r.stdout
        assert r.stderr.strip() == "", r.stderr
    else:
        line = assert_one_line_error(r.stderr, path)
        assert line.startswith(f"cortex-hook: {path}")


@settings(max_examples=examples(30), deadline=None,
          # no shrinking: every step would be another process; the document is printed as found
          phases=[Phase.explicit, Phase.reuse, Phase.generate],
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                 HealthCheck.data_too_large])
@given(text=policy_documents)
def test_validate_cli_on_random_documents(fuzz_dir, text):
    """`cortex-hook validate FILE`: exit 0 or 78, one line on stderr, never a traceback."""
    path = str(fuzz_dir / "cli-policy.yaml")
    with open(path, "w", encoding="utf-8", errors="surrogatepass") as f:
        f.write(text)
    os.chmod(path, 0o644)
    assert_validate_outcome(run_validate(path), path)


def test_validate_cli_survives_deeply_nested_policy(fuzz_dir):
    """A 60 KB policy of nested brackets (far below the 1 MiB limit) is an error, not a crash."""
    path = str(fuzz_dir / "deep.yaml")
    depth = 30_000
    with open(path, "w") as f:
        f.write("version: 1\nservices: " + "[" * depth + "]" * depth + "\n")
    os.chmod(path, 0o644)
    r = run_validate(path)
    assert r.returncode >= 0, f"cortex-hook validate died of signal {-r.returncode}"
    assert_validate_outcome(r, path)
    assert r.returncode == 78


@pytest.mark.parametrize("value", ["99999999999", "9" * 400])
def test_accepted_discovery_timeout_is_usable(fuzz_dir, value):
    """If `validate` accepts a discovery_timeout, commands that use it must not crash on it."""
    path = str(fuzz_dir / f"timeout-{len(value)}.yaml")
    with open(path, "w") as f:
        f.write(f"version: 1\ninventory: nvml\ndiscovery_timeout: {value}\nservices:\n  - match: '*'\n")
    os.chmod(path, 0o644)
    r = run_validate(path)
    assert r.returncode in (0, 78), r.stderr
    if r.returncode == 78:
        assert_one_line_error(r.stderr, path, "discovery_timeout")
        return
    env = _cli_env()
    env.pop("LD_LIBRARY_PATH", None)
    env["CORTEX_HOOK_STATE"] = str(fuzz_dir / "state" / "state.db")  # never the machine's own state
    status = subprocess.run([sys.executable, "-m", "cortex_hook", "--policy", path, "status"], env=env,
                            capture_output=True, text=True, timeout=60)
    assert "internal error" not in status.stderr and status.returncode != 70, status.stderr
