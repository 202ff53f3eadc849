"""The policy loader: what a valid policy means, and that every mistake is named by file:line:column
and key path, in one line, without a traceback."""

import os
import textwrap

import pytest

from cortex_hook.errors import PolicyError
from cortex_hook.policy.parse import parse_policy

from ..helpers.box import assert_one_line_error, gpu_desc

ISSUE_EXAMPLE = """\
version: 1
inventory: nvml
services:
  - match: "vllm@*.service"
    server: vllm
    gpus: 2
    min_free_memory: 90%
    topology: prefer-nvlink
    sharing: exclusive
  - match: "chat.service"
    server: llama.cpp
    gpus: 1
    min_free_memory: 16GiB
    class: critical
"""


def parse(text):
    return parse_policy(textwrap.dedent(text), "/etc/cortex-hook/policy.yaml")


def error_of(text):
    with pytest.raises(PolicyError) as info:
        parse(text)
    return info.value


def test_issue_example_reads_as_written():
    """The example with the fixed key names parses into exactly what it says."""
    pol = parse(ISSUE_EXAMPLE)
    vllm, chat = pol.services
    assert pol.inventory == "nvml"
    assert (vllm.match, vllm.server, vllm.gpus, vllm.min_free_fraction, vllm.topology, vllm.sharing) == \
        ("vllm@*.service", "vllm", 2, 0.9, "prefer-nvlink", "exclusive")
    assert (chat.server, chat.gpus, chat.min_free_memory, chat.klass) == ("llama.cpp", 1, 16 * 1024**3, "critical")
    assert pol.service_for("vllm@llama-70b.service") is vllm
    assert pol.service_for("chat.service") is chat
    assert pol.service_for("other.service") is None


def test_defaults_are_conservative():
    """A bare service is 1 exclusive GPU, named by UUID, any topology, class normal, fail if none."""
    svc = parse('version: 1\nservices:\n  - match: "a"\n').services[0]
    assert (svc.gpus, svc.sharing, svc.visible_devices, svc.topology, svc.klass, svc.on_unavailable) == \
        (1, "exclusive", "uuid", "any", "normal", "fail")
    assert svc.match == "a.service"  # a unit without suffix means .service, as with systemctl


def test_first_match_wins():
    pol = parse("""\
        version: 1
        services:
          - match: "vllm@big*.service"
            gpus: 4
          - match: "vllm@*.service"
            gpus: 1
        """)
    assert pol.service_for("vllm@big-model.service").gpus == 4
    assert pol.service_for("vllm@small.service").gpus == 1


def test_global_sections():
    pol = parse("""\
        version: 1
        inventory:
          simulated: boxes/gpus.yaml
        discovery_timeout: 2m
        history_limit: 50
        health:
          max_temperature: 80
          retired_pages_pending: false
        scoring:
          free_memory: 2
          utilization: 0
        reservations:
          GPU-4f1c2a00-8d3e-4b6a-9f10-0000000000a3: [triton.service, "batch@*.service"]
        services: []
        """)
    assert pol.inventory == "simulated"
    assert pol.simulated_file == "/etc/cortex-hook/boxes/gpus.yaml"  # relative to the policy file
    assert pol.discovery_timeout == 120
    assert pol.history_limit == 50
    assert pol.health.max_temperature == 80 and pol.health.retired_pages_pending is False
    assert pol.health.remapped_rows_pending is True  # each fault check is on unless switched off
    assert (pol.scoring.free_memory, pol.scoring.utilization, pol.scoring.temperature) == (2.0, 0.0, 0.25)
    assert pol.reservations == {"GPU-4f1c2a00-8d3e-4b6a-9f10-0000000000a3": ("triton.service", "batch@*.service")}


@pytest.mark.parametrize("text, expected", [
    ("fail", ("fail", 0.0)), ("cpu", ("cpu", 0.0)), ("wait 5m", ("wait", 300.0)),
    ("wait 1h 30s", ("wait", 3630.0)), ("wait 90", ("wait", 90.0)),
])
def test_on_unavailable(text, expected):
    svc = parse(f"version: 1\nservices:\n  - match: a\n    on_unavailable: {text}\n").services[0]
    assert (svc.on_unavailable, svc.wait_seconds) == expected


@pytest.mark.parametrize("text, nbytes, fraction", [
    ("20GiB", 20 * 1024**3, None), ("512MiB", 512 * 1024**2, None), ("24GB", 24 * 10**9, None),
    ("1.5G", int(1.5 * 1024**3), None), ("0", 0, None), ("90%", None, 0.9), ("12.5%", None, 0.125),
])
def test_min_free_memory(text, nbytes, fraction):
    svc = parse(f"version: 1\nservices:\n  - match: a\n    min_free_memory: {text}\n").services[0]
    assert svc.min_free_memory == nbytes
    assert svc.min_free_fraction == fraction


def test_anchors_and_merge_keys_work():
    """Sysadmins share settings with anchors; explicit keys win over merged ones."""
    pol = parse("""\
        version: 1
        services:
          - &big {match: "vllm@*.service", server: vllm, gpus: 2, min_free_memory: 90%}
          - <<: *big
            match: "sglang@*.service"
            gpus: 4
        """)
    merged = pol.services[1]
    assert (merged.match, merged.server, merged.gpus, merged.min_free_fraction) == ("sglang@*.service", "vllm", 4, 0.9)


# -- errors ------------------------------------------------------------------------------------
@pytest.mark.parametrize("text, where, key, needle", [
    ("version: 1\nservices:\n  - match: a\n    gpu: 2\n", ":4:5:", "services[0].gpu", "did you mean 'gpus'?"),
    ("version: 1\nservices:\n  - match: a\n    min_free_mem: 1GiB\n", ":4:5:", "services[0].min_free_mem",
     "did you mean 'min_free_memory'?"),
    ("version: 1\nhealth:\n  max_temp: 80\n", ":3:3:", "health.max_temp", "did you mean 'max_temperature'?"),
    ("version: 1\nservcies: []\n", ":2:1:", "servcies", "did you mean 'services'?"),
    ("version: 1\nservices:\n  - match: a\n    gpus: two\n", ":4:11:", "services[0].gpus",
     "expected a count from 1 or `all`, got 'two'"),
    ("version: 1\nservices:\n  - match: a\n    gpus: 0\n", ":4:11:", "services[0].gpus", "got 0"),
    ("version: 1\nservices:\n  - match: a\n    min_free_memory: 20 gigs\n", ":4:22:",
     "services[0].min_free_memory", "expected a size"),
    ("version: 1\nservices:\n  - match: a\n    min_free_memory: 120%\n", ":4:22:",
     "services[0].min_free_memory", "between 0% and 100%"),
    ("version: 1\nservices:\n  - match: a\n    sharing: exclusiv\n", ":4:14:", "services[0].sharing",
     "did you mean 'exclusive'?"),
    ("version: 1\nservices:\n  - match: a\n    class: urgent\n", ":4:12:", "services[0].class",
     "expected one of critical, normal, batch"),
    ("version: 1\nservices:\n  - match: a\n    topology: nvlink\n", ":4:15:", "services[0].topology",
     "expected one of any, prefer-nvlink, require-nvlink"),
    ("version: 1\nservices:\n  - match: a\n    on_unavailable: wait\n", ":4:21:",
     "services[0].on_unavailable", "`wait` needs a duration"),
    ("version: 1\nservices:\n  - match: a\n    on_unavailable: wait soon\n", ":4:21:",
     "services[0].on_unavailable", "duration"),
    ("version: 1\nservices:\n  - server: vllm\n", ":3:5:", "services[0].match", "missing"),
    ("version: 1\nservices:\n  - match: \"a b\"\n", ":3:12:", "services[0].match", "cannot contain ' '"),
    ("version: 1\nservices:\n  - match: a\n    server: VLLM!\n", ":4:13:", "services[0].server",
     "not a plugin name"),
    ("version: 2\n", ":1:10:", "version", "reads policy version 1, got 2"),
    ("services: []\n", ":1:1:", "version", "missing"),
    ("version: 1\nservices:\n  - match: a\n    gpus: 1\n    gpus: 2\n", ":5:5:", "services[0].gpus",
     "duplicate key (first given on line 4)"),
    ("version: 1\nreservations:\n  '3': [a]\n", ":3:3:", 'reservations."3"', "by UUID"),
    ("version: 1\ninventory: nvlm\n", ":2:12:", "inventory", "did you mean 'nvml'?"),
    ("version: 1\ndiscovery_timeout: 0s\n", ":2:20:", "discovery_timeout", "longer than 0s"),
    ("version: 1\nscoring:\n  utilization: -1\n", ":3:16:", "scoring.utilization", "at least 0"),
    ("version: 1\nhealth:\n  retired_pages_pending: maybe\n", ":3:26:", "health.retired_pages_pending",
     "expected true or false"),
    ("version: 1\nservices: {match: a}\n", ":2:11:", "services", "expected a list"),
    ("version: 1\nservices:\n  - chat.service\n", ":3:5:", "services[0]", "expected a mapping"),
])
def test_error_names_file_line_column_and_key(text, where, key, needle):
    err = error_of(text)
    message = str(err)
    assert message.startswith("/etc/cortex-hook/policy.yaml" + where), message
    assert f" {key}: " in message, message
    assert needle in message, message
    assert "\n" not in message


def test_invalid_yaml_is_located():
    err = error_of("version: 1\nservices:\n  - match: [unclosed\n")
    assert str(err).startswith("/etc/cortex-hook/policy.yaml:4:")
    assert "invalid YAML" in str(err)


def test_empty_policy():
    assert "empty policy" in str(error_of(""))


def test_shadowed_literal_match_is_refused():
    """An entry that an earlier glob always wins over would silently never apply: say so."""
    err = error_of("""\
        version: 1
        services:
          - match: "vllm@*.service"
          - match: "vllm@big.service"
            gpus: 4
        """)
    assert str(err).startswith("/etc/cortex-hook/policy.yaml:4:5: services[1].match:")
    assert "already matched by services[0]" in str(err) and "never be used" in str(err)


def test_alias_bomb_is_refused_quickly():
    """A billion-laughs document (merge keys nesting 10 aliases per level, 9 levels) stops at the
    node limit instead of eating the machine."""
    lines = ["version: 1", "services:", "  - &m0 {match: a0}"]
    for i in range(1, 10):
        lines.append(f"  - &m{i} {{<<: [" + ", ".join([f"*m{i - 1}"] * 10) + f"], match: a{i}}}")
    err = error_of("\n".join(lines) + "\n")
    assert "alias bomb" in str(err)


def test_anchors_inside_limits_are_fine():
    lines = ["version: 1", "services:", "  - &m0 {match: a0, gpus: 2}"]
    lines += [f"  - {{<<: *m0, match: a{i}}}" for i in range(1, 4)]
    assert [s.gpus for s in parse("\n".join(lines) + "\n").services] == [2, 2, 2, 2]


def test_recursive_merge_is_refused():
    err = error_of("version: 1\nservices:\n  - &r\n    match: a\n    <<: *r\n")
    assert "recursive" in str(err) or "deeper" in str(err)


def test_validate_command(box):
    """`validate` checks without touching anything: exit 0 on a good file, 78 on a bad one."""
    box.write_gpus([])
    box.write_policy("services:\n  - match: a\n    server: vllm\n")
    r = box.cli("validate")
    assert r.returncode == 0, r.stderr
    assert "ok (1 service" in r.stdout
    assert not os.path.exists(box.state) and not os.path.exists(box.runtime)

    box.write_policy("services:\n  - match: a\n    gpus: lots\n")
    r = box.cli("validate", box.policy)
    assert r.returncode == 78
    assert_one_line_error(r.stderr, f"{box.policy}:6:11:", "services[0].gpus")


def test_validate_rejects_unknown_server_plugin(box):
    box.write_gpus([])
    box.write_policy("services:\n  - match: a\n    server: vlm\n")
    r = box.cli("validate")
    assert r.returncode == 78
    assert_one_line_error(r.stderr, "services[0].server", "did you mean 'vllm'?")


def test_missing_policy_file(box):
    r = box.cli("plan", "a", env=box.env(CORTEX_HOOK_POLICY=os.path.join(box.root, "nope.yaml")))
    assert r.returncode == 78
    assert_one_line_error(r.stderr, "nope.yaml", "no such file")


def test_unit_without_service_is_a_policy_error(box):
    box.write_gpus([])
    box.write_policy("services:\n  - match: chat\n")
    r = box.cli("allocate", "other")
    assert r.returncode == 78
    assert_one_line_error(r.stderr, "no service matches unit 'other.service'")
    assert not os.path.exists(box.env_file("other.service"))


def test_policy_not_utf8(box):
    with open(box.policy, "wb") as f:
        f.write(b"version: 1\nservices:\n  - match: \xff\n")
    r = box.cli("validate")
    assert r.returncode == 78
    assert_one_line_error(r.stderr, ":3:1:", "not valid UTF-8")


def test_policy_cache_is_used_only_while_the_file_is_unchanged(box):
    """allocate reads the parsed policy from the runtime dir until the file changes (any edit,
    chmod or replacement), and never from a cache others could have written."""
    import marshal
    box.write_gpus([gpu_desc(0), gpu_desc(1)])
    box.write_policy("services:\n  - match: '*'\n    gpus: 1\n")
    os.makedirs(box.runtime, mode=0o755)
    assert box.json("plan", "a")["service"]["gpus"] == 1
    cache = os.path.join(box.runtime, "policy.cache")
    data = marshal.load(open(cache, "rb"))
    data["value"]["services"][0]["gpus"] = 2  # tamper: only a cache hit could give 2
    with open(cache, "wb") as f:
        marshal.dump(data, f)
    assert box.json("plan", "a")["service"]["gpus"] == 2  # served from the cache
    os.chmod(cache, 0o666)
    assert box.json("plan", "a")["service"]["gpus"] == 1  # writable by others: ignored
    os.chmod(cache, 0o644)
    box.write_policy("services:\n  - match: '*'\n    gpus: 1\n    sharing: shared\n")
    assert box.json("plan", "a")["service"]["sharing"] == "shared"  # edited: parsed again
    box.write_policy("services:\n  - match: '*'\n    gpus: lots\n")
    r = box.cli("plan", "a")
    assert r.returncode == 78  # a broken edit is never masked by the old cache


def test_server_name_in_the_wrong_case_gets_a_did_you_mean():
    err = str(error_of("version: 1\nservices:\n  - match: a\n    server: vLLM\n"))
    assert err.startswith("/etc/cortex-hook/policy.yaml:4:13: services[0].server: not a plugin name: 'vLLM'")
    assert "(did you mean 'vllm'?)" in err
    assert "did you mean" not in str(error_of("version: 1\nservices:\n  - match: a\n    server: VLLM!\n"))


def test_a_bad_class_lists_the_choices_once():
    err = str(error_of("version: 1\nservices:\n  - match: a\n    class: important\n"))
    assert err.count("critical") == 1 and err.count("batch") == 1, err
