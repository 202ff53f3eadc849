"""The shape of the package: imports flow one way (no cycle, the engine never reaches up into the
command line), modules stay small, every public function says what it does, and the command
registry, the argument parser and the command functions name the same commands."""

import ast
import os

import pytest

from cortex_hook.cli.commands import COMMANDS, find
from cortex_hook.cli.parser import build_parser

from .helpers.instruments import REPO

PACKAGE = os.path.join(REPO, "cortex_hook")
MAX_LINES = 400
PLUGIN_API = {"cortex_hook", "cortex_hook.errors", "cortex_hook.quantities", "cortex_hook.model", "cortex_hook.records",
              "cortex_hook.serverkit", "cortex_hook.probe", "cortex_hook.rules",
              "cortex_hook.systemd", "cortex_hook.systemd.envfile"}  # (what an env file may hold)


def _modules():
    """{module name: (path, parsed tree)} of every module of the package."""
    out = {}
    for directory, _, files in os.walk(PACKAGE):
        for f in files:
            if f.endswith(".py"):
                path = os.path.join(directory, f)
                rel = os.path.relpath(path, REPO)[:-3].replace(os.sep, ".")
                name = rel[: -len(".__init__")] if rel.endswith(".__init__") else rel
                with open(path, encoding="utf-8") as fh:
                    out[name] = (path, ast.parse(fh.read(), path))
    return out


MODULES = _modules()


def _imports(name, tree):
    """The package's modules NAME imports, anywhere in it (function-level imports included)."""
    package = name if os.path.basename(MODULES[name][0]) == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names]
        else:
            continue
        found.update(t for t in targets if t in MODULES and t != name)
    return found


GRAPH = {name: _imports(name, tree) for name, (_, tree) in MODULES.items()}


def test_no_import_cycle():
    """A reader follows one command from cli/ down to SQLite without climbing back up."""
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(GRAPH[node]):
            if state.get(nxt) == "open":
                raise AssertionError("import cycle: " + " -> ".join(stack[stack.index(nxt):] + [nxt]))
            if nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = "done"

    for name in sorted(GRAPH):
        if name not in state:
            visit(name)


def _importers_of(prefix):
    return {n for n, deps in GRAPH.items() if any(d == prefix or d.startswith(prefix + ".") for d in deps)}


def test_only_the_command_line_imports_the_command_line():
    outside = {n for n in _importers_of("cortex_hook.cli") if not n.startswith("cortex_hook.cli")}
    assert outside == {"cortex_hook.__main__"}


def test_the_plugin_api_imports_only_itself():
    """errors, quantities, model, serverkit, probe and rules: what a plugin imports stands alone."""
    for name in PLUGIN_API:
        assert GRAPH[name] <= PLUGIN_API | {"cortex_hook.hooks.markers"}, (name, GRAPH[name] - PLUGIN_API)


def test_builtin_plugins_use_the_plugin_api_and_the_rules_only():
    for name, deps in GRAPH.items():
        if name.startswith("cortex_hook.hooks.builtin."):
            assert deps <= PLUGIN_API | {"cortex_hook.hooks.markers"}, (name, deps)
    assert _importers_of("cortex_hook.hooks.builtin") == set()  # registered by name, imported by nobody


@pytest.mark.parametrize("name", sorted(MODULES))
def test_modules_stay_small(name):
    with open(MODULES[name][0], encoding="utf-8") as f:
        lines = sum(1 for _ in f)
    assert lines <= MAX_LINES, f"{name}: {lines} lines; split it by what it does"


def _public_functions(tree):
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and not node.name.startswith("_"):
            yield node.name, node
        if isinstance(node, ast.ClassDef) and not node.name.startswith("_"):
            for item in node.body:
                if isinstance(item, ast.FunctionDef) and not item.name.startswith("_"):
                    yield f"{node.name}.{item.name}", item


def test_every_module_and_public_function_has_a_docstring():
    missing = [name for name, (_, tree) in MODULES.items() if not ast.get_docstring(tree)]
    missing += [f"{name}:{fn}" for name, (_, tree) in MODULES.items()
                for fn, node in _public_functions(tree) if not ast.get_docstring(node)]
    assert not missing, missing


def test_commands_registry_parser_and_functions_agree():
    parser = build_parser()
    subparsers = next(a for a in parser._actions if a.dest == "command")
    assert sorted(subparsers.choices) == sorted(COMMANDS)
    for name in COMMANDS:
        assert callable(find(name)), name


def test_package_data_names_files_that_exist():
    """A non-editable install (`make demo`) ships only what pyproject's package-data names."""
    import glob
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+

    with open(os.path.join(REPO, "pyproject.toml"), "rb") as f:
        data = tomllib.load(f)["tool"]["setuptools"]["package-data"]
    for package, patterns in data.items():
        directory = os.path.join(REPO, *package.split("."))
        assert os.path.isfile(os.path.join(directory, "__init__.py")), package
        for pattern in patterns:
            assert glob.glob(os.path.join(directory, pattern)), (package, pattern)
