"""`cortex-hook plan --json UNIT -- CMD` end to end, and `plan UNIT` reading the unit's own ExecStart=."""

import functools
import json

import pytest

from cortex_hook.systemd import command

from ..helpers.box import gpu_desc, uuid_of
from ..helpers.servers import ALL, MIG_UUID, POOL, THEIRS, TWO_GPU_FLAGS, UUID_NOTE


# -- end to end: `cortex-hook plan --json UNIT -- CMD` -----------------------------------------------
def plan_json(box, unit, *cmd, order="documented"):
    args = ["plan", unit, "--json", "--", *cmd] if order == "documented" else ["plan", "--json", unit, "--", *cmd]
    r = box.cli(*args)
    assert r.returncode == 0, (r.returncode, r.stdout, r.stderr)
    return json.loads(r.stdout)


@pytest.mark.parametrize("server, argv", ALL, ids=[s for s, _ in ALL])
def test_e2e_every_server_two_gpus(box, server, argv):
    box.write_gpus([gpu_desc(0), gpu_desc(1, memory_used="4GiB"), gpu_desc(2, memory_used="8GiB")])
    options = "\n    options: {cuda_memory_pool: 256MiB}" if server == "triton" else ""
    box.write_policy(f"services:\n  - match: llm.service\n    server: {server}\n    gpus: 2{options}\n")
    out = plan_json(box, "llm.service", *argv)
    assert out["gpus"] == [uuid_of(0), uuid_of(1)]
    assert out["argv"] == argv + TWO_GPU_FLAGS[server]
    assert out["env"]["CUDA_VISIBLE_DEVICES"] == ("0,1" if server == "vllm" else f"{uuid_of(0)},{uuid_of(1)}")
    assert out["env"].get("OLLAMA_SCHED_SPREAD") == ("1" if server == "ollama" else None)


def test_e2e_vllm_without_nvlink(box):
    box.write_gpus([gpu_desc(0), gpu_desc(1), gpu_desc(2, memory_used="20GiB")])
    box.write_policy("""\
        services:
          - match: llm.service
            server: vllm
            gpus: 2
            options:
              no_nvlink_env: {NCCL_P2P_LEVEL: PHB}
        """)
    out = plan_json(box, "llm.service", "vllm", "serve", "/models/m", "-tp", "4", "--port", "18124")
    assert out["argv"] == ["vllm", "serve", "/models/m", "-tp", "4", "--port", "18124"]
    assert out["env"]["CUDA_VISIBLE_DEVICES"] == "0,1"
    assert out["env"]["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID"
    assert out["env"]["NCCL_P2P_LEVEL"] == "PHB"
    assert UUID_NOTE in out["notes"]
    assert f"the command sets --tensor-parallel-size 4; cortex-hook would set 2 {THEIRS}" in out["notes"]
    assert any("GPU 0, GPU 1 are not all joined by NVLink" in n for n in out["notes"])


def test_e2e_vllm_with_nvlink_and_ours(box):
    box.write_gpus([gpu_desc(0, nvlink={"peers": {"1": 12}}), gpu_desc(1)])
    box.write_policy("""\
        services:
          - match: llm.service
            server: vllm
            gpus: 2
            options:
              flags: ours
              no_nvlink_env: {NCCL_P2P_LEVEL: PHB}
        """)
    out = plan_json(box, "llm.service", "vllm", "serve", "/models/m", "--tensor-parallel-size=4")
    assert out["argv"] == ["vllm", "serve", "/models/m", "--tensor-parallel-size", "2"]
    assert "NCCL_P2P_LEVEL" not in out["env"]
    assert not any("NVLink" in n for n in out["notes"])


def test_e2e_llama_split_follows_free_memory_and_rank(box):
    """GPU 1 has more free memory, so it ranks first: first in CUDA_VISIBLE_DEVICES, first in
    the split, main GPU 0 (= GPU 1 after renumbering)."""
    box.write_gpus([gpu_desc(0, memory_used="4GiB"), gpu_desc(1)])
    box.write_policy("services:\n  - match: llm.service\n    server: llama.cpp\n    gpus: 2\n")
    out = plan_json(box, "llm.service", "llama-server", "-m", "/models/m.gguf")
    assert out["gpus"] == [uuid_of(1), uuid_of(0)]
    assert out["argv"] == ["llama-server", "-m", "/models/m.gguf", "--tensor-split", "24,20", "--main-gpu", "0"]
    assert out["env"]["CUDA_VISIBLE_DEVICES"] == f"{uuid_of(1)},{uuid_of(0)}"
    assert out["env"]["GGML_VK_VISIBLE_DEVICES"] == "1,0"


def test_e2e_triton_pool_ours(box):
    box.write_gpus([gpu_desc(i) for i in range(4)])
    box.write_policy("""\
        services:
          - match: triton.service
            server: triton
            gpus: 4
            visible_devices: index
            options: {cuda_memory_pool: 64MiB, flags: ours}
        """)
    out = plan_json(box, "triton.service", "tritonserver", "--model-repository", "/m", f"{POOL}=0:1")
    assert out["argv"] == ["tritonserver", "--model-repository", "/m"] + [f"{POOL}={i}:{64 * 2**20}" for i in range(4)]
    assert out["env"]["CUDA_VISIBLE_DEVICES"] == "0,1,2,3"


def test_e2e_vllm_on_a_mig_instance(box):
    box.write_gpus([gpu_desc(0, name="NVIDIA A100-SXM4-80GB", memory_total="80GiB", mig_mode=1,
                             mig_devices=[{"uuid": MIG_UUID, "memory_total": "40GiB", "memory_used": 0}])])
    box.write_policy("services:\n  - match: llm.service\n    server: vllm\n")
    out = plan_json(box, "llm.service", "vllm", "serve", "/models/m")
    assert out["gpus"] == [MIG_UUID]
    assert out["env"]["CUDA_VISIBLE_DEVICES"] == MIG_UUID
    assert out["argv"] == ["vllm", "serve", "/models/m", "--tensor-parallel-size", "1"]


def test_e2e_plan_unit_json_as_documented(box):
    """README and `--help`: `plan UNIT [--json]`, and `-- COMMAND...` after it. `plan UNIT --json
    -- CMD` must print JSON and rewrite CMD, not take `--json --` as the start of the command."""
    box.write_gpus([gpu_desc(0), gpu_desc(1)])
    box.write_policy("services:\n  - match: llm.service\n    server: vllm\n    gpus: 2\n")
    r = box.cli("plan", "llm.service", "--json", "--", "vllm", "serve", "/models/m")
    assert r.returncode == 0, r.stderr
    try:
        out = json.loads(r.stdout)
    except ValueError:
        pytest.fail(f"`plan UNIT --json -- CMD` printed text, not JSON (--json taken as the command?):\n"
                    f"{r.stdout[-300:]}")
    assert out["argv"] == ["vllm", "serve", "/models/m", "--tensor-parallel-size", "2"]


def test_e2e_json_before_the_unit_works_too(box):
    box.write_gpus([gpu_desc(0), gpu_desc(1)])
    box.write_policy("services:\n  - match: llm.service\n    server: sglang\n    gpus: 2\n")
    out = plan_json(box, "llm.service", "python", "-m", "sglang.launch_server", "--json", order="flag-first")
    assert out["argv"] == ["python", "-m", "sglang.launch_server", "--json", "--tp-size", "2"]  # the server's --json


# -- `plan UNIT` without a command: the unit's own ExecStart= ----------------------------------------
UNIT_TEXT = r"""[Unit]
Description=chat model

[Service]
Environment=LLAMA_ARG_CTX_SIZE=2048
# the model path has a space; the key file name an escaped one
ExecStart=-/opt/llama/bin/llama-server \
    -m "/srv/models/my model.gguf" --alias 'chat bot' \
    --api-key-file /etc/llm/key\x20file --system-prompt-file "/etc/llm/say \"hi\".txt" \
    --port 18123 --slot-save-path /var/lib/llm/100%%/$${USER}
Restart=on-failure
"""
UNIT_WORDS = ["/opt/llama/bin/llama-server", "-m", "/srv/models/my model.gguf", "--alias", "chat bot",
              "--api-key-file", "/etc/llm/key file", "--system-prompt-file", '/etc/llm/say "hi".txt',
              "--port", "18123", "--slot-save-path", "/var/lib/llm/100%/${USER}"]


def write_unit(root, name, text):
    path = root / "etc" / "systemd" / "system" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_read_command_unquotes_like_systemd(tmp_path):
    write_unit(tmp_path, "llm.service", UNIT_TEXT)
    assert command.read_command("llm.service", str(tmp_path)).argv == UNIT_WORDS


@pytest.mark.parametrize("mode", ["exec", "supervise"])
def test_read_command_unwraps_our_own_wrapper(tmp_path, mode):
    from cortex_hook.systemd.dropin import install
    from cortex_hook.systemd.program import Options
    write_unit(tmp_path, "llm.service", UNIT_TEXT)
    path, text = install("llm.service", mode, Options("/usr/local/bin/cortex-hook", policy="/etc/cortex-hook/p.yaml",
                                                      runtime_dir="/run/cortex-hook"), root=str(tmp_path))
    assert "ExecStart=-/usr/local/bin/cortex-hook --policy /etc/cortex-hook/p.yaml" in text  # really wrapped
    assert command.read_command("llm.service", str(tmp_path)).argv == UNIT_WORDS


def test_read_command_unwraps_an_argv0_wrapper(tmp_path):
    """`ExecStart=@/usr/bin/python3 llm-server ARGS`: the wrapper takes --argv0 llm-server."""
    from cortex_hook.systemd.dropin import install
    from cortex_hook.systemd.program import Options
    write_unit(tmp_path, "llm.service",
               "[Service]\nExecStart=@/usr/bin/python3 llm-server -u /opt/llm/serve.py --port 18123\n")
    _, text = install("llm.service", "supervise", Options("/usr/local/bin/cortex-hook", runtime_dir="/run/ch"),
                      root=str(tmp_path))
    assert "--argv0 llm-server --" in text
    assert command.read_command("llm.service", str(tmp_path)).argv == [
        "/usr/bin/python3", "-u", "/opt/llm/serve.py", "--port", "18123"]


def test_read_command_of_an_unwrapped_argv0_unit(tmp_path):
    """Unwrapped, `@/usr/bin/python3 llm-server ARGS` runs /usr/bin/python3 with ARGS (llm-server
    is only argv[0]); the command shown must not have llm-server as an argument, and must match
    what the same unit gives once wrapped (above)."""
    write_unit(tmp_path, "llm.service",
               "[Service]\nExecStart=@/usr/bin/python3 llm-server -u /opt/llm/serve.py --port 18123\n")
    assert command.read_command("llm.service", str(tmp_path)).argv == [
        "/usr/bin/python3", "-u", "/opt/llm/serve.py", "--port", "18123"]


def test_read_command_follows_drop_in_overrides(tmp_path):
    write_unit(tmp_path, "llm.service", UNIT_TEXT)
    write_unit(tmp_path, "llm.service.d/10-port.conf",
               "[Service]\nExecStart=\nExecStart=/opt/llama/bin/llama-server --port=18999\n")
    assert command.read_command("llm.service", str(tmp_path)).argv == ["/opt/llama/bin/llama-server", "--port=18999"]
    assert command.read_command("absent.service", str(tmp_path)).argv is None


def _cli_plan(box, monkeypatch, capsys, root, *plan_args):
    from cortex_hook import cli
    from cortex_hook.cli import views
    monkeypatch.setattr(views, "read_command", functools.partial(command.read_command, root=str(root)))
    rc = cli.main(["--policy", box.policy, "--state", box.state, "--runtime-dir", box.runtime, *plan_args])
    return rc, capsys.readouterr().out


@pytest.fixture
def wrapped_llama_unit(box, tmp_path):
    from cortex_hook.systemd.dropin import install
    from cortex_hook.systemd.program import Options
    root = tmp_path / "root"
    write_unit(root, "llm.service", UNIT_TEXT)
    install("llm.service", "supervise", Options("/usr/local/bin/cortex-hook", runtime_dir="/run/ch"), root=str(root))
    box.write_gpus([gpu_desc(0), gpu_desc(1)])
    box.write_policy("services:\n  - match: llm.service\n    server: llama.cpp\n    gpus: 2\n")
    return root


def test_plan_without_a_command_rewrites_the_units_own(box, monkeypatch, capsys, wrapped_llama_unit):
    rc, out = _cli_plan(box, monkeypatch, capsys, wrapped_llama_unit, "plan", "--json", "llm.service")
    assert rc == 0
    assert json.loads(out)["argv"] == UNIT_WORDS + ["--tensor-split", "24,24", "--main-gpu", "0"]
    rc, text = _cli_plan(box, monkeypatch, capsys, wrapped_llama_unit, "plan", "llm.service")
    assert rc == 0 and "--tensor-split 24,24" in text and "my model.gguf" in text


def test_plan_unit_json_without_a_command_as_documented(box, monkeypatch, capsys, wrapped_llama_unit):
    """`plan UNIT --json` (the documented order) reads the unit's command too, and prints JSON."""
    rc, out = _cli_plan(box, monkeypatch, capsys, wrapped_llama_unit, "plan", "llm.service", "--json")
    assert rc == 0
    try:
        data = json.loads(out)
    except ValueError:
        pytest.fail(f"`plan UNIT --json` printed text (its command became ['--json']):\n{out[-300:]}")
    assert data["argv"] == UNIT_WORDS + ["--tensor-split", "24,24", "--main-gpu", "0"]
