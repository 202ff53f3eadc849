"""The monitor's /metrics endpoint (metrics/server.py): served only where `metrics: listen:` says,
valid by `promtool`, and it counts what the monitor sees and does (the real nvidia-ml-py against
the fake driver, NVML events from FAKE_NVML_EVENTS)."""

import json
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

from ..helpers.box import gpu_desc, uuid_of
from ..helpers.promtext import check, value
from ..helpers.poll import wait_until
from ..helpers.processes import free_port

pytestmark = pytest.mark.nvml


def get(port, path="/metrics"):
    """(status, body) of GET http://127.0.0.1:PORT/PATH; None while nothing listens."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except OSError:
        return None


@pytest.fixture
def monitor(nvml_box, tmp_path):
    """Start `cortex-hook monitor` on 2 fake GPUs with /metrics at a free loopback port:
    yields (port, append_event)."""
    port = free_port()
    nvml_box.write_gpus([gpu_desc(0), gpu_desc(1)]).write_policy(
        f"health:\n  poll: 1s\nmetrics:\n  listen: 127.0.0.1:{port}\nservices:\n  - match: '*'\n", inventory="nvml")
    events = tmp_path / "events.jsonl"
    events.write_text("")

    def append_event(**event):
        with open(events, "a") as f:
            f.write(json.dumps(event) + "\n")

    proc = subprocess.Popen([sys.executable, "-m", "cortex_hook", "monitor"], env=nvml_box.env(FAKE_NVML_EVENTS=events),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_until(lambda: get(port), "the endpoint", proc=proc)
        yield port, append_event, proc
    finally:
        proc.terminate()
        proc.communicate(timeout=30)


def test_the_endpoint_counts_faults_drains_and_says_the_monitor_runs(monitor):
    port, append_event, proc = monitor
    status, text = get(port)
    assert status == 200
    check(text)
    assert value(text, "cortex_hook_gpu_drained", UUID=uuid_of(1)) == 0
    assert wait_until(lambda: value(get(port)[1], "cortex_hook_monitor_up") == 1, "monitor_up", proc=proc)
    append_event(gpu=1, type="xid", data=13)  # an application's error: counted, nothing drained
    append_event(gpu=1, type="xid", data=79)
    text = wait_until(lambda: (t := get(port)[1]) and value(t, "cortex_hook_monitor_drains_total", UUID=uuid_of(1))
                      and t, "the drain", proc=proc)
    check(text)
    assert value(text, "cortex_hook_monitor_faults_total", UUID=uuid_of(1), kind="xid", xid="79", verdict="fatal") == 1
    assert value(text, "cortex_hook_monitor_faults_total", UUID=uuid_of(1), kind="xid", xid="13", verdict="ignore") == 1
    assert value(text, "cortex_hook_gpu_drained", UUID=uuid_of(1), source="monitor") == 1
    assert value(text, "cortex_hook_gpu_drained", UUID=uuid_of(0), source="") == 0
    assert value(text, "cortex_hook_monitor_last_poll_timestamp_seconds") > time.time() - 60
    assert get(port, "/")[0] == 404


def test_a_port_in_use_is_said_and_the_monitor_watches_on(nvml_box, tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        nvml_box.write_gpus([gpu_desc(0)]).write_policy(
            f"metrics:\n  listen: 127.0.0.1:{port}\nservices:\n  - match: '*'\n", inventory="nvml")
        r = subprocess.run([sys.executable, "-m", "cortex_hook", "monitor", "--once"], env=nvml_box.env(),
                           capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert f"no metrics: cannot listen on 127.0.0.1:{port}" in r.stderr and "Traceback" not in r.stderr


def test_a_silent_client_does_not_block_a_scrape(monitor):
    """A local client that connects and sends nothing (or half a request) holds its own thread,
    never the endpoint: a scrape beside it is answered."""
    port, _, proc = monitor
    with socket.create_connection(("127.0.0.1", port)) as silent, \
            socket.create_connection(("127.0.0.1", port)) as half:
        half.sendall(b"GET /metr")
        status, text = wait_until(lambda: get(port), "a scrape beside two stalled clients", proc=proc)
        assert status == 200 and "cortex_hook_gpus" in text
        assert silent.fileno() >= 0 and half.fileno() >= 0  # (both still open while it answered)
