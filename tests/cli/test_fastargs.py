"""The start path's own reading of the command lines installed drop-ins write (cli/fastargs.py):
equal to argparse's for those lines, and everything else left to argparse."""

import pytest

from cortex_hook.cli.fastargs import start_path_args
from cortex_hook.cli.parser import build_parser


@pytest.mark.parametrize("argv", [
    ["allocate", "a"],
    ["release", "vllm@my\\x2dmodel.service"],
    ["--policy", "/etc/p.yaml", "--state", "/var/s.db", "--runtime-dir", "/run/c", "allocate", "x.service"],
    ["--runtime-dir", "/r1", "--runtime-dir", "/r2", "release", "u"],
    ["allocate", ""],
])
def test_start_path_args_equal_argparse(argv):
    ours = start_path_args(argv)
    assert ours is not None
    theirs = build_parser(argv[-2]).parse_args(argv)
    assert vars(ours) == vars(theirs)


@pytest.mark.parametrize("argv", [
    ["allocate", "a", "--json"], ["allocate", "--json", "a"], ["--policy=/p", "allocate", "a"],
    ["allocate"], ["release", "-h"], ["--policy", "-x", "allocate", "a"], ["plan", "a"],
    ["allocate", "a", "b"], ["--pol", "/p", "allocate", "a"], ["allocate", "--holder-pid", "1", "a"], [],
])
def test_start_path_args_leave_everything_else_to_argparse(argv):
    assert start_path_args(argv) is None
