"""The plain data every module and hook passes around: GPUs, policy, state, verdicts, decisions.

Each record declares its fields as annotations, in order, with defaults as class values
(`new(dict)` is a fresh dict per record, like dataclasses' default_factory). They are plain
classes with __slots__ made from those annotations, not dataclasses: creating a dozen dataclasses
costs about 10 ms at import, on the start path of every inference server.

`to_plain()` and `Record.from_plain()` are the one serialisation of every record: plain data
(dicts, lists, str, numbers, bools, None) that marshal and JSON can hold, read back through the
field annotations. The policy cache, the decision record and `leases --json` all use it.
"""

import types
from fnmatch import fnmatchcase

from .quantities import format_size


class new:
    """A default built fresh for each record, e.g. `new(dict)`."""

    __slots__ = ("factory",)

    def __init__(self, factory):
        self.factory = factory


class _RecordType(type):
    """Makes `__slots__`, FIELDS, DEFAULTS and TYPES from a record class's annotations."""

    def __new__(mcs, name, bases, namespace):
        annotations = namespace.get("__annotations__")
        if annotations is None and callable(namespace.get("__annotate__")):  # Python 3.14 (PEP 649)
            annotations = namespace["__annotate__"](1)
        types_ = dict(annotations or {})
        namespace["__slots__"] = tuple(types_)
        defaults = {field: namespace.pop(field) for field in types_ if field in namespace}
        cls = super().__new__(mcs, name, bases, namespace)
        cls.FIELDS, cls.DEFAULTS, cls.TYPES = tuple(types_), defaults, types_
        return cls


class Record(metaclass=_RecordType):
    """Positional or keyword construction, repr, field equality and plain-data conversion."""

    def __init__(self, *args, **kwargs):
        names = self.FIELDS
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
        return {name: getattr(self, name) for name in self.FIELDS}

    def to_plain(self):
        """The record as plain data (nested records, sets and tuples converted too)."""
        return to_plain(self)

    @classmethod
    def from_plain(cls, data):
        """The record `to_plain()` gave DATA for; a missing field takes its default."""
        return from_plain(cls, data)

    def __repr__(self):
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in self.as_dict().items())})"

    def __eq__(self, other):
        return type(other) is type(self) and all(getattr(self, n) == getattr(other, n) for n in self.FIELDS)

    __hash__ = None


class FrozenRecord(Record):
    """A Record used as a value (hashable by its fields)."""

    def __hash__(self):
        return hash(tuple(getattr(self, n) for n in self.FIELDS))


def to_plain(value):
    """VALUE as plain data: records become dicts, sets sorted lists, tuples lists."""
    if isinstance(value, Record):
        return {name: to_plain(getattr(value, name)) for name in value.FIELDS}
    if isinstance(value, dict):
        return {key: to_plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_plain(item) for item in value]
    if isinstance(value, (set, frozenset)):
        return sorted(to_plain(item) for item in value)
    return value


def from_plain(kind, data):
    """Read plain DATA back as KIND: a record class, or an annotation such as `list[Gpu]`,
    `tuple[Process, ...] | None` or `frozenset[str]`."""
    if data is None:
        return None
    if isinstance(kind, type) and issubclass(kind, Record):
        return kind(**{name: from_plain(kind.TYPES[name], value) for name, value in data.items()
                       if name in kind.TYPES})
    if isinstance(kind, types.UnionType):
        options = [k for k in kind.__args__ if k is not type(None)]
        return from_plain(options[0], data) if len(options) == 1 else data
    origin, args = getattr(kind, "__origin__", kind), getattr(kind, "__args__", ())
    if origin is dict:
        return {key: from_plain(args[1], item) for key, item in data.items()} if args else dict(data)
    if origin in (list, tuple, frozenset):
        if len(args) == 1 or (len(args) == 2 and args[1] is Ellipsis):
            items = [from_plain(args[0], item) for item in data]
        elif args:
            items = [from_plain(k, item) for k, item in zip(args, data)]
        else:
            items = data
        return origin(items)
    return data


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


class HealthPolicy(Record):
    """When a GPU counts as faulty (each on by default)."""

    max_temperature: int | None = 85
    retired_pages_pending: bool = True
    remapped_rows_pending: bool = True
    volatile_uncorrectable_ecc: bool = True


class ScoringPolicy(Record):
    """Weights of the terms that rank GPUs after the admin priority."""

    free_memory: float = 1.0
    utilization: float = 0.5
    temperature: float = 0.25


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
    """An admin's order to keep new work off a GPU."""

    uuid: str
    reason: str
    since: float


class Snapshot(Record):
    """What the planner needs from the state database, read in one transaction."""

    priorities: dict[str, int] = new(dict)  # uuid -> rank (0 = first)
    drains: dict[str, Drain] = new(dict)
    leases: list[Lease] = new(list)


class Request(Record):
    """Everything one planning run knows: handed to every check/score/select/prepare hook.

    `visible` is the set of device UUIDs an outer allocator (inherited CUDA_VISIBLE_DEVICES)
    allows, or None when nothing was inherited. `own_pids` are processes of this unit's previous
    instance: the memory they hold counts as free.
    """

    unit: str
    service: ServicePolicy
    policy: Policy
    snapshot: Snapshot
    gpus: list[Gpu]
    visible: frozenset[str] | None = None
    visible_text: str | None = None
    own_pids: frozenset[int] = frozenset()


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
    launch: Launch = new(Launch)

    @property
    def uuids(self):
        """The chosen GPUs' UUIDs, in order."""
        return [g.uuid for g in self.chosen]
