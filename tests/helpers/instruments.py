"""Where the test instruments are (../shared beside the checkout, or $CORTEX_HOOK_SHARED), and the
rule for a missing one: a test that needs it FAILS when $CI is set; outside CI it is skipped with
a message naming what is missing."""

import os

import pytest


REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SHARED = os.environ.get("CORTEX_HOOK_SHARED") or os.path.join(os.path.dirname(REPO), "shared")
FAKE_NVML_SRC = os.path.join(SHARED, "tools", "fake-nvml")
SD_SANDBOX = os.path.join(SHARED, "tools", "sd-sandbox", "sd-sandbox.sh")
CACHE = os.path.join(REPO, ".cache")
STANDIN = os.path.join(REPO, "tests", "helpers", "standin_server.py")


def require(ok, what):
    """Fail under CI, skip elsewhere, when an instrument is missing."""
    if ok:
        return
    if os.environ.get("CI"):
        pytest.fail(f"instrument missing under CI: {what}")
    pytest.skip(f"instrument missing: {what}")
