"""One NVML event set for every GPU: XID critical errors, double-bit ECC, and (newer drivers) GPU
unavailable and recovery-action events. A GPU that cannot register is polled instead, and says why.

NVML keeps no events from before registration; `wait` returns None on its timeout.
"""

import ctypes

from ..records import FrozenRecord

# NVML event bits we act on, by name (pynvml's nvmlEventType*)
WANTED = {0x8: "xid", 0x2: "dbe", 0x4000: "gpu-unavailable", 0x8000: "recovery-action"}


class Event(FrozenRecord):
    """One event: the GPU's UUID (None when the driver could not say which), its kind, its data
    (the XID number for `xid`)."""

    uuid: str | None
    kind: str
    data: int = 0


def _address(handle):
    return ctypes.cast(handle, ctypes.c_void_p).value


class EventSet:
    """The event set of one NVML session (N: pynvml, initialised by the caller)."""

    def __init__(self, N):
        self.N = N
        self.handle = N.nvmlEventSetCreate()
        self.registered = {}  # uuid -> mask
        self.polled = {}  # uuid -> why it is polled only
        self._uuids = {}  # device handle address -> uuid

    def register(self, uuid, device):
        """Register DEVICE (whose UUID is UUID) for the fault events it supports."""
        N = self.N
        try:
            supported = N.nvmlDeviceGetSupportedEventTypes(device)
        except N.NVMLError as exc:
            self.polled[uuid] = f"cannot list its event types ({exc})"
            return
        mask = sum(bit for bit in WANTED if supported & bit)
        if not mask:
            self.polled[uuid] = "it supports none of the fault events"
            return
        try:
            N.nvmlDeviceRegisterEvents(device, mask, self.handle)
        except N.NVMLError as exc:
            self.polled[uuid] = f"event registration failed ({exc})"
            return
        self.registered[uuid] = mask
        self._uuids[_address(device)] = uuid

    def wait(self, timeout_ms):
        """The next event, or None after TIMEOUT_MS without one. A wait the driver fails (a GPU
        fell off the bus) is an Event with no UUID: the caller polls every GPU at once."""
        N = self.N
        try:
            data = N.nvmlEventSetWait_v2(self.handle, max(0, int(timeout_ms)))
        except N.NVMLError_Timeout:
            return None
        except N.NVMLError as exc:
            return Event(None, "wait-failed", 0) if not isinstance(exc, N.NVMLError_NotSupported) else None
        uuid = self._uuids.get(_address(data.device))
        if uuid is None:
            try:
                uuid = N.nvmlDeviceGetUUID(data.device)
            except N.NVMLError:
                uuid = None
        kind = WANTED.get(data.eventType, f"event 0x{data.eventType:x}")
        return Event(uuid, kind, int(data.eventData))

    def close(self):
        """Free the event set."""
        try:
            self.N.nvmlEventSetFree(self.handle)
        except self.N.NVMLError:
            pass
