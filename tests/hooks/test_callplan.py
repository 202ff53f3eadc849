"""The memoised hook plan (cortex_hook/callplan.py) and the start path's own argument reading.

The plan must call exactly what pluggy would call, in pluggy's order, with pluggy's results; it
must be used only for the plugin set it was made for, never for wrappers, never from a file
others can write; and a start that uses it must not import pluggy at all."""

import importlib.util
import json
import os
import subprocess
import sys
import textwrap

import pytest

from cortex_hook.hooks import callplan, specs
from cortex_hook.hooks.entrypoints import distributions
from cortex_hook.hooks.manager import _import_plugins, _register

from ..helpers.box import gpu_desc, uuid_of
from ..helpers.siteplugin import install_plugin

ORDERED = '''
from cortex_hook import hookimpl
from cortex_hook.model import Selection

CALLS = []


@hookimpl(trylast=True)
def cortex_decision_made(request, decision):
    CALLS.append("{name}.last")


@hookimpl(specname="cortex_decision_made")
def plain(request, decision):
    CALLS.append("{name}.plain")


@hookimpl(tryfirst=True, specname="cortex_decision_made")
def first(decision, request, unused=None):
    CALLS.append("{name}.first")


@hookimpl(tryfirst=True)
def cortex_select_gpus(request, ranked, count):
    CALLS.append("{name}.select")
    return None if ranked == "pass" else Selection(["{name}"])
'''


def _module(tmp_path, name, source):
    path = tmp_path / f"{name}.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def plugin_set(tmp_path):
    """Every installed plugin (built-ins and the six server plugins) plus two with ordering marks."""
    plugins = _import_plugins(distributions())
    extra = [(n, _module(tmp_path, n, ORDERED.format(name=n))) for n in ("alpha", "beta")]
    return plugins + extra


def test_the_plan_is_pluggys_order_for_every_hook(plugin_set):
    pm = _register(plugin_set)
    plan = callplan.plan_of(pm, plugin_set, specs)
    assert sorted(plan) == sorted(n for n in dir(specs) if n.startswith("cortex_"))
    for hook, (firstresult, calls) in plan.items():
        caller = getattr(pm.hook, hook)
        assert firstresult == bool(caller.spec.opts.get("firstresult")), hook
        planned = [getattr(plugin_set[i][1], attr) for i, attr, _, _ in calls]
        assert planned == [impl.function for impl in reversed(caller.get_hookimpls())], hook
    assert len(plan["cortex_decision_made"][1]) == 6  # 3 each from alpha and beta


def test_planned_calls_give_pluggys_results_in_pluggys_order(plugin_set):
    pm = _register(plugin_set)
    planned = callplan.PlannedHooks(callplan.plan_of(pm, plugin_set, specs), plugin_set)
    calls = []
    for name, plugin in plugin_set[-2:]:
        plugin.CALLS = calls  # one log of the calls in the order they happen

    def run(hook):
        calls.clear()
        return hook.cortex_decision_made(request=None, decision=None), list(calls)

    theirs, ours = run(pm.hook), run(planned)
    assert ours == theirs
    assert theirs[1][:2] == ["beta.first", "alpha.first"]  # tryfirst, last registered first
    assert theirs[1][-2:] == ["alpha.last", "beta.last"]  # trylast: each new one goes below the rest
    assert planned.cortex_server_names() == pm.hook.cortex_server_names()
    # firstresult: beta answers first; with "pass" both decline and the built-in topology answers
    assert planned.cortex_select_gpus(request=None, ranked=[], count=1).chosen == ["beta"]
    assert pm.hook.cortex_select_gpus(request=None, ranked=[], count=1).chosen == ["beta"]


def test_fingerprint_follows_every_change_that_moves_a_call(plugin_set, tmp_path):
    pluggy = "pluggy-1.7.0.dist-info"
    base = callplan.fingerprint(plugin_set, specs, pluggy)
    assert base == callplan.fingerprint(list(plugin_set), specs, pluggy)
    assert base != callplan.fingerprint(plugin_set, specs, "pluggy-1.8.0.dist-info")
    assert base != callplan.fingerprint(plugin_set[:-1], specs, pluggy)
    assert base != callplan.fingerprint(plugin_set[:-2] + plugin_set[:-3:-1], specs, pluggy)
    original = "@hookimpl(trylast=True)\ndef cortex_decision_made(request, decision):"
    for i, change in enumerate(("@hookimpl(tryfirst=True)\ndef cortex_decision_made(request, decision):",
                                "@hookimpl(trylast=True)\ndef cortex_decision_made(decision):",
                                "@hookimpl(trylast=True)\ndef cortex_decision_made(request, decision=None):",
                                "@hookimpl(trylast=True)\ndef cortex_decision_made(request, *, decision):")):
        source = ORDERED.format(name="beta").replace(original, change)
        assert source != ORDERED.format(name="beta")
        (tmp_path / str(i)).mkdir()
        changed = plugin_set[:-1] + [("beta", _module(tmp_path / str(i), "beta", source))]
        assert callplan.fingerprint(changed, specs, pluggy) != base, change


def test_plugins_a_plan_cannot_describe(tmp_path):
    class Instance:
        @staticmethod
        def cortex_server_names():
            return ["x"]
    Instance.cortex_server_names.cortex_hook_impl = {}
    assert callplan.fingerprint([("obj", Instance())], specs, None) is None
    wrapper = _module(tmp_path, "wrapping", textwrap.dedent('''
        from cortex_hook import hookimpl

        @hookimpl(wrapper=True)
        def cortex_server_names():
            names = yield
            return names + [["wrapped"]]
        '''))
    plugins = _import_plugins([]) + [("wrapping", wrapper)]
    assert callplan.fingerprint(plugins, specs, None) is not None
    assert callplan.plan_of(_register(plugins), plugins, specs) is None


# -- through the command line -------------------------------------------------------------------
PROBE = ("import sys, json\nfrom cortex_hook.cli import main\nrc = main(sys.argv[1:])\n"
         "print(json.dumps({'pluggy': 'pluggy' in sys.modules}), file=sys.stderr)\nsys.exit(rc)\n")


def _run(box, *args, env=None):
    """`cortex-hook ARGS` in a fresh interpreter; -> (CompletedProcess, whether pluggy was imported)."""
    r = subprocess.run([sys.executable, "-c", PROBE, *args], env=env or box.env(), capture_output=True,
                       text=True, timeout=120)
    *errors, last = r.stderr.strip().splitlines() or ["{}"]
    r.stderr = "\n".join(errors)
    return r, json.loads(last).get("pluggy")


def _memo(box):
    return os.path.join(box.runtime, callplan.MEMO_NAME)


def _ready(box, gpus=2):
    box.write_gpus([gpu_desc(i) for i in range(gpus)])
    box.write_policy("services:\n  - match: '*'\n    gpus: 1\n")
    os.makedirs(box.runtime, mode=0o755)


def test_a_start_uses_the_plan_and_never_imports_pluggy(box):
    _ready(box)
    first, used = _run(box, "allocate", "a", "--json")
    assert first.returncode == 0, first.stderr
    assert used and os.path.exists(_memo(box))  # pluggy made the plan, and it was recorded
    assert os.stat(_memo(box)).st_mode & 0o777 == 0o644
    second, used = _run(box, "allocate", "b", "--json")
    assert second.returncode == 0, second.stderr
    assert used is False
    a, b = json.loads(first.stdout), json.loads(second.stdout)
    assert a["gpus"] == [uuid_of(0)] and b["gpus"] == [uuid_of(1)]
    assert sorted(a["env"]) == sorted(b["env"]) and a["notes"] == b["notes"]  # the same plugins ran
    scores = [{v["uuid"]: v["score"] for v in d["verdicts"]} for d in (a, b)]
    assert scores[0][uuid_of(1)] == scores[1][uuid_of(1)] is not None


def test_a_changed_plugin_set_gets_a_new_plan(box, tmp_path):
    _ready(box)
    source = textwrap.dedent('''
        from cortex_hook import hookimpl
        from cortex_hook.model import Reason

        @hookimpl
        def cortex_check_gpu(request, gpu):
            if gpu.index == 0:
                return Reason("site", "kept for the site")
        ''')
    site = install_plugin(tmp_path, source)
    env = box.env(PYTHONPATH=site)
    r, used = _run(box, "plan", "a", "--json", env=env)
    assert used and json.loads(r.stdout)["gpus"] == [uuid_of(1)]
    r, used = _run(box, "plan", "a", "--json", env=env)
    assert used is False and json.loads(r.stdout)["gpus"] == [uuid_of(1)]
    # a new hook in the plugin: the old plan does not fit, pluggy runs and the hook takes effect
    with open(os.path.join(site, "site_plugin.py"), "a") as f:
        f.write("\n\n@hookimpl\ndef cortex_prepare_launch(request, decision, launch):\n"
                "    launch.env['SITE'] = 'yes'\n")
    r, used = _run(box, "plan", "a", "--json", env=env)
    assert used and json.loads(r.stdout)["env"]["SITE"] == "yes"
    r, used = _run(box, "plan", "a", "--json", env=env)
    assert used is False and json.loads(r.stdout)["env"]["SITE"] == "yes"
    # blocked by name: a different set again
    blocked = dict(env, CORTEX_HOOK_DISABLE_PLUGINS="site")
    r, used = _run(box, "plan", "a", "--json", env=blocked)
    assert used and json.loads(r.stdout)["gpus"] == [uuid_of(0)]
    # without the plugin on the path at all: the same set as with it blocked, whose plan fits
    r, used = _run(box, "plan", "a", "--json")
    assert used is False and "SITE" not in json.loads(r.stdout)["env"]


def test_a_wrapper_means_pluggy_every_time(box, tmp_path):
    _ready(box)
    source = textwrap.dedent('''
        from cortex_hook import hookimpl

        @hookimpl(wrapper=True)
        def cortex_prepare_launch(request, decision, launch):
            result = yield
            launch.env["WRAPPED"] = "1"
            return result
        ''')
    env = box.env(PYTHONPATH=install_plugin(tmp_path, source))
    for _ in range(2):
        r, used = _run(box, "plan", "a", "--json", env=env)
        assert r.returncode == 0, r.stderr
        assert used and json.loads(r.stdout)["env"]["WRAPPED"] == "1"
    assert not os.path.exists(_memo(box))


def test_a_plan_others_could_write_is_ignored(box):
    _ready(box)
    assert _run(box, "plan", "a")[1]
    assert _run(box, "plan", "a")[1] is False
    os.chmod(_memo(box), 0o666)
    r, used = _run(box, "plan", "a")
    assert r.returncode == 0 and used
    os.chmod(_memo(box), 0o644)
    os.chmod(box.runtime, 0o777)  # an unsafe runtime dir: no memo read from it, none written
    os.remove(_memo(box))
    r, used = _run(box, "plan", "a")
    assert r.returncode == 0 and used and not os.path.exists(_memo(box))


def test_tracing_asks_pluggy(box):
    _ready(box)
    assert _run(box, "plan", "a")[1]
    r, used = _run(box, "plan", "a", env=box.env(CORTEX_HOOK_TRACE_PLUGINS="1"))
    assert used and "cortex_check_gpu" in r.stderr
