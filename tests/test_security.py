"""Security properties that hold for the whole code base, checked on its source: no shell
anywhere, and every subprocess gets an argument list."""

import ast
import os

import pytest

from .helpers.instruments import REPO

SHIPPED = [os.path.join(root, f) for top in ("cortex_hook", "plugins")
           for root, _, files in os.walk(os.path.join(REPO, top)) for f in files if f.endswith(".py")]


def calls(tree):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            owner = func.value.id if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) else ""
            yield node, owner, name


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: os.path.relpath(p, REPO))
def test_no_shell_anywhere(path):
    """cortex-hook runs as root: it never goes through a shell, and never builds a command string."""
    with open(path) as f:
        source = f.read()
    tree = ast.parse(source)
    for node, owner, name in calls(tree):
        where = f"{os.path.relpath(path, REPO)}:{node.lineno}"
        assert (owner, name) not in {("os", "system"), ("os", "popen"), ("subprocess", "getoutput"),
                                     ("subprocess", "getstatusoutput")}, where
        for kw in node.keywords:
            if kw.arg == "shell":
                assert isinstance(kw.value, ast.Constant) and kw.value.value is False, where
        if owner == "subprocess" and name in ("run", "Popen", "call", "check_call", "check_output") and node.args:
            assert not isinstance(node.args[0], (ast.Constant, ast.JoinedStr, ast.BinOp)), \
                f"{where}: a subprocess gets an argument list, never a command string"
    assert "/bin/sh" not in source and "sh -c" not in source, path


def test_shipped_files_were_scanned():
    assert any(p.endswith("isolation.py") for p in SHIPPED) and any("cortex_hook_vllm" in p for p in SHIPPED)
