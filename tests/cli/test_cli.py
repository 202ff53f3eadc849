"""The command line as a sysadmin and systemd use it: exit codes, one-line errors, the env file,
the journal prefix, inherited CUDA_VISIBLE_DEVICES, waiting, and the CPU fallback."""

import json
import os
import subprocess
import sys
import time

import pytest

from ..helpers.box import assert_one_line_error, gpu_desc, uuid_of


def two_gpus(box, policy="services:\n  - match: '*'\n"):
    box.write_gpus([gpu_desc(0), gpu_desc(1)])
    box.write_policy(policy)
    return box


def read_env_file(path):
    with open(path) as f:
        return {line.split("=", 1)[0]: line.split("=", 1)[1].strip().strip('"')
                for line in f.read().splitlines() if line and not line.startswith("#")}


def test_plan_json_explains_every_gpu_and_changes_nothing(box):
    box.write_gpus([gpu_desc(0), gpu_desc(1, temperature=95), gpu_desc(2, lost=True)])
    box.write_policy("services:\n  - match: '*'\n    min_free_memory: 8GiB\n")
    out = box.json("plan", "chat")
    assert out["unit"] == "chat.service" and out["ok"] is True
    assert out["gpus"] == [uuid_of(0)]
    assert out["env"]["CUDA_VISIBLE_DEVICES"] == uuid_of(0)
    assert out["env"]["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID"
    by_index = {v["index"]: v for v in out["verdicts"]}
    assert set(by_index) == {0, 1, 2}
    assert by_index[0]["selected"] is True and by_index[0]["reasons"] == [] and by_index[0]["score"] > 0
    assert [r["code"] for r in by_index[1]["reasons"]] == ["too-hot"] and by_index[1]["score"] is None
    assert [r["code"] for r in by_index[2]["reasons"]] == ["lost"]
    assert not os.path.exists(box.runtime)
    assert box.json("leases")["leases"] == []


def test_allocate_writes_env_file_and_release_removes_it(box):
    two_gpus(box)
    r = box.cli("allocate", "chat")
    assert r.returncode == 0, r.stderr
    assert "chat.service gets GPU 0" in r.stdout
    env = read_env_file(box.env_file("chat.service"))
    assert env == {"CUDA_DEVICE_ORDER": "PCI_BUS_ID", "CUDA_VISIBLE_DEVICES": uuid_of(0),
                   "CORTEX_GPU_COUNT": "1", "CORTEX_GPU_UUIDS": uuid_of(0), "CORTEX_GPU_INDICES": "0",
                   "CORTEX_HOOK_UNIT": "chat.service"}
    second = box.json("allocate", "other")
    assert second["gpus"] == [uuid_of(1)]  # the first lease holds GPU 0
    assert box.cli("release", "chat").returncode == 0
    assert not os.path.exists(box.env_file("chat.service"))
    again = box.cli("release", "chat")
    assert again.returncode == 0 and "held no GPU" in again.stdout


def test_allocate_again_replaces_the_units_own_lease(box):
    """A restart of the same unit takes over its own GPUs instead of competing with itself."""
    box.write_gpus([gpu_desc(0)])
    box.write_policy("services:\n  - match: '*'\n")
    assert box.json("allocate", "chat")["gpus"] == [uuid_of(0)]
    assert box.json("allocate", "chat")["gpus"] == [uuid_of(0)]
    assert len(box.json("leases")["leases"]) == 1


def test_index_mode_uses_pci_order(box):
    box.write_gpus([gpu_desc(0, pci_bus_id="0000:81:00.0"), gpu_desc(1, pci_bus_id="0000:05:00.0")])
    box.write_policy("services:\n  - match: '*'\n    gpus: 2\n    visible_devices: index\n")
    out = box.json("plan", "v")
    assert out["gpus"] == [uuid_of(0), uuid_of(1)]
    assert out["env"]["CUDA_VISIBLE_DEVICES"] == "1,0"  # NVML 0 is second on the PCI bus
    assert out["env"]["CORTEX_GPU_INDICES"] == "1,0"


def test_no_gpu_is_exit_69_with_one_line(box):
    box.write_gpus([gpu_desc(0, temperature=99)])
    box.write_policy("services:\n  - match: '*'\n")
    r = box.cli("allocate", "chat")
    assert r.returncode == 69
    line = assert_one_line_error(r.stderr, "chat.service needs 1 GPU", "too-hot")
    assert line.startswith("cortex-hook: ")
    assert "too hot: 99°C" in r.stdout  # the full explanation goes to stdout (the journal)
    assert not os.path.exists(box.env_file("chat.service"))


@pytest.mark.parametrize("args, needle", [
    (["plan", "a b"], "' '"), (["plan", "vllm@"], "template"), (["plan", "x.socket"], "only .service"),
    (["plan"], "required"), (["frobnicate"], "invalid choice"), (["priority", "set", "0", "first"], "must be a whole number"),
    (["priority", "set", "²", "0"], "an index"), (["drain", "²", "--reason", "x"], "an index"),
    (["priority", "set", "0", "²"], "must be a whole number"), (["history", "-n", "99999999999999999999"], "from 1"),
    (["allocate", "a", "--holder-pid", "99999999999999999999"], "from 1"),
    (["allocate", "a", "--holder-pid", "0"], "from 1"), (["allocate", "a", "--holder-pid", "4194303"], "no such process"),
])
def test_usage_errors_are_exit_2_one_line(box, args, needle):
    two_gpus(box)
    r = box.cli(*args)
    assert r.returncode == 2
    assert_one_line_error(r.stderr, needle)


def test_journal_prefix_only_when_stderr_is_the_journal(box, tmp_path):
    """With JOURNAL_STREAM naming our stderr, lines carry sd-daemon <N> levels; otherwise not."""
    box.write_gpus([gpu_desc(0, temperature=99)])
    box.write_policy("services:\n  - match: '*'\n")
    err = tmp_path / "stderr"
    with open(err, "w") as f:
        st = os.fstat(f.fileno())
        env = box.env(JOURNAL_STREAM=f"{st.st_dev}:{st.st_ino}")
        rc = subprocess.run([sys.executable, "-m", "cortex_hook", "allocate", "chat"], env=env,
                            stdout=subprocess.DEVNULL, stderr=f).returncode
    assert rc == 69
    assert err.read_text().startswith("<3>cortex-hook: chat.service needs 1 GPU")
    r = box.cli("allocate", "chat", env=box.env(JOURNAL_STREAM="1:2"))
    assert r.stderr.startswith("cortex-hook: ")


def test_inherited_cuda_visible_devices_confines_the_choice(box):
    two_gpus(box)
    out = box.json("plan", "a", env=box.env(CUDA_VISIBLE_DEVICES=uuid_of(1)))
    assert out["gpus"] == [uuid_of(1)]
    reasons = {v["index"]: [r["code"] for r in v["reasons"]] for v in out["verdicts"]}
    assert reasons[0] == ["not-visible"]
    nothing = box.cli("plan", "a", env=box.env(CUDA_VISIBLE_DEVICES=""))
    assert nothing.returncode == 69


def test_our_own_previous_env_is_not_an_outer_restriction(box):
    """On a restart systemd hands ExecStartPre the previous start's env file: not a restriction."""
    two_gpus(box)
    env = box.env(CUDA_VISIBLE_DEVICES=uuid_of(1), CORTEX_HOOK_UNIT="a.service")
    assert box.json("plan", "a", env=env)["gpus"] == [uuid_of(0)]


def test_cpu_fallback_writes_a_cpu_env(box):
    box.write_gpus([gpu_desc(0, temperature=99)])
    box.write_policy("services:\n  - match: '*'\n    on_unavailable: cpu\n")
    r = box.cli("allocate", "a")
    assert r.returncode == 0, r.stderr
    env = read_env_file(box.env_file("a.service"))
    assert env["CUDA_VISIBLE_DEVICES"] == "-1" and env["CORTEX_GPU_COUNT"] == "0"
    assert box.json("leases")["leases"] == []


def test_wait_takes_the_gpu_once_released(box):
    box.write_gpus([gpu_desc(0)])
    box.write_policy("services:\n  - match: '*'\n    on_unavailable: wait 2m\n")
    assert box.cli("allocate", "first").returncode == 0
    waiter = subprocess.Popen([sys.executable, "-m", "cortex_hook", "allocate", "second"], env=box.env(),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = waiter.stderr.readline()  # blocks until the waiter reports it is waiting
        assert "waiting for a GPU" in line and "leased" in line
        assert box.cli("release", "first").returncode == 0
        out, err = waiter.communicate(timeout=60)
    finally:
        if waiter.poll() is None:
            waiter.kill()
    assert waiter.returncode == 0, err
    assert "second.service gets GPU 0" in out
    assert [l["unit"] for l in box.json("leases")["leases"]] == ["second.service"]


def test_wait_gives_up_at_the_deadline(box):
    box.write_gpus([gpu_desc(0)])
    box.write_policy("services:\n  - match: '*'\n    on_unavailable: wait 1s\n")
    assert box.cli("allocate", "first").returncode == 0
    r = box.cli("allocate", "second")
    assert r.returncode == 75
    assert "gave up after waiting 1s" in r.stderr.splitlines()[-1]
    assert [l["unit"] for l in box.json("leases")["leases"]] == ["first.service"]


def test_history_records_decisions(box):
    two_gpus(box)
    box.cli("allocate", "a")
    box.cli("release", "a")
    rows = box.json("history")["history"]
    assert [(r["action"], r["unit"]) for r in rows] == [("allocate", "a.service"), ("release", "a.service")]
    assert rows[0]["gpus"] == [uuid_of(0)]


def test_status_table(box):
    box.write_gpus([gpu_desc(0), gpu_desc(1, retired_pages={"pending": 1})])
    box.write_policy("services:\n  - match: '*'\n")
    box.cli("allocate", "chat")
    r = box.cli("status")
    assert r.returncode == 0
    lines = r.stdout.splitlines()
    assert lines[0].split()[:3] == ["GPU", "UUID", "NAME"]
    assert "chat.service" in lines[1] and "retired-pages" in lines[2]


def test_unexpected_error_is_one_line_exit_70(box):
    """A bug never shows a traceback unless asked for."""
    two_gpus(box)
    with open(box.gpus_file, "w") as f:
        f.write('{"gpus": [{"uuid": "GPU-x", "nvlink": {"peers": {"0": 1}}, "topology": {"0": []}}]}')
    r = box.cli("status")
    assert r.returncode in (0, 70, 78)
    assert "Traceback" not in r.stderr


def test_plugins_command_lists_builtins_and_servers(box):
    two_gpus(box)
    out = box.json("plugins")["plugins"]
    assert "cortex_hook.hooks.builtin.nvml" in out and "cortex_discover_gpus" in out["cortex_hook.hooks.builtin.nvml"]
    for name in ("llama.cpp", "vllm", "triton", "sglang", "tgi", "ollama"):
        sharding = ["cortex_tensor_parallel"] if name in ("vllm", "sglang", "tgi") else []  # (same_model)
        assert out[name] == ["cortex_prepare_launch", "cortex_readiness_probe", "cortex_server_names",
                             *sharding, "cortex_validate_options"]


def test_unsafe_policy_is_refused_as_root(box):
    if os.geteuid() != 0:
        pytest.skip("ownership rules are tested as root")
    two_gpus(box)
    os.chmod(box.policy, 0o666)
    r = box.cli("plan", "a")
    assert r.returncode == 77
    assert_one_line_error(r.stderr, "writable by group or others", "chmod go-w")


def test_demo_runs(tmp_path):
    r = subprocess.run([sys.executable, "-m", "cortex_hook", "demo"], capture_output=True, text=True, timeout=120,
                       cwd=tmp_path, env={k: v for k, v in os.environ.items() if not k.startswith("CORTEX_HOOK")})
    assert r.returncode == 0, r.stdout + r.stderr
    assert "chat.service gets GPU 2" in r.stdout
    assert "vllm@llama-70b.service gets GPU 0" in r.stdout and "all 2 joined by NVLink" in r.stdout
    assert "vllm@mistral-7b.service needs 2 GPUs" in r.stdout
    assert r.stdout.rstrip().endswith("every GPU was chosen, explained and given back.")
    assert not [p for p in os.listdir(tempfile_dir()) if p.startswith("cortex-hook-demo-") and
                os.path.getmtime(os.path.join(tempfile_dir(), p)) > time.time() - 5]


def tempfile_dir():
    import tempfile
    return tempfile.gettempdir()


def test_env_file_name_is_what_systemds_glob_reads(box):
    """systemd reads EnvironmentFile= as a glob: `%n.env` for an escaped name drops its backslashes."""
    from cortex_hook.files.rundir import env_file_name
    assert env_file_name("vllm@my\\x2dmodel.service") == "vllm@myx2dmodel.service.env"
    assert env_file_name("chat.service") == "chat.service.env"
    box.write_gpus([gpu_desc(0), gpu_desc(1)])
    box.write_policy("services:\n  - match: '*'\n")
    assert box.cli("allocate", "vllm@my\\x2dmodel").returncode == 0
    assert os.path.exists(os.path.join(box.runtime, "vllm@myx2dmodel.service.env"))
    clash = box.cli("allocate", "vllm@myx2dmodel")
    assert clash.returncode == 2
    assert_one_line_error(clash.stderr, "would read the same env file vllm@myx2dmodel.service.env")
    assert [l["unit"] for l in box.json("leases")["leases"]] == ["vllm@my\\x2dmodel.service"]
    # the other name's release leaves the running unit's env file alone
    assert box.cli("release", "vllm@myx2dmodel").returncode == 0
    assert os.path.exists(os.path.join(box.runtime, "vllm@myx2dmodel.service.env"))
    assert box.cli("release", "vllm@my\\x2dmodel").returncode == 0
    assert not os.path.exists(os.path.join(box.runtime, "vllm@myx2dmodel.service.env"))


def test_an_inherited_index_that_is_no_ascii_number_names_no_gpu(box):
    """CUDA_VISIBLE_DEVICES=² ('²'.isdigit() is true, int('²') fails): no GPU, said so, not exit 70."""
    box.write_gpus([gpu_desc(0)])
    box.write_policy("services:\n  - match: '*'\n")
    r = box.cli("allocate", "a", "--json", env=box.env(CUDA_VISIBLE_DEVICES="²"))
    assert r.returncode == 69, r.stderr
    assert "inherited CUDA_VISIBLE_DEVICES entry '²' names no GPU" in json.loads(r.stdout)["notes"][0]


def test_the_clash_is_named_even_when_the_other_name_would_be_refused_anyway(box):
    """A second name that would read the first's env file is refused for that, not for a GPU the
    inherited CUDA_VISIBLE_DEVICES of that env file hides (what systemd once handed it)."""
    box.write_gpus([gpu_desc(0), gpu_desc(1)])
    box.write_policy("services:\n  - match: '*'\n")
    assert box.cli("allocate", "vllm@a\\x2db").returncode == 0
    inherited = box.env(CUDA_VISIBLE_DEVICES=uuid_of(0), CORTEX_HOOK_UNIT="vllm@a\\x2db.service")
    clash = box.cli("allocate", "vllm@ax2db", env=inherited)
    assert clash.returncode == 2
    assert_one_line_error(clash.stderr, "would read the same env file")


def test_plan_shows_the_command_and_keeps_its_options_apart(box):
    """`plan UNIT --json -- CMD --json`: the first --json is ours, the second the server's."""
    box.write_gpus([gpu_desc(0)])
    box.write_policy("services:\n  - match: '*'\n    server: vllm\n")
    r = box.cli("plan", "v", "--json", "--", "vllm", "serve", "m", "--json")
    assert r.returncode == 0, r.stderr
    import json
    out = json.loads(r.stdout)
    assert out["argv"] == ["vllm", "serve", "m", "--json", "--tensor-parallel-size", "1"]
    text = box.cli("plan", "v", "--", "vllm", "serve", "m").stdout
    assert "command: vllm serve m --tensor-parallel-size 1" in text


def test_release_on_a_fresh_machine_creates_nothing(box):
    """ExecStopPost= may run before anything was ever allocated: no state database appears."""
    box.write_gpus([gpu_desc(0)])
    box.write_policy("services:\n  - match: '*'\n")
    r = box.cli("release", "chat")
    assert r.returncode == 0 and "held no GPU" in r.stdout
    assert not os.path.exists(box.state) and not os.path.exists(os.path.dirname(box.state))
