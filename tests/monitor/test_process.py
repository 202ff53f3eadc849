"""The monitor as a plain process (no systemd): a stop does not wait for the next poll."""

import subprocess
import sys
import time

import pytest

from ..helpers.box import gpu_desc

pytestmark = pytest.mark.nvml


def test_sigterm_ends_the_monitor_long_before_its_next_poll(nvml_box, tmp_path):
    """With `poll: 1h` the monitor waits inside the driver's event call; SIGTERM must not wait an
    hour for that call to return (each wait is at most monitor.daemon.STOP_WITHIN_S)."""
    nvml_box.write_gpus([gpu_desc(0)]).write_policy("health:\n  poll: 1h\nservices:\n  - match: '*'\n",
                                                    inventory="nvml")
    events = tmp_path / "events.jsonl"
    events.write_text("")
    status = tmp_path / "run" / "monitor.status"
    proc = subprocess.Popen([sys.executable, "-m", "cortex_hook", "monitor"],
                            env=nvml_box.env(FAKE_NVML_EVENTS=events), stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while not status.exists():  # written after the first poll: the loop is waiting now
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[1] if proc.poll() else ""
            time.sleep(0.05)
        proc.terminate()
        _, err = proc.communicate(timeout=60)  # (before the fix: an hour)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
