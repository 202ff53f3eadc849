"""cortex-hook plugin for Hugging Face Text Generation Inference (`server: tgi`,
`text-generation-launcher`): `--num-shard N` for N GPUs; ready on `GET /health` 200 (503 while
not) at --hostname/--port (default 3000)."""

from cortex_hook import hookimpl
from cortex_hook import serverkit as kit

NAME = "tgi"


@hookimpl
def cortex_server_names():
    """This plugin serves `server: tgi`."""
    return [NAME]


@hookimpl
def cortex_validate_options(service):
    """Only `flags`."""
    return kit.check_keys(service.options, kit.COMMON_OPTIONS)


@hookimpl
def cortex_tensor_parallel(service):
    """TGI shards the model over its GPUs, tensor parallel (--num-shard): `same_model` defaults on."""
    return True


@hookimpl
def cortex_prepare_launch(request, decision, launch):
    """--num-shard for the chosen GPU count."""
    if decision.chosen:
        kit.set_flag(request, launch, ("--num-shard",), len(decision.chosen), ("NUM_SHARD",),
                     kit.gpus_text(len(decision.chosen)), env_text=kit.COUNT_TEXT)  # (its default: all visible)


@hookimpl
def cortex_readiness_probe(request, launch):
    """GET /health."""
    from cortex_hook.probe import HttpProbe
    host, port = kit.probe_address(launch.argv, launch.env, ("--hostname",), ("--port", "-p"), "127.0.0.1", 3000,
                                   ("HOSTNAME",), ("PORT",))
    return HttpProbe(host, port, "/health")
