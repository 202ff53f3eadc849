"""cortex-hook plugin for llama.cpp's llama-server (`server: llama.cpp`).

- More than one GPU: `--tensor-split` in proportion to each chosen GPU's free memory, and
  `--main-gpu 0` (the first visible device is the highest-priority GPU), unless the command (or
  LLAMA_ARG_TENSOR_SPLIT / LLAMA_ARG_MAIN_GPU) sets them: `options.flags` decides who wins.
- GGML_VK_VISIBLE_DEVICES as well, since Vulkan builds ignore CUDA_VISIBLE_DEVICES (it assumes
  Vulkan lists the GPUs in PCI bus order, as the NVIDIA driver does on Linux).
- Ready: `GET /health` 200 `{"status": "ok"}`; 503 "Loading model" and a closed port mean wait.
  Host and port from --host/--port, else LLAMA_ARG_HOST/LLAMA_ARG_PORT, else 127.0.0.1:8080.
"""

from cortex_hook import hookimpl
from cortex_hook import serverkit as kit

NAME = "llama.cpp"
OPTIONS = dict(kit.COMMON_OPTIONS)


@hookimpl
def cortex_server_names():
    """This plugin serves `server: llama.cpp`."""
    return [NAME]


@hookimpl
def cortex_validate_options(service):
    """Only `flags: theirs|ours`."""
    return kit.check_keys(service.options, OPTIONS)


def tensor_split(request, gpus):
    """Free memory of each GPU in GiB (one decimal), in the chosen order; equal parts if unknown.
    Memory held by this unit's own previous processes counts as free, as when choosing."""
    free = [kit.free_memory(request, g) for g in gpus]
    if any(f is None for f in free):
        return ",".join("1" for _ in gpus), "equal parts (free memory unknown)"
    return ",".join(f"{f / 2**30:.1f}".rstrip("0").rstrip(".") or "0" for f in free), \
        "in proportion to each GPU's free memory (GiB)"


@hookimpl
def cortex_prepare_launch(request, decision, launch):
    """Tensor split and main GPU for several GPUs; the Vulkan device list."""
    gpus = decision.chosen
    whole = [g for g in gpus if not g.is_mig and g.cuda_index is not None]
    if whole:
        launch.env["GGML_VK_VISIBLE_DEVICES"] = ",".join(str(g.cuda_index) for g in whole)
    if len(gpus) > 1:
        split, why = tensor_split(request, gpus)
        kit.set_flag(request, launch, ("--tensor-split", "-ts"), split, ("LLAMA_ARG_TENSOR_SPLIT",), why)
        kit.set_flag(request, launch, ("--main-gpu", "-mg"), 0, ("LLAMA_ARG_MAIN_GPU",),
                     f"{gpus[0].label} (the first chosen, highest-ranked GPU)")


@hookimpl
def cortex_readiness_probe(request, launch):
    """GET /health on llama-server's --host/--port."""
    from cortex_hook.probe import HttpProbe
    host, port = kit.probe_address(launch.argv, launch.env, ("--host",), ("--port",), "127.0.0.1", 8080,
                                   ("LLAMA_ARG_HOST",), ("LLAMA_ARG_PORT",))
    return HttpProbe(host, port, "/health")
