"""The runtime monitor's keys under `health:` and the per-service `on_gpu_fault`: their defaults,
what each means as parsed, every mistake named by file:line:column and key path, and the parsed
policy's memo keeping them."""
import os

import pytest

from cortex_hook.model import HealthPolicy, Policy
from cortex_hook.policy.load import key_of, load_memo, load_policy
from cortex_hook.rules import DEFAULT_FATAL_XIDS, DEFAULT_IGNORE_XIDS, XID_MEANINGS

from .reading import PATH, mistake, parse


def test_defaults_as_documented():
    health = parse("version: 1\nservices:\n  - match: a\n").health
    assert health == HealthPolicy() == Policy().health
    assert health.fatal_xids == DEFAULT_FATAL_XIDS == (48, 61, 62, 64, 74, 79, 92, 95, 119, 120, 140, 143)
    assert health.ignore_xids == DEFAULT_IGNORE_XIDS == (13, 31, 43, 45, 68, 109)
    assert (health.poll_seconds, health.recover_seconds, health.max_fault_restarts,
            health.fault_restart_window_seconds, health.demote_window_seconds, health.demote_corrected_ecc) == \
        (10.0, 600.0, 3, 3600.0, 3600.0, 10)
    assert parse("version: 1\nservices:\n  - match: a\n").services[0].on_gpu_fault == "restart"


def test_every_default_xid_says_what_it_is():
    assert not set(DEFAULT_FATAL_XIDS) & set(DEFAULT_IGNORE_XIDS)
    assert all(XID_MEANINGS.get(x) for x in DEFAULT_FATAL_XIDS + DEFAULT_IGNORE_XIDS)


def test_every_key_reads_as_written():
    pol = parse("""\
        version: 1
        health:
          fatal_xids: [79, 48, 94]
          ignore_xids: [13]
          poll: 5s
          recover: 30m
          max_fault_restarts: 5
          fault_restart_window: 2h
          demote_window: 0
          demote_corrected_ecc: 100
        services:
          - match: a
            on_gpu_fault: stop
          - match: b
            on_gpu_fault: ignore
        """)
    h = pol.health
    assert (h.fatal_xids, h.ignore_xids) == ((79, 48, 94), (13,))
    assert (h.poll_seconds, h.recover_seconds, h.max_fault_restarts, h.fault_restart_window_seconds,
            h.demote_window_seconds, h.demote_corrected_ecc) == (5.0, 1800.0, 5, 7200.0, 0.0, 100)
    assert [s.on_gpu_fault for s in pol.services] == ["stop", "ignore"]


def test_recover_never_keeps_a_drain_for_the_admin():
    assert parse("version: 1\nhealth:\n  recover: never\n").health.recover_seconds is None


def test_an_xid_named_in_one_list_leaves_the_other_lists_default():
    """Naming 13 fatal takes it out of the default ignore list (and naming 79 ignored, out of the
    default fatal list): the admin's word beats a default, never the other way round."""
    h = parse("version: 1\nhealth:\n  fatal_xids: [79, 13]\n").health
    assert h.fatal_xids == (79, 13) and 13 not in h.ignore_xids and 31 in h.ignore_xids
    h = parse("version: 1\nhealth:\n  ignore_xids: [79]\n").health
    assert h.ignore_xids == (79,) and 79 not in h.fatal_xids and 48 in h.fatal_xids
    assert parse("version: 1\nhealth:\n  fatal_xids: []\n").health.fatal_xids == ()


@pytest.mark.parametrize("text, where, key, needle", [
    ("health:\n  fatal_xid: [79]\n", ":3:3:", "health.fatal_xid", "did you mean 'fatal_xids'?"),
    ("health:\n  fatal_xids: 79\n", ":3:15:", "health.fatal_xids", "expected a list"),
    ("health:\n  fatal_xids: [79, x]\n", ":3:20:", "health.fatal_xids[1]", "expected an integer, got 'x'"),
    ("health:\n  fatal_xids: [79, 0]\n", ":3:20:", "health.fatal_xids[1]", "at least 1"),
    ("health:\n  ignore_xids: [13, 13]\n", ":3:21:", "health.ignore_xids[1]", "listed twice (first on line 3)"),
    ("health:\n  fatal_xids: [79, 13]\n  ignore_xids:\n    - 31\n    - 13\n", ":6:7:", "health.ignore_xids[1]",
     "XID 13 is also in fatal_xids (line 3)"),
    ("health:\n  poll: 0.5s\n", ":3:9:", "health.poll", "at least 1s"),
    ("health:\n  poll: often\n", ":3:9:", "health.poll", "expected a duration"),
    ("health:\n  recover: soon\n", ":3:12:", "health.recover", "or `never`"),
    ("health:\n  recover: [10m]\n", ":3:12:", "health.recover", "expected a single value"),
    ("health:\n  max_fault_restarts: 0\n", ":3:23:", "health.max_fault_restarts", "at least 1"),
    ("health:\n  fault_restart_window: 0s\n", ":3:25:", "health.fault_restart_window", "at least 1s"),
    ("health:\n  demote_window: 40d\n", ":3:18:", "health.demote_window", "must be shorter than"),
    ("health:\n  demote_corrected_ecc: 2.5\n", ":3:25:", "health.demote_corrected_ecc", "expected an integer"),
    ("services:\n  - match: a\n    on_gpu_fault: reboot\n", ":4:19:", "services[0].on_gpu_fault",
     "expected one of restart, stop, ignore"),
    ("services:\n  - match: a\n    on_gpu_fault: restrat\n", ":4:19:", "services[0].on_gpu_fault",
     "did you mean 'restart'?"),
])
def test_every_mistake_names_file_line_column_and_key(text, where, key, needle):
    message = mistake("version: 1\n" + text)
    assert message.startswith(PATH + where), message
    assert f" {key}: " in message and needle in message, message


def test_the_parsed_policys_memo_keeps_the_new_keys(tmp_path):
    """The start path reads the policy from its memo: what it reads back is what was parsed."""
    path, memo_dir = str(tmp_path / "policy.yaml"), str(tmp_path / "run")
    os.makedirs(memo_dir, mode=0o755)
    with open(path, "w") as f:
        f.write("version: 1\nhealth:\n  fatal_xids: [79]\n  recover: never\n  demote_window: 30m\n"
                "services:\n  - match: a\n    on_gpu_fault: stop\n")
    parsed = load_policy(path, check_owner=False, cache_dir=memo_dir)
    memo = load_memo(memo_dir, key_of(path, os.stat(path)))
    assert memo == parsed
    assert (memo.health.fatal_xids, memo.health.recover_seconds, memo.health.demote_window_seconds,
            memo.services[0].on_gpu_fault) == ((79,), None, 1800.0, "stop")
    assert isinstance(memo.health.fatal_xids, tuple)
