"""In-process builders: GPUs, requests and the plugins, for tests that call the planner and the
hooks directly (the CLI tests describe GPUs with fakegpu.gpu_desc instead)."""

from cortex_hook.model import Gpu, Policy, Request, ServicePolicy, Snapshot
from cortex_hook.rules import assign_cuda_indices

from .fakegpu import uuid_of as uuid


GiB = 2**30


def make_gpu(i, free=24, total=24, name=None, pci=None, **facts):
    """GPU I: TOTAL GiB with FREE GiB free, idle, 40°C, NUMA node 0, PCI bus order = index order
    unless PCI says otherwise; FACTS override any Gpu field."""
    known = dict(utilization=0, temperature=40, numa_node=0)
    known.update(facts)
    return Gpu(index=i, uuid=uuid(i), name=name or f"GPU{i}", pci_bus_id=pci or f"00000000:{0x10 + i:02X}:00.0",
               memory_total=total * GiB, memory_free=free * GiB, memory_used=(total - free) * GiB, **known)


def make_request(devices, unit="u.service", policy=None, snapshot=None, visible=None, own_pids=frozenset(),
                 **service):
    """The Request for UNIT on DEVICES (their CUDA indices assigned), with one service made of
    SERVICE's ServicePolicy fields (e.g. gpus=2, server="vllm")."""
    assign_cuda_indices(devices)
    svc = ServicePolicy(match="*", **service)
    policy = policy or Policy()
    policy.services = [svc]
    return Request(unit=unit, service=svc, policy=policy, snapshot=snapshot or Snapshot(), gpus=devices,
                   visible=visible, visible_text=None if visible is None else ",".join(visible),
                   own_pids=own_pids)
