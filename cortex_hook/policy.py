"""The admin's YAML policy -> `Policy`, with errors that name file:line:column and the key path.

The YAML is composed into nodes (which carry their position) and checked key by key against the
schema below; unknown keys are refused with a did-you-mean. Anchors, aliases and `<<` merge keys
work as in any YAML file, with limits that stop alias bombs and recursive documents.
"""

import os
import re

from .errors import PolicyError
from .model import HealthPolicy, Policy, ScoringPolicy, ServicePolicy

MAX_POLICY_BYTES = 1 << 20
MAX_NODES = 100_000
MAX_DEPTH = 64
MAX_NUMBER = 1e9       # weights, limits: far beyond anything sensible, far below overflow
MAX_SECONDS = 30 * 86400  # timeouts and waits something can actually wait for

SERVICE_KEYS = ("match", "server", "gpus", "min_free_memory", "sharing", "visible_devices",
                "topology", "class", "on_unavailable", "install", "readiness", "watchdog", "options")
TOP_KEYS = ("version", "inventory", "discovery_timeout", "health", "scoring", "reservations",
            "services", "history_limit", "isolate")
HEALTH_KEYS = ("max_temperature", "retired_pages_pending", "remapped_rows_pending",
               "volatile_uncorrectable_ecc")
SCORING_KEYS = ("free_memory", "utilization", "temperature")
CHOICES = {
    "sharing": ("exclusive", "shared"),
    "visible_devices": ("uuid", "index"),
    "topology": ("any", "prefer-nvlink", "require-nvlink"),
    "class": ("critical", "normal", "batch"),
    "install": ("env", "exec", "supervise"),
}
_READINESS = re.compile(r"(http://[A-Za-z0-9._-]+:\d{1,5}(/[!-~]*)?|tcp://[A-Za-z0-9._-]+:\d{1,5})")
_INSTALLABLE = re.compile(r"[A-Za-z0-9:_.\\-]+(@[A-Za-z0-9:_.\\-]*)?\.service|[A-Za-z0-9:_.\\-]+@\*\.service")
_GLOB_CHARS = set("0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ:-_.\\@*?[]!")
_SERVER_NAME = re.compile(r"[a-z0-9][a-z0-9._+-]{0,63}")
_DEVICE_UUID = re.compile(r"(GPU|MIG)-[0-9a-fA-F]{8}(-[0-9a-fA-F]{4}){3}-[0-9a-fA-F]{12}")


def read_policy(path):
    """Read and parse the policy file at PATH (no ownership check, no cache: see policyfile)."""
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_POLICY_BYTES + 1)
    except FileNotFoundError:
        raise PolicyError(path, 0, 0, None, "no such file (write one, or pass --policy FILE)") from None
    except OSError as exc:
        raise PolicyError(path, 0, 0, None, f"cannot read: {exc.strerror}") from None
    if len(data) > MAX_POLICY_BYTES:
        raise PolicyError(path, 0, 0, None, f"larger than {MAX_POLICY_BYTES} bytes; is this the policy?")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise PolicyError(path, line, 1, None, "not valid UTF-8") from None
    return parse_policy(text, path)


def parse_policy(text, path="<policy>"):
    """Parse policy TEXT (named PATH in errors) into a Policy."""
    import yaml

    # The pure-Python loader, not CSafeLoader: the C one recurses on the C stack and a file of
    # ~25,000 nested brackets kills the process (SIGSEGV); Python's recursion limit turns the same
    # file into a clean error. Parsing is rare: the start path reads the parsed-policy cache.
    loader_cls = yaml.SafeLoader
    try:
        root = yaml.compose(text, Loader=loader_cls)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = exc.problem or exc.context or "invalid YAML"
        raise PolicyError(path, mark.line + 1 if mark else 0, mark.column + 1 if mark else 0,
                          None, f"invalid YAML: {problem}") from None
    except yaml.reader.ReaderError as exc:  # e.g. a control character: locate it by position
        line = text[: exc.position].count("\n") + 1
        column = exc.position - (text.rfind("\n", 0, exc.position) + 1) + 1
        raise PolicyError(path, line, column, None, f"invalid YAML: {exc.reason} "
                                                    f"(character {exc.character!r})") from None
    except yaml.YAMLError as exc:
        raise PolicyError(path, 0, 0, None, f"invalid YAML: {str(exc).splitlines()[0]}") from None
    except RecursionError:
        raise PolicyError(path, 0, 0, None, f"nested deeper than this loader allows (over {MAX_DEPTH} levels)") \
            from None
    except ValueError as exc:
        raise PolicyError(path, 0, 0, None, f"invalid YAML: {exc}") from None
    return _Reader(path, yaml).policy(root)


class _Reader:
    """Walks the composed YAML nodes, building the Policy and failing with positions."""

    def __init__(self, path, yaml):
        self.path = path
        self.yaml = yaml
        self.nodes_seen = 0
        self.base_dir = os.path.dirname(os.path.abspath(path)) if not path.startswith("<") else os.getcwd()

    # -- helpers ------------------------------------------------------------------------------
    def fail(self, node, key, message):
        mark = node.start_mark if node is not None else None
        raise PolicyError(self.path, mark.line + 1 if mark else 0, mark.column + 1 if mark else 0,
                          key, message)

    def _count(self, node, depth):
        self.nodes_seen += 1
        if self.nodes_seen > MAX_NODES:
            self.fail(node, None, f"more than {MAX_NODES} YAML nodes (alias bomb?)")
        if depth > MAX_DEPTH:
            self.fail(node, None, f"nested deeper than {MAX_DEPTH} levels (recursive alias?)")

    def mapping(self, node, key, allowed, depth):
        """Return [(name, key_node, value_node)] for a mapping node, checking every key."""
        self._count(node, depth)
        if not isinstance(node, self.yaml.MappingNode):
            what = f"a mapping with keys {_keys_list(allowed)}" if allowed else "a mapping"
            self.fail(node, key, f"expected {what}, got {_kind(node, self.yaml)}")
        out, seen = [], {}
        for name, knode, vnode in self._pairs(node, key, depth):
            path = f"{key}.{name}" if key else name
            if allowed is not None and name not in allowed:
                self.fail(knode, path, f"unknown key{_did_you_mean(name, allowed)}")
            if name in seen:
                self.fail(knode, path, f"duplicate key (first given on line {seen[name]})")
            seen[name] = knode.start_mark.line + 1
            out.append((name, knode, vnode))
        return out

    def _pairs(self, node, key, depth):
        """Key/value pairs with `<<` merge keys flattened (explicit keys win)."""
        explicit, merged = [], []
        for knode, vnode in node.value:
            if knode.tag == "tag:yaml.org,2002:merge":
                sources = vnode.value if isinstance(vnode, self.yaml.SequenceNode) else [vnode]
                for src in sources:
                    if not isinstance(src, self.yaml.MappingNode):
                        self.fail(src, key, "a << merge key needs a mapping (or a list of mappings)")
                    self._count(src, depth + 1)
                    merged.extend(self._pairs(src, key, depth + 1))
                continue
            if not isinstance(knode, self.yaml.ScalarNode) or not isinstance(knode.value, str) \
                    or knode.tag != "tag:yaml.org,2002:str":
                self.fail(knode, key, "keys must be plain names")
            explicit.append((knode.value, knode, vnode))
        names = {n for n, _, _ in explicit}
        result, taken = list(explicit), set(names)
        for name, knode, vnode in merged:
            if name not in taken:
                result.append((name, knode, vnode))
                taken.add(name)
        return result

    def sequence(self, node, key, depth):
        self._count(node, depth)
        if not isinstance(node, self.yaml.SequenceNode):
            self.fail(node, key, f"expected a list, got {_kind(node, self.yaml)}")
        return node.value

    def scalar(self, node, key, depth):
        """The Python value of a scalar node (str, int, float, bool or None)."""
        self._count(node, depth)
        if not isinstance(node, self.yaml.ScalarNode):
            self.fail(node, key, f"expected a single value, got {_kind(node, self.yaml)}")
        from yaml.constructor import SafeConstructor
        try:
            return SafeConstructor().construct_object(node)
        except Exception as exc:  # explicit tags with bad content (`!!bool maybe`, `!!int ''`) raise anything
            self.fail(node, key, f"cannot read this value as {node.tag.rsplit(':', 1)[-1]}: "
                                 f"{getattr(exc, 'problem', None) or type(exc).__name__}")

    def plain(self, node, key, depth):
        """A scalar, or a mapping of scalars (for plugin options)."""
        if isinstance(node, self.yaml.MappingNode):
            return {k: self.scalar(v, f"{key}.{k}", depth + 1) for k, _, v in self.mapping(node, key, None, depth)}
        return self.scalar(node, key, depth)

    def string(self, node, key, depth, what="a string"):
        value = self.scalar(node, key, depth)
        if not isinstance(value, str) or node.tag != "tag:yaml.org,2002:str":
            self.fail(node, key, f"expected {what}, got {_show(value)}")
        return value

    def boolean(self, node, key, depth):
        value = self.scalar(node, key, depth)
        if not isinstance(value, bool):
            self.fail(node, key, f"expected true or false, got {_show(value)}")
        return value

    def number(self, node, key, depth, minimum=None, integer=False, maximum=MAX_NUMBER):
        value = self.scalar(node, key, depth)
        ok_types = (int,) if integer else (int, float)
        if isinstance(value, bool) or not isinstance(value, ok_types) or value != value:
            self.fail(node, key, f"expected {'an integer' if integer else 'a number'}, got {_show(value)}")
        if minimum is not None and value < minimum:
            self.fail(node, key, f"must be at least {minimum}, got {_show(value)}")
        if value > maximum:
            self.fail(node, key, f"must be at most {maximum:g}, got {_show(value)}")
        return value

    def choice(self, node, key, depth, choices):
        value = self.scalar(node, key, depth)
        if not isinstance(value, str) or value not in choices:
            self.fail(node, key, f"expected one of {_keys_list(choices)}, got {_show(value)}"
                      + (_did_you_mean(value, choices) if isinstance(value, str) else ""))
        return value

    def duration(self, node, key, depth, maximum=MAX_SECONDS):
        from .quantities import parse_duration
        value = self.scalar(node, key, depth)
        try:
            seconds = parse_duration(value)
        except (ValueError, OverflowError) as exc:
            self.fail(node, key, str(exc))
        if not seconds < maximum:  # also catches inf
            from .quantities import format_duration
            self.fail(node, key, f"must be shorter than {format_duration(maximum)}, got {_show(value)}")
        return seconds

    # -- the document ---------------------------------------------------------------------------
    def policy(self, root):
        if root is None:
            self.fail(None, None, "empty policy; expected a mapping starting with `version: 1`")
        pol = Policy(path=self.path)
        items = self.mapping(root, "", TOP_KEYS, 0)
        names = {name for name, _, _ in items}
        if "version" not in names:
            self.fail(root, "version", "missing; the first line of a policy is `version: 1`")
        for name, knode, vnode in items:
            getattr(self, "top_" + name)(pol, vnode, name)
        self._check_shadowed(pol.services, items)
        return pol

    def top_version(self, pol, node, key):
        value = self.scalar(node, key, 1)
        if value != 1 or isinstance(value, bool):
            self.fail(node, key, f"this cortex-hook reads policy version 1, got {_show(value)}")

    def top_inventory(self, pol, node, key):
        if isinstance(node, self.yaml.ScalarNode):
            value = self.choice(node, key, 1, ("nvml",))
            pol.inventory = value
            return
        items = self.mapping(node, key, ("simulated",), 1)
        if not items:
            self.fail(node, key, "expected `nvml` or `{simulated: FILE}`")
        _, _, vnode = items[0]
        file = self.string(vnode, f"{key}.simulated", 2, "a file name")
        pol.inventory = "simulated"
        pol.simulated_file = os.path.join(self.base_dir, file)

    def top_discovery_timeout(self, pol, node, key):
        pol.discovery_timeout = self.duration(node, key, 1)
        if pol.discovery_timeout <= 0:
            self.fail(node, key, "must be longer than 0s")

    def top_isolate(self, pol, node, key):
        pol.isolate = self.boolean(node, key, 1)

    def top_history_limit(self, pol, node, key):
        pol.history_limit = self.number(node, key, 1, minimum=1, integer=True)

    def top_health(self, pol, node, key):
        health = HealthPolicy()
        for name, _, vnode in self.mapping(node, key, HEALTH_KEYS, 1):
            path = f"{key}.{name}"
            if name == "max_temperature":
                value = self.scalar(vnode, path, 2)
                if value is not None:
                    value = self.number(vnode, path, 2, minimum=1, integer=True)
                health.max_temperature = value
            else:
                setattr(health, name, self.boolean(vnode, path, 2))
        pol.health = health

    def top_scoring(self, pol, node, key):
        scoring = ScoringPolicy()
        for name, _, vnode in self.mapping(node, key, SCORING_KEYS, 1):
            setattr(scoring, name, float(self.number(vnode, f"{key}.{name}", 2, minimum=0)))
        pol.scoring = scoring

    def top_reservations(self, pol, node, key):
        for uuid, knode, vnode in self.mapping(node, key, None, 1):
            path = f'{key}."{uuid}"'
            if not _DEVICE_UUID.fullmatch(uuid):
                self.fail(knode, path, "reserve GPUs by UUID (GPU-… or MIG-…), since indices move; "
                                       "`cortex-hook status` shows them")
            if isinstance(vnode, self.yaml.SequenceNode):
                globs = [self.glob(v, f"{path}[{i}]", 3) for i, v in enumerate(self.sequence(vnode, path, 2))]
            else:
                globs = [self.glob(vnode, path, 2)]
            if not globs:
                self.fail(vnode, path, "name at least one unit allowed on this GPU")
            pol.reservations[uuid] = tuple(globs)

    def glob(self, node, key, depth):
        """A unit-name glob; without a suffix it means `.service`, as with systemctl."""
        value = self.string(node, key, depth, "a unit name or glob such as vllm@*.service")
        bad = sorted(set(value) - _GLOB_CHARS)
        if not value or bad:
            self.fail(node, key, "not a unit name or glob"
                      + (f" (unit names cannot contain {', '.join(repr(c) for c in bad)})" if bad else ""))
        if not value.endswith((".service", "*")):
            value += ".service"
        return value

    def top_services(self, pol, node, key):
        for i, snode in enumerate(self.sequence(node, key, 1)):
            pol.services.append(self.service(snode, f"{key}[{i}]", i))

    def service(self, node, key, position):
        svc = ServicePolicy(match="", position=position, line=node.start_mark.line + 1)
        items = self.mapping(node, key, SERVICE_KEYS, 2)
        if "match" not in {name for name, _, _ in items}:
            self.fail(node, f"{key}.match", "missing; every service names the units it applies to, "
                                            'e.g. match: "vllm@*.service"')
        for name, _, vnode in items:
            path = f"{key}.{name}"
            if name == "match":
                svc.match = self.glob(vnode, path, 3)
            elif name == "server":
                value = self.string(vnode, path, 3, "a server plugin name such as vllm")
                if not _SERVER_NAME.fullmatch(value):
                    self.fail(vnode, path, f"not a plugin name: {value!r} (lower case letters, digits, . _ + -)")
                svc.server = value
            elif name == "gpus":
                svc.gpus = self.gpu_count(vnode, path)
            elif name == "min_free_memory":
                svc.min_free_memory, svc.min_free_fraction = self.memory(vnode, path)
            elif name == "on_unavailable":
                svc.on_unavailable, svc.wait_seconds = self.on_unavailable(vnode, path)
            elif name == "readiness":
                svc.readiness = self.string(vnode, path, 3, "a URL such as http://127.0.0.1:8080/health")
                if not _READINESS.fullmatch(svc.readiness):
                    self.fail(vnode, path, "expected http://HOST:PORT/PATH or tcp://HOST:PORT, "
                                           f"got {svc.readiness!r}")
            elif name == "watchdog":
                svc.watchdog_seconds = self.duration(vnode, path, 3)
                if svc.watchdog_seconds < 1:
                    self.fail(vnode, path, "must be at least 1s (systemd's WatchdogSec=)")
            elif name == "install":
                svc.install = self.choice(vnode, path, 3, CHOICES[name])
            elif name == "options":  # the server plugin checks these (cortex_validate_options)
                for key, knode, onode in self.mapping(vnode, path, None, 3):
                    svc.options[key] = self.plain(onode, f"{path}.{key}", 4)
                    svc.option_marks[key] = (knode.start_mark.line + 1, knode.start_mark.column + 1)
            else:
                value = self.choice(vnode, path, 3, CHOICES[name])
                setattr(svc, "klass" if name == "class" else name, value)
        if svc.install and not _INSTALLABLE.fullmatch(svc.match):
            node_of = {n: v for n, _, v in items}
            self.fail(node_of["install"], f"{key}.install",
                      f"needs a unit name or NAME@*.service in match, not {svc.match!r} "
                      "(the generator cannot list the units other globs would match)")
        return svc

    def gpu_count(self, node, key):
        value = self.scalar(node, key, 3)
        if value == "all":
            return "all"
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 1024:
            self.fail(node, key, f"expected a count from 1 or `all`, got {_show(value)}")
        return value

    def memory(self, node, key):
        from .quantities import parse_fraction, parse_size
        value = self.scalar(node, key, 3)
        try:
            if isinstance(value, str) and value.strip().endswith("%"):
                return None, parse_fraction(value)
            size = parse_size(value)
        except (ValueError, OverflowError) as exc:
            self.fail(node, key, f"{exc} (or a share of the GPU such as 90%)")
        if size >= 1 << 60:
            self.fail(node, key, f"{_show(value)} is more memory than any GPU has")
        return size, None

    def on_unavailable(self, node, key):
        from .quantities import parse_duration
        value = self.scalar(node, key, 3)
        text = value.strip() if isinstance(value, str) else None
        if text in ("fail", "cpu"):
            return text, 0.0
        if text is not None and text.split(None, 1)[0] == "wait":
            parts = text.split(None, 1)
            if len(parts) < 2:
                self.fail(node, key, "`wait` needs a duration, e.g. `wait 5m`")
            try:
                seconds = parse_duration(parts[1])
            except (ValueError, OverflowError) as exc:
                self.fail(node, key, str(exc))
            if not 0 < seconds < MAX_SECONDS:
                self.fail(node, key, "`wait` needs a duration longer than 0s and shorter than 30d")
            return "wait", seconds
        self.fail(node, key, f"expected `fail`, `cpu` or `wait DURATION` (e.g. wait 5m), got {_show(value)}")

    def _check_shadowed(self, services, items):
        """A later literal `match` that an earlier glob already covers is dead: say so."""
        from fnmatch import fnmatchcase
        nodes = {}
        for name, _, vnode in items:
            if name == "services":
                nodes = {i: n for i, n in enumerate(vnode.value)}
        for later in services:
            if any(c in later.match for c in "*?["):
                continue
            for earlier in services[: later.position]:
                if fnmatchcase(later.match, earlier.match):
                    self.fail(nodes.get(later.position), f"services[{later.position}].match",
                              f"{later.match!r} is already matched by services[{earlier.position}] "
                              f"({earlier.match!r}, line {earlier.line}); the first match wins, "
                              "so this entry would never be used")


def _kind(node, yaml):
    if isinstance(node, yaml.MappingNode):
        return "a mapping"
    if isinstance(node, yaml.SequenceNode):
        return "a list"
    return _show(node.value) if node is not None else "nothing"


def _show(value):
    if value is None:
        return "nothing"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, str):
        return repr(value) if len(value) <= 40 else repr(value[:40] + "…")
    return repr(value)


def _keys_list(keys):
    return ", ".join(keys)


def _did_you_mean(name, choices):
    import difflib
    close = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else f" (expected one of {_keys_list(choices)})"
