"""Built-in `simulated` inventory: the same GPU facts as NVML, read from a YAML or JSON file.

For the demo, for planning a policy on a laptop, and for tests. The keys are those of the fake
NVML driver's JSON (../shared/tools/fake-nvml), so one description can feed both; a key that is
absent means "unknown", as NOT_SUPPORTED does with the real driver.
"""

import os

from ...errors import DriverError, PolicyError
from ...model import Gpu, Process
from ...quantities import parse_size
from ...rules import assign_cuda_indices, normalize_pci
from ..markers import hookimpl

_LEVELS = {"INTERNAL": 0, "SINGLE": 10, "PIX": 10, "MULTIPLE": 20, "PXB": 20, "HOSTBRIDGE": 30,
           "PHB": 30, "NODE": 40, "CPU": 40, "SYSTEM": 50, "SYS": 50}


@hookimpl
def cortex_discover_gpus(policy, detail):
    """Read the GPUs from the policy's `inventory: {simulated: FILE}`."""
    if policy.inventory != "simulated":
        return None
    return load_simulated(policy.simulated_file)


def load_simulated(path):
    """Parse a simulated-GPU file into a list of Gpu (PolicyError naming file and key if bad)."""
    import yaml  # only for this inventory: the start path of an NVML host never loads YAML
    try:
        with open(path, encoding="utf-8") as f:
            doc = yaml.load(f, Loader=yaml.SafeLoader)  # (see policy.py: no C-stack recursion)
    except OSError as exc:
        raise PolicyError(path, 0, 0, "inventory.simulated", f"cannot read: {exc.strerror}") from None
    except RecursionError:
        raise PolicyError(path, 0, 0, None, "nested too deeply") from None
    except (yaml.YAMLError, ValueError) as exc:
        mark = getattr(exc, "problem_mark", None)
        raise PolicyError(path, mark.line + 1 if mark else 0, mark.column + 1 if mark else 0, None,
                          f"invalid YAML/JSON: {getattr(exc, 'problem', exc)}") from None
    return _Builder(path).build(doc)


class _Builder:
    def __init__(self, path):
        self.path = path

    def fail(self, key, message):
        raise PolicyError(self.path, 0, 0, key, message)

    def build(self, doc):
        if not isinstance(doc, dict) or not isinstance(doc.get("gpus"), list):
            self.fail("gpus", "expected a mapping with a `gpus:` list")
        if doc.get("init_error"):
            raise DriverError(f"simulated driver: init failed ({doc['init_error']})")
        described = doc["gpus"]
        count = doc.get("count", len(described))
        if isinstance(count, bool) or not isinstance(count, int) or count < 0 or (count and not described):
            self.fail("count", f"expected a number of GPUs (with at least one description), got {count!r}")
        gpus, whole = [], []
        for i in range(count):
            # as the fake driver does: a count beyond the list repeats the last description,
            # each copy with its own identity (UUID, PCI bus id, minor number)
            desc = described[min(i, len(described) - 1)]
            if not isinstance(desc, dict):
                self.fail(f"gpus[{i}]", "expected a mapping describing one GPU")
            if i >= len(described):
                desc = {k: v for k, v in desc.items() if k not in ("uuid", "pci_bus_id", "minor_number", "serial")}
            gpu = self.gpu(i, desc, f"gpus[{min(i, len(described) - 1)}]")
            whole.append((gpu, desc))
            gpus.append(gpu)
            if gpu.mig_enabled and not gpu.lost:
                instances = self.mig_devices(gpu, desc, f"gpus[{i}]")
                if "memory_used" not in desc:  # the driver counts its instances' memory as used
                    self.add_instances_memory(gpu, instances)
                gpus.extend(instances)
        self.link(whole)
        assign_cuda_indices(gpus)
        return gpus

    def size(self, desc, key, where):
        if key not in desc:
            return None
        try:
            return parse_size(desc[key])
        except ValueError as exc:
            self.fail(f"{where}.{key}", str(exc))

    def integer(self, desc, key, where):
        value = desc.get(key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail(f"{where}.{key}", f"expected an integer, got {value!r}")
        return value

    def processes(self, desc, where):
        procs = desc.get("processes")
        if procs is None:
            return ()
        if not isinstance(procs, list):
            self.fail(f"{where}.processes", "expected a list")
        out = []
        for j, p in enumerate(procs):
            w = f"{where}.processes[{j}]"
            if not isinstance(p, dict):
                self.fail(w, "expected a mapping with pid and used_memory")
            pid = p.get("pid")
            pid = os.getpid() if pid == "self" else os.getppid() if pid == "parent" else pid
            if isinstance(pid, bool) or not isinstance(pid, int):
                self.fail(f"{w}.pid", f"expected a number, got {pid!r}")
            out.append(Process(pid=pid, used_memory=self.size(p, "used_memory", w)))
        return tuple(out)

    def memory(self, gpu, desc, where, processes):
        total = self.size(desc, "memory_total", where)
        reserved = self.size(desc, "memory_reserved", where) or 0
        used = self.size(desc, "memory_used", where)
        if used is None:
            used = sum(p.used_memory or 0 for p in processes)
        if total is not None:
            used = min(used, total - reserved)
            gpu.memory_total, gpu.memory_used = total, used
            gpu.memory_free = total - reserved - used

    def gpu(self, index, desc, where):
        if desc.get("lost"):
            return Gpu(index=index, uuid=None, name="?", lost=True)
        uuid = desc.get("uuid") or f"GPU-fa4e0000-0000-4000-8000-{index + 1:012x}"
        procs = self.processes(desc, where)
        gpu = Gpu(index=index, uuid=str(uuid), name=str(desc.get("name", "Simulated GPU")),
                  pci_bus_id=_bus_id(desc.get("pci_bus_id", f"00000000:{0x18 + 0x10 * index:02X}:00.0")),
                  minor=self.integer(desc, "minor_number", where) if "minor_number" in desc else index,
                  utilization=self.integer(desc, "utilization_gpu", where),
                  temperature=self.integer(desc, "temperature", where),
                  power_mw=self.integer(desc, "power_usage_mw", where),
                  power_limit_mw=self.integer(desc, "power_limit_mw", where),
                  compute_capability=_cc(desc.get("compute_capability")),
                  numa_node=self.integer(desc, "numa_node", where),
                  processes=procs)
        self.memory(gpu, desc, where, procs)
        ecc = desc.get("ecc_errors")
        if isinstance(ecc, dict):
            gpu.ecc_volatile_uncorrected = self.integer(ecc, "volatile_uncorrected", f"{where}.ecc_errors") or 0
        retired = desc.get("retired_pages")
        if isinstance(retired, dict):
            gpu.retired_pages_pending = bool(retired.get("pending", 0))
        elif "retired_pages_pending" in desc:
            gpu.retired_pages_pending = bool(desc["retired_pages_pending"])
        rows = desc.get("remapped_rows")
        if isinstance(rows, dict):
            gpu.remapped_rows_pending = bool(rows.get("pending", 0))
            gpu.remapped_rows_failure = bool(rows.get("failure", 0))
        mig = desc.get("mig_mode")
        if mig is not None:
            gpu.mig_enabled = bool(mig.get("current", 0) if isinstance(mig, dict) else mig)
        return gpu

    def mig_devices(self, parent, desc, where):
        out = []
        for j, m in enumerate(desc.get("mig_devices") or []):
            w = f"{where}.mig_devices[{j}]"
            if not isinstance(m, dict):
                self.fail(w, "expected a mapping describing one MIG instance")
            uuid = m.get("uuid") or f"MIG-fa4e0000-0000-4000-8000-{(parent.index + 1) * 256 + j:012x}"
            procs = self.processes(m, w)
            gpu = Gpu(index=parent.index, uuid=str(uuid), name=str(m.get("name", parent.name + " MIG")),
                      pci_bus_id=parent.pci_bus_id, minor=parent.minor, temperature=parent.temperature,
                      compute_capability=parent.compute_capability, numa_node=parent.numa_node,
                      ecc_volatile_uncorrected=parent.ecc_volatile_uncorrected,
                      retired_pages_pending=parent.retired_pages_pending,
                      remapped_rows_pending=parent.remapped_rows_pending,
                      remapped_rows_failure=parent.remapped_rows_failure,
                      parent_uuid=parent.uuid, mig_index=j, processes=procs)
            self.memory(gpu, m, w, procs)
            out.append(gpu)
        return out

    @staticmethod
    def add_instances_memory(parent, instances):
        used = sum(g.memory_used or 0 for g in instances)
        parent.processes = tuple(parent.processes or ()) + tuple(p for g in instances for p in g.processes or ())
        if parent.memory_total is not None:
            parent.memory_used = min((parent.memory_used or 0) + used, parent.memory_total)
            parent.memory_free = max(0, (parent.memory_free or 0) - used)

    def link(self, whole):
        """NVLink peers (mirrored when only one side declares them) and PCIe levels."""
        by_index = {g.index: g for g, _ in whole}
        peers = {g.index: set() for g, _ in whole}
        for gpu, desc in whole:
            for peer, count in ((desc.get("nvlink") or {}).get("peers") or {}).items():
                try:
                    p = int(peer)
                except (TypeError, ValueError):
                    self.fail(f"gpus[{gpu.index}].nvlink.peers", f"peer {peer!r} is not a GPU index")
                if p in by_index and p != gpu.index and count:
                    peers[gpu.index].add(p)
                    peers[p].add(gpu.index)
        for gpu, desc in whole:
            if gpu.lost:
                continue
            gpu.nvlink_peers = frozenset(by_index[p].uuid for p in peers[gpu.index] if by_index[p].uuid)
            declared = desc.get("topology") or {}
            for other, odesc in whole:
                if other is gpu or other.lost:
                    continue
                level = declared.get(str(other.index), (odesc.get("topology") or {}).get(str(gpu.index)))
                if isinstance(level, str):
                    level = _LEVELS.get(level.upper().removeprefix("NVML_TOPOLOGY_"))
                if level is None:
                    level = 40 if gpu.numa_node == other.numa_node else 50
                gpu.topology[other.uuid] = level


def _bus_id(text):
    """A PCI bus id in NVML's `00000000:18:00.0` form (as written when it is not one)."""
    return normalize_pci(text) or str(text).strip()


def _cc(value):
    if value is None:
        return None
    if isinstance(value, (list, tuple)) and len(value) >= 2:
        return f"{value[0]}.{value[1]}"
    return str(value)
