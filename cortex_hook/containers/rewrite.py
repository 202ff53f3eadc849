"""A container engine's command line given exactly the chosen GPUs: the GPU requests it had
(`--device nvidia.com/gpu=…`, `--gpus …`, `-e NVIDIA_VISIBLE_DEVICES=…`) replaced by one CDI
device per chosen GPU (`--device nvidia.com/gpu=<UUID>`, the name `nvidia-ctk cdi generate` gives
every GPU and MIG device: podman, and docker when the unit asked by CDI) or docker's own
`--gpus '"device=<UUID>,…"'`, the server's environment passed with `--env`, and the server's own
command (as the plugins rewrote it) after the image.

Inside the container only the chosen GPUs exist, numbered from 0 in PCI bus order: an index in
CUDA_VISIBLE_DEVICES is renumbered to that (a UUID names the same GPU inside and out).
"""

from .split import Option, join

CDI_KIND = "nvidia.com/gpu"
GPU_ENV = ("NVIDIA_VISIBLE_DEVICES",)


def is_gpu_request(option):
    """True for an engine option that asks for GPUs (which the chosen GPUs replace)."""
    value = option.value or ""
    if option.name == "--device":
        return value.startswith(CDI_KIND + "=")
    if option.name == "--gpus":
        return True
    if option.name in ("-e", "--env"):
        return value.partition("=")[0] in GPU_ENV
    return False


def inside_env(env, chosen):
    """ENV (the server's) as the container needs it: an index list in CUDA_VISIBLE_DEVICES renumbered
    to the chosen GPUs' places inside (PCI bus order among them)."""
    out = dict(env)
    visible = out.get("CUDA_VISIBLE_DEVICES", "")
    if chosen and visible and all(part.isdigit() for part in visible.split(",")):
        order = sorted(chosen, key=lambda g: ((g.pci_bus_id or "~").upper(), g.index))
        place = {g.cuda_index: str(order.index(g)) for g in chosen}
        out["CUDA_VISIBLE_DEVICES"] = ",".join(place.get(int(part), part) for part in visible.split(","))
    return out


def contain(parts, launch, chosen):
    """PARTS (split.Split) with CHOSEN's devices, LAUNCH.env and LAUNCH.argv (the server's command
    inside, as the plugins rewrote it): the engine's command line, and notes on what changed."""
    notes = []
    dropped = [o for o in parts.options if is_gpu_request(o)]
    options = [o for o in parts.options if not is_gpu_request(o)]
    if dropped:
        notes.append("container: replaced " + " ".join(w for o in dropped for w in o.words))
    cdi = parts.name == "podman" or any(o.name == "--device" for o in dropped)
    if cdi:
        for gpu in chosen:
            options.append(Option("--device", f"{CDI_KIND}={gpu.uuid}", ["--device", f"{CDI_KIND}={gpu.uuid}"]))
    elif chosen:  # docker's own request; quoted, since docker reads it as CSV and UUIDs are comma-joined
        value = '"device=' + ",".join(g.uuid for g in chosen) + '"'
        options.append(Option("--gpus", value, ["--gpus", value]))
    for name, value in inside_env(launch.env, chosen).items():
        options.append(Option("--env", f"{name}={value}", [f"--env={name}={value}"]))
    parts.options = options
    parts.command = list(launch.argv)
    return join(parts), notes


def published(parts):
    """{port inside: port on the host} the engine options publish (`-p [IP:]HOST:INSIDE[/tcp]`),
    or {"*": "*"} for the host's network (`--network host`, `--net=host`)."""
    ports = {}
    for option in parts.options:
        value = option.value or ""
        if option.name in ("--network", "--net") and value == "host":
            return {"*": "*"}
        if option.name in ("-p", "--publish"):
            spec, _, proto = value.partition("/")
            fields = spec.rsplit(":", 2)
            if proto in ("", "tcp") and len(fields) >= 2 and fields[-1].isdigit() and fields[-2].isdigit():
                ports.setdefault(fields[-1], fields[-2])
    return ports
