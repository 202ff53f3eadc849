"""`plan UNIT -- podman run …` end to end: the container gets exactly the chosen GPUs (one CDI
device each, the engine's own GPU requests gone), the server's environment with `--env`
(indices renumbered inside), and the server plugin's flags after the image."""

import json

from ..helpers.box import gpu_desc, uuid_of

VLLM = """\
services:
  - match: llm.service
    server: vllm
    gpus: 2
"""


def plan_argv(box, *cmd):
    r = box.cli("plan", "llm.service", "--json", "--", *cmd)
    assert r.returncode == 0, (r.stdout, r.stderr)
    return json.loads(r.stdout)


def test_a_podman_vllm_command_gets_exactly_its_gpus_and_its_flags_inside(box):
    box.write_gpus([gpu_desc(0, memory_used="20GiB"), gpu_desc(1), gpu_desc(2)]).write_policy(VLLM)
    out = plan_argv(box, "podman", "run", "--rm", "--device", "nvidia.com/gpu=all", "-p", "8000:8000",
                    "--ipc=host", "docker.io/vllm/vllm-openai:latest", "--model", "m")
    assert out["gpus"] == [uuid_of(1), uuid_of(2)]
    argv = out["argv"]
    image = argv.index("docker.io/vllm/vllm-openai:latest")
    engine, inside = argv[:image], argv[image + 1:]
    assert inside == ["--model", "m", "--tensor-parallel-size", "2"]
    assert "nvidia.com/gpu=all" not in engine
    assert [engine[i + 1] for i, w in enumerate(engine) if w == "--device"] == [
        f"nvidia.com/gpu={uuid_of(1)}", f"nvidia.com/gpu={uuid_of(2)}"]
    env = dict(w[len("--env="):].split("=", 1) for w in engine if w.startswith("--env="))
    assert env["CUDA_VISIBLE_DEVICES"] == "0,1"  # (outside: 1,2)
    assert out["env"]["CUDA_VISIBLE_DEVICES"] == "1,2"
    assert env["CORTEX_GPU_UUIDS"] == f"{uuid_of(1)},{uuid_of(2)}"
    assert engine[:5] == ["podman", "run", "--rm", "-p", "8000:8000"]
    assert any("container: replaced --device nvidia.com/gpu=all" in n for n in out["notes"])


def test_a_command_that_runs_no_container_is_shaped_as_before(box):
    box.write_gpus([gpu_desc(0), gpu_desc(1)]).write_policy(VLLM)
    out = plan_argv(box, "vllm", "serve", "m")
    assert out["argv"] == ["vllm", "serve", "m", "--tensor-parallel-size", "2"]


def test_a_detached_container_is_refused_with_the_reason(box):
    box.write_gpus([gpu_desc(0), gpu_desc(1)]).write_policy(VLLM)
    r = box.cli("plan", "llm.service", "--", "podman", "run", "-d", "img")
    assert r.returncode == 2 and "-d (detach) cannot be wrapped" in r.stderr, (r.returncode, r.stderr)
    assert r.stderr.count("\n") == 1


def _shaped(box, *cmd):
    """(plugins, decision) for llm.service and CMD, its launch shaped as a wrapper's would be."""
    from cortex_hook.allocation import plan_unit
    from cortex_hook.context import Context

    ctx = Context(policy=box.policy, state=box.state, runtime_dir=box.runtime)
    with ctx.open_state() as state:
        decision = plan_unit(ctx, "llm.service", state, {}, list(cmd), "wrapper")
    return ctx.plugins(), decision


def test_the_readiness_probe_knocks_on_the_published_port(box):
    from cortex_hook.errors import UsageError
    from cortex_hook.model import Request
    from cortex_hook.servercommand import readiness

    box.write_gpus([gpu_desc(0), gpu_desc(1)]).write_policy(VLLM)
    plugins, d = _shaped(box, "podman", "run", "-p", "127.0.0.1:9000:8000/tcp", "img", "--model", "m")
    request = Request(unit="llm.service", service=d.service, policy=None, snapshot=None, gpus=d.chosen)
    probe = readiness(plugins, request, d.launch)
    target = getattr(probe, "inner", probe)
    assert (target.host, target.port) == ("127.0.0.1", 9000)
    plugins, d = _shaped(box, "podman", "run", "--network=host", "img", "--model", "m", "--port", "8123")
    probe = readiness(plugins, request, d.launch)
    assert getattr(probe, "inner", probe).port == 8123
    plugins, d = _shaped(box, "podman", "run", "-p", "9000:9000", "img", "--model", "m")
    try:
        readiness(plugins, request, d.launch)
    except UsageError as exc:
        assert "listens on port 8000 inside its container, which the engine does not publish" in str(exc)
    else:
        raise AssertionError("an unpublished port was not refused")


def test_a_docker_command_gets_dockers_own_gpu_request_for_exactly_its_gpus(box):
    box.write_gpus([gpu_desc(0, memory_used="20GiB"), gpu_desc(1), gpu_desc(2)]).write_policy(VLLM)
    out = plan_argv(box, "docker", "run", "--runtime", "nvidia", "--gpus", "all", "-p", "8000:8000",
                    "vllm/vllm-openai:latest", "--model", "m")
    argv = out["argv"]
    engine = argv[:argv.index("vllm/vllm-openai:latest")]
    assert [engine[i + 1] for i, w in enumerate(engine) if w == "--gpus"] == [f'"device={uuid_of(1)},{uuid_of(2)}"']
    assert "--device" not in engine and argv[-2:] == ["--tensor-parallel-size", "2"]


def test_a_docker_command_that_asked_by_cdi_keeps_cdi(box):
    box.write_gpus([gpu_desc(0), gpu_desc(1)]).write_policy(VLLM)
    argv = plan_argv(box, "docker", "run", "--device", "nvidia.com/gpu=all", "img")["argv"]
    assert [argv[i + 1] for i, w in enumerate(argv) if w == "--device"] == [
        f"nvidia.com/gpu={uuid_of(0)}", f"nvidia.com/gpu={uuid_of(1)}"]
    assert "--gpus" not in argv
