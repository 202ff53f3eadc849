"""The plain data every module and hook passes around: GPUs, policy, state, verdicts, decisions.

These are plain classes with __slots__, not dataclasses: creating a dozen dataclasses costs about
10 ms at import, on the start path of every inference server. Each class lists its fields, in
order, in `__slots__`, and their defaults in `DEFAULTS` (`new(dict)` is a fresh dict per record,
like dataclasses' default_factory); the field types are noted in a comment under them.
"""


class new:
    """A default built fresh for each record, e.g. `new(dict)`."""

    __slots__ = ("factory",)

    def __init__(self, factory):
        self.factory = factory


class Record:
    """Positional or keyword construction, repr and field equality from __slots__ and DEFAULTS."""

    __slots__ = ()
    DEFAULTS = {}

    def __init__(self, *args, **kwargs):
        names = self.__slots__
        if len(args) > len(names):
            raise TypeError(f"{type(self).__name__} takes at most {len(names)} positional arguments")
        for name, value in zip(names, args):
            setattr(self, name, value)
        for name in names[len(args):]:
            if name in kwargs:
                value = kwargs.pop(name)
            elif name in self.DEFAULTS:
                value = self.DEFAULTS[name]
                if type(value) is new:
                    value = value.factory()
            else:
                raise TypeError(f"{type(self).__name__} needs {name!r}")
            setattr(self, name, value)
        if kwargs:
            raise TypeError(f"{type(self).__name__} has no field {next(iter(kwargs))!r}")

    def as_dict(self):
        """The fields as a dict (shallow)."""
        return {name: getattr(self, name) for name in self.__slots__}

    def __repr__(self):
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in self.as_dict().items())})"

    def __eq__(self, other):
        return type(other) is type(self) and all(getattr(self, n) == getattr(other, n) for n in self.__slots__)

    __hash__ = None


class FrozenRecord(Record):
    """A Record used as a value (hashable by its fields)."""

    __slots__ = ()

    def __hash__(self):
        return hash(tuple(getattr(self, n) for n in self.__slots__))


class Process(Record):
    """A compute process on a GPU, as the driver reports it."""

    __slots__ = ("pid", "used_memory")
    DEFAULTS = {
        "used_memory": None,
    }
    # pid: int; used_memory: int | None


class Gpu(Record):
    """One schedulable device: a whole GPU, or one MIG instance of a GPU.

    Any fact may be None, meaning the driver could not tell (NOT_SUPPORTED, or the query failed:
    see `problems`). `cuda_index` is the device's index under CUDA_DEVICE_ORDER=PCI_BUS_ID.
    """

    __slots__ = (
        "index", "uuid", "name", "pci_bus_id", "minor", "memory_total", "memory_used",
        "memory_free", "utilization", "temperature", "power_mw", "power_limit_mw",
        "compute_capability", "ecc_volatile_uncorrected", "retired_pages_pending",
        "remapped_rows_pending", "remapped_rows_failure", "lost", "mig_enabled", "parent_uuid",
        "mig_index", "numa_node", "nvlink_peers", "topology", "processes", "cuda_index", "problems"
    )
    DEFAULTS = {
        "name": "?", "pci_bus_id": None, "minor": None, "memory_total": None, "memory_used": None,
        "memory_free": None, "utilization": None, "temperature": None, "power_mw": None,
        "power_limit_mw": None, "compute_capability": None, "ecc_volatile_uncorrected": None,
        "retired_pages_pending": None, "remapped_rows_pending": None, "remapped_rows_failure": None,
        "lost": False, "mig_enabled": None, "parent_uuid": None, "mig_index": None, "numa_node": None,
        "nvlink_peers": None, "topology": new(dict), "processes": None, "cuda_index": None, "problems": (),
    }
    # index: int; uuid: str | None; name: str; pci_bus_id: str | None; minor: int | None; memory_total:
    #   int | None; memory_used: int | None; memory_free: int | None; utilization: int | None;
    #   temperature: int | None; power_mw: int | None; power_limit_mw: int | None; compute_capability:
    #   str | None; ecc_volatile_uncorrected: int | None; retired_pages_pending: bool | None;
    #   remapped_rows_pending: bool | None; remapped_rows_failure: bool | None; lost: bool; mig_enabled:
    #   bool | None; parent_uuid: str | None; mig_index: int | None; numa_node: int | None;
    #   nvlink_peers: frozenset | None; topology: dict; processes: tuple | None; cuda_index: int | None;
    #   problems: tuple

    @property
    def label(self):
        """`GPU 3`, or `GPU 3 MIG 1` for a MIG instance: how a person names it."""
        return f"GPU {self.index}" if self.mig_index is None else f"GPU {self.index} MIG {self.mig_index}"

    @property
    def is_mig(self):
        return self.parent_uuid is not None


class ServicePolicy(Record):
    """What the policy asks for one service (one `services:` entry)."""

    __slots__ = (
        "match", "position", "line", "server", "gpus", "min_free_memory", "min_free_fraction",
        "sharing", "visible_devices", "topology", "klass", "on_unavailable", "wait_seconds",
        "install", "readiness", "watchdog_seconds", "options", "option_marks"
    )
    DEFAULTS = {
        "position": 0, "line": 0, "server": "generic", "gpus": 1, "min_free_memory": None,
        "min_free_fraction": None, "sharing": "exclusive", "visible_devices": "uuid", "topology": "any",
        "klass": "normal", "on_unavailable": "fail", "wait_seconds": 0.0, "install": None,
        "readiness": None, "watchdog_seconds": None, "options": new(dict), "option_marks": new(dict),
    }
    # match: str; position: int; line: int; server: str; gpus: int | str; min_free_memory: int | None;
    #   min_free_fraction: float | None; sharing: str; visible_devices: str; topology: str; klass: str;
    #   on_unavailable: str; wait_seconds: float; install: str | None; readiness: str | None;
    #   watchdog_seconds: float | None; options: dict; option_marks: dict

    @property
    def describe_memory(self):
        """The memory requirement as the admin wrote it."""
        from .quantities import format_size
        if self.min_free_fraction is not None:
            return f"{self.min_free_fraction * 100:g}% free"
        if self.min_free_memory:
            return f"{format_size(self.min_free_memory)} free"
        return "any free memory"


class HealthPolicy(Record):
    """When a GPU counts as faulty (each on by default)."""

    __slots__ = (
        "max_temperature", "retired_pages_pending", "remapped_rows_pending",
        "volatile_uncorrectable_ecc"
    )
    DEFAULTS = {
        "max_temperature": 85, "retired_pages_pending": True, "remapped_rows_pending": True,
        "volatile_uncorrectable_ecc": True,
    }
    # max_temperature: int | None; retired_pages_pending: bool; remapped_rows_pending: bool;
    #   volatile_uncorrectable_ecc: bool


class ScoringPolicy(Record):
    """Weights of the terms that rank GPUs after the admin priority."""

    __slots__ = ("free_memory", "utilization", "temperature")
    DEFAULTS = {
        "free_memory": 1.0, "utilization": 0.5, "temperature": 0.25,
    }
    # free_memory: float; utilization: float; temperature: float


class Policy(Record):
    """The whole admin policy (`policy.yaml`)."""

    __slots__ = (
        "path", "inventory", "simulated_file", "discovery_timeout", "health", "scoring",
        "reservations", "services", "history_limit", "isolate"
    )
    DEFAULTS = {
        "path": "<default>", "inventory": "nvml", "simulated_file": None, "discovery_timeout": 10.0,
        "health": new(HealthPolicy), "scoring": new(ScoringPolicy), "reservations": new(dict),
        "services": new(list), "history_limit": 1000, "isolate": False,
    }
    # path: str; inventory: str; simulated_file: str | None; discovery_timeout: float; health:
    #   HealthPolicy; scoring: ScoringPolicy; reservations: dict; services: list; history_limit: int;
    #   isolate: bool

    def service_for(self, unit):
        """The first service whose `match` glob matches UNIT, or None."""
        from fnmatch import fnmatchcase
        for service in self.services:
            if fnmatchcase(unit, service.match):
                return service
        return None


class Lease(Record):
    """A GPU given to a unit. The holder is a cgroup (under systemd) or a pid + its start time."""

    __slots__ = ("unit", "uuid", "sharing", "pid", "pid_start", "boot_id", "cgroup", "invocation", "since")
    DEFAULTS = {
        "sharing": "exclusive", "pid": None, "pid_start": None, "boot_id": None, "cgroup": None,
        "invocation": None, "since": 0.0,
    }
    # unit: str; uuid: str; sharing: str; pid: int | None; pid_start: int | None; boot_id: str | None;
    #   cgroup: str | None; invocation: str | None; since: float


class Drain(Record):
    """An admin's order to keep new work off a GPU."""

    __slots__ = ("uuid", "reason", "since")
    # uuid: str; reason: str; since: float


class Snapshot(Record):
    """What the planner needs from the state database, read in one transaction."""

    __slots__ = ("priorities", "drains", "leases")
    DEFAULTS = {
        "priorities": new(dict), "drains": new(dict), "leases": new(list),
    }
    # priorities: dict; drains: dict; leases: list


class Request(Record):
    """Everything one planning run knows: handed to every check/score/select/prepare hook.

    `visible` is the set of device UUIDs an outer allocator (inherited CUDA_VISIBLE_DEVICES)
    allows, or None when nothing was inherited. `own_pids` are processes of this unit's previous
    instance: the memory they hold counts as free.
    """

    __slots__ = ("unit", "service", "policy", "snapshot", "gpus", "visible", "visible_text", "own_pids")
    DEFAULTS = {
        "visible": None, "visible_text": None, "own_pids": frozenset(),
    }
    # unit: str; service: ServicePolicy; policy: Policy; snapshot: Snapshot; gpus: list; visible:
    #   frozenset | None; visible_text: str | None; own_pids: frozenset


class Reason(FrozenRecord):
    """Why a GPU was rejected: a stable code for machines and a sentence for people."""

    __slots__ = ("code", "text")
    # code: str; text: str


class ScoreTerm(FrozenRecord):
    """One weighted term of a GPU's score: value in [0, 1], times weight."""

    __slots__ = ("name", "value", "weight", "detail")
    DEFAULTS = {
        "detail": "",
    }
    # name: str; value: float; weight: float; detail: str

    @property
    def points(self):
        return self.value * self.weight


class Verdict(Record):
    """The planner's word on one GPU for one request."""

    __slots__ = ("gpu", "reasons", "terms", "notes", "priority", "tier", "selected")
    DEFAULTS = {
        "reasons": new(list), "terms": new(list), "notes": new(list), "priority": None, "tier": 0,
        "selected": False,
    }
    # gpu: Gpu; reasons: list; terms: list; notes: list; priority: int | None; tier: int; selected: bool

    @property
    def accepted(self):
        return not self.reasons

    @property
    def score(self):
        return round(sum(t.points for t in self.terms), 4) if self.accepted else None


class Selection(Record):
    """What a select hook returns: the chosen verdicts, in order, and why this set."""

    __slots__ = ("chosen", "notes")
    DEFAULTS = {
        "notes": new(list),
    }
    # chosen: list; notes: list


class Launch(Record):
    """What the server will get: environment additions and (in wrapper modes) its argv."""

    __slots__ = ("env", "argv", "notes")
    DEFAULTS = {
        "env": new(dict), "argv": None, "notes": new(list),
    }
    # env: dict; argv: list | None; notes: list


class Decision(Record):
    """The result of planning one unit: chosen GPUs, every verdict, and the launch."""

    __slots__ = ("unit", "service", "verdicts", "chosen", "ok", "summary", "notes", "fallback", "launch")
    DEFAULTS = {
        "notes": new(list), "fallback": None, "launch": new(Launch),
    }
    # unit: str; service: ServicePolicy; verdicts: list; chosen: list; ok: bool; summary: str; notes:
    #   list; fallback: str | None; launch: Launch

    @property
    def uuids(self):
        return [g.uuid for g in self.chosen]

    def to_json(self):
        """The documented `plan --json` / `allocate --json` object."""
        from .explain import decision_to_json
        return decision_to_json(self)
