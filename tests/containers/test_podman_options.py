"""The splitter's table of podman's options (containers/podman_options.py) is podman's own: the
real `podman run --help`, `podman create --help` and `podman --help` give the same sets."""

import shutil
import subprocess

import pytest

from cortex_hook.containers import podman_options as P

from ..helpers.instruments import require


@pytest.mark.parametrize("args, value, switch", [
    (["run"], P.RUN_VALUE, P.RUN_SWITCH), (["create"], P.CREATE_VALUE, P.CREATE_SWITCH),
    ([], P.GLOBAL_VALUE, P.GLOBAL_SWITCH)])
def test_the_table_is_what_the_real_podman_says(args, value, switch):
    podman = shutil.which("podman")
    require(podman, "podman (Debian package podman)")
    text = subprocess.run([podman, *args, "--help"], capture_output=True, text=True, timeout=60).stdout
    found_value, found_switch = P.options_from_help(text)
    assert found_value, text  # (the help was read)
    assert (found_value, found_switch) == (value, switch), (
        sorted(found_value ^ value), sorted(found_switch ^ switch))


def test_the_help_reader_tells_values_from_switches():
    text = ("Flags:\n  -d, --detach                 Run container in background\n"
            "      --device strings         Add a host device to the container\n"
            "  -p, --publish strings        Publish a container's port\n"
            "      --rm                     Remove container after exit\n"
            "      --memory <number>[<unit>]   Memory limit\n")
    value, switch = P.options_from_help(text)
    assert value == {"--device", "--publish", "-p", "--memory"} and switch == {"--detach", "-d", "--rm"}
