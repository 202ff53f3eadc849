"""`cortex-hook metrics` (metrics/collect.py, metrics/exposition.py): valid by the real
`promtool check metrics`, and the same figures as `status --json` and `leases --json`, in a
scenario with leases, an admin's drain, a start waiting for a GPU and a refusal."""

import subprocess
import sys

import pytest

from cortex_hook.metrics.exposition import Family, render

from ..helpers.box import gpu_desc, uuid_of
from ..helpers.promtext import check, samples, value
from ..helpers.poll import wait_until

POLICY = """\
services:
  - match: wait.service
    on_unavailable: wait 60s
    class: critical
  - match: "*"
"""


def test_label_values_are_escaped_and_numbers_written_as_the_format_says():
    text = render([Family("x_info", "gauge", "a\\b\nc").add({"unit": 'a"b\\c\nd'}, 1),
                   Family("x_seconds", "gauge", "h").add({}, 0.25).add({"k": "inf"}, float("inf")),
                   Family("x_empty", "gauge", "left out")])
    assert text.splitlines() == [
        "# HELP x_info a\\\\b c", "# TYPE x_info gauge", 'x_info{unit="a\\"b\\\\c\\nd"} 1',
        "# HELP x_seconds h", "# TYPE x_seconds gauge", "x_seconds 0.25", 'x_seconds{k="inf"} +Inf']
    assert samples(text)[0] == ("x_info", {"unit": 'a"b\\c\nd'}, 1.0)


@pytest.fixture
def scenario(box):
    """3 GPUs: a.service and b.service lease GPU 0 and 1, GPU 2 is drained by the admin,
    refused.service was refused (every GPU leased or drained), and wait.service is waiting."""
    box.write_gpus([gpu_desc(i) for i in range(3)]).write_policy(POLICY)
    assert box.cli("allocate", "a").returncode == 0
    assert box.cli("allocate", "b").returncode == 0
    assert box.cli("drain", "2", "--reason", "fan").returncode == 0
    assert box.cli("priority", "order", "1", "0").returncode == 0
    refused = box.cli("allocate", "refused")
    assert refused.returncode == 69, refused.stderr
    waiter = subprocess.Popen([sys.executable, "-m", "cortex_hook", "allocate", "wait"], env=box.env(),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_until(lambda: value(box.cli("metrics").stdout, "cortex_hook_waiting_starts") == 1, "the wait")
        yield box, waiter
    finally:
        if waiter.poll() is None:
            waiter.kill()
        waiter.communicate()


def test_the_metrics_pass_promtool_and_say_what_status_and_leases_say(scenario):
    box, _ = scenario
    r = box.cli("metrics")
    assert r.returncode == 0, r.stderr
    text = r.stdout
    check(text)
    whole = box.json("status")
    status = whole["gpus"]
    assert [(w["unit"], w["klass"], w["service"]) for w in whole["waits"]] == [
        ("wait.service", "critical", "wait.service")]
    assert len(status) == 3
    for g in status:
        gpu = {"UUID": g["uuid"], "gpu": str(g["index"])}
        assert value(text, "cortex_hook_gpu_leased", **gpu) == (1 if g["leased_by"] else 0)
        assert value(text, "cortex_hook_gpu_drained", **gpu) == (1 if g["drain"] else 0)
        assert value(text, "cortex_hook_gpu_drained", source=g["drain_source"] or "", **gpu) is not None
        assert value(text, "cortex_hook_gpu_healthy", **gpu) == (0 if g["health"] else 1)
        assert value(text, "cortex_hook_gpu_priority_rank", **gpu) == g["priority"]
        assert value(text, "cortex_hook_gpu_memory_used_bytes", **gpu) == g["memory_used"]
    assert [g["drain_source"] for g in status] == [None, None, "admin"]
    leases = box.json("leases")["leases"]
    shown = {(l["unit"], l["UUID"]) for n, l, v in samples(text) if n == "cortex_hook_lease_info" and v == 1}
    assert shown == {(l["unit"], l["uuid"]) for l in leases} == {("a.service", uuid_of(0)), ("b.service", uuid_of(1))}
    counts = {l["state"]: v for n, l, v in samples(text) if n == "cortex_hook_gpus"}
    assert counts == {"free": 0, "leased": 2, "drained": 1, "unhealthy": 0, "absent": 0}
    assert value(text, "cortex_hook_allocations_total", service="*", result="ok", reason="") == 2
    assert value(text, "cortex_hook_allocations_total", service="*", result="refused", reason="leased") == 1
    assert value(text, "cortex_hook_waiting_starts") == 1
    assert value(text, "cortex_hook_wait_age_seconds", unit="wait.service", service="wait.service",
                 **{"class": "critical"}) >= 0
    assert value(text, "cortex_hook_monitor_up") == 0


def test_a_wait_that_ends_is_counted_with_its_handoff(scenario):
    box, waiter = scenario
    assert box.cli("release", "b").returncode == 0
    out, err = waiter.communicate(timeout=60)
    assert waiter.returncode == 0, err
    text = box.cli("metrics").stdout
    check(text)
    assert value(text, "cortex_hook_waiting_starts") == 0
    assert value(text, "cortex_hook_wait_duration_seconds_count", service="wait.service", result="ok") == 1
    assert value(text, "cortex_hook_wait_duration_seconds_bucket", service="wait.service", result="ok",
                 le="+Inf") == 1
    assert value(text, "cortex_hook_handoff_duration_seconds_count", service="wait.service") == 1
    assert value(text, "cortex_hook_allocations_total", service="wait.service", result="ok", reason="") == 1
    leases = {(l["unit"], l["uuid"]) for l in box.json("leases")["leases"]}
    assert ("wait.service", uuid_of(1)) in leases


def test_a_killed_waiter_is_not_shown_as_waiting(scenario):
    box, waiter = scenario
    waiter.kill()
    waiter.wait()
    assert value(box.cli("metrics").stdout, "cortex_hook_waiting_starts") == 0


def test_the_textfile_is_written_whole_and_only_as_prom(scenario, tmp_path):
    box, _ = scenario
    target = tmp_path / "collector" / "cortex_hook.prom"
    target.parent.mkdir()
    assert box.cli("metrics", "--textfile", str(target)).returncode == 0
    check(target.read_text())
    assert sorted(p.name for p in target.parent.iterdir()) == ["cortex_hook.prom"]  # no temp file left
    bad = box.cli("metrics", "--textfile", str(tmp_path / "x.txt"))
    assert bad.returncode == 2 and "*.prom" in bad.stderr and not (tmp_path / "x.txt").exists()
