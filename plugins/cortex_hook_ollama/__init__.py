"""cortex-hook plugin for Ollama (`server: ollama`): environment only. CUDA_VISIBLE_DEVICES with
UUIDs (what Ollama recommends; `-1` forces CPU), and OLLAMA_SCHED_SPREAD=1 when several GPUs are
given, so models spread over all of them. Ready on `GET /` 200 "Ollama is running" at
OLLAMA_HOST (default 127.0.0.1:11434)."""

from cortex_hook import hookimpl
from cortex_hook import serverkit as kit

NAME = "ollama"


@hookimpl
def cortex_server_names():
    """This plugin serves `server: ollama`."""
    return [NAME]


@hookimpl
def cortex_validate_options(service):
    """Only `flags`."""
    return kit.check_keys(service.options, kit.COMMON_OPTIONS) if service.server == NAME else None


@hookimpl
def cortex_prepare_launch(request, decision, launch):
    """Spread over the GPUs given, if more than one."""
    if kit.for_server(request, NAME) and len(decision.chosen) > 1:
        launch.env["OLLAMA_SCHED_SPREAD"] = "1"
        launch.notes.append("OLLAMA_SCHED_SPREAD=1: spread models over the GPUs given")


def ollama_address(env):
    """OLLAMA_HOST as Ollama reads it: [scheme://]host[:port], default 127.0.0.1:11434."""
    import os
    value = env.get("OLLAMA_HOST") or os.environ.get("OLLAMA_HOST") or "127.0.0.1:11434"
    value = value.split("://", 1)[-1].rstrip("/")
    host, _, port = value.rpartition(":") if ":" in value else (value, "", "11434")
    host = host or "127.0.0.1"
    if host in ("0.0.0.0", "::", "[::]"):
        host = "127.0.0.1"
    return host, int(port) if port.isdigit() else 11434


@hookimpl
def cortex_readiness_probe(request, launch):
    """GET / ("Ollama is running")."""
    if not kit.for_server(request, NAME):
        return None
    from cortex_hook.probe import HttpProbe
    host, port = ollama_address(launch.env)
    return HttpProbe(host, port, "/")
