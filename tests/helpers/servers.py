"""In-process checks of the server plugins: requests built as the planner builds them, every
plugin's prepare_launch and readiness_probe run on them, and the command lines of each server."""

from cortex_hook.model import Gpu, Launch
from cortex_hook.planner import plan

from . import builders
from .builders import GiB, uuid


LLAMA = ["llama-server", "-m", "/models/m.gguf", "--port", "18123"]
VLLM = ["vllm", "serve", "/models/m", "--port", "18124"]
TRITON = ["tritonserver", "--model-repository", "/models", "--http-port", "18125"]
POOL = "--cuda-memory-pool-byte-size"
MiB256 = 256 * 2**20
SGLANG = ["python", "-m", "sglang.launch_server", "--model-path", "/models/m", "--port", "18126"]
TGI = ["text-generation-launcher", "--model-id", "/models/m", "--port", "18127"]
OLLAMA = ["ollama", "serve"]
ALL = [("llama.cpp", LLAMA), ("vllm", VLLM), ("triton", TRITON), ("sglang", SGLANG), ("tgi", TGI),
       ("ollama", OLLAMA)]
UUID_NOTE = "vLLM gets PCI-bus-ordered indices, not UUIDs (it crashes on UUIDs: vllm#13815)"
ONE_DEVICE_FLAGS = {"llama.cpp": [], "vllm": ["--tensor-parallel-size", "1"], "triton": [f"{POOL}=0:{MiB256}"],
                    "sglang": ["--tp-size", "1"], "tgi": ["--num-shard", "1"], "ollama": []}
TWO_GPU_FLAGS = {"llama.cpp": ["--tensor-split", "24,20", "--main-gpu", "0"],
                 "vllm": ["--tensor-parallel-size", "2"], "triton": [f"{POOL}=0:{MiB256}", f"{POOL}=1:{MiB256}"],
                 "sglang": ["--tp-size", "2"], "tgi": ["--num-shard", "2"], "ollama": []}


def make_gpu(i, free=None, pci=None, **kw):
    """GPU i of an idle box: 24 GiB, with 24, 20, 16, 12 GiB free for GPUs 0..3 (so the planner
    ranks them 0, 1, 2, 3), PCI bus order = index order unless PCI says otherwise."""
    return builders.make_gpu(i, free=24 - 4 * i if free is None else free, name="NVIDIA L4", pci=pci, **kw)


def four_gpus(links=None, pci_reversed=False):
    """Four GPUs. LINKS: None = the driver does not say; else the NVLink pairs, e.g. [(0, 1)]."""
    gpus = [make_gpu(i, pci=f"00000000:{0x40 - 0x10 * i:02X}:00.0" if pci_reversed else None) for i in range(4)]
    if links is not None:
        for g in gpus:
            g.nvlink_peers = frozenset(uuid(b if a == g.index else a) for a, b in links if g.index in (a, b))
    return gpus


MIG_UUID = "MIG-11111111-2222-4333-8444-555555555555"


def mig_gpus():
    """One GPU in MIG mode (not schedulable itself) with one 3g.40gb instance."""
    parent = make_gpu(0, mig_enabled=True)
    inst = Gpu(index=0, uuid=MIG_UUID, name="NVIDIA A100 MIG 3g.40gb", pci_bus_id=parent.pci_bus_id,
               memory_total=40 * GiB, memory_free=40 * GiB, memory_used=0, utilization=0, temperature=40,
               numa_node=0, parent_uuid=parent.uuid, mig_index=0)
    return [parent, inst]


def make_request(server, gpus, n=1, options=None, visible_devices="uuid", **svc):
    """The request of `llm.service`, served by SERVER, for N of GPUS."""
    return builders.make_request(gpus, unit="llm.service", server=server, gpus=n, visible_devices=visible_devices,
                                 options=dict(options or {}), **svc)


def prepare(plugins, server, argv, n=1, gpus=None, env=None, mode=None, **svc):
    """Plan for SERVER on GPUS (four_gpus() by default) and let every plugin prepare the launch of
    ARGV (None: env-file mode, unless MODE, Launch.mode, says otherwise). Returns (decision, launch)."""
    request = make_request(server, four_gpus() if gpus is None else gpus, n, **svc)
    decision = plan(plugins, request)
    assert decision.ok, decision.summary
    launch = Launch(argv=None if argv is None else list(argv), env=dict(env or {}), mode=mode)
    plugins.prepare_launch(request, decision, launch)
    return decision, launch


def probe_for(plugins, server, argv=None, env=None, **svc):
    """The readiness probe the plugins give SERVER's service for ARGV and ENV."""
    request = make_request(server, four_gpus(), 1, **svc)
    return plugins.readiness_probe(request, Launch(argv=argv, env=dict(env or {})))


def notes_text(launch):
    """Every note of LAUNCH, one per line."""
    return "\n".join(launch.notes)


def check_rewrite(launch, expected_argv, notes_in=(), notes_out=()):
    """LAUNCH's argv is EXPECTED_ARGV, and its notes say every NOTES_IN and no NOTES_OUT."""
    assert launch.argv == expected_argv
    text = notes_text(launch)
    for needle in notes_in:
        assert needle in text, (needle, launch.notes)
    for needle in notes_out:
        assert needle not in text, (needle, launch.notes)


def uuids(*indices):
    """The UUIDs of GPUs INDICES, as CUDA_VISIBLE_DEVICES lists them."""
    return ",".join(uuid(i) for i in indices)


THEIRS = "(options.flags: theirs keeps the command's)"
