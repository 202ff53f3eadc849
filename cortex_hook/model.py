"""The plain data every module and hook passes around: GPUs, policy, state, verdicts, decisions."""

from dataclasses import dataclass, field

# nvmlGpuTopologyLevel_t values: the lower, the closer two GPUs are on the PCIe tree.
TOPOLOGY_NAMES = {0: "internal", 10: "same PCIe switch", 20: "PCIe switches", 30: "host bridge",
                  40: "NUMA node", 50: "system"}


@dataclass(slots=True)
class Process:
    """A compute process on a GPU, as the driver reports it."""

    pid: int
    used_memory: int | None = None


@dataclass(slots=True)
class Gpu:
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
    retired_pages_pending: bool | None = None
    remapped_rows_pending: bool | None = None
    remapped_rows_failure: bool | None = None
    lost: bool = False
    mig_enabled: bool | None = None
    parent_uuid: str | None = None
    mig_index: int | None = None
    numa_node: int | None = None
    nvlink_peers: frozenset | None = None
    topology: dict = field(default_factory=dict)
    processes: tuple | None = None
    cuda_index: int | None = None
    problems: tuple = ()

    @property
    def label(self):
        """`GPU 3`, or `GPU 3 MIG 1` for a MIG instance: how a person names it."""
        return f"GPU {self.index}" if self.mig_index is None else f"GPU {self.index} MIG {self.mig_index}"

    @property
    def is_mig(self):
        return self.parent_uuid is not None


@dataclass(slots=True)
class ServicePolicy:
    """What the policy asks for one service (one `services:` entry)."""

    match: str
    position: int = 0
    line: int = 0
    server: str = "generic"
    gpus: int | str = 1
    min_free_memory: int | None = None
    min_free_fraction: float | None = None
    sharing: str = "exclusive"
    visible_devices: str = "uuid"
    topology: str = "any"
    klass: str = "normal"
    on_unavailable: str = "fail"
    wait_seconds: float = 0.0
    install: str | None = None
    readiness: str | None = None
    watchdog_seconds: float | None = None
    options: dict = field(default_factory=dict)
    option_marks: dict = field(default_factory=dict)

    @property
    def describe_memory(self):
        """The memory requirement as the admin wrote it."""
        from .quantities import format_size
        if self.min_free_fraction is not None:
            return f"{self.min_free_fraction * 100:g}% free"
        if self.min_free_memory:
            return f"{format_size(self.min_free_memory)} free"
        return "any free memory"


@dataclass(slots=True)
class HealthPolicy:
    """When a GPU counts as faulty (each on by default)."""

    max_temperature: int | None = 85
    retired_pages_pending: bool = True
    remapped_rows_pending: bool = True
    volatile_uncorrectable_ecc: bool = True


@dataclass(slots=True)
class ScoringPolicy:
    """Weights of the terms that rank GPUs after the admin priority."""

    free_memory: float = 1.0
    utilization: float = 0.5
    temperature: float = 0.25


@dataclass(slots=True)
class Policy:
    """The whole admin policy (`policy.yaml`)."""

    path: str = "<default>"
    inventory: str = "nvml"
    simulated_file: str | None = None
    discovery_timeout: float = 10.0
    health: HealthPolicy = field(default_factory=HealthPolicy)
    scoring: ScoringPolicy = field(default_factory=ScoringPolicy)
    reservations: dict = field(default_factory=dict)
    services: list = field(default_factory=list)
    history_limit: int = 1000
    isolate: bool = False

    def service_for(self, unit):
        """The first service whose `match` glob matches UNIT, or None."""
        from fnmatch import fnmatchcase
        for service in self.services:
            if fnmatchcase(unit, service.match):
                return service
        return None


@dataclass(slots=True)
class Lease:
    """A GPU given to a unit. The holder is a cgroup (under systemd) or a pid + its start time."""

    unit: str
    uuid: str
    sharing: str = "exclusive"
    pid: int | None = None
    pid_start: int | None = None
    boot_id: str | None = None
    cgroup: str | None = None
    invocation: str | None = None
    since: float = 0.0


@dataclass(slots=True)
class Drain:
    """An admin's order to keep new work off a GPU."""

    uuid: str
    reason: str
    since: float


@dataclass(slots=True)
class Snapshot:
    """What the planner needs from the state database, read in one transaction."""

    priorities: dict = field(default_factory=dict)
    drains: dict = field(default_factory=dict)
    leases: list = field(default_factory=list)


@dataclass(slots=True)
class Request:
    """Everything one planning run knows: handed to every check/score/select/prepare hook.

    `visible` is the set of device UUIDs an outer allocator (inherited CUDA_VISIBLE_DEVICES)
    allows, or None when nothing was inherited. `own_pids` are processes of this unit's previous
    instance: the memory they hold counts as free.
    """

    unit: str
    service: ServicePolicy
    policy: Policy
    snapshot: Snapshot
    gpus: list
    visible: frozenset | None = None
    visible_text: str | None = None
    own_pids: frozenset = frozenset()


@dataclass(slots=True, frozen=True)
class Reason:
    """Why a GPU was rejected: a stable code for machines and a sentence for people."""

    code: str
    text: str


@dataclass(slots=True, frozen=True)
class ScoreTerm:
    """One weighted term of a GPU's score: value in [0, 1], times weight."""

    name: str
    value: float
    weight: float
    detail: str = ""

    @property
    def points(self):
        return self.value * self.weight


@dataclass(slots=True)
class Verdict:
    """The planner's word on one GPU for one request."""

    gpu: Gpu
    reasons: list = field(default_factory=list)
    terms: list = field(default_factory=list)
    notes: list = field(default_factory=list)
    priority: int | None = None
    tier: int = 0
    selected: bool = False

    @property
    def accepted(self):
        return not self.reasons

    @property
    def score(self):
        return round(sum(t.points for t in self.terms), 4) if self.accepted else None


@dataclass(slots=True)
class Selection:
    """What a select hook returns: the chosen verdicts, in order, and why this set."""

    chosen: list
    notes: list = field(default_factory=list)


@dataclass(slots=True)
class Launch:
    """What the server will get: environment additions and (in wrapper modes) its argv."""

    env: dict = field(default_factory=dict)
    argv: list | None = None
    notes: list = field(default_factory=list)


@dataclass(slots=True)
class Decision:
    """The result of planning one unit: chosen GPUs, every verdict, and the launch."""

    unit: str
    service: ServicePolicy
    verdicts: list
    chosen: list
    ok: bool
    summary: str
    notes: list = field(default_factory=list)
    fallback: str | None = None
    launch: Launch = field(default_factory=Launch)

    @property
    def uuids(self):
        return [g.uuid for g in self.chosen]

    def to_json(self):
        """The documented `plan --json` / `allocate --json` object."""
        from .explain import decision_to_json
        return decision_to_json(self)
