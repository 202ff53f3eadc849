"""What the lease unit says about the server's command depends on the unit's real mode: under
`supervise` (or `exec`) the wrapper rewrites the argv, so no env-mode advice; in env mode nothing
does, so the plan says what ExecStart= must pass. Under the real systemd 252 (sd-sandbox)."""

import json

import pytest

from cortex_hook.systemd.leaseunit import lease_unit_of

pytestmark = pytest.mark.systemd
UNIT = "llm.service"
VLLM_2 = "services:\n  - match: llm.service\n    server: vllm\n    gpus: 2\n"
ENV_NOTE = "env mode: pass --tensor-parallel-size ${CORTEX_GPU_COUNT} in ExecStart="


def lease_journal(h):
    """What UNIT's lease unit (its `allocate`) printed."""
    h.sb.run("journalctl", "--sync")
    return h.sb.run("journalctl", "-u", lease_unit_of(UNIT), "--no-pager", "-o", "cat").stdout


@pytest.mark.parametrize("mode, args, note, tp", [
    pytest.param("supervise", "", False, ["--tensor-parallel-size", "2"], id="supervise-rewrites"),
    pytest.param("exec", "", False, ["--tensor-parallel-size", "2"], id="exec-rewrites"),
    pytest.param("env", "", True, [], id="env-without-the-flag"),
    pytest.param("env", "--tensor-parallel-size ${CORTEX_GPU_COUNT}", True, ["--tensor-parallel-size", "2"],
                 id="env-with-the-flag"),
])
def test_the_lease_unit_gives_env_mode_advice_only_in_env_mode(host, mode, args, note, tp):
    h = host.setup(VLLM_2)
    record = h.standin_unit(UNIT, args=args)
    h.install(UNIT, mode)
    h.sb.daemon_reload()
    h.sb.systemctl("start", UNIT, check=True)
    h.sb.wait_state(UNIT, "active")
    server = h.record(record)
    assert server["argv"][-len(tp):] == tp if tp else "--tensor-parallel-size" not in server["argv"]
    said = lease_journal(h)
    assert "llm.service gets GPU 0" in said  # the decision is there: the note's absence means something
    assert (ENV_NOTE in said) is note, said
    if mode != "env":
        assert "env mode" not in said


def test_plan_of_an_env_mode_unit_checks_its_command_and_does_not_rewrite_it(host):
    """`plan UNIT` reads the unit's own command: in env mode it is shown as systemd runs it, never
    rewritten, and the advice is given only when the command lacks the flag."""
    h = host.setup(VLLM_2)
    h.standin_unit(UNIT, args="--tensor-parallel-size ${CORTEX_GPU_COUNT}")
    h.install(UNIT, "env")
    h.sb.daemon_reload()
    out = json.loads(h.cortex("plan", UNIT, "--json").stdout)
    assert out["argv"][-2:] == ["--tensor-parallel-size", "${CORTEX_GPU_COUNT}"]
    assert not any(n.startswith("env mode") for n in out["notes"]), out["notes"]
    assert "command: ${CORTEX_GPU_COUNT} is only known at start: cortex-hook's env file sets it " \
           "(CORTEX_GPU_COUNT=2 in this plan)" in out["notes"]
