"""The admin's YAML policy -> `Policy`: the schema, checked key by key (policy/yamlnodes.py
reads the values with their positions); unknown keys are refused with a did-you-mean.
"""

import os
import re
from fnmatch import fnmatchcase

import yaml

from ..errors import PolicyError, did_you_mean
from ..model import (DEFAULT_FATAL_XIDS, DEFAULT_IGNORE_XIDS, HealthPolicy, MetricsPolicy, Policy, ScoringPolicy,
                     ServicePolicy)
from ..quantities import parse_duration, parse_fraction, parse_size
from ..rules import is_device_uuid
from .yamlnodes import MAX_SECONDS, NodeReader, compose, show


SERVICE_KEYS = ("match", "server", "gpus", "min_free_memory", "sharing", "visible_devices",
                "topology", "same_model", "class", "on_unavailable", "on_gpu_fault", "placement", "preempt",
                "when_preempted", "preempt_grace", "cdi", "install", "readiness", "watchdog", "options")
TOP_KEYS = ("version", "inventory", "discovery_timeout", "health", "scoring", "reservations",
            "services", "history_limit", "isolate", "metrics", "placement", "handoff_timeout")
METRICS_KEYS = ("listen", "allow_remote", "job_mapping_dir")
_LISTEN = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[0-9.]+|localhost):(\d{1,5})")
HEALTH_KEYS = ("max_temperature", "retired_pages_pending", "remapped_rows_pending",
               "volatile_uncorrectable_ecc", "fatal_xids", "ignore_xids", "poll", "recover",
               "max_fault_restarts", "fault_restart_window", "demote_window", "demote_corrected_ecc")
SCORING_KEYS = ("free_memory", "utilization", "temperature")
CHOICES = {
    "sharing": ("exclusive", "shared"),
    "visible_devices": ("uuid", "index"),
    "topology": ("any", "prefer-nvlink", "require-nvlink"),
    "class": ("critical", "normal", "batch"),
    "install": ("env", "exec", "supervise"),
    "on_gpu_fault": ("restart", "stop", "ignore"),
    "placement": ("pack", "spread"),
    "preempt": ("never", "lower"),
    "when_preempted": ("requeue", "stop", "never"),
}
_READINESS = re.compile(r"(http://[A-Za-z0-9._-]+:\d{1,5}(/[!-~]*)?|tcp://[A-Za-z0-9._-]+:\d{1,5})")
_INSTALLABLE = re.compile(r"[A-Za-z0-9:_.\\-]+(@[A-Za-z0-9:_.\\-]*)?\.service|[A-Za-z0-9:_.\\-]+@\*\.service")
_GLOB_CHARS = set("0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ:-_.\\@*?[]!")
_SERVER_NAME = re.compile(r"[a-z0-9][a-z0-9._+-]{0,63}")


def _loopback(host):
    import ipaddress  # only a policy with `metrics: listen:` needs it

    return host == "localhost" or ipaddress.ip_address(host).is_loopback


def parse_policy_file(data, path):
    """Parse DATA, the bytes of the policy file PATH (policy/load.py reads them)."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise PolicyError(path, line, 1, None, "not valid UTF-8") from None
    return parse_policy(text, path)


def parse_policy(text, path="<policy>"):
    """Parse policy TEXT (named PATH in errors) into a Policy."""
    return _PolicyReader(path).policy(compose(text, path))


class _PolicyReader(NodeReader):
    """Walks the composed policy, building the Policy."""

    def __init__(self, path):
        super().__init__(path)
        self.base_dir = os.path.dirname(os.path.abspath(path)) if not path.startswith("<") else os.getcwd()

    def policy(self, root):
        """The Policy in ROOT (the composed document)."""
        if root is None:
            self.fail(None, None, "empty policy; expected a mapping starting with `version: 1`")
        pol = Policy(path=self.path)
        items = self.mapping(root, "", TOP_KEYS, 0)
        names = {name for name, _, _ in items}
        if "version" not in names:
            self.fail(root, "version", "missing; the first line of a policy is `version: 1`")
        readers = {"version": self.version, "inventory": self.inventory,
                   "discovery_timeout": self.discovery_timeout, "health": self.health,
                   "scoring": self.scoring, "reservations": self.reservations, "services": self.services,
                   "history_limit": self.history_limit, "isolate": self.isolate, "metrics": self.metrics,
                   "placement": self.placement, "handoff_timeout": self.handoff_timeout}
        for name, knode, vnode in items:
            readers[name](pol, vnode, name)
        self._check_shadowed(pol.services, items)
        return pol

    def version(self, pol, node, key):
        value = self.scalar(node, key, 1)
        if value != 1 or isinstance(value, bool):
            self.fail(node, key, f"this cortex-hook reads policy version 1, got {show(value)}")

    def inventory(self, pol, node, key):
        if isinstance(node, yaml.ScalarNode):
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

    def discovery_timeout(self, pol, node, key):
        pol.discovery_timeout = self.duration(node, key, 1)
        if pol.discovery_timeout <= 0:
            self.fail(node, key, "must be longer than 0s")

    def placement(self, pol, node, key):
        pol.placement = self.choice(node, key, 1, CHOICES["placement"])

    def handoff_timeout(self, pol, node, key):
        pol.handoff_timeout_seconds = self.duration(node, key, 1)
        if pol.handoff_timeout_seconds < 1:
            self.fail(node, key, "must be at least 1s (how long a start waits for the GPU memory of its "
                                 "previous holder)")

    def isolate(self, pol, node, key):
        pol.isolate = self.boolean(node, key, 1)

    def history_limit(self, pol, node, key):
        pol.history_limit = self.number(node, key, 1, minimum=1, integer=True)

    def metrics(self, pol, node, key):
        metrics, remote, listen_node = MetricsPolicy(), False, None
        for name, _, vnode in self.mapping(node, key, METRICS_KEYS, 1):
            path = f"{key}.{name}"
            if name == "allow_remote":
                remote = self.boolean(vnode, path, 2)
            elif name == "job_mapping_dir":
                value = self.string(vnode, path, 2, "an absolute directory")
                if not value.startswith("/") or "\n" in value or "/../" in value + "/":
                    self.fail(vnode, path, f"expected an absolute directory, got {show(value)}")
                metrics.job_mapping_dir = os.path.normpath(value)
            else:
                listen_node = vnode
                metrics.listen_host, metrics.listen_port = self.listen(vnode, path)
        if metrics.listen_host and not remote and not _loopback(metrics.listen_host):
            self.fail(listen_node, f"{key}.listen", f"{metrics.listen_host} is not a loopback address; the "
                      "metrics tell anyone who can reach them which services run where: use 127.0.0.1 (and a "
                      "proxy), or set `allow_remote: true` on purpose")
        pol.metrics = metrics

    def listen(self, node, key):
        """(host, port) from `HOST:PORT` (an IP address, `[IPv6]`, or localhost)."""
        value = self.string(node, key, 2, "HOST:PORT")
        m = _LISTEN.fullmatch(value)
        port = int(m.group(2)) if m else 0
        if not m or not 1 <= port <= 65535:
            self.fail(node, key, f"expected HOST:PORT with an IP address (127.0.0.1:9772), got {show(value)}")
        host = m.group(1).strip("[]")
        import ipaddress  # only a policy with `metrics: listen:` needs it

        try:
            ipaddress.ip_address("127.0.0.1" if host == "localhost" else host)
        except ValueError:
            self.fail(node, key, f"{host!r} is not an IP address (a name would be looked up at every start)")
        return host, port

    def health(self, pol, node, key):
        health = HealthPolicy()
        xids = {}  # fatal_xids / ignore_xids -> what xid_list read
        for name, _, vnode in self.mapping(node, key, HEALTH_KEYS, 1):
            path = f"{key}.{name}"
            if name == "max_temperature":
                value = self.scalar(vnode, path, 2)
                if value is not None:
                    value = self.number(vnode, path, 2, minimum=1, integer=True)
                health.max_temperature = value
            elif name in ("fatal_xids", "ignore_xids"):
                xids[name] = self.xid_list(vnode, path)
            elif name in ("max_fault_restarts", "demote_corrected_ecc"):
                setattr(health, name, self.number(vnode, path, 2, minimum=1, integer=True))
            elif name == "recover":
                health.recover_seconds = self.recover(vnode, path)
            elif name in ("poll", "fault_restart_window", "demote_window"):
                seconds = self.duration(vnode, path, 2)
                least = {"poll": 1, "fault_restart_window": 1, "demote_window": 0}[name]
                if seconds < least:
                    self.fail(vnode, path, f"must be at least {least}s, got {show(self.scalar(vnode, path, 2))}"
                              + (" (0 turns demotion off)" if name == "demote_window" else ""))
                setattr(health, f"{name}_seconds", seconds)
            else:
                setattr(health, name, self.boolean(vnode, path, 2))
        self._xid_lists(health, xids)
        pol.health = health

    def recover(self, node, key):
        """Seconds from a duration, or None for `never`."""
        value = self.scalar(node, key, 2)
        if value == "never":
            return None
        try:
            parse_duration(value)
        except (ValueError, OverflowError):
            self.fail(node, key, f"expected a duration such as 10m, or `never`, got {show(value)}")
        return self.duration(node, key, 2)

    def xid_list(self, node, key):
        """{xid: (its node, its key path)} of a list of XIDs (whole numbers, none twice)."""
        out = {}
        for i, item in enumerate(self.sequence(node, key, 2)):
            path = f"{key}[{i}]"
            xid = self.number(item, path, 3, minimum=1, integer=True)
            if xid in out:
                first = out[xid][0].start_mark.line + 1
                self.fail(item, path, f"XID {xid} is listed twice (first on line {first})")
            out[xid] = (item, path)
        return out

    def _xid_lists(self, health, xids):
        """Each list given replaces its default; an XID the admin names in one list leaves the
        other's default, and one named in both is refused with both lines."""
        fatal, ignore = xids.get("fatal_xids"), xids.get("ignore_xids")
        if fatal is not None and ignore is not None:
            for xid, (item, path) in ignore.items():
                if xid in fatal:
                    line = fatal[xid][0].start_mark.line + 1
                    self.fail(item, path, f"XID {xid} is also in fatal_xids (line {line}); an XID is either "
                                          "fatal or ignored")
        health.fatal_xids = tuple(fatal) if fatal is not None else \
            tuple(x for x in DEFAULT_FATAL_XIDS if x not in (ignore or {}))
        health.ignore_xids = tuple(ignore) if ignore is not None else \
            tuple(x for x in DEFAULT_IGNORE_XIDS if x not in (fatal or {}))

    def scoring(self, pol, node, key):
        scoring = ScoringPolicy()
        for name, _, vnode in self.mapping(node, key, SCORING_KEYS, 1):
            setattr(scoring, name, float(self.number(vnode, f"{key}.{name}", 2, minimum=0)))
        pol.scoring = scoring

    def reservations(self, pol, node, key):
        for uuid, knode, vnode in self.mapping(node, key, None, 1):
            path = f'{key}."{uuid}"'
            if not is_device_uuid(uuid):
                self.fail(knode, path, "reserve GPUs by UUID (GPU-… or MIG-…), since indices move; "
                                       "`cortex-hook status` shows them")
            if isinstance(vnode, yaml.SequenceNode):
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

    def services(self, pol, node, key):
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
                    hint = did_you_mean(value, [value.lower()]) if _SERVER_NAME.fullmatch(value.lower()) else ""
                    self.fail(vnode, path, f"not a plugin name: {value!r}{hint} "
                                           "(lower case letters, digits, . _ + -)")
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
            elif name == "preempt_grace":
                svc.preempt_grace_seconds = self.duration(vnode, path, 3)
                if svc.preempt_grace_seconds < 1:
                    self.fail(vnode, path, "must be at least 1s (the time a preempted server gets between "
                                           "SIGTERM and SIGKILL)")
            elif name == "watchdog":
                svc.watchdog_seconds = self.duration(vnode, path, 3)
                if svc.watchdog_seconds < 1:
                    self.fail(vnode, path, "must be at least 1s (systemd's WatchdogSec=)")
            elif name == "install":
                svc.install = self.choice(vnode, path, 3, CHOICES[name])
            elif name == "same_model":
                svc.same_model = self.boolean(vnode, path, 3)
            elif name == "cdi":
                svc.cdi = self.boolean(vnode, path, 3)
            elif name == "options":  # the server plugin checks these (cortex_validate_options)
                for key, knode, onode in self.mapping(vnode, path, None, 3):
                    svc.options[key] = self.plain(onode, f"{path}.{key}", 4)
                    svc.option_marks[key] = (knode.start_mark.line + 1, knode.start_mark.column + 1)
            else:
                value = self.choice(vnode, path, 3, CHOICES[name])
                setattr(svc, "klass" if name == "class" else name, value)
        node_of = {n: v for n, _, v in items}
        if svc.preempt == "lower" and svc.klass == "batch":
            self.fail(node_of["preempt"], f"{key}.preempt", "a batch service has no lower class to preempt "
                                                            "(critical > normal > batch)")
        if svc.install and not _INSTALLABLE.fullmatch(svc.match):
            self.fail(node_of["install"], f"{key}.install",
                      f"needs a unit name or NAME@*.service in match, not {svc.match!r} "
                      "(the generator cannot list the units other globs would match)")
        return svc

    def gpu_count(self, node, key):
        value = self.scalar(node, key, 3)
        if value == "all":
            return "all"
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 1024:
            self.fail(node, key, f"expected a count from 1 or `all`, got {show(value)}")
        return value

    def memory(self, node, key):
        value = self.scalar(node, key, 3)
        try:
            if isinstance(value, str) and value.strip().endswith("%"):
                return None, parse_fraction(value)
            size = parse_size(value)
        except (ValueError, OverflowError) as exc:
            self.fail(node, key, f"{exc} (or a share of the GPU such as 90%)")
        if size >= 1 << 60:
            self.fail(node, key, f"{show(value)} is more memory than any GPU has")
        return size, None

    def on_unavailable(self, node, key):
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
        self.fail(node, key, f"expected `fail`, `cpu` or `wait DURATION` (e.g. wait 5m), got {show(value)}")

    def _check_shadowed(self, services, items):
        """A later literal `match` that an earlier glob already covers is dead: say so."""
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
