"""The hook set: every hook is tested, a third-party plugin found through its entry point can
answer each of them, plugins can be blocked by name, and a broken plugin fails in one line."""

import os
import re
import textwrap

import pytest

from cortex_hook.hooks import specs
from cortex_hook.hooks.entrypoints import iter_entry_points

from ..helpers.box import assert_one_line_error, gpu_desc, uuid_of
from ..helpers.instruments import STANDIN
from ..helpers.processes import end_group, free_port, read_until, start_group
from ..helpers.siteplugin import install_plugin

TESTS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

THIRD_PARTY = '''
import json, os
from cortex_hook import hookimpl
from cortex_hook.model import Reason, ScoreTerm, Selection


@hookimpl
def cortex_server_names():
    return ["thirdparty"]


@hookimpl
def cortex_check_gpu(request, gpu):
    if gpu.name.endswith("T4"):
        return Reason("no-t4", "T4 boards are kept for transcoding")


@hookimpl
def cortex_score_gpu(request, gpu):
    return ScoreTerm("site_bonus", 1.0 if gpu.index == 2 else 0.0, 10.0, "the site prefers GPU 2")


@hookimpl(tryfirst=True)
def cortex_select_gpus(request, ranked, count):
    if request.unit.startswith("reverse"):
        return Selection(list(reversed(ranked))[:count], ["reversed by the site plugin"])


@hookimpl
def cortex_prepare_launch(request, decision, launch):
    launch.env["SITE_GPU_COUNT"] = str(len(decision.chosen))


@hookimpl
def cortex_decision_made(request, decision):
    with open(os.environ["SITE_LOG"], "a") as f:
        f.write(json.dumps({"unit": decision.unit, "gpus": decision.uuids}) + "\\n")


@hookimpl
def cortex_validate_options(service):
    if service.server == "thirdparty":
        return [(k, "the site plugin takes only 'colour'") for k in service.options if k != "colour"]


@hookimpl
def cortex_tensor_parallel(service):
    return service.options.get("colour") == "sharded" or None


@hookimpl
def cortex_readiness_probe(request, launch):
    if request.service.server == "thirdparty" and os.environ.get("SITE_PORT"):
        from cortex_hook.probe import TcpProbe
        return TcpProbe("127.0.0.1", int(os.environ["SITE_PORT"]))


@hookimpl
def cortex_discover_gpus(policy, detail):
    return None  # never claims the inventory: firstresult falls through to the built-ins


@hookimpl
def cortex_gpu_faults(policy, gpu):
    if gpu.uuid == os.environ.get("SITE_FAULTY"):
        return Reason("burn-in", "failed the site's burn-in test")
'''


def test_every_hook_has_a_test():
    """Each hookspec is exercised by name somewhere in the tests (datasette's rule)."""
    hooks = [n for n in dir(specs) if n.startswith("cortex_")]
    source = THIRD_PARTY
    for directory, _, files in os.walk(TESTS):
        source += "".join(open(os.path.join(directory, f)).read() for f in files
                          if f.endswith(".py") and f != "test_hooks.py")
    missing = [h for h in hooks if not re.search(rf"\bdef {h}\(", source)]
    assert not missing, f"hooks without a test implementation: {missing}"
    assert len(hooks) >= 7


def test_third_party_plugin_answers_every_hook(box, tmp_path):
    site = install_plugin(tmp_path, THIRD_PARTY)
    box.write_gpus([gpu_desc(0, name="NVIDIA T4"), gpu_desc(1), gpu_desc(2), gpu_desc(3)])
    box.write_policy("services:\n  - match: '*'\n    server: thirdparty\n    gpus: 2\n")
    log = tmp_path / "decisions.jsonl"
    env = box.env(PYTHONPATH=site, SITE_LOG=str(log))

    names = box.json("plugins", env=env)["plugins"]
    assert names["site"] == sorted(n for n in dir(specs) if n.startswith("cortex_"))

    out = box.json("allocate", "chat", env=env)
    verdicts = {v["index"]: v for v in out["verdicts"]}
    assert verdicts[0]["reasons"] == [{"code": "no-t4", "text": "T4 boards are kept for transcoding"}]
    assert out["gpus"][0] == uuid_of(2)  # the site's score term outweighs the rest
    assert any(t["name"] == "site_bonus" for t in verdicts[2]["terms"])
    assert out["env"]["SITE_GPU_COUNT"] == "2"
    assert log.read_text().splitlines() == [f'{{"unit": "chat.service", "gpus": {out["gpus"]!r}}}'.replace("'", '"')]

    assert box.cli("release", "chat", env=env).returncode == 0
    rev = box.json("plan", "reverse-me", env=env)
    assert rev["gpus"] == [uuid_of(3), uuid_of(1)]  # ranked 2, 1, 3 (the bonus), reversed
    assert "reversed by the site plugin" in rev["notes"]


def test_a_fault_a_plugin_finds_rejects_the_gpu_in_plan_and_shows_in_status(box, tmp_path):
    """cortex_gpu_faults: `plan` and `status` ask the same hook, so they never disagree."""
    site = install_plugin(tmp_path, THIRD_PARTY)
    box.write_gpus([gpu_desc(0), gpu_desc(1)])
    box.write_policy("services:\n  - match: '*'\n")
    env = box.env(PYTHONPATH=site, SITE_LOG=str(tmp_path / "log"), SITE_FAULTY=uuid_of(0))
    verdicts = {v["index"]: v for v in box.json("plan", "a", env=env)["verdicts"]}
    assert [r["code"] for r in verdicts[0]["reasons"]] == ["burn-in"] and verdicts[1]["selected"]
    health = {g["index"]: g["health"] for g in box.json("status", env=env)["gpus"]}
    assert health == {0: ["burn-in"], 1: []}


UNGUARDED_SERVER = '''
from cortex_hook import hookimpl
from cortex_hook.probe import TcpProbe


@hookimpl
def cortex_server_names():
    return ["sitesrv"]


@hookimpl(tryfirst=True)
def cortex_prepare_launch(request, decision, launch):  # no `if service.server == ...` guard
    launch.env["SITESRV"] = "1"


@hookimpl(tryfirst=True)
def cortex_readiness_probe(request, launch):
    return TcpProbe("127.0.0.1", 1)


@hookimpl
def cortex_validate_options(service):
    return [(k, "sitesrv takes no options") for k in service.options]
'''


def test_a_server_plugin_is_asked_about_its_own_services_only(box, tmp_path):
    """Its server hooks, unguarded, run for `server: sitesrv` and never for a vLLM service."""
    from cortex_hook.hooks.manager import load_plugins
    from cortex_hook.model import Launch, ServicePolicy

    from ..helpers.builders import make_gpu, make_request

    site = install_plugin(tmp_path, UNGUARDED_SERVER, name="sitesrv")
    box.write_gpus([gpu_desc(0)])
    box.write_policy("services:\n  - match: 'v*'\n    server: vllm\n    options: {smoke_test: true}\n"
                     "  - match: 's*'\n    server: sitesrv\n")
    env = box.env(PYTHONPATH=site)
    assert "SITESRV" not in box.json("plan", "vllm-a", env=env)["env"]
    assert box.json("plan", "site-a", env=env)["env"]["SITESRV"] == "1"
    assert box.cli("validate", env=env).returncode == 0  # vLLM's options were not shown to sitesrv
    import sys
    sys.path.insert(0, site)
    try:
        plugins = load_plugins()
        for server, ours in (("vllm", False), ("sitesrv", True)):
            request = make_request([make_gpu(0)], server=server)
            probe = plugins.readiness_probe(request, Launch(argv=["x"]))
            assert (getattr(probe, "port", None) == 1) is ours, server
        assert plugins.validate_options(ServicePolicy(match="*", server="vllm", options={"smoke_test": True})) == []
    finally:
        sys.path.remove(site)
        sys.modules.pop("site_plugin", None)


def test_a_server_plugin_that_shards_makes_same_model_the_default(box, tmp_path):
    """cortex_tensor_parallel: the site's `colour: sharded` services get GPUs of one model."""
    site = install_plugin(tmp_path, THIRD_PARTY)
    box.write_gpus([gpu_desc(0, name="NVIDIA L4"), gpu_desc(1, name="NVIDIA L40S", memory_used="1GiB"),
                    gpu_desc(2, name="NVIDIA L40S")])  # ranked 2 (the site's bonus), 0, 1
    box.write_policy("services:\n  - match: tp.service\n    server: thirdparty\n    gpus: 2\n"
                     "    options: {colour: sharded}\n  - match: '*'\n    server: thirdparty\n    gpus: 2\n")
    env = box.env(PYTHONPATH=site)
    tp = box.json("plan", "tp", env=env)
    assert tp["gpus"] == [uuid_of(2), uuid_of(1)]
    assert "GPU 0 (NVIDIA L4): not the same model as GPU 2 (NVIDIA L40S); same_model is on for tensor parallel" \
        in tp["notes"]
    assert box.json("plan", "other", env=env)["gpus"] == [uuid_of(2), uuid_of(0)]


def test_plugins_can_be_blocked_by_name(box, tmp_path):
    site = install_plugin(tmp_path, THIRD_PARTY)
    box.write_gpus([gpu_desc(0, name="NVIDIA T4", temperature=99)])
    box.write_policy("services:\n  - match: '*'\n")
    env = box.env(PYTHONPATH=site, SITE_LOG=str(tmp_path / "log"))
    assert box.cli("plan", "a", env=env).returncode == 69
    blocked = box.env(PYTHONPATH=site, SITE_LOG=str(tmp_path / "log"), CORTEX_HOOK_DISABLE_PLUGINS="site,health")
    out = box.json("plan", "a", env=blocked)
    assert out["ok"] and out["verdicts"][0]["reasons"] == []
    listed = box.json("plugins", env=blocked)
    assert "site" not in listed["plugins"] and "cortex_hook.hooks.builtin.health" not in listed["plugins"]
    assert listed["disabled"] == ["health", "site"]


def test_plugin_that_fails_to_load_is_one_line_exit_70(box, tmp_path):
    site = install_plugin(tmp_path, "raise ImportError('no module named torch')\n", name="broken")
    box.write_gpus([gpu_desc(0)])
    box.write_policy("services:\n  - match: '*'\n")
    r = box.cli("plan", "a", env=box.env(PYTHONPATH=site))
    assert r.returncode == 70
    assert_one_line_error(r.stderr, "plugin 'broken'", "failed to load", "no module named torch")


def test_plugin_that_raises_in_a_hook(box, tmp_path):
    source = textwrap.dedent('''
        from cortex_hook import hookimpl

        @hookimpl
        def cortex_check_gpu(request, gpu):
            raise ZeroDivisionError("site bug")
        ''')
    site = install_plugin(tmp_path, source, name="buggy")
    box.write_gpus([gpu_desc(0)])
    box.write_policy("services:\n  - match: '*'\n")
    r = box.cli("allocate", "a", env=box.env(PYTHONPATH=site))
    assert r.returncode == 70
    assert_one_line_error(r.stderr, "ZeroDivisionError", "site bug", "CORTEX_HOOK_DEBUG")
    assert box.json("leases", env=box.env(PYTHONPATH=site))["leases"] == []  # nothing half done
    debug = box.cli("allocate", "a", env=box.env(PYTHONPATH=site, CORTEX_HOOK_DEBUG="1"))
    assert "Traceback" in debug.stderr


def test_misspelt_hook_is_refused(box, tmp_path):
    source = "from cortex_hook import hookimpl\n\n@hookimpl\ndef cortex_chek_gpu(request, gpu):\n    pass\n"
    site = install_plugin(tmp_path, source, name="typo")
    box.write_gpus([gpu_desc(0)])
    box.write_policy("services:\n  - match: '*'\n")
    r = box.cli("plan", "a", env=box.env(PYTHONPATH=site))
    assert r.returncode == 70
    assert_one_line_error(r.stderr, "a plugin was refused", "unknown hook", "cortex_chek_gpu")


def test_entry_point_scan_matches_importlib_metadata(tmp_path):
    """Our scan (which avoids importing importlib.metadata) finds what importlib.metadata finds."""
    import importlib.metadata as md
    site = install_plugin(tmp_path, THIRD_PARTY)
    dup = tmp_path / "dup"
    dup.mkdir()
    (dup / "site_plugin-0.9.dist-info").mkdir()
    (dup / "site_plugin-0.9.dist-info" / "entry_points.txt").write_text("[cortex_hook]\nold = site_plugin\n")
    path = [site, str(dup)]
    ours = sorted((n, v) for n, v, _ in iter_entry_points("cortex_hook", path))
    theirs = sorted((ep.name, ep.value) for ep in md.distributions(path=path) and
                    md.EntryPoints(ep for d in _unique(md.distributions(path=path)) for ep in d.entry_points
                                   if ep.group == "cortex_hook"))
    assert ours == theirs == [("site", "site_plugin")]  # the first distribution on the path wins


def _unique(dists):
    seen = set()
    for d in dists:
        key = d.metadata["Name"].lower().replace("-", "_") if d.metadata["Name"] else d._path.name.split("-")[0]
        if key not in seen:
            seen.add(key)
            yield d


@pytest.mark.parametrize("text, expected", [
    ("[cortex_hook]\na = m\n# comment\nb = m.sub:obj\n\n[other]\nc = x\n", [("a", "m"), ("b", "m.sub:obj")]),
    ("[console_scripts]\nx = y\n", []),
])
def test_entry_points_txt_parsing(tmp_path, text, expected):
    d = tmp_path / "pkg-1.dist-info"
    d.mkdir()
    (d / "entry_points.txt").write_text(text)
    assert [(n, v) for n, v, _ in iter_entry_points("cortex_hook", [str(tmp_path)])] == expected


def test_third_party_readiness_probe_gates_supervise(box, tmp_path):
    """A plugin's probe decides when `supervise` reports ready (here: a TCP probe on SITE_PORT)."""
    import signal
    import subprocess
    import sys
    site = install_plugin(tmp_path, THIRD_PARTY)
    port = free_port()
    box.write_gpus([gpu_desc(0)])
    box.write_policy("services:\n  - match: '*'\n    server: thirdparty\n")
    env = box.env(PYTHONPATH=site, SITE_LOG=str(tmp_path / "log"), SITE_PORT=port)
    proc = start_group([sys.executable, "-m", "cortex_hook", "supervise", "--unit", "chat", "--",
                        sys.executable, STANDIN, "--port", str(port)], env=env, stderr=subprocess.PIPE, text=True)
    try:
        lines = read_until(proc.stderr, "ready on")
        assert any(f"waiting for port {port}: not listening yet" in l for l in lines) or \
            lines[-1].endswith("(priority -)")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    finally:
        end_group(proc)


def test_plugin_validates_its_own_options(box, tmp_path):
    """A server plugin checks the `options:` of its services; its word comes back as file:line:key."""
    site = install_plugin(tmp_path, THIRD_PARTY)
    env = box.env(PYTHONPATH=site, SITE_LOG=str(tmp_path / "log"))
    box.write_gpus([gpu_desc(0)])
    box.write_policy("services:\n  - match: a\n    server: thirdparty\n    options:\n      colour: red\n")
    assert box.cli("validate", env=env).returncode == 0
    box.write_policy("services:\n  - match: a\n    server: thirdparty\n    options:\n      colour: red\n"
                     "      size: 3\n")
    r = box.cli("validate", env=env)
    assert r.returncode == 78
    assert_one_line_error(r.stderr, f"{box.policy}:9:7: services[0].options.size: the site plugin takes only")
    box.write_policy("services:\n  - match: a\n    options:\n      colour: red\n")
    r = box.cli("plan", "a", env=env)
    assert r.returncode == 78
    assert_one_line_error(r.stderr, "services[0].options.colour: server 'generic' takes no options")
