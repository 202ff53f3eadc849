"""The plain data every module and hook passes around: GPUs, policy, state, verdicts, decisions.

They are records (records.py: fields are annotations; `to_plain()`/`from_plain()` are their one
serialisation), importable from here as before.
"""

from fnmatch import fnmatchcase

from .quantities import format_size
from .records import FrozenRecord, Record, from_plain, new, to_plain  # noqa: F401 (the plugin API)


class Process(Record):
    """A compute process on a GPU, as the driver reports it."""

    pid: int
    used_memory: int | None = None


class Gpu(Record):
    """One schedulable device: a whole GPU, or one MIG instance of a GPU.

    Any fact may be None, meaning the driver could not tell (NOT_SUPPORTED, or the query failed:
    see `problems`). `cuda_index` is the device's index under CUDA_DEVICE_ORDER=PCI_BUS_ID.
    """

    index: int
    uuid: str | None
    name: str = "?"
    pci_bus_id: str | None = None
    minor: int | None = None
    memory_total: int | None = None
    memory_used: int | None = None
    memory_free: int | None = None
    utilization: int | None = None
    temperature: int | None = None
    power_mw: int | None = None
    power_limit_mw: int | None = None
    compute_capability: str | None = None
    ecc_volatile_uncorrected: int | None = None
    ecc_volatile_corrected: int | None = None  # read for the monitor only (its trouble counts)
    retired_pages_pending: bool | None = None
    remapped_rows_pending: bool | None = None
    remapped_rows_failure: bool | None = None
    lost: bool = False
    mig_enabled: bool | None = None
    parent_uuid: str | None = None
    mig_index: int | None = None
    numa_node: int | None = None
    nvlink_peers: frozenset[str] | None = None  # None: the driver does not say
    topology: dict[str, int] = new(dict)  # other GPU's uuid -> NVML PCIe common-ancestor level
    processes: tuple[Process, ...] | None = None
    cuda_index: int | None = None
    problems: tuple[str, ...] = ()  # queries that failed, in words

    @property
    def label(self):
        """`GPU 3`, or `GPU 3 MIG 1` for a MIG instance (`GPU 3 MIG ?` when its index is not
        known): how a person names it."""
        if not self.is_mig and self.mig_index is None:
            return f"GPU {self.index}"
        return f"GPU {self.index} MIG {'?' if self.mig_index is None else self.mig_index}"

    @property
    def is_mig(self):
        """True for a MIG instance (not for its parent)."""
        return self.parent_uuid is not None


class ServicePolicy(Record):
    """What the policy asks for one service (one `services:` entry)."""

    match: str
    position: int = 0
    line: int = 0
    server: str = "generic"
    gpus: int | str = 1  # a count, or "all"
    min_free_memory: int | None = None
    min_free_fraction: float | None = None
    sharing: str = "exclusive"
    visible_devices: str = "uuid"
    topology: str = "any"
    same_model: bool | None = None  # None: on for a tensor-parallel server (rules.same_model_rule)
    klass: str = "normal"  # `class:` in the policy
    on_unavailable: str = "fail"
    wait_seconds: float = 0.0
    install: str | None = None
    readiness: str | None = None
    watchdog_seconds: float | None = None
    on_gpu_fault: str = "restart"  # what the monitor does to the unit when its GPU fails: restart|stop|ignore
    placement: str | None = None  # pack | spread; None: the policy's `placement:`
    preempt: str = "never"  # never | lower: may it stop units of a lower class for its GPUs
    when_preempted: str = "requeue"  # requeue | stop | never (never a victim, whatever its class)
    preempt_grace_seconds: float = 30.0  # as a victim: SIGTERM to SIGKILL (TimeoutStopSec= semantics)
    cdi: bool = False  # write a CDI device of its own, cortex-hook.local/gpu=<unit> (containers/cdispec.py)
    options: dict = new(dict)  # the server plugin's, as written
    option_marks: dict[str, tuple[int, int]] = new(dict)  # option key -> (line, column)

    @property
    def describe_memory(self):
        """The memory requirement as the admin wrote it."""
        if self.min_free_fraction is not None:
            return f"{self.min_free_fraction * 100:g}% free"
        if self.min_free_memory:
            return f"{format_size(self.min_free_memory)} free"
        return "any free memory"


# The XIDs the monitor drains a GPU for, and those it ignores (an application's own error); every
# other XID is trouble that demotes. rules.XID_MEANINGS says what each is, the README why.
DEFAULT_FATAL_XIDS = (48, 61, 62, 64, 74, 79, 92, 95, 119, 120, 140, 143)
DEFAULT_IGNORE_XIDS = (13, 31, 43, 45, 68, 109)


class HealthPolicy(Record):
    """When a GPU counts as faulty (each check on by default), and what the monitor does about
    faults and trouble it sees while servers run (`health:` in the policy; None = never)."""

    max_temperature: int | None = 85
    retired_pages_pending: bool = True
    remapped_rows_pending: bool = True
    volatile_uncorrectable_ecc: bool = True
    fatal_xids: tuple[int, ...] = DEFAULT_FATAL_XIDS
    ignore_xids: tuple[int, ...] = DEFAULT_IGNORE_XIDS
    poll_seconds: float = 10.0
    recover_seconds: float | None = 600.0
    max_fault_restarts: int = 3
    fault_restart_window_seconds: float = 3600.0
    demote_window_seconds: float = 3600.0  # 0: no demotion
    demote_corrected_ecc: int = 10


class ScoringPolicy(Record):
    """Weights of the terms that rank GPUs after the admin priority."""

    free_memory: float = 1.0
    utilization: float = 0.5
    temperature: float = 0.25


class MetricsPolicy(Record):
    """`metrics:`: where the monitor serves /metrics (None: it does not), and the directory of
    dcgm-exporter's HPC job mapping that allocate and release keep (None: none is kept)."""

    listen_host: str | None = None
    listen_port: int | None = None
    job_mapping_dir: str | None = None


class Policy(Record):
    """The whole admin policy (`policy.yaml`)."""

    path: str = "<default>"
    inventory: str = "nvml"
    simulated_file: str | None = None
    discovery_timeout: float = 10.0
    health: HealthPolicy = new(HealthPolicy)
    scoring: ScoringPolicy = new(ScoringPolicy)
    reservations: dict[str, tuple[str, ...]] = new(dict)  # GPU uuid -> unit globs allowed on it
    services: list[ServicePolicy] = new(list)
    history_limit: int = 1000
    isolate: bool = False
    placement: str = "pack"  # the default of every service's `placement:` (bench/placement.py)
    handoff_timeout_seconds: float = 120.0  # how long a start waits for a GPU's previous holder's memory
    metrics: MetricsPolicy = new(MetricsPolicy)

    def service_for(self, unit):
        """The first service whose `match` glob matches UNIT, or None."""
        for service in self.services:
            if fnmatchcase(unit, service.match):
                return service
        return None


class Lease(Record):
    """A GPU given to a unit. The holder is a systemd unit's invocation (the unit's lease unit), a
    cgroup (drop-ins of earlier versions), or a pid + its start time (outside systemd)."""

    unit: str
    uuid: str
    sharing: str = "exclusive"
    pid: int | None = None
    pid_start: int | None = None
    boot_id: str | None = None
    cgroup: str | None = None
    invocation: str | None = None
    since: float = 0.0
    holder_unit: str | None = None


class Drain(Record):
    """An order to keep new work off a GPU: an admin's (`drain`), or the monitor's after a fault
    (DETAIL: what it saw, e.g. `XID 79`), which only the monitor lifts on its own."""

    uuid: str
    reason: str
    since: float
    source: str = "admin"  # "admin" | "monitor"
    detail: str = ""


class Trouble(Record):
    """Non-fatal trouble the monitor saw on a GPU: KIND `corrected_ecc` (COUNT new corrected
    errors), `xid` (DETAIL: its number), `throttle` (DETAIL: thermal|power) or `recovered` (DETAIL:
    the fault it recovered from). Recent trouble demotes the GPU (rules.demotion)."""

    uuid: str
    at: float
    kind: str
    count: int = 1
    detail: str = ""


class Wait(Record):
    """A start waiting for a GPU now (`on_unavailable: wait`), as state/tallies.py records it."""

    unit: str
    service: str  # the policy entry's `match`
    klass: str
    since: float
    pid: int | None = None
    pid_start: int | None = None
    boot_id: str | None = None
    summary: str = ""
    wants: tuple[str, ...] = ()  # the GPUs it could use once free (queue.py)
    count: int = 0  # how many it needs
    seen: str = ""  # the lease generation its last plan judged (queue.generation)


class Promise(Record):
    """A GPU promised to a start that preempted its holder (state/preemption.py): no other unit may
    take it while that start (process PID) runs, until it leases the GPU."""

    uuid: str
    unit: str  # the preempting unit
    victim: str  # the unit that held it ('': free, promised with the victims' GPUs of the same selection)
    since: float
    pid: int | None = None
    pid_start: int | None = None
    boot_id: str | None = None


class Victim(Record):
    """A unit a start would preempt (preemption.py): its class, when it started, the GPUs of the
    selection it holds, and what happens to it."""

    unit: str
    klass: str
    since: float  # when it took its GPUs
    gpus: list[str] = new(list)  # the UUIDs it holds that the preempting start gets
    labels: list[str] = new(list)  # the same GPUs as people name them
    when_preempted: str = "requeue"
    grace_seconds: float = 30.0


class Snapshot(Record):
    """What the planner needs from the state database, read in one transaction."""

    priorities: dict[str, int] = new(dict)  # uuid -> rank (0 = first)
    drains: dict[str, Drain] = new(dict)
    leases: list[Lease] = new(list)
    trouble: dict[str, list[Trouble]] = new(dict)  # uuid -> the monitor's rows within the demote window
    promises: list[Promise] = new(list)  # live ones only


class Request(Record):
    """Everything one planning run knows: handed to every check/score/select/prepare hook.

    `visible` is the set of device UUIDs an outer allocator (inherited CUDA_VISIBLE_DEVICES)
    allows, or None when nothing was inherited. `own_pids` are processes of this unit's previous
    instance, `leaving_pids` processes the driver still lists that have already ended (their
    memory is being freed: handoff.py waits for it): the memory of both counts as free. For a
    service that may preempt, `unit_pids` are the processes of each unit holding a lease: the
    memory of a victim's counts as free when the planner weighs preempting it.
    """

    unit: str
    service: ServicePolicy
    policy: Policy
    snapshot: Snapshot
    gpus: list[Gpu]
    visible: frozenset[str] | None = None
    visible_text: str | None = None
    own_pids: frozenset[int] = frozenset()
    leaving_pids: frozenset[int] = frozenset()
    unit_pids: dict[str, frozenset[int]] = new(dict)  # a `preempt: lower` service: each leasing unit's processes


class Reason(FrozenRecord):
    """Why a GPU was rejected: a stable code for machines and a sentence for people."""

    code: str
    text: str


class ScoreTerm(FrozenRecord):
    """One weighted term of a GPU's score: value in [0, 1], times weight."""

    name: str
    value: float
    weight: float
    detail: str = ""

    @property
    def points(self):
        """The term's share of the score."""
        return self.value * self.weight


class Verdict(Record):
    """The planner's word on one GPU for one request."""

    gpu: Gpu
    reasons: list[Reason] = new(list)
    terms: list[ScoreTerm] = new(list)
    notes: list[str] = new(list)
    priority: int | None = None
    priority_from: str | None = None  # the UUID holding that rank: the GPU's, or its MIG parent's
    tier: int = 0  # 1: reserved for another unit, borrowed by a critical service
    demoted: str | None = None  # why recent trouble ranks it after its admin rank's untroubled GPUs
    placement: tuple = ()  # placement.keys: ranks it among GPUs the admin's order ties (pack/spread)
    placement_note: str | None = None
    promised: bool = False  # promised to this unit (it preempted its holder): ranks first
    selected: bool = False

    @property
    def accepted(self):
        """True when no reason rejects the GPU."""
        return not self.reasons

    @property
    def score(self):
        """The summed score terms (None for a rejected GPU)."""
        return round(sum(t.points for t in self.terms), 4) if self.accepted else None


class Selection(Record):
    """What a select hook returns: the chosen verdicts, in order, and why this set."""

    chosen: list[Verdict]
    notes: list[str] = new(list)


class Launch(Record):
    """Environment additions and argv for the server. MODE "wrapper": exec/supervise runs ARGV as
    rewritten (None: not known yet, as in the lease unit); "env": systemd runs the unit's own
    ExecStart= (ARGV, if known, is only read); None: "wrapper" if ARGV is given."""

    env: dict[str, str] = new(dict)
    argv: list[str] | None = None
    notes: list[str] = new(list)
    mode: str | None = None
    inside: list[str] | None = None  # in a container: its own command (ARGV is the engine's)
    ports: dict[str, str] = new(dict)  # in a container: its published ports, inside -> host ("*": host network)

    @property
    def wrapped(self):
        """True when a wrapper runs the server, so ARGV is ours to rewrite."""
        return self.mode == "wrapper" if self.mode else self.argv is not None


class Decision(Record):
    """The result of planning one unit: chosen GPUs, every verdict, and the launch."""

    unit: str
    service: ServicePolicy
    verdicts: list[Verdict]
    chosen: list[Gpu]
    ok: bool
    summary: str
    notes: list[str] = new(list)
    fallback: str | None = None  # "cpu" when it starts without a GPU by policy
    refused: str | None = None  # with a fallback: why no GPU fitted
    launch: Launch = new(Launch)
    victims: list[Victim] = new(list)  # not ok: the units it would preempt for `promised`
    promised: list[str] = new(list)  # the UUIDs it would get by preempting `victims`

    @property
    def uuids(self):
        """The chosen GPUs' UUIDs, in order."""
        return [g.uuid for g in self.chosen]
