"""The preemption keys: `preempt`, `when_preempted`, `preempt_grace` (per service) and
`handoff_timeout` (top level): defaults, what each value reads as, and every mistake named by
file:line:column and key path, never a traceback."""

import pytest

from cortex_hook.model import Policy, ServicePolicy

from .reading import PATH, mistake, parse


def test_defaults_never_preempt_requeue_and_wait_30s_and_2min():
    pol = parse("version: 1\nservices:\n  - match: a\n")
    svc = pol.services[0]
    assert (svc.preempt, svc.when_preempted, svc.preempt_grace_seconds) == ("never", "requeue", 30.0)
    assert pol.handoff_timeout_seconds == 120.0
    # the same defaults as the records' own, so a policy without the keys means what the code assumes
    assert (ServicePolicy(match="x").preempt, ServicePolicy(match="x").when_preempted) == ("never", "requeue")
    assert Policy().handoff_timeout_seconds == 120.0


def test_every_key_reads_as_written():
    pol = parse("""\
        version: 1
        handoff_timeout: 5m
        services:
          - match: chat.service
            class: critical
            preempt: lower
          - match: embed.service
            class: batch
            when_preempted: stop
            preempt_grace: 1m 30s
          - match: keep.service
            class: batch
            when_preempted: never
            preempt: never
          - match: "*.service"
            preempt: lower
            when_preempted: requeue
            preempt_grace: 1s
        """)
    assert pol.handoff_timeout_seconds == 300.0
    chat, embed, keep, rest = pol.services
    assert (chat.klass, chat.preempt, chat.when_preempted) == ("critical", "lower", "requeue")
    assert (embed.klass, embed.preempt, embed.when_preempted, embed.preempt_grace_seconds) == \
        ("batch", "never", "stop", 90.0)
    assert (keep.preempt, keep.when_preempted) == ("never", "never")
    assert (rest.klass, rest.preempt, rest.when_preempted, rest.preempt_grace_seconds) == \
        ("normal", "lower", "requeue", 1.0)


@pytest.mark.parametrize("text, seconds", [
    ("handoff_timeout: 1s\n", 1.0),
    ("handoff_timeout: 90\n", 90.0),
    ("handoff_timeout: 1h 30m\n", 5400.0),
    ("handoff_timeout: 1500ms\n", 1.5),
])
def test_handoff_timeout_durations(text, seconds):
    assert parse("version: 1\n" + text).handoff_timeout_seconds == seconds


@pytest.mark.parametrize("value, seconds", [("2s", 2.0), ("45", 45.0), ("10m", 600.0), ("1.5", 1.5)])
def test_preempt_grace_durations(value, seconds):
    pol = parse(f"version: 1\nservices:\n  - match: a\n    preempt_grace: {value}\n")
    assert pol.services[0].preempt_grace_seconds == seconds


def test_preempt_lower_is_accepted_for_critical_and_normal():
    for klass in ("critical", "normal"):
        pol = parse(f"version: 1\nservices:\n  - match: a\n    class: {klass}\n    preempt: lower\n")
        assert pol.services[0].preempt == "lower" and pol.services[0].klass == klass


def test_a_batch_service_may_be_preempted_in_any_way():
    for value in ("requeue", "stop", "never"):
        pol = parse(f"version: 1\nservices:\n  - match: a\n    class: batch\n    when_preempted: {value}\n")
        assert pol.services[0].when_preempted == value


def test_keys_come_through_a_merge_key():
    pol = parse("""\
        version: 1
        services:
          - match: a
            <<: {preempt: lower, preempt_grace: 5s, when_preempted: stop}
            class: critical
        """)
    svc = pol.services[0]
    assert (svc.preempt, svc.preempt_grace_seconds, svc.when_preempted) == ("lower", 5.0, "stop")


@pytest.mark.parametrize("text, where, key, needle", [
    ("services:\n  - match: a\n    preempt: sometimes\n", "4:14", "services[0].preempt", "never, lower"),
    ("services:\n  - match: a\n    preempt: lowr\n", "4:14", "services[0].preempt", "did you mean 'lower'"),
    ("services:\n  - match: a\n    preempt: true\n", "4:14", "services[0].preempt", "got true"),
    ("services:\n  - match: a\n    preempt: [lower]\n", "4:14", "services[0].preempt", "a single value"),
    ("services:\n  - match: a\n    when_preempted: kill\n", "4:21", "services[0].when_preempted",
     "requeue, stop, never"),
    ("services:\n  - match: a\n    when_preempted: requeu\n", "4:21", "services[0].when_preempted",
     "did you mean 'requeue'"),
    ("services:\n  - match: a\n    preempt_grace: 0s\n", "4:20", "services[0].preempt_grace", "at least 1s"),
    ("services:\n  - match: a\n    preempt_grace: 500ms\n", "4:20", "services[0].preempt_grace", "at least 1s"),
    ("services:\n  - match: a\n    preempt_grace: soon\n", "4:20", "services[0].preempt_grace",
     "expected a duration"),
    ("services:\n  - match: a\n    preempt_grace: 5 fortnights\n", "4:20", "services[0].preempt_grace",
     "unknown time unit"),
    ("services:\n  - match: a\n    preempt_grace: -5\n", "4:20", "services[0].preempt_grace", "negative"),
    ("services:\n  - match: a\n    preempt_grace: 31d\n", "4:20", "services[0].preempt_grace", "shorter than"),
    ("services:\n  - match: a\n    preempt_grace: true\n", "4:20", "services[0].preempt_grace",
     "expected a duration"),
    ("services:\n  - match: a\n    preempt_grce: 5s\n", "4:5", "services[0].preempt_grce",
     "did you mean 'preempt_grace'"),
    ("handoff_timeout: 0s\n", "2:18", "handoff_timeout", "at least 1s"),
    ("handoff_timeout: 0.5\n", "2:18", "handoff_timeout", "at least 1s"),
    ("handoff_timeout: soon\n", "2:18", "handoff_timeout", "expected a duration"),
    ("handoff_timeout: 365d\n", "2:18", "handoff_timeout", "shorter than"),
    ("handoff_timeout: {s: 5}\n", "2:18", "handoff_timeout", "a single value"),
    ("handof_timeout: 5s\n", "2:1", "handof_timeout", "did you mean 'handoff_timeout'"),
    ("services:\n  - match: a\n    class: batch\n    preempt: lower\n", "5:14", "services[0].preempt",
     "a batch service has no lower class"),
    ("services:\n  - match: a\n    preempt: lower\n    class: batch\n", "4:14", "services[0].preempt",
     "critical > normal > batch"),
    ("services:\n  - match: a\n  - match: b\n    preempt: lower\n    class: batch\n", "5:14",
     "services[1].preempt", "no lower class"),
    ("services:\n  - match: a\n    <<: {preempt: lower}\n    class: batch\n", "4:19", "services[0].preempt",
     "no lower class"),
])
def test_every_mistake_names_file_line_column_and_key(text, where, key, needle):
    message = mistake("version: 1\n" + text)
    assert message.startswith(f"{PATH}:{where}: {key}: "), message
    assert needle in message, message


def test_preempt_never_on_a_batch_service_is_fine():
    pol = parse("version: 1\nservices:\n  - match: a\n    class: batch\n    preempt: never\n")
    assert (pol.services[0].klass, pol.services[0].preempt) == ("batch", "never")
