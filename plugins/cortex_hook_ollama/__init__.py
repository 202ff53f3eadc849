"""cortex-hook plugin for Ollama (`server: ollama`): environment only. CUDA_VISIBLE_DEVICES with
UUIDs (what Ollama recommends; `-1` forces CPU), and OLLAMA_SCHED_SPREAD=1 when several GPUs are
given, so models spread over all of them. Ready on `GET /` 200 "Ollama is running" at
OLLAMA_HOST (default 127.0.0.1:11434)."""

import os

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
    return kit.check_keys(service.options, kit.COMMON_OPTIONS)


@hookimpl
def cortex_prepare_launch(request, decision, launch):
    """Spread over the GPUs given, if more than one."""
    if len(decision.chosen) > 1:
        launch.env["OLLAMA_SCHED_SPREAD"] = "1"
        launch.notes.append("OLLAMA_SCHED_SPREAD=1: spread models over the GPUs given")


def ollama_address(env):
    """OLLAMA_HOST read as Ollama's envconfig.Host() reads it: `[scheme://]host[:port][/path]`;
    the default port is 11434, or 80/443 when an http/https scheme is given without one."""
    import ipaddress  # readiness only: not on the start path, where every plugin is imported
    value = (env.get("OLLAMA_HOST") or os.environ.get("OLLAMA_HOST") or "").strip()
    scheme, sep, hostport = value.partition("://")
    default_port = "11434"
    if not sep:
        hostport = value
    elif scheme == "http":
        default_port = "80"
    elif scheme == "https":
        default_port = "443"
    hostport = hostport.split("/", 1)[0]
    host, port = _split_host_port(hostport)
    if port is None:  # as Go's net.SplitHostPort failing: the whole value is the host
        host, port = "127.0.0.1", default_port
        bare = hostport.strip("[]")
        try:
            host = str(ipaddress.ip_address(bare))
        except ValueError:
            host = hostport or host
    if host in ("", "0.0.0.0", "::"):
        host = "127.0.0.1"
    return host, int(port) if port.isdigit() else int(default_port)


def _split_host_port(hostport):
    """Go's net.SplitHostPort: `[v6]:port` or `host:port`; (None, None) when there is no port."""
    if hostport.startswith("["):
        end = hostport.find("]")
        if end < 0 or hostport[end + 1:end + 2] != ":":
            return None, None
        return hostport[1:end], hostport[end + 2:]
    if hostport.count(":") != 1:
        return None, None
    host, _, port = hostport.partition(":")
    return host, port


@hookimpl
def cortex_readiness_probe(request, launch):
    """GET / ("Ollama is running")."""
    from cortex_hook.probe import HttpProbe
    host, port = ollama_address(launch.env)
    return HttpProbe(host, port, "/")
