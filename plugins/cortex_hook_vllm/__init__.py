"""cortex-hook plugin for vLLM (`server: vllm`): `vllm serve` or the OpenAI api_server module.

- CUDA_VISIBLE_DEVICES as PCI-bus-ordered indices, never UUIDs (vLLM crashes on UUIDs:
  vllm#13815, #20939, #41848), with CUDA_DEVICE_ORDER=PCI_BUS_ID.
- `--tensor-parallel-size N` for N GPUs, or N / pp when the command sets --pipeline-parallel-size
  (env mode: the plan says to pass `${CORTEX_GPU_COUNT}` when ExecStart= lacks it).
- GPUs not joined by NVLink: the plan says so (tensor parallel over PCIe can hang: vllm#8087) and
  the environment of `options.no_nvlink_env` (e.g. {NCCL_P2P_LEVEL: PHB}) is added.
- Ready: port open and `GET /health` 200; with `options.smoke_test: true`, also a one-token
  completion (200 from /health does not prove a generation works).
"""

from cortex_hook import hookimpl
from cortex_hook import serverkit as kit

NAME = "vllm"
OPTIONS = dict(kit.COMMON_OPTIONS, smoke_test=kit.is_bool, no_nvlink_env=kit.is_env_map)


@hookimpl
def cortex_server_names():
    """This plugin serves `server: vllm`."""
    return [NAME]


@hookimpl
def cortex_validate_options(service):
    """flags, smoke_test, no_nvlink_env."""
    return kit.check_keys(service.options, OPTIONS)


@hookimpl
def cortex_tensor_parallel(service):
    """vLLM shards the model over its GPUs, tensor parallel: `same_model` defaults on."""
    return True


@hookimpl
def cortex_prepare_launch(request, decision, launch):
    """Indices instead of UUIDs, tensor parallel size, NVLink-less settings."""
    gpus = decision.chosen
    if not gpus:
        return
    if request.service.visible_devices == "uuid" and all(not g.is_mig for g in gpus):
        launch.env["CUDA_VISIBLE_DEVICES"] = ",".join(str(g.cuda_index) for g in gpus)
        launch.notes.append("vLLM gets PCI-bus-ordered indices, not UUIDs (it crashes on UUIDs: vllm#13815)")
    n = len(gpus)
    pp = kit.parallel_size(launch.argv, "--pipeline-parallel-size", "--pipeline_parallel_size", "-pp")
    dp = kit.parallel_size(launch.argv, "--data-parallel-size", "--data_parallel_size", "-dp")
    if n % (pp * dp):
        launch.notes.append(f"{kit.gpus_text(n)} cannot be split into pipeline {pp} x data {dp} parallel "
                            "groups: vLLM will refuse")
    tp = max(1, n // (pp * dp))
    why = kit.gpus_text(n) + "".join(f" / {what} parallel {k}" for what, k in (("pipeline", pp), ("data", dp))
                                     if k > 1)
    kit.set_flag(request, launch, ("--tensor-parallel-size", "--tensor_parallel_size", "-tp"), tp, (), why,
                 env_text=kit.COUNT_TEXT if tp == n else None, needed=tp != 1)  # (vLLM's default is 1)
    if n > 1 and kit.gpus_joined_by_nvlink(gpus) is not True:
        extra = {k: str(v) for k, v in (kit.option(request, "no_nvlink_env") or {}).items()}
        launch.env.update(extra)
        known = "are not all joined by NVLink" if kit.gpus_joined_by_nvlink(gpus) is False else \
            "may not be joined by NVLink (the driver does not say)"
        launch.notes.append(f"{', '.join(g.label for g in gpus)} {known}: tensor parallel over PCIe "
                            "(vllm#8087)" + (f"; set {', '.join(f'{k}={v}' for k, v in extra.items())}"
                                             if extra else "; options.no_nvlink_env can set NCCL_P2P_LEVEL"))


@hookimpl
def cortex_readiness_probe(request, launch):
    """GET /health on vLLM's --host/--port (default 8000), plus the optional smoke test."""
    from cortex_hook.probe import CompletionSmokeProbe, HttpProbe
    host, port = kit.probe_address(launch.argv, launch.env, ("--host",), ("--port",), "127.0.0.1", 8000)
    probe = HttpProbe(host, port, "/health")
    return CompletionSmokeProbe(probe) if kit.option(request, "smoke_test") else probe
