"""cortex-hook plugin for NVIDIA Triton Inference Server (`server: triton`).

- `options.cuda_memory_pool: 256MiB` gives every visible GPU that CUDA memory pool
  (`--cuda-memory-pool-byte-size=<gpu>:<bytes>`, one per GPU, indices after CUDA_VISIBLE_DEVICES);
  in env mode, where nothing rewrites ExecStart=, the plan says what to pass there.
- Ready: `GET /v2/health/ready` 200 on --http-address/--http-port (default 8000). 400 means a
  model failed to load (with --exit-on-error=false): the start fails, naming the models the
  repository index reports as not ready, and why.
"""

from cortex_hook import hookimpl
from cortex_hook import serverkit as kit
from cortex_hook.quantities import parse_size

NAME = "triton"
OPTIONS = dict(kit.COMMON_OPTIONS, cuda_memory_pool=kit.is_size)
POOL_FLAG = "--cuda-memory-pool-byte-size"


@hookimpl
def cortex_server_names():
    """This plugin serves `server: triton`."""
    return [NAME]


@hookimpl
def cortex_validate_options(service):
    """flags, cuda_memory_pool."""
    return kit.check_keys(service.options, OPTIONS)


@hookimpl
def cortex_prepare_launch(request, decision, launch):
    """One CUDA memory pool flag per visible GPU, if the policy asks for it."""
    pool = kit.option(request, "cuda_memory_pool")
    if pool is None or not decision.chosen or (launch.wrapped and launch.argv is None):
        return  # (the lease unit of a wrapped unit: the wrapper sets it)
    size = parse_size(pool)
    wanted = [f"{i}:{size}" for i in range(len(decision.chosen))]
    if not launch.wrapped:
        if not kit.has_flag(launch.argv or [], POOL_FLAG):
            launch.notes.append(f"env mode: options.cuda_memory_pool is not applied (nothing rewrites "
                                f"ExecStart=); pass {' '.join(f'{POOL_FLAG}={w}' for w in wanted)} there, "
                                "or install with --mode exec or supervise")
        return
    if kit.has_flag(launch.argv, POOL_FLAG) and kit.option(request, "flags", "theirs") == "theirs":
        launch.notes.append(f"the command sets {POOL_FLAG}; cortex-hook would set {', '.join(wanted)} "
                            "(options.flags: theirs keeps the command's)")
        return
    launch.argv = kit.remove_flag(launch.argv, POOL_FLAG) + [f"{POOL_FLAG}={w}" for w in wanted]
    launch.notes.append(f"{POOL_FLAG} {pool} for each of the {len(wanted)} visible GPUs")


def not_ready_models(host, port):
    """`name (reason)` for each model the repository index does not report READY."""
    import json

    from cortex_hook.probe import http_request
    try:
        models = json.loads(http_request(host, port, "POST", "/v2/repository/index", b"{}")[2])
    except (OSError, ValueError):
        return ""
    bad = [m for m in models if isinstance(m, dict) and m.get("state") != "READY"]
    return "; ".join(f"model {m.get('name')} {str(m.get('state', '?')).lower()}: {_first_line(m.get('reason'))}"
                     .strip() for m in bad)


def _first_line(reason, limit=200):
    """The gist of a load failure: Triton's reason may carry a whole Python traceback."""
    lines = [l.strip() for l in str(reason or "").splitlines() if l.strip()]
    text = lines[-1] if lines and lines[0].startswith("Traceback") else (lines[0] if lines else "")
    return text if len(text) <= limit else text[: limit - 1] + "…"


@hookimpl
def cortex_readiness_probe(request, launch):
    """GET /v2/health/ready; 400 fails the start with the failed models' names."""
    from cortex_hook.probe import HttpProbe
    host, port = kit.probe_address(launch.argv, launch.env, ("--http-address",), ("--http-port",),
                                   "127.0.0.1", 8000)
    return HttpProbe(host, port, "/v2/health/ready", failed_codes=(400,),
                     failed_detail=lambda: not_ready_models(host, port))
