"""Built-in `nvml` inventory: what the driver says about every GPU now, through nvidia-ml-py.

A query the board does not support (NOT_SUPPORTED) leaves that fact unknown; a query that fails
otherwise is recorded in `Gpu.problems`; a GPU that answers GPU_IS_LOST is reported as lost.
The whole discovery runs under a timeout, because nvmlInit can hang on a broken driver.
"""

import threading

from ...errors import DriverError, TimeoutExpired
from ...model import Gpu, Process
from ...rules import assign_cuda_indices
from ..markers import hookimpl


@hookimpl
def cortex_discover_gpus(policy, detail):
    """Ask NVML about every GPU (under `policy.discovery_timeout`)."""
    if policy.inventory != "nvml":
        return None
    return run_with_timeout(lambda: discover(detail), policy.discovery_timeout)


def run_with_timeout(fn, timeout):
    """Run FN in a daemon thread; TimeoutExpired if it does not return within TIMEOUT seconds.

    A thread stuck inside the driver cannot be cancelled, but a daemon thread does not keep the
    process alive, so the start fails cleanly instead of hanging until systemd's own timeout.
    """
    box = {}

    def target():
        try:
            box["value"] = fn()
        except BaseException as exc:  # handed to the caller's thread below
            box["error"] = exc

    worker = threading.Thread(target=target, name="nvml-discovery", daemon=True)
    worker.start()
    worker.join(timeout)
    if worker.is_alive():
        raise TimeoutExpired(f"the NVIDIA driver did not answer within {timeout:g}s (hung driver?); "
                             "set discovery_timeout in the policy to wait longer")
    if "error" in box:
        raise box["error"]
    return box["value"]


def discover(detail=frozenset()):
    """Every GPU (and MIG instance) NVML sees, as a list of Gpu."""
    try:
        import pynvml as N  # only for this inventory (~22 ms of import)
    except ImportError as exc:
        raise DriverError(f"nvidia-ml-py is not installed ({exc})") from None
    try:
        N.nvmlInit()
    except N.NVMLError_LibraryNotFound:
        raise DriverError("NVIDIA driver library libnvidia-ml.so.1 not found "
                          "(is the NVIDIA driver installed and loaded?)") from None
    except N.NVMLError as exc:
        raise DriverError(f"NVML initialisation failed: {exc}") from None
    try:
        try:
            count = N.nvmlDeviceGetCount()
        except N.NVMLError as exc:
            raise DriverError(f"NVML cannot count GPUs: {exc}") from None
        reader = _Reader(N, detail)
        gpus, handles = [], {}
        for index in range(count):
            gpu, handle = reader.gpu(index)
            gpus.append(gpu)
            if handle is not None and not gpu.lost:
                handles[gpu.uuid] = handle
                if gpu.mig_enabled:
                    gpus.extend(reader.mig_devices(gpu, handle))
        if "topology" in detail:
            reader.topology([g for g in gpus if not g.is_mig and g.uuid in handles], handles)
        assign_cuda_indices(gpus)
        return gpus
    finally:
        try:
            N.nvmlShutdown()
        except N.NVMLError:
            pass


class _Lost(Exception):
    pass


class _Reader:
    """One pass over the devices; collects problems instead of raising on unsupported queries."""

    def __init__(self, N, detail):
        self.N = N
        self.detail = detail
        self.problems = []

    def q(self, what, fn, *args, **kwargs):
        """Call an NVML query; None when unsupported or failed (failure noted in problems)."""
        N = self.N
        try:
            return fn(*args, **kwargs)
        except N.NVMLError_NotSupported:
            return None
        except N.NVMLError_GpuIsLost:
            raise _Lost() from None
        except N.NVMLError_FunctionNotFound:
            self.problems.append(f"{what}: not provided by this driver")
        except N.NVMLLibraryMismatchError:  # not an NVMLError subclass: caught on its own
            self.problems.append(f"{what}: driver and nvidia-ml-py versions do not match")
        except N.NVMLError as exc:
            self.problems.append(f"{what}: {exc}")
        return None

    def gpu(self, index):
        N = self.N
        self.problems = []
        handle = uuid = None
        try:
            handle = self.q("handle", N.nvmlDeviceGetHandleByIndex, index)
            if handle is None:
                return Gpu(index=index, uuid=None, problems=tuple(self.problems)), None
            uuid = self.q("uuid", N.nvmlDeviceGetUUID, handle)
            gpu = Gpu(index=index, uuid=uuid)
            gpu.name = self.q("name", N.nvmlDeviceGetName, handle) or "?"
            pci = self.q("pci", N.nvmlDeviceGetPciInfo, handle)
            gpu.pci_bus_id = _text(pci.busId) if pci is not None else None
            gpu.minor = self.q("minor number", N.nvmlDeviceGetMinorNumber, handle)
            self.memory(gpu, handle)
            util = self.q("utilization", N.nvmlDeviceGetUtilizationRates, handle)
            gpu.utilization = util.gpu if util is not None else None
            gpu.temperature = self.q("temperature", N.nvmlDeviceGetTemperature, handle, N.NVML_TEMPERATURE_GPU)
            if "full" in self.detail:  # facts shown by `status`, never used by a decision
                gpu.power_mw = self.q("power", N.nvmlDeviceGetPowerUsage, handle)
                gpu.power_limit_mw = self.q("power limit", N.nvmlDeviceGetEnforcedPowerLimit, handle)
                cc = self.q("compute capability", N.nvmlDeviceGetCudaComputeCapability, handle)
                gpu.compute_capability = f"{cc[0]}.{cc[1]}" if cc else None
            if self.detail & {"full", "topology"} and hasattr(N, "nvmlDeviceGetNumaNodeId"):
                gpu.numa_node = self.q("NUMA node", N.nvmlDeviceGetNumaNodeId, handle)
            self.health(gpu, handle)
            mig = self.q("MIG mode", N.nvmlDeviceGetMigMode, handle)
            gpu.mig_enabled = bool(mig[0]) if mig is not None else None
            if "processes" in self.detail:
                gpu.processes = self.processes(handle)
        except _Lost:
            return Gpu(index=index, uuid=uuid, lost=True, problems=("the driver reports GPU_IS_LOST",)), None
        gpu.problems = tuple(self.problems)
        return gpu, handle

    def memory(self, gpu, handle):
        N = self.N
        try:
            mem = N.nvmlDeviceGetMemoryInfo(handle, version=N.nvmlMemory_v2)
        except N.NVMLError_FunctionNotFound:  # drivers before the v2 struct: v1 `used` includes reserved
            mem = self.q("memory", N.nvmlDeviceGetMemoryInfo, handle)
        except N.NVMLError_GpuIsLost:
            raise _Lost() from None
        except N.NVMLError as exc:
            if not isinstance(exc, N.NVMLError_NotSupported):
                self.problems.append(f"memory: {exc}")
            mem = None
        if mem is not None:
            gpu.memory_total, gpu.memory_used, gpu.memory_free = mem.total, mem.used, mem.free

    def health(self, gpu, handle):
        N = self.N
        gpu.ecc_volatile_uncorrected = self.q(
            "volatile uncorrectable ECC", N.nvmlDeviceGetTotalEccErrors, handle,
            N.NVML_MEMORY_ERROR_TYPE_UNCORRECTED, N.NVML_VOLATILE_ECC)
        if "monitor" in self.detail:  # corrected errors are trouble, not a fault: only the monitor counts them
            gpu.ecc_volatile_corrected = self.q(
                "volatile corrected ECC", N.nvmlDeviceGetTotalEccErrors, handle,
                N.NVML_MEMORY_ERROR_TYPE_CORRECTED, N.NVML_VOLATILE_ECC)
        pending = self.q("retired pages", N.nvmlDeviceGetRetiredPagesPendingStatus, handle)
        gpu.retired_pages_pending = bool(pending) if pending is not None else None
        rows = self.q("remapped rows", N.nvmlDeviceGetRemappedRows, handle)
        if rows is not None:
            gpu.remapped_rows_pending, gpu.remapped_rows_failure = bool(rows[2]), bool(rows[3])

    def processes(self, handle):
        procs = self.q("processes", self.N.nvmlDeviceGetComputeRunningProcesses, handle)
        if procs is None:
            return None
        return tuple(Process(pid=p.pid, used_memory=_memory_or_none(p.usedGpuMemory)) for p in procs)

    def mig_devices(self, parent, handle):
        N = self.N
        out = []
        self.problems = []
        try:
            count = self.q("MIG device count", N.nvmlDeviceGetMaxMigDeviceCount, handle) or 0
        except _Lost:
            parent.lost = True
            return []
        parent.problems += tuple(self.problems)  # a failed listing must show on the parent
        for j in range(count):
            self.problems = []
            try:
                mh = N.nvmlDeviceGetMigDeviceHandleByIndex(handle, j)
            except N.NVMLError_NotFound:
                continue
            except N.NVMLError_GpuIsLost:
                parent.lost = True
                return []
            except N.NVMLError as exc:
                parent.problems += (f"MIG instance {j}: {exc}",)
                continue
            try:
                gpu = Gpu(index=parent.index, uuid=self.q("MIG uuid", N.nvmlDeviceGetUUID, mh),
                          name=self.q("MIG name", N.nvmlDeviceGetName, mh) or parent.name + " MIG",
                          pci_bus_id=parent.pci_bus_id, minor=parent.minor,
                          temperature=parent.temperature,
                          compute_capability=parent.compute_capability, numa_node=parent.numa_node,
                          ecc_volatile_uncorrected=parent.ecc_volatile_uncorrected,
                          retired_pages_pending=parent.retired_pages_pending,
                          remapped_rows_pending=parent.remapped_rows_pending,
                          remapped_rows_failure=parent.remapped_rows_failure,
                          parent_uuid=parent.uuid, mig_index=len(out))
                self.memory(gpu, mh)
                if "processes" in self.detail:
                    gpu.processes = self.processes(mh)
            except _Lost:  # this instance only
                gpu = Gpu(index=parent.index, uuid=None, lost=True, parent_uuid=parent.uuid,
                          mig_index=len(out))
            gpu.problems = tuple(self.problems)
            out.append(gpu)
        return out

    def topology(self, gpus, handles):
        """NVLink peers and PCIe common-ancestor levels between every pair of whole GPUs."""
        N = self.N
        answered = {g.uuid: 0 for g in gpus}
        for gpu in gpus:
            gpu.nvlink_peers = frozenset()
        for i, a in enumerate(gpus):
            for b in gpus[i + 1:]:
                ha, hb = handles[a.uuid], handles[b.uuid]
                self.problems = []
                try:
                    level = self.q("PCIe topology", N.nvmlDeviceGetTopologyCommonAncestor, ha, hb)
                    status = self.q("NVLink", N.nvmlDeviceGetP2PStatus, ha, hb, N.NVML_P2P_CAPS_INDEX_NVLINK)
                except _Lost:
                    continue
                if level is not None:
                    a.topology[b.uuid] = b.topology[a.uuid] = level
                if not any(p.startswith("NVLink") for p in self.problems):
                    answered[a.uuid] += 1
                    answered[b.uuid] += 1
                if status == N.NVML_P2P_STATUS_OK:
                    a.nvlink_peers |= {b.uuid}
                    b.nvlink_peers |= {a.uuid}
                for gpu in (a, b):
                    gpu.problems += tuple(p for p in self.problems if p not in gpu.problems)
        if len(gpus) > 1:
            for gpu in gpus:  # no pair query answered: its NVLink is unknown, not absent
                if not answered[gpu.uuid]:
                    gpu.nvlink_peers = None


def _text(value):
    return value.decode() if isinstance(value, bytes) else value


def _memory_or_none(value):
    # NVML reports NVML_VALUE_NOT_AVAILABLE (all ones) when it cannot attribute memory
    return None if value is None or value >= (1 << 64) - 1 else value
