"""Reading the Prometheus text format back in tests, and checking it with the real `promtool`."""

import os
import re
import shutil
import subprocess

import pytest

_SAMPLE = re.compile(r'([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$')
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def samples(text):
    """[(series name, {label: value}, float)] of every sample line in TEXT (escapes undone)."""
    out = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = _SAMPLE.match(line)
        assert m, f"not a sample line: {line!r}"
        labels = {k: re.sub(r"\\(.)", lambda e: "\n" if e.group(1) == "n" else e.group(1), v)
                  for k, v in _LABEL.findall(m.group(2) or "")}
        out.append((m.group(1), labels, float(m.group(3))))
    return out


def value(text, name, **labels):
    """The value of the one sample of NAME whose labels include LABELS (None if there is none)."""
    found = [v for n, l, v in samples(text) if n == name and all(l.get(k) == str(x) for k, x in labels.items())]
    assert len(found) <= 1, (name, labels, found)
    return found[0] if found else None


def promtool():
    """The path of `promtool` (Debian package `prometheus`): fails under CI when it is missing,
    skips elsewhere."""
    path = shutil.which("promtool")
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("promtool is missing (apt-get install prometheus); CI installs it in .ci/run")
        pytest.skip("promtool is missing (apt-get install prometheus)")
    return path


def check(text):
    """Assert that `promtool check metrics` finds TEXT valid and lint-clean."""
    r = subprocess.run([promtool(), "check", "metrics"], input=text, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, (r.stdout, r.stderr, text)
