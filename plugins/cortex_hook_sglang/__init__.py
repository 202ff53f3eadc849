"""cortex-hook plugin for SGLang (`server: sglang`): `--tp-size N` for N GPUs (N / (dp x pp) with
--dp-size/--pp-size; --tensor-parallel-size is its other name); ready on
`GET /health` 200 at --host/--port (default 127.0.0.1:30000). CUDA_VISIBLE_DEVICES already
selects the GPUs, so a --base-gpu-id other than 0 in the command is pointed out."""

from cortex_hook import hookimpl
from cortex_hook import serverkit as kit

NAME = "sglang"


@hookimpl
def cortex_server_names():
    """This plugin serves `server: sglang`."""
    return [NAME]


@hookimpl
def cortex_validate_options(service):
    """Only `flags`."""
    return kit.check_keys(service.options, kit.COMMON_OPTIONS)


@hookimpl
def cortex_tensor_parallel(service):
    """SGLang shards the model over its GPUs, tensor parallel (--tp-size): `same_model` defaults on."""
    return True


@hookimpl
def cortex_prepare_launch(request, decision, launch):
    """--tp-size for the chosen GPU count."""
    if not decision.chosen:
        return
    n = len(decision.chosen)
    dp = kit.parallel_size(launch.argv, "--dp-size", "--dp", "--data-parallel-size")
    pp = kit.parallel_size(launch.argv, "--pp-size", "--pp", "--pipeline-parallel-size")
    if n % (dp * pp):
        launch.notes.append(f"{kit.gpus_text(n)} cannot be split into data {dp} x pipeline {pp} groups")
    why = kit.gpus_text(n) + "".join(f" / {what} {k}" for what, k in (("data parallel", dp), ("pipeline", pp)) if k > 1)
    tp = max(1, n // (dp * pp))
    kit.set_flag(request, launch, ("--tp-size", "--tp", "--tensor-parallel-size"), tp, (), why,
                 env_text=kit.COUNT_TEXT if tp == n else None, needed=tp != 1)  # (SGLang's default is 1)
    base = kit.flag_value(launch.argv or [], "--base-gpu-id")
    if base not in (None, "0"):
        launch.notes.append(f"--base-gpu-id {base} counts from the first *visible* GPU: with "
                            "CUDA_VISIBLE_DEVICES set by cortex-hook it should be 0")


@hookimpl
def cortex_readiness_probe(request, launch):
    """GET /health."""
    from cortex_hook.probe import HttpProbe
    host, port = kit.probe_address(launch.argv, launch.env, ("--host",), ("--port",), "127.0.0.1", 30000)
    return HttpProbe(host, port, "/health")
