"""`same_model`: a tensor-parallel service gets GPUs of one model (each GPU holds a slice of every
layer, so an L4 beside an L40S sets the pace and the memory of both). On by default for the
servers that shard tensor parallel (vLLM, SGLang, TGI), switchable per service; the plan names
each GPU the rule left out, and a refusal says no model has enough."""

import pytest

from cortex_hook.errors import PolicyError
from cortex_hook.planner import plan
from cortex_hook.policy.parse import parse_policy

from .helpers.box import gpu_desc, uuid_of
from .helpers.builders import make_gpu, make_request, uuid

L40S, L4 = "NVIDIA L40S", "NVIDIA L4"
TP_NOTE = "same_model is on for tensor parallel"


def gpus(*names, free=None):
    """One GPU per name, ranked in this order (GPU 0 has the most free memory)."""
    return [make_gpu(i, free=(free or 40) - 2 * i, total=48, name=name) for i, name in enumerate(names)]


def decide(plugins, devices, **service):
    return plan(plugins, make_request(devices, unit="llm.service", **service))


def chosen(decision):
    return [g.index for g in decision.chosen]


def test_the_admins_case_an_l4_is_not_put_beside_an_l40s(plugins):
    d = decide(plugins, gpus(L40S, L4, L40S), server="vllm", gpus=2)
    assert chosen(d) == [0, 2]
    assert f"GPU 1 ({L4}): not the same model as GPU 0 ({L40S}); {TP_NOTE}" in d.notes


def test_no_same_model_set_is_a_refusal_that_says_so(plugins):
    d = decide(plugins, gpus(L40S, L4), server="vllm", gpus=2)
    assert not d.ok and d.chosen == []
    assert d.summary.endswith(f"; no 2 GPUs of one model qualify (1 {L40S}, 1 {L4}); {TP_NOTE}"), d.summary


@pytest.mark.parametrize("server, on", [("vllm", True), ("sglang", True), ("tgi", True), ("llama.cpp", False),
                                        ("ollama", False), ("triton", False), ("generic", False)])
def test_on_by_default_only_for_servers_that_shard_tensor_parallel(plugins, server, on):
    d = decide(plugins, gpus(L40S, L4, L40S), server=server, gpus=2)
    assert chosen(d) == ([0, 2] if on else [0, 1])
    assert any(TP_NOTE in n for n in d.notes) is on


@pytest.mark.parametrize("server, same_model, expected, why", [
    ("vllm", False, [0, 1], None),
    ("llama.cpp", True, [0, 2], "same_model: true"),
    ("vllm", True, [0, 2], "same_model: true"),
])
def test_the_policy_switches_it(plugins, server, same_model, expected, why):
    d = decide(plugins, gpus(L40S, L4, L40S), server=server, gpus=2, same_model=same_model)
    assert chosen(d) == expected
    assert [n for n in d.notes if "same model" in n] == ([f"GPU 1 ({L4}): not the same model as GPU 0 ({L40S}); {why}"]
                                                          if why else [])


def test_lower_ranked_gpus_of_another_model_are_not_listed(plugins):
    """Only GPUs the rule kept out of the set are named, not every GPU that was not needed."""
    d = decide(plugins, gpus(L40S, L40S, L4), server="vllm", gpus=2)
    assert chosen(d) == [0, 1]
    assert not [n for n in d.notes if "same model" in n]


def test_all_means_every_gpu_of_the_best_ranked_model(plugins):
    d = decide(plugins, gpus(L40S, L4, L40S, L4), server="vllm", gpus="all")
    assert chosen(d) == [0, 2]
    assert [n for n in d.notes if "same model" in n] == [
        f"GPU 1 ({L4}): not the same model as GPU 0 ({L40S}); {TP_NOTE}",
        f"GPU 3 ({L4}): not the same model as GPU 0 ({L40S}); {TP_NOTE}"]


def test_it_composes_with_require_nvlink(plugins):
    """The best model has no NVLink-joined pair, the next has: that one is taken."""
    devices = gpus(L40S, L40S, L4, L4)
    for g in devices:
        g.nvlink_peers = frozenset({uuid(3)} if g.index == 2 else {uuid(2)} if g.index == 3 else set())
    d = decide(plugins, devices, server="vllm", gpus=2, topology="require-nvlink", placement="spread")
    assert chosen(d) == [2, 3]
    assert f"GPU 0 ({L40S}): not the same model as GPU 2 ({L4}); {TP_NOTE}" in d.notes
    d = decide(plugins, devices, server="vllm", gpus=2, topology="require-nvlink", placement="pack")
    assert chosen(d) == [2, 3] and not [n for n in d.notes if "not the same model" in n]  # (the pair ranks first)


def test_a_refusal_when_a_model_has_enough_but_none_fits(plugins):
    devices = gpus(L40S, L40S, L4, L4)
    for g in devices:
        g.nvlink_peers = frozenset()
    d = decide(plugins, devices, server="vllm", gpus=2, topology="require-nvlink")
    assert not d.ok
    assert d.summary.endswith(f"; no 2 GPUs of one model fit (2 {L40S}, 2 {L4}); {TP_NOTE}"), d.summary
    assert "no free NVLink-joined set of 2; topology: require-nvlink" in d.notes


def test_gpus_whose_name_the_driver_did_not_give_are_like_no_other(plugins):
    d = decide(plugins, gpus("?", "?"), server="vllm", gpus=2)
    assert not d.ok and "no 2 GPUs of one model qualify (1 model unknown, 1 model unknown)" in d.summary


# -- the policy key -------------------------------------------------------------------------------
def test_the_key_parses():
    pol = parse_policy("version: 1\nservices:\n  - match: a\n    same_model: false\n  - match: b\n")
    assert [s.same_model for s in pol.services] == [False, None]


@pytest.mark.parametrize("text, where, needle", [
    ("version: 1\nservices:\n  - match: a\n    same_model: maybe\n", ":4:17: services[0].same_model: ",
     "expected true or false, got 'maybe'"),
    ("version: 1\nservices:\n  - match: a\n    same_model: 1\n", ":4:17: services[0].same_model: ",
     "expected true or false, got 1"),
    ("version: 1\nservices:\n  - match: a\n    same-model: true\n", ":4:5: services[0].same-model: ",
     "did you mean 'same_model'?"),
])
def test_a_bad_value_is_named_by_file_line_and_key(text, where, needle):
    with pytest.raises(PolicyError) as info:
        parse_policy(text, "/etc/cortex-hook/policy.yaml")
    message = str(info.value)
    assert message.startswith("/etc/cortex-hook/policy.yaml" + where) and needle in message, message
    assert "\n" not in message


# -- what the admin reads ---------------------------------------------------------------------------
def test_plan_text_names_the_gpu_left_out_and_the_refusal_says_why(box):
    box.write_gpus([gpu_desc(0, name=L40S), gpu_desc(1, name=L4, memory_used="1GiB"),
                    gpu_desc(2, name=L40S, memory_used="2GiB")])
    box.write_policy("services:\n  - match: llm.service\n    server: vllm\n    gpus: 2\n")
    r = box.cli("plan", "llm")
    assert r.returncode == 0, r.stderr
    assert f"  note: GPU 1 ({L4}): not the same model as GPU 0 ({L40S}); {TP_NOTE}" in r.stdout.splitlines()
    assert box.json("plan", "llm")["gpus"] == [uuid_of(0), uuid_of(2)]
    box.write_gpus([gpu_desc(0, name=L40S), gpu_desc(1, name=L4)])
    r = box.cli("plan", "llm")
    assert r.returncode == 69
    assert f"no 2 GPUs of one model qualify (1 {L40S}, 1 {L4}); {TP_NOTE}" in r.stdout.splitlines()[-1]
