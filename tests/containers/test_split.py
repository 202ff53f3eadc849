"""containers/split.py on real command lines (the servers' and podman's docs, a llama-swap user's):
the parts, every word kept (join gives back the command line), and the refusals."""

import shlex

import pytest

from cortex_hook.containers.split import join, split
from cortex_hook.errors import UsageError

# (command line, image, the container's command, [(option, value)] of the engine options)
REAL = [
    ("podman run --rm --device nvidia.com/gpu=all -p 8000:8000 --ipc=host "
     "docker.io/vllm/vllm-openai:latest --model mistralai/Mistral-7B-v0.1",
     "docker.io/vllm/vllm-openai:latest", ["--model", "mistralai/Mistral-7B-v0.1"],
     [("--rm", None), ("--device", "nvidia.com/gpu=all"), ("-p", "8000:8000"), ("--ipc", "host")]),
    ("podman run --device nvidia.com/gpu=all --shm-size 1g -p 8080:80 -v /srv/data:/data "
     "ghcr.io/huggingface/text-generation-inference:3.0.0 --model-id HuggingFaceH4/zephyr-7b-beta",
     "ghcr.io/huggingface/text-generation-inference:3.0.0", ["--model-id", "HuggingFaceH4/zephyr-7b-beta"],
     [("--device", "nvidia.com/gpu=all"), ("--shm-size", "1g"), ("-p", "8080:80"), ("-v", "/srv/data:/data")]),
    ("podman run --rm --device nvidia.com/gpu=all -p8000:8000 -p8001:8001 -p8002:8002 "
     "-v/srv/model_repository:/models nvcr.io/nvidia/tritonserver:24.08-py3 tritonserver --model-repository=/models",
     "nvcr.io/nvidia/tritonserver:24.08-py3", ["tritonserver", "--model-repository=/models"],
     [("--rm", None), ("--device", "nvidia.com/gpu=all"), ("-p", "8000:8000"), ("-p", "8001:8001"),
      ("-p", "8002:8002"), ("-v", "/srv/model_repository:/models")]),
    ("podman run --device nvidia.com/gpu=all --shm-size 32g -p 30000:30000 --env HF_TOKEN=abc --ipc=host "
     "lmsysorg/sglang:latest python3 -m sglang.launch_server --model-path meta-llama/Llama-3.1-8B-Instruct "
     "--host 0.0.0.0 --port 30000",
     "lmsysorg/sglang:latest", ["python3", "-m", "sglang.launch_server", "--model-path",
                                "meta-llama/Llama-3.1-8B-Instruct", "--host", "0.0.0.0", "--port", "30000"],
     [("--device", "nvidia.com/gpu=all"), ("--shm-size", "32g"), ("-p", "30000:30000"), ("--env", "HF_TOKEN=abc"),
      ("--ipc", "host")]),
    ("podman run --rm --device nvidia.com/gpu=GPU-0d4a5e3c-1111-2222-3333-444455556666 -p 9503:8080 "
     "-v /models:/models ghcr.io/ggerganov/llama.cpp:server-cuda -m /models/x.gguf --port 8080 --n-gpu-layers 99",
     "ghcr.io/ggerganov/llama.cpp:server-cuda", ["-m", "/models/x.gguf", "--port", "8080", "--n-gpu-layers", "99"],
     [("--rm", None), ("--device", "nvidia.com/gpu=GPU-0d4a5e3c-1111-2222-3333-444455556666"), ("-p", "9503:8080"),
      ("-v", "/models:/models")]),
    ("podman run -v ollama:/root/.ollama -p 11434:11434 --name ollama docker.io/ollama/ollama",
     "docker.io/ollama/ollama", [], [("-v", "ollama:/root/.ollama"), ("-p", "11434:11434"), ("--name", "ollama")]),
    ("podman run -it --rm -- fedora --help", "fedora", ["--help"], [("-i", None), ("-t", None), ("--rm", None)]),
    ("podman run -itp 8080:80 -e=A=b --rm=false img", "img", [],
     [("-i", None), ("-t", None), ("-p", "8080:80"), ("-e", "A=b"), ("--rm", "false")]),
    ("podman run --detach=false img serve", "img", ["serve"], [("--detach", "false")]),
]


@pytest.mark.parametrize("line, image, command, options", REAL)
def test_real_command_lines_split_into_their_parts(line, image, command, options):
    argv = shlex.split(line)
    parts = split(argv)
    assert (parts.image, parts.command) == (image, command)
    assert [(o.name, o.value) for o in parts.options] == options
    assert join(parts) == argv


def test_what_comes_before_the_engine_and_the_global_options():
    argv = ["/usr/bin/env", "TZ=UTC", "/usr/bin/podman", "--log-level=debug", "--root", "/srv/c", "container",
            "create", "--name", "x", "img", "serve"]
    parts = split(argv)
    assert parts.prefix == ["/usr/bin/env", "TZ=UTC"] and parts.engine == "/usr/bin/podman" and parts.name == "podman"
    assert [(o.name, o.value) for o in parts.global_options] == [("--log-level", "debug"), ("--root", "/srv/c")]
    assert parts.subcommand == ["container", "create"] and parts.image == "img" and parts.command == ["serve"]
    assert join(parts) == argv


@pytest.mark.parametrize("argv", [["/usr/bin/llama-server", "-m", "x.gguf"], ["podman", "exec", "x", "sh"],
                                  ["podman", "ps"], ["env", "A=b", "vllm", "serve"], []])
def test_a_command_that_makes_no_container_is_not_split(argv):
    assert split(argv) is None


@pytest.mark.parametrize("line, needle", [
    ("podman run -d img", "-d (detach) cannot be wrapped"),
    ("podman run --detach img", "--detach (detach) cannot be wrapped"),
    ("podman run -dit img", "-dit (detach) cannot be wrapped"),
    ("podman run --frobnicate x img", "option --frobnicate is not in cortex-hook's table"),
    ("podman run -Z img", "option -Z is not in cortex-hook's table"),
    ("podman --frob run img", "podman (global): option --frob"),
    ("podman run --rm", "podman run: no image in the command line"),
    ("podman start -a x", "podman start: the container was made by another command"),
    ("docker container start -a x", "put `cdi: true` on the service"),
    ("podman run -p", "podman run: -p needs a value"),
    ("podman run --name", "podman run: --name needs a value"),
])
def test_what_cannot_be_split_is_refused_by_name(line, needle):
    with pytest.raises(UsageError) as exc:
        split(shlex.split(line))
    assert needle in str(exc.value)


def test_hostile_words_are_kept_as_given_never_re_split():
    env = 'A=$B "c" \'d\'\nnext; rm -rf / `x`'
    argv = ["podman", "run", "-e", env, "--name=a b", "img:$tag\n", "--flag", "va lue\n"]
    parts = split(argv)
    assert [(o.name, o.value) for o in parts.options] == [("-e", env), ("--name", "a b")]
    assert (parts.image, parts.command) == ("img:$tag\n", ["--flag", "va lue\n"])
    assert join(parts) == argv


DOCKER = [
    ("docker run --runtime nvidia --gpus all -v /root/.cache/huggingface:/root/.cache/huggingface "
     "--env HUGGING_FACE_HUB_TOKEN=x -p 8000:8000 --ipc=host vllm/vllm-openai:latest --model mistralai/Mistral-7B-v0.1",
     "vllm/vllm-openai:latest", ["--model", "mistralai/Mistral-7B-v0.1"],
     [("--runtime", "nvidia"), ("--gpus", "all"), ("-v", "/root/.cache/huggingface:/root/.cache/huggingface"),
      ("--env", "HUGGING_FACE_HUB_TOKEN=x"), ("-p", "8000:8000"), ("--ipc", "host")]),
    ("docker -H unix:///run/docker.sock run --gpus '\"device=0,2\"' --shm-size 1g -p 8080:80 "
     "ghcr.io/huggingface/text-generation-inference:3.0.0 --model-id m",
     "ghcr.io/huggingface/text-generation-inference:3.0.0", ["--model-id", "m"],
     [("--gpus", '"device=0,2"'), ("--shm-size", "1g"), ("-p", "8080:80")]),
]


@pytest.mark.parametrize("line, image, command, options", DOCKER)
def test_docker_command_lines_split_by_dockers_documented_options(line, image, command, options):
    argv = shlex.split(line)
    parts = split(argv)
    assert parts.name == "docker" and (parts.image, parts.command) == (image, command)
    assert [(o.name, o.value) for o in parts.options] == options
    assert join(parts) == argv


def test_the_docker_docs_reader_tells_values_from_switches():
    from cortex_hook.containers.docker_options import options_from_docs

    text = ("| Name | Type | Default | Description |\n|:--|:--|:--|:--|\n"
            "| [`-d`](#detach), [`--detach`](#detach) | `bool` | | Run in background |\n"
            "| [`--gpus`](#gpus) | `gpu-request` | | GPU devices |\n| `-e`, `--env` | `list` | | env |\n")
    assert options_from_docs(text) == ({"--gpus", "-e", "--env"}, {"-d", "--detach"})
