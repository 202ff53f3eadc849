#!/usr/bin/env python3
"""Heavy tier of tests/test_reliability.py (kill -9 at any moment) and tests/test_fuzz.py (the
policy loader and the env file round trip).

Kill stress: the same harness as the CI test (`KillHarness`: 4 simulated GPUs, 6 units, live and
mortal `--holder-pid` processes, real `cortex-hook allocate|release` processes SIGKILLed after a
random delay uniform in 0..1.2x their measured typical life, cold and gated-warm rounds in turn,
every invariant checked after every round), run for --trials processes instead of ~30 kills. It
does not stop at the first problem: it counts them and prints a summary table.

Fuzz (--fuzz N): N documents from each generator of tests/test_fuzz.py through
`parse_policy` in-process (hypothesis, generate phase only, no shrinking, nothing stops the
run), N/5 env files through the systemd 252 reference reader, and --cli M documents through the
real `cortex-hook validate FILE`. Findings are grouped by where they come from, each with the
shortest document seen.

Runs the checkout's code with the test venv (.venv, `make test` builds it), re-executing itself
under .venv/bin/python when started by another interpreter:

    python3 bench/stress.py --trials 200                 # kill stress only
    python3 bench/stress.py --trials 1000 --per-round 6
    python3 bench/stress.py --trials 0 --fuzz 20000 --cli 200
Exit status: 0 when no problem was found, 1 otherwise.
"""

import argparse
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from collections import Counter

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(BENCH_DIR)
VENV_PY = os.path.join(REPO, ".venv", "bin", "python")


def _ensure_interpreter():
    try:
        import cortex_hook  # noqa: F401
        import hypothesis  # noqa: F401
        import pytest  # noqa: F401
        return
    except ImportError:
        pass
    # (a venv's bin/python is a symlink to the base interpreter: compare prefixes, not paths)
    venv = os.path.dirname(os.path.dirname(VENV_PY))
    if os.path.exists(VENV_PY) and os.path.realpath(sys.prefix) != os.path.realpath(venv):
        os.execv(VENV_PY, [VENV_PY, os.path.abspath(__file__), *sys.argv[1:]])
    sys.exit(f"stress.py: needs cortex_hook, pytest and hypothesis; run `make test` once to build {VENV_PY}")


def log(msg):
    print(f"[stress] {msg}", file=sys.stderr, flush=True)


def table(title, rows):
    width = max(len(r[0]) for r in rows)
    print(f"\n{title}")
    print(f"| {'measure':<{width}} | value |")
    print(f"|{'-' * (width + 2)}|-------|")
    for name, value in rows:
        print(f"| {name:<{width}} | {value} |")


# -- kill stress ----------------------------------------------------------------------------------
def kill_stress(args):
    from tests.helpers.box import Box
    from tests.helpers.kill import DUPLICATED, LOST, KillHarness

    root = tempfile.mkdtemp(prefix="cortex-hook-stress-")
    os.chmod(root, 0o755)
    seed = args.seed if args.seed is not None else random.randrange(1 << 32)
    rng = random.Random(seed)

    def box(name):
        os.makedirs(os.path.join(root, name))
        return Box(os.path.join(root, name))

    harness = KillHarness(box("box"), rng, per_round=args.per_round, log=log)
    started = time.monotonic()
    try:
        harness.start()
        harness.measure(box("scratch"))
        while harness.stats["trials"] < args.trials:
            harness.round("cold" if harness.rounds % 2 == 0 else "warm")
            if harness.rounds % 10 == 0:
                log(f"{harness.stats['trials']} trials, {harness.stats['kills']} kills, "
                    f"{len(harness.problems)} problems")
        harness.finish()
    finally:
        harness.stop()
        if args.keep:
            shutil.copytree(root, args.keep, dirs_exist_ok=True)
        shutil.rmtree(root, ignore_errors=True)
    s = harness.stats
    kinds = Counter(kind for kind, _ in harness.problems)
    lost = sum(kinds[k] for k in LOST)
    duplicated = sum(kinds[k] for k in DUPLICATED)
    other = sum(kinds.values()) - lost - duplicated - kinds["traceback"]
    tmp_left = len([n for n in harness.tmp_seen])
    cmd = f"python3 bench/stress.py --trials {args.trials} --per-round {args.per_round} --seed {seed}"
    table(f"kill -9 stress: `{cmd}` ({harness.rounds} rounds, {time.monotonic() - started:.0f} s; typical life: "
          + ", ".join(f"{m} {o} {t * 1000:.0f} ms" for (m, o), t in sorted(harness.typical.items())) + ")", [
        ("trials (processes started, each with a random kill time)", s["trials"]),
        ("kills landed during allocate", s["kills_allocate"]),
        ("  before its transaction wrote anything lasting", s["allocate killed before any write"]),
        ("  between the record write and the env file write", s["allocate killed between record write and env write"]),
        ("  between the env file write and COMMIT", s["allocate killed between env write and COMMIT"]),
        ("  after COMMIT", s["allocate killed after COMMIT"]),
        ("kills landed during release", s["kills_release"]),
        ("  after COMMIT", s["release killed after COMMIT"]),
        ("  between COMMIT and the env file removal", s["release killed between COMMIT and file removal"]),
        ("processes that finished before their kill time", s["trials"] - s["kills"]),
        ("integrity_check ok / checks", f"{s['integrity ok']} / {s['integrity checks']}"),
        ("leases lost", lost),
        ("leases duplicated", duplicated),
        ("orphan env files (env file without lease, left by a kill)", s["window: env file without lease"]),
        ("env file naming other GPUs than the unit's lease (left by a kill)",
         s["window: env file names other GPUs than the lease"]),
        ("lease without env file (left by a kill)", s["window: lease without env file"]),
        ("record without env file (left by a kill)", s["window: record without env file"]),
        ("env files left by reaped leases (by design)", s["env file left by a reaped lease"]),
        ("temp files left by killed processes (total)", tmp_left),
        ("half-written files", kinds["half-file"]),
        ("tracebacks seen", kinds["traceback"]),
        ("other problems (bad exits, stray files, not repaired, ...)", other),
    ])
    for kind, text in harness.problems[:30]:
        print(f"  problem {kind}: {text}")
    return not harness.problems


# -- fuzz -----------------------------------------------------------------------------------------
def _signature(exc):
    frames = traceback.extract_tb(exc.__traceback__)
    frame = next((f for f in reversed(frames) if "cortex_hook" in f.filename), frames[-1] if frames else None)
    where = f"{os.path.basename(frame.filename)}:{frame.name}" if frame else "?"
    last = frames[-1] if frames else None
    deep = f" <- {os.path.basename(last.filename)}:{last.name}" if last and last is not frame else ""
    return f"{type(exc).__name__} in {where}{deep}"


def _message_signature(message):
    if "invalid YAML" in message:
        return "multi-line PolicyError: YAML reader message (control character) carries its own newline"
    return "multi-line PolicyError: text from the document (a key) put raw into the message"


def fuzz(args):
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis import strategies as st

    from cortex_hook.systemd.envfile import render_env
    from cortex_hook.errors import PolicyError
    from cortex_hook.policy.parse import parse_policy
    from cortex_hook.policy.load import load_policy
    from tests import test_fuzz as F
    from tests.helpers.envrules import EnvParseError

    path = F.POLICY_PATH
    findings = {}  # signature -> (count, shortest document)
    rows = []

    def note(signature, doc):
        count, best = findings.get(signature, (0, doc))
        findings[signature] = (count + 1, doc if len(doc) < len(best) else best)

    def run_parse(text):
        try:
            parse_policy(text, path)
        except PolicyError as exc:
            message = str(exc)
            if message.startswith(path) and len(message.splitlines()) == 1:
                return "policy-error"
            note(_message_signature(message), text)
            return "bad-message"
        except Exception as exc:  # noqa: BLE001
            note(_signature(exc), text)
            return "crash"
        return "ok"

    tmpdir = tempfile.mkdtemp(prefix="cortex-hook-fuzz-")
    os.chmod(tmpdir, 0o755)
    bytes_path = os.path.join(tmpdir, "policy.yaml")

    def run_bytes(data):
        with open(bytes_path, "wb") as f:
            f.write(data)
        try:
            load_policy(bytes_path, check_owner=False)
        except PolicyError as exc:
            message = str(exc)
            if message.startswith(bytes_path) and len(message.splitlines()) == 1:
                return "policy-error"
            note(_message_signature(message), repr(data))
            return "bad-message"
        except Exception as exc:  # noqa: BLE001
            note(_signature(exc), repr(data))
            return "crash"
        return "ok"

    sources = [
        ("arbitrary text", st.text(max_size=300), run_parse),
        ("YAML-ish text", F.yamlish_text, run_parse),
        ("arbitrary bytes (file)", st.binary(max_size=300), run_bytes),
        ("schema-shaped documents", F.structured_text, run_parse),
        ("anchors, merges, tags, bombs", F.anchored_documents(), run_parse),
        ("mutated documents", st.one_of(F.mutated(F.structured_text), F.mutated(F.anchored_documents())), run_parse),
    ]
    common = dict(deadline=None, database=None, phases=[Phase.generate], derandomize=False,
                  suppress_health_check=list(HealthCheck))
    try:
        for name, strategy, runner in sources:
            outcomes = Counter()
            started = time.monotonic()

            @settings(max_examples=args.fuzz, **common)
            @given(strategy)
            def body(doc):
                outcomes[runner(doc)] += 1

            body()
            rows.append((name, outcomes, time.monotonic() - started))
            log(f"fuzz {name}: {dict(outcomes)}")

        env_outcomes = Counter()

        @settings(max_examples=max(1, args.fuzz // 5), **common)
        @given(st.dictionaries(F.env_names, F.env_values, max_size=8), F.unit_names)
        def env_body(env, unit):
            header = f"written by cortex-hook for {unit} at 2024-05-01 12:00:00; do not edit"
            try:
                ok = F.env_as_systemd_reads(render_env(env, header)) == env
            except EnvParseError:
                ok = False
            env_outcomes["round trip ok" if ok else "round trip FAILED"] += 1
            if not ok:
                note("env file round trip differs", repr(env))

        started = time.monotonic()
        env_body()
        rows.append(("env file round trip (render_env -> systemd 252 rules)", env_outcomes,
                     time.monotonic() - started))

        cli_outcomes = Counter()
        if args.cli:
            started = time.monotonic()
            docs = []

            @settings(max_examples=args.cli, **common)
            @given(F.policy_documents)
            def collect(doc):
                docs.append(doc)

            collect()
            for i, doc in enumerate(docs):
                p = os.path.join(tmpdir, f"cli-{i}.yaml")
                with open(p, "w", encoding="utf-8", errors="surrogatepass") as f:
                    f.write(doc)
                os.chmod(p, 0o644)
            procs = []
            for i in range(len(docs)):  # two at a time
                p = os.path.join(tmpdir, f"cli-{i}.yaml")
                procs.append((i, p, subprocess.Popen([sys.executable, "-m", "cortex_hook", "validate", p],
                                                     env=F._cli_env(), stdout=subprocess.PIPE,
                                                     stderr=subprocess.PIPE, text=True)))
                if len(procs) >= 2 or i == len(docs) - 1:
                    for j, pj, proc in procs:
                        out, err = proc.communicate(timeout=120)
                        lines = [l for l in err.splitlines() if l.strip()]
                        if proc.returncode == 0 and not lines:
                            cli_outcomes["exit 0"] += 1
                        elif proc.returncode == 78 and len(lines) == 1 and "Traceback" not in err:
                            cli_outcomes["exit 78, one line"] += 1
                        else:
                            kind = ("traceback" if "Traceback" in err else
                                    f"exit {proc.returncode}, {len(lines)} stderr lines")
                            cli_outcomes[kind] += 1
                            note(f"validate CLI: {kind}: {(lines or [''])[-1][:90]}", docs[j])
                    procs = []
            rows.append((f"`cortex-hook validate FILE` ({len(docs)} documents)", cli_outcomes,
                         time.monotonic() - started))
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)

    print(f"\npolicy loader fuzz: `python3 bench/stress.py --fuzz {args.fuzz} --cli {args.cli}`")
    print("| source | examples | ok | PolicyError (one line) | multi-line message | other exception | time |")
    print("|---|---|---|---|---|---|---|")
    for name, outcomes, seconds in rows:
        if "round trip" in name or "validate" in name:
            good = sum(v for k, v in outcomes.items() if k in ("round trip ok", "exit 0", "exit 78, one line"))
            print(f"| {name} | {sum(outcomes.values())} | {good} | - | - | {sum(outcomes.values()) - good} "
                  f"| {seconds:.0f} s |")
            continue
        print(f"| {name} | {sum(outcomes.values())} | {outcomes['ok']} | {outcomes['policy-error']} | "
              f"{outcomes['bad-message']} | {outcomes['crash']} | {seconds:.0f} s |")
    if findings:
        print("\nfindings (count, shortest document):")
        for signature, (count, doc) in sorted(findings.items(), key=lambda kv: -kv[1][0]):
            shown = doc if isinstance(doc, str) else repr(doc)
            print(f"  {count:6d}  {signature}\n          {shown[:160]!r}")
    return not findings


def main(argv=None):
    _ensure_interpreter()
    sys.path.insert(0, REPO)
    os.chdir(REPO)
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--trials", type=int, default=200, help="processes to start and kill at random (default 200)")
    p.add_argument("--per-round", type=int, default=4, help="processes racing in each round (default 4, max 6)")
    p.add_argument("--seed", type=int, help="random seed of the kill schedule (printed)")
    p.add_argument("--keep", metavar="DIR", help="copy the stress box (state, runtime dir) to DIR")
    p.add_argument("--fuzz", type=int, default=0, metavar="N", help="policy documents per generator (default 0)")
    p.add_argument("--cli", type=int, default=0, metavar="M", help="documents through `cortex-hook validate`")
    args = p.parse_args(argv)
    if not 1 <= args.per_round <= 6:
        p.error("--per-round must be 1..6 (there are 6 units)")
    if os.geteuid() != 0:
        log("not root: the runtime dir ownership checks still pass for files you own")
    ok = True
    if args.trials > 0:
        ok &= kill_stress(args)
    if args.fuzz > 0 or args.cli > 0:
        args.fuzz = max(args.fuzz, 1)
        ok &= fuzz(args)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
