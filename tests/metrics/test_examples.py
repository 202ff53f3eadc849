"""The monitoring examples in systemd/examples/: the Prometheus configuration passes the real
`promtool check config`, and every query of the Grafana dashboard names only series and labels that
a real exposition has (one with leases, drains, waits, refusals and the monitor's faults: the real
monitor against the fake driver), or dcgm-exporter's DCGM_FI_* series."""

import json
import os
import re
import subprocess
import sys
import time

import pytest

from cortex_hook.metrics.collect import HELP

from ..helpers.box import Box, gpu_desc
from ..helpers.promtext import promtool, samples, value
from ..helpers.poll import wait_until
from ..helpers.processes import free_port
from .test_endpoint import get

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EXAMPLES = os.path.join(REPO, "systemd", "examples")
PROMETHEUS = os.path.join(EXAMPLES, "prometheus.yml")
DASHBOARD = os.path.join(EXAMPLES, "grafana-dashboard.json")
DATASOURCE = "${DS_PROMETHEUS}"
TARGET_LABELS = {"instance", "job"}  # what Prometheus adds to every series it scrapes

# what is not a metric name in PromQL: aggregations, functions, keywords
PROMQL_WORDS = set("""
    sum min max avg group stddev stdvar count count_values bottomk topk quantile limitk limit_ratio
    by without on ignoring group_left group_right and or unless bool offset atan2 le inf nan
    abs absent absent_over_time ceil changes clamp clamp_max clamp_min day_of_month day_of_week day_of_year
    days_in_month delta deriv exp floor histogram_quantile histogram_count histogram_sum histogram_fraction
    histogram_avg holt_winters predict_linear hour idelta increase irate label_join label_replace ln log2
    log10 minute month rate resets round scalar sgn sort sort_desc sqrt time timestamp vector year
    avg_over_time min_over_time max_over_time sum_over_time count_over_time quantile_over_time
    stddev_over_time stdvar_over_time last_over_time present_over_time label_values
""".split())

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'')
_VARIABLE = re.compile(r"\$(?:\{[^}]*\}|\w+)")
_CLAUSE = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\(([^()]*)\)")
_MATCHERS = re.compile(r"\{[^{}]*\}")
_RANGE = re.compile(r"\[[^\]]*\]")
_IDENT = re.compile(r"(?<![\w.:])([a-zA-Z_:][a-zA-Z0-9_:]*)(?!\s*\()(?![\w:])")
_SELECTOR = re.compile(r"(?<![\w.:])([a-zA-Z_:][a-zA-Z0-9_:]*)\s*\{([^{}]*)\}")
_MATCHER_LABEL = re.compile(r"([a-zA-Z_]\w*)\s*(?:=~|!~|!=|=)")
_LABEL_VALUES = re.compile(r"^\s*label_values\((?:(.*),)?\s*([a-zA-Z_]\w*)\s*\)\s*$")


# -- reading PromQL (enough of it for the dashboard's queries) -----------------------------------
def _bare(expr):
    """EXPR without strings (matcher values) and Grafana variables: nothing in them is a name."""
    return _VARIABLE.sub("", _STRING.sub('""', expr))


def metric_names(expr):
    """The metric names EXPR selects: identifiers not called as functions, with the label lists
    of by/on/group_left clauses, matchers and ranges taken out first."""
    text = _RANGE.sub("[]", _MATCHERS.sub("{}", _CLAUSE.sub(" ", _bare(expr))))
    return {name for name in _IDENT.findall(text) if name not in PROMQL_WORDS}


def _group(text, start):
    """(begin, end) of the balanced parentheses that open at TEXT[START] (or after blanks), or None."""
    i = start
    while i < len(text) and text[i].isspace():
        i += 1
    if i >= len(text) or text[i] != "(":
        return None
    depth = 0
    for j in range(i, len(text)):
        depth += {"(": 1, ")": -1}.get(text[j], 0)
        if depth == 0:
            return i + 1, j
    raise AssertionError(f"unbalanced parentheses: {text!r}")


def _enclosing(text, pos):
    """(begin, end) of the innermost parentheses around TEXT[POS] (the whole text if none)."""
    depth = 0
    for i in range(pos - 1, -1, -1):
        depth += {")": 1, "(": -1}.get(text[i], 0)
        if depth < 0:
            return i + 1, _group(text, i)[1]
    return 0, len(text)


def _preceding_group(text, end):
    """(begin, end) of the parentheses that close just before TEXT[END] (after blanks), or None."""
    i = end - 1
    while i >= 0 and text[i].isspace():
        i -= 1
    if i < 0 or text[i] != ")":
        return None
    depth = 0
    for j in range(i, -1, -1):
        depth += {")": 1, "(": -1}.get(text[j], 0)
        if depth == 0:
            return j + 1, i
    raise AssertionError(f"unbalanced parentheses: {text!r}")


def label_problems(expr, labels_of):
    """What is wrong with the labels EXPR uses on cortex_hook_ series, by LABELS_OF ({series name:
    its label names}): matchers, `by`/`without` (on some series of the aggregated expression),
    `on`/`ignoring` (on every series of both sides), `group_left`/`group_right` (on a series of
    the side that gives them)."""
    text = _bare(expr)
    problems = []

    def ours(fragment):
        return sorted(n for n in metric_names(fragment) if n.startswith("cortex_hook_"))

    def has(name, label):
        return label in TARGET_LABELS or label in labels_of.get(name, ())

    for name, matchers in _SELECTOR.findall(text):
        if name.startswith("cortex_hook_"):
            problems += [f"{name} has no label {label!r}" for label in _MATCHER_LABEL.findall(matchers)
                         if not has(name, label)]
    for m in _CLAUSE.finditer(text):
        kind, labels = m.group(1), [l.strip() for l in m.group(2).split(",") if l.strip()]
        if kind in ("by", "without"):
            scope = _group(text, m.end()) or _preceding_group(text, m.start())
            assert scope, f"{kind} (...) of no aggregation in {expr!r}"
            names = ours(text[scope[0]:scope[1]])
            problems += [f"{kind} ({label}): on none of {names}" for label in labels
                         if names and not any(has(n, label) for n in names)]
        elif kind in ("on", "ignoring"):
            begin, end = _enclosing(text, m.start())
            problems += [f"{kind} ({label}): {n} has no such label" for n in ours(text[begin:end])
                         for label in labels if not has(n, label)]
        else:
            begin, end = _enclosing(text, m.start())
            side = text[m.end():end] if kind == "group_left" else text[begin:_CLAUSE.search(text, begin).start()]
            names = ours(side)
            problems += [f"{kind} ({label}): on none of {names}" for label in labels
                         if names and not any(has(n, label) for n in names)]
    return problems


# -- the exposition ------------------------------------------------------------------------------
POLICY = """\
health:
  poll: 1s
  recover: 1s
metrics:
  listen: 127.0.0.1:{port}
services:
  - match: "wait*.service"
    on_unavailable: wait 60s
    class: critical
  - match: "*"
    min_free_memory: 1GiB
"""


@pytest.fixture(scope="module")
def exposition(tmp_path_factory, fake_nvml_lib):
    """{series name: {label names}} of a real scrape: a.service and b.service lease GPUs 0 and 1,
    GPU 2 is drained by the admin, refused.service was refused, wait1.service waited and got
    b's GPU (the wait and handoff histograms), wait2.service waits now; the monitor (serving
    /metrics) saw XIDs 79 and 13, drained GPU 0, left a.service on it and brought it back."""
    box = Box(tmp_path_factory.mktemp("exposition"))
    box.lib = fake_nvml_lib
    port = free_port()
    events = os.path.join(box.root, "events.jsonl")
    open(events, "w").close()
    box.write_gpus([gpu_desc(i) for i in range(3)]).write_policy(POLICY.format(port=port), inventory="nvml")
    for unit in ("a", "b"):
        assert box.cli("allocate", unit).returncode == 0
    assert box.cli("drain", "2", "--reason", "fan").returncode == 0
    assert box.cli("allocate", "refused").returncode == 69
    procs = []

    def start(*args, **env):
        procs.append(subprocess.Popen([sys.executable, "-m", "cortex_hook", *args], env=box.env(**env),
                                      stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True))
        return procs[-1]

    def waiting():
        return value(box.cli("metrics").stdout, "cortex_hook_waiting_starts")

    try:
        first = start("allocate", "wait1")
        wait_until(lambda: waiting() == 1, "wait1.service waiting")
        assert box.cli("release", "b").returncode == 0
        assert first.wait(timeout=60) == 0, first.stderr.read()
        start("allocate", "wait2")
        wait_until(lambda: waiting() == 1, "wait2.service waiting")
        monitor = start("monitor", FAKE_NVML_EVENTS=events)
        wait_until(lambda: (got := get(port)) and value(got[1], "cortex_hook_monitor_up") == 1, "the monitor")
        with open(events, "a") as f:
            f.write('{"gpu": 0, "type": "xid", "data": 79}\n{"gpu": 0, "type": "xid", "data": 13}\n')
        served = wait_until(lambda: (got := get(port)) and "cortex_hook_monitor_recoveries_total{" in got[1]
                            and got[1], "a drain and its recovery")
        assert monitor.poll() is None
        printed = box.cli("metrics")
        assert printed.returncode == 0, printed.stderr
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.terminate()
            proc.communicate(timeout=30)
    labels_of = {}
    for name, labels, _ in samples(served) + samples(printed.stdout):
        labels_of.setdefault(name, set()).update(labels)
    return labels_of


# -- the examples --------------------------------------------------------------------------------
def test_the_prometheus_example_passes_promtool():
    r = subprocess.run([promtool(), "check", "config", PROMETHEUS], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, (r.stdout, r.stderr)
    assert "SUCCESS" in r.stdout + r.stderr
    text = open(PROMETHEUS).read()
    assert "job_name: cortex-hook" in text and '"127.0.0.1:9772"' in text
    assert "job_name: dcgm-exporter" in text and '"127.0.0.1:9400"' in text
    assert "cortex-hook metrics --textfile /var/lib/node_exporter/textfile_collector/cortex_hook.prom" in text


def dashboard():
    with open(DASHBOARD, encoding="utf-8") as f:
        return json.load(f)


def expressions(board):
    """[(where, PromQL)] of every panel target and every query variable of BOARD."""
    found = [(f"panel {p['title']!r} {t['refId']}", t["expr"]) for p in board["panels"] for t in p["targets"]]
    for var in board["templating"]["list"]:
        if var["type"] == "query":
            query = var["query"]["query"] if isinstance(var["query"], dict) else var["query"]
            m = _LABEL_VALUES.match(query)
            assert m and m.group(1), f"variable {var['name']}: expected label_values(SELECTOR, LABEL): {query}"
            found.append((f"variable {var['name']}", f"count by ({m.group(2)}) ({m.group(1)})"))
    return found


def test_the_dashboard_is_importable_json_on_one_prometheus_data_source():
    board = dashboard()
    assert [(i["name"], i["type"], i["pluginId"]) for i in board["__inputs"]] == [
        ("DS_PROMETHEUS", "datasource", "prometheus")]
    assert 36 <= board["schemaVersion"] <= 41
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert re.match(r"label_values\(cortex_hook_lease_info\b.*, unit\)$", variables["unit"]["definition"])
    for var in variables.values():
        assert var["datasource"]["uid"] == DATASOURCE, var["name"]
    cells = set()
    assert len(board["panels"]) >= 10
    for p in board["panels"]:
        assert p.get("title"), p
        assert p["datasource"] == {"type": "prometheus", "uid": DATASOURCE}, p["title"]
        assert p["targets"], p["title"]
        for t in p["targets"]:
            assert t["datasource"]["uid"] == DATASOURCE and t["expr"].strip(), (p["title"], t)
        pos = p["gridPos"]
        assert pos["x"] >= 0 and pos["w"] > 0 and pos["x"] + pos["w"] <= 24 and pos["h"] > 0, p["title"]
        mine = {(x, y) for x in range(pos["x"], pos["x"] + pos["w"]) for y in range(pos["y"], pos["y"] + pos["h"])}
        assert not mine & cells, f"panel {p['title']!r} overlaps another"
        cells |= mine
    assert len({p["id"] for p in board["panels"]}) == len(board["panels"])
    units = {p["fieldConfig"]["defaults"].get("unit") for p in board["panels"]}
    assert {"bytes", "s", "percent"} <= units


def test_the_dashboard_queries_parse_by_promtool(tmp_path):
    """Every query (Grafana's variables filled in) is valid PromQL by the real parser."""
    filled = {"$__range": "6h", "$__rate_interval": "1m", "$__interval": "15s"}
    rules = []
    for i, (where, expr) in enumerate(expressions(dashboard())):
        for var, text in filled.items():
            expr = expr.replace(var, text)
        rules.append({"record": f"dashboard:query_{i}", "expr": _VARIABLE.sub(".+", expr)})
    path = tmp_path / "rules.yml"
    path.write_text(json.dumps({"groups": [{"name": "dashboard", "rules": rules}]}))  # JSON is YAML
    r = subprocess.run([promtool(), "check", "rules", str(path)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, (r.stdout, r.stderr)


@pytest.mark.nvml
def test_the_dashboard_uses_only_series_and_labels_the_exposition_has(exposition):
    known = set(exposition)
    for name, (kind, _) in HELP.items():  # the monitor's counters, whether or not it has counted yet
        known |= {name} if kind != "histogram" else {name + s for s in ("_bucket", "_sum", "_count")}
    assert {"cortex_hook_monitor_faults_total", "cortex_hook_monitor_recoveries_total",
            "cortex_hook_monitor_fault_actions_total", "cortex_hook_wait_duration_seconds_bucket",
            "cortex_hook_handoff_duration_seconds_bucket", "cortex_hook_wait_age_seconds",
            "cortex_hook_monitor_last_poll_timestamp_seconds"} <= set(exposition)  # the scenario shows them

    def name_problems(expr):
        return sorted(n for n in metric_names(expr) if not n.startswith("DCGM_FI_") and n not in known)

    used = set()
    for where, expr in expressions(dashboard()):
        names = metric_names(expr)
        assert names, f"{where}: no series in {expr!r}"
        used |= names
        assert name_problems(expr) == [], f"{where}: not in the exposition: {expr!r}"
        assert label_problems(expr, exposition) == [], (where, expr)
    assert {"cortex_hook_lease_info", "cortex_hook_gpu_info", "cortex_hook_gpus", "cortex_hook_waiting_starts",
            "cortex_hook_allocations_total", "cortex_hook_monitor_faults_total", "DCGM_FI_DEV_GPU_UTIL",
            "cortex_hook_gpu_memory_used_bytes", "cortex_hook_lease_memory_needed_bytes"} <= used

    # the checks themselves: they find a made-up series or label, and pass what is right
    assert name_problems('sum by (state) (rate(cortex_hook_gpu_fans_total{gpu="0"}[5m]))') == [
        "cortex_hook_gpu_fans_total"]
    assert name_problems("time() - max(cortex_hook_monitor_last_poll_timestamp_seconds)") == []
    assert name_problems('avg by (hpc_job) (DCGM_FI_DEV_FB_USED{hpc_job=~"$unit"})') == []
    assert label_problems("sum by (state) (cortex_hook_gpus)", exposition) == []
    assert label_problems("sum by (unit) (cortex_hook_gpus)", exposition) == [
        "by (unit): on none of ['cortex_hook_gpus']"]
    assert label_problems('cortex_hook_waiting_starts{unit="x"}', exposition) == [
        "cortex_hook_waiting_starts has no label 'unit'"]
    assert label_problems("cortex_hook_lease_info * on (gpu, UUID) group_left (model) cortex_hook_gpu_info",
                          exposition) == ["group_left (model): on none of ['cortex_hook_gpu_info']"]
    assert label_problems("cortex_hook_lease_info * on (unit) group_left cortex_hook_gpu_info",
                          exposition) == ["on (unit): cortex_hook_gpu_info has no such label"]
