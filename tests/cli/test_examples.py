"""`cortex-hook example`: the example policy and units ship in the package (an installed
cortex-hook needs no source checkout for the README's install steps) and print as they are."""

import fnmatch
import os

import pytest

from ..helpers.instruments import REPO

EXAMPLES = os.path.join(REPO, "cortex_hook", "cli", "examples")
UNITS = ["llama-server.service", "tritonserver.service", "vllm@.service"]


def test_no_argument_lists_what_there_is(box):
    r = box.cli("example")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].startswith("cortex-hook example policy ")
    assert [line.split()[3] for line in lines[1:]] == UNITS
    assert box.cli("example", "unit").stdout == r.stdout  # `unit` without NAME: the same list


def test_policy_prints_the_shipped_file_and_it_validates(box, tmp_path):
    """README step 2: `cortex-hook example policy > /etc/cortex-hook/policy.yaml`, then validate."""
    r = box.cli("example", "policy")
    assert r.returncode == 0, r.stderr
    with open(os.path.join(EXAMPLES, "policy.yaml")) as f:
        assert r.stdout == f.read()
    path = tmp_path / "policy.yaml"
    path.write_text(r.stdout)
    os.chmod(path, 0o644)
    r = box.cli("validate", str(path))
    assert r.returncode == 0, r.stderr
    assert "ok (3 services, inventory nvml)" in r.stdout


@pytest.mark.parametrize("name,shipped", [("vllm@.service", "vllm@.service"), ("vllm@", "vllm@.service"),
                                          ("vllm", "vllm@.service"), ("llama-server", "llama-server.service")])
def test_unit_prints_the_shipped_unit_by_any_name_systemctl_takes(box, name, shipped):
    r = box.cli("example", "unit", name)
    assert r.returncode == 0, r.stderr
    with open(os.path.join(EXAMPLES, shipped)) as f:
        assert r.stdout == f.read()


def test_an_unknown_unit_is_one_line_naming_those_there_are(box):
    r = box.cli("example", "unit", "tritonservr")
    assert r.returncode == 2
    assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr
    assert "no example unit 'tritonservr' (did you mean 'tritonserver.service'?)" in r.stderr
    assert all(unit in r.stderr for unit in UNITS)
    r = box.cli("example", "policy", "extra")
    assert r.returncode == 2 and "takes no NAME" in r.stderr


def test_every_example_is_package_data():
    """A non-editable install ships what pyproject's package-data names: every example file must
    match one of its patterns (a new example would otherwise be missing from installs)."""
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    with open(os.path.join(REPO, "pyproject.toml"), "rb") as f:
        patterns = tomllib.load(f)["tool"]["setuptools"]["package-data"]["cortex_hook.cli.examples"]
    files = [f for f in os.listdir(EXAMPLES) if not f.endswith(".py") and f != "__pycache__"]
    assert sorted(files) == sorted(UNITS + ["policy.yaml"])
    for name in files:
        assert any(fnmatch.fnmatch(name, p) for p in patterns), name
