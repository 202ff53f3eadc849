"""Every hook cortex-hook calls. Built-ins answer them as plugins too (cortex_hook/hooks/builtin).

All hooks take keyword arguments only. A plugin implements any subset:

    from cortex_hook import hookimpl
    from cortex_hook.model import Reason

    @hookimpl
    def cortex_check_gpu(request, gpu):
        if gpu.name.endswith("T4"):
            return Reason("no-t4", "T4 boards are kept for transcoding")

A plugin that answers `cortex_server_names` is a server plugin: its `cortex_validate_options`,
`cortex_prepare_launch` and `cortex_readiness_probe` are called only for services whose
`server:` is one of its names (SERVER_HOOKS). Every other plugin's are called for every service.
"""

from .markers import hookspec

SERVER_HOOKS = ("cortex_validate_options", "cortex_tensor_parallel", "cortex_prepare_launch",
                "cortex_readiness_probe")


@hookspec
def cortex_server_names():
    """Return the `server:` names this plugin serves (e.g. ``["vllm"]``)."""


@hookspec
def cortex_validate_options(service):
    """Check `service.options` (a `ServicePolicy` of your server): return [(key, message)], empty
    if all is well."""


@hookspec(firstresult=True)
def cortex_tensor_parallel(service):
    """Return True if your server runs `service` tensor parallel over the GPUs it is given (each
    GPU holds a slice of every layer, so unlike GPUs hold it back), False if not; None: no answer.

    A True makes the service's `same_model` default on (rules.same_model_rule).
    """


@hookspec(firstresult=True)
def cortex_discover_gpus(policy, detail):
    """Return every GPU the policy's inventory sees, as a list of `Gpu`; None if not yours.

    :param policy: the `Policy`; answer only if `policy.inventory` is your kind.
    :param detail: frozenset of optional facts the caller needs: "topology" (NVLink peers, PCIe
        levels, NUMA nodes), "processes" (compute processes), "full" (everything `status` shows:
        power, compute capability, NUMA). Skip what is not asked: it costs time.
    """


@hookspec
def cortex_gpu_faults(policy, gpu):
    """Return a `Reason` (or a list) why `gpu` is unfit for any service, or None.

    `plan` and `allocate` reject a GPU with a fault; `status` shows the faults as its health.
    """


@hookspec
def cortex_check_gpu(request, gpu):
    """Return a `Reason` (or a list of them) why `gpu` cannot serve `request`, or None.

    Every implementation runs for every GPU, so a verdict lists every reason that applies.
    """


@hookspec
def cortex_score_gpu(request, gpu):
    """Return a `ScoreTerm` (or a list) for an accepted `gpu`; terms are summed into its score.

    The admin priority is not a score term: it always ranks first, then the summed score.
    """


@hookspec(firstresult=True)
def cortex_select_gpus(request, ranked, count):
    """Return a `Selection` of exactly `count` verdicts from `ranked` (best first), or None.

    Return a `Selection` with an empty `chosen` and a note to say no acceptable set exists
    (e.g. NVLink required but no joined set is free).
    """


@hookspec
def cortex_prepare_launch(request, decision, launch):
    """Add to `launch.env` and rewrite `launch.argv` (None in env-file mode) for the decision."""


@hookspec(firstresult=True)
def cortex_readiness_probe(request, launch):
    """Return the readiness probe (see cortex_hook.probe) for the server about to run, or None.

    `supervise` sends READY=1 only once it reports ready, and feeds the watchdog while it does.
    """


@hookspec
def cortex_decision_made(request, decision):
    """Told about every decision made by `allocate` (after its lease is committed)."""
