"""Each server plugin's `options:` as the policy validator checks them: unknown keys, bad values,
the position of the mistake, and a did-you-mean."""

import pytest

from ..helpers.box import gpu_desc


# -- options validation ------------------------------------------------------------------------------
def policy_with_options(box, server, option_lines, before=""):
    box.write_gpus([gpu_desc(0)])
    body = "services:\n" + before + f"  - match: llm.service\n    server: {server}\n    options:\n"
    body += "".join(f"      {line}\n" for line in option_lines)
    box.write_policy(body)
    with open(box.policy) as f:
        return f.read().splitlines()


def where(lines, key):
    """file line:column of KEY as an options key."""
    for i, line in enumerate(lines):
        if line.strip().startswith(key + ":"):
            return i + 1, line.index(key) + 1
    raise AssertionError(key)


def assert_policy_error(box, r, lines, key, message, position=0):
    line, col = where(lines, key)
    assert r.returncode == 78, (r.stdout, r.stderr)
    assert r.stderr.splitlines() == [
        f"cortex-hook: {box.policy}:{line}:{col}: services[{position}].options.{key}: {message}"]


@pytest.mark.parametrize("server, option, key, message", [
    ("llama.cpp", "flag: ours", "flag", "unknown option (did you mean 'flags'?)"),
    ("vllm", "smoke_tset: true", "smoke_tset", "unknown option (did you mean 'smoke_test'?)"),
    ("vllm", "no_nvlink_evn: {NCCL_P2P_LEVEL: PHB}", "no_nvlink_evn", "unknown option (did you mean 'no_nvlink_env'?)"),
    ("triton", "cuda_memory_poll: 256MiB", "cuda_memory_poll", "unknown option (did you mean 'cuda_memory_pool'?)"),
    ("sglang", "flgas: ours", "flgas", "unknown option (did you mean 'flags'?)"),
    ("tgi", "flag: theirs", "flag", "unknown option (did you mean 'flags'?)"),
    ("ollama", "flags_: ours", "flags_", "unknown option (did you mean 'flags'?)"),
    ("vllm", "cuda_memory_pool: 1GiB", "cuda_memory_pool", "unknown option (known: flags, no_nvlink_env, smoke_test)"),
    ("ollama", "smoke_test: true", "smoke_test", "unknown option (known: flags)"),
])
def test_validate_unknown_option(box, server, option, key, message):
    lines = policy_with_options(box, server, [option])
    assert_policy_error(box, box.cli("validate"), lines, key, message)


@pytest.mark.parametrize("server, option, key, message", [
    ("triton", "cuda_memory_pool: lots", "cuda_memory_pool", "expected a size such as 20GiB, 512MiB or 24GB, got 'lots'"),
    ("triton", "cuda_memory_pool: -1", "cuda_memory_pool", "a size cannot be negative"),
    ("vllm", "smoke_test: maybe", "smoke_test", "expected true or false, got 'maybe'"),
    ("vllm", "no_nvlink_env: PHB", "no_nvlink_env", "expected a mapping of environment variable names to values"),
    ("vllm", "no_nvlink_env: {1BAD: x}", "no_nvlink_env", "expected a mapping of environment variable names to values"),
] + [("vllm", f"no_nvlink_env: {{{name}: /home/llm/x}}", "no_nvlink_env",
      f"{name}: steers the dynamic loader, an interpreter or cortex-hook; cortex-hook never puts it into a "
      "server's environment")
     for name in ("LD_PRELOAD", "LD_LIBRARY_PATH", "PATH", "PYTHONPATH", "PYTHONSTARTUP", "CORTEX_HOOK_POLICY",
                  "CORTEX_HOOK_UNIT")] + [(s, "flags: mine", "flags", "expected one of theirs, ours, got 'mine'")
     for s in ("llama.cpp", "vllm", "triton", "sglang", "tgi", "ollama")])
def test_validate_bad_option_value(box, server, option, key, message):
    lines = policy_with_options(box, server, ["flags: theirs", option] if key != "flags" else [option])
    assert_policy_error(box, box.cli("validate"), lines, key, message)


def test_validate_names_the_service_position_and_plan_refuses_too(box):
    lines = policy_with_options(box, "vllm", ["flags: ours", "smoke_test: maybe"],
                                before="  - match: other.service\n    server: sglang\n")
    message = "expected true or false, got 'maybe'"
    assert_policy_error(box, box.cli("validate"), lines, "smoke_test", message, position=1)
    assert_policy_error(box, box.cli("plan", "llm.service"), lines, "smoke_test", message, position=1)


def test_validate_accepts_every_documented_option(box):
    box.write_gpus([gpu_desc(0)])
    box.write_policy("""\
        services:
          - match: a.service
            server: llama.cpp
            options: {flags: ours}
          - match: b.service
            server: vllm
            options:
              flags: theirs
              smoke_test: true
              no_nvlink_env: {NCCL_P2P_LEVEL: PHB, NCCL_IB_DISABLE: 1}
          - match: c.service
            server: triton
            options: {cuda_memory_pool: 256MiB, flags: ours}
          - match: d.service
            server: sglang
            options: {flags: ours}
          - match: e.service
            server: tgi
            options: {flags: theirs}
          - match: f.service
            server: ollama
            options: {flags: theirs}
        """)
    r = box.cli("validate")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == f"{box.policy}: ok (6 services, inventory simulated)"


def test_generic_server_takes_no_options(box):
    lines = policy_with_options(box, "generic", ["flags: ours"])
    assert_policy_error(box, box.cli("validate"), lines, "flags", "server 'generic' takes no options")


def test_option_values_get_a_did_you_mean(box):
    box.write_gpus([gpu_desc(0)])
    box.write_policy("services:\n  - match: a\n    server: vllm\n    options:\n      flags: our\n")
    r = box.cli("validate")
    assert r.returncode == 78
    assert "did you mean 'ours'?" in r.stderr
