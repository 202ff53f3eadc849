"""Env files: systemd EnvironmentFile= syntax read back by an independent reference parser, atomic
writes that never leave half a file, and allocations that roll back when the file cannot be written.
"""

import json
import os
import stat
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cortex_hook.files.atomic import write_atomic
from cortex_hook.systemd.envfile import render_env
from cortex_hook.errors import OutputError, UsageError

from ..helpers.box import assert_one_line_error, gpu_desc, uuid_of
from ..helpers.envrules import EnvParseError, env_as_systemd_reads


def parse_env_file(data):
    """DATA (bytes, UTF-8 as systemd requires) -> {name: value} as systemd reads it (tests/envrules.py)."""
    return env_as_systemd_reads(data.decode("utf-8"))


def test_reference_parser_follows_the_rules():
    """The parser itself, on hand-written systemd syntax (so it is not just our renderer's mirror)."""
    text = (b'# comment "with quotes\n; another\n\n'
            b'A="x\\"y\\\\z\\`w\\$v"\n'
            b'B="keep \\n and \\q"\n'
            b'C="one\\\ntwo"\n'
            b'D="real\nnewline"\n'
            b"E='single $x \\ \"'\n"
            b'F=  plain value   \n'
            b'G=cont\\\ninued\n'
            b'H=\n')
    assert parse_env_file(text) == {
        "A": 'x"y\\z`w$v', "B": "keep \\n and \\q", "C": "onetwo", "D": "real\nnewline",
        "E": 'single $x \\ "', "F": "plain value", "G": "continued", "H": ""}
    with pytest.raises(EnvParseError):
        parse_env_file(b'A="open\n')


# -- render_env ---------------------------------------------------------------------------------
TRICKY = {
    "SPACES": "two words  and   more ",
    "LEADING": "   padded",
    "DQUOTE": 'say "hi" and ""',
    "SQUOTE": "it's 'quoted'",
    "DOLLAR": "$HOME ${PATH} $(id) $$ $",
    "BACKTICK": "`id` and ``",
    "BACKSLASH": "C:\\path\\to\\n and \\t and \\\\ two",
    "TRAIL_BACKSLASH": "ends with \\",
    "BACKSLASH_NEWLINE": "a\\\nb",
    "BACKSLASH_QUOTE": '\\"',
    "NEWLINE": "line1\nline2\n",
    "ONLY_NEWLINE": "\n",
    "CR": "carriage\rreturn",
    "TAB": "a\tb",
    "PERCENT": "100% %n %% %h",
    "HASH": "# not a comment",
    "SEMICOLON": "; not a comment",
    "EQUALS": "a=b=c",
    "UNICODE": "naïve café – 日本語 🚀",
    "EMPTY": "",
    "MIXED": '\\$`"\n\\\\ $"`\\',
}


def test_render_env_round_trips_through_systemd_rules():
    text = render_env(TRICKY, "written by a test\nsecond header line with \"quotes\" and X=1")
    data = text.encode("utf-8")
    parsed = parse_env_file(data)
    assert list(parsed) == list(TRICKY)  # order kept, no header line parsed as a variable
    for name, value in TRICKY.items():
        assert parsed[name].encode("utf-8") == value.encode("utf-8"), name


def test_render_env_writes_one_double_quoted_assignment_per_variable():
    text = render_env({"A": "plain", "B": 'q"'}, "hdr")
    assert text == '# hdr\nA="plain"\nB="q\\""\n'


def test_written_file_round_trips_byte_for_byte(tmp_path):
    path = str(tmp_path / "x.env")
    write_atomic(path, render_env(TRICKY, "hdr"))
    with open(path, "rb") as f:  # binary: no newline translation of the \r
        parsed = parse_env_file(f.read())
    assert {k: v.encode() for k, v in parsed.items()} == {k: v.encode() for k, v in TRICKY.items()}


_VALUE_CHARS = st.characters(blacklist_categories=("Cs",), blacklist_characters="\0")


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,12}", fullmatch=True),
                       st.text(_VALUE_CHARS, max_size=40), max_size=6))
def test_property_any_text_without_nul_round_trips(env):
    assert parse_env_file(render_env(env, "h").encode("utf-8")) == env


@pytest.mark.parametrize("env, needle", [
    ({"A": "x\0y"}, "NUL"),
    ({"A": "\0"}, "NUL"),
    ({"1A": "x"}, "not valid"),
    ({"A-B": "x"}, "not valid"),
    ({"A B": "x"}, "not valid"),
    ({"": "x"}, "not valid"),
    ({"A=B": "x"}, "not valid"),
    ({"Ä": "x"}, "not valid"),
    ({"A\n": "x"}, "not valid"),
    ({"A": 1}, "must be text"),
    ({"A": "\ud800"}, "UTF-8"),
])
def test_render_env_rejects_nul_and_invalid_names(env, needle):
    with pytest.raises(UsageError) as info:
        render_env(env)
    assert needle in str(info.value)


# -- write_atomic -------------------------------------------------------------------------------
def test_write_atomic_writes_0644_and_leaves_no_temp_file(tmp_path):
    path = str(tmp_path / "u.env")
    old = os.umask(0o077)
    try:
        write_atomic(path, "A=\"1\"\n")
    finally:
        os.umask(old)
    with open(path, "rb") as f:
        assert f.read() == b'A="1"\n'
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o644
    assert os.listdir(tmp_path) == ["u.env"]


def test_write_atomic_replaces_by_rename(tmp_path):
    path = str(tmp_path / "u.env")
    write_atomic(path, "old\n")
    old_inode = os.stat(path).st_ino
    with open(path) as reader:  # a reader holding the old file keeps reading the old, whole file
        write_atomic(path, "new\n")
        assert reader.read() == "old\n"
    with open(path) as f:
        assert f.read() == "new\n"
    assert os.stat(path).st_ino != old_inode
    assert os.listdir(tmp_path) == ["u.env"]


def test_write_atomic_replaces_a_symlink_instead_of_following_it(tmp_path):
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    path = tmp_path / "run" / "u.env"
    path.parent.mkdir()
    os.symlink(victim, path)
    write_atomic(str(path), 'A="1"\n')
    assert not os.path.islink(path) and stat.S_ISREG(os.lstat(path).st_mode)
    assert path.read_text() == 'A="1"\n'
    assert victim.read_text() == "precious\n"
    assert os.listdir(path.parent) == ["u.env"]


def test_write_atomic_does_not_follow_a_planted_temp_symlink(tmp_path):
    """A temp name with our pid (left by a killed run, or planted) is replaced, never written through."""
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    run = tmp_path / "run"
    run.mkdir()
    path = run / "u.env"
    os.symlink(victim, run / f".u.env.{os.getpid()}.tmp")
    write_atomic(str(path), "new\n")
    assert path.read_text() == "new\n"
    assert victim.read_text() == "precious\n"
    assert os.listdir(run) == ["u.env"]


def test_write_atomic_failure_midway_keeps_the_old_file_whole(tmp_path):
    """The disk fills up (RLIMIT_FSIZE) after part of the data: the old file stays, no temp remains."""
    run = tmp_path / "run"
    run.mkdir()
    path = run / "u.env"
    path.write_text("OLD=\"whole\"\n")
    code = (
        "import json, resource, signal, sys\n"
        "from cortex_hook.files.atomic import write_atomic\n"
        "from cortex_hook.errors import OutputError\n"
        "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))\n"
        "try:\n"
        "    write_atomic(sys.argv[1], 'X' * (1 << 20))\n"
        "except OutputError as exc:\n"
        "    print(json.dumps(str(exc))); sys.exit(73)\n"
        "sys.exit(0)\n")
    r = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 73, (r.stdout, r.stderr)
    assert "cannot write" in json.loads(r.stdout) and str(path) in json.loads(r.stdout)
    assert path.read_text() == "OLD=\"whole\"\n"
    assert os.listdir(run) == ["u.env"]


def test_write_atomic_onto_a_directory_fails_cleanly(tmp_path):
    target = tmp_path / "u.env"
    target.mkdir()
    (target / "inside").write_text("x")
    with pytest.raises(OutputError) as info:
        write_atomic(str(target), "A=\"1\"\n")
    assert "cannot write" in str(info.value)
    assert sorted(os.listdir(tmp_path)) == ["u.env"] and os.listdir(target) == ["inside"]


def test_write_atomic_into_a_missing_directory_is_output_error(tmp_path):
    with pytest.raises(OutputError):
        write_atomic(str(tmp_path / "nope" / "u.env"), "x\n")
    assert os.listdir(tmp_path) == []


# -- allocate when the env file cannot be written: exit 73, the lease rolls back -------------------
def one_gpu(box):
    box.write_gpus([gpu_desc(0)])
    box.write_policy("services:\n  - match: '*'\n")
    return box


def assert_nothing_leased(box, unit):
    assert box.json("leases")["leases"] == []
    assert [h for h in box.json("history", "-n", "100")["history"] if h["action"] == "allocate"] == []
    # the GPU really is free: another unit gets it
    assert box.json("plan", "other")["gpus"] == [uuid_of(0)]


def test_unwritable_env_file_rolls_the_lease_back(box):
    """The write fails inside the transaction (the env file's name is taken by a directory)."""
    one_gpu(box)
    blocker = os.path.join(box.runtime, "chat.service.env")
    os.makedirs(blocker)
    with open(os.path.join(blocker, "keep"), "w") as f:
        f.write("x")
    r = box.cli("allocate", "chat")
    assert r.returncode == 73, (r.stdout, r.stderr)
    assert_one_line_error(r.stderr, "cannot write", blocker)
    assert_nothing_leased(box, "chat.service")
    assert os.listdir(blocker) == ["keep"]
    assert [n for n in os.listdir(box.runtime) if n.startswith(".") or n.endswith(".tmp")] == []
    os.unlink(os.path.join(blocker, "keep"))
    os.rmdir(blocker)
    ok = box.cli("allocate", "chat")  # the same command works once the path is free
    assert ok.returncode == 0, ok.stderr
    assert [l["unit"] for l in box.json("leases")["leases"]] == ["chat.service"]


def test_failed_env_write_leaves_no_runtime_file_of_that_start(box):
    """Nothing of a start that rolled back stays in the runtime dir (no decision record either)."""
    one_gpu(box)
    blocker = os.path.join(box.runtime, "chat.service.env")
    os.makedirs(blocker)
    r = box.cli("allocate", "chat")
    assert r.returncode == 73, (r.stdout, r.stderr)
    assert box.json("leases")["leases"] == []
    left = sorted(n for n in os.listdir(box.runtime) if not n.endswith(".cache"))  # memos may stay
    assert left == ["chat.service.env"]


def test_runtime_dir_that_is_a_regular_file_is_exit_73(box):
    one_gpu(box)
    with open(box.runtime, "w") as f:
        f.write("not a directory\n")
    r = box.cli("allocate", "chat")
    assert r.returncode == 73, (r.stdout, r.stderr)
    assert_one_line_error(r.stderr, "runtime dir", box.runtime)
    with open(box.runtime) as f:
        assert f.read() == "not a directory\n"
    assert_nothing_leased(box, "chat.service")


def test_runtime_dir_below_a_regular_file_is_exit_73(box):
    one_gpu(box)
    blocker = os.path.join(box.root, "afile")
    with open(blocker, "w") as f:
        f.write("x")
    r = box.cli("allocate", "chat", env=box.env(CORTEX_HOOK_RUNTIME_DIR=os.path.join(blocker, "run")))
    assert r.returncode == 73, (r.stdout, r.stderr)
    assert_one_line_error(r.stderr, "runtime dir")
    assert_nothing_leased(box, "chat.service")


def test_runtime_dir_that_is_a_symlink_is_refused(box, tmp_path):
    one_gpu(box)
    real = tmp_path / "real-run"
    real.mkdir()
    os.symlink(real, box.runtime)
    r = box.cli("allocate", "chat")
    assert r.returncode == 73, (r.stdout, r.stderr)
    assert_one_line_error(r.stderr, "runtime dir", "symlink")
    assert os.listdir(real) == []
    assert os.path.islink(box.runtime)
    assert_nothing_leased(box, "chat.service")


def test_runtime_dir_writable_by_others_is_exit_77(box):
    if os.geteuid() != 0:
        pytest.skip("ownership rules are tested as root")
    one_gpu(box)
    os.makedirs(box.runtime)
    os.chmod(box.runtime, 0o777)
    r = box.cli("allocate", "chat")
    assert r.returncode == 77, (r.stdout, r.stderr)
    assert_one_line_error(r.stderr, "runtime dir", "writable by group or others")
    assert os.listdir(box.runtime) == []
    assert_nothing_leased(box, "chat.service")


def test_allocated_env_file_is_parsed_back_by_the_reference_parser(box):
    one_gpu(box)
    r = box.cli("allocate", "chat")
    assert r.returncode == 0, r.stderr
    with open(box.env_file("chat.service"), "rb") as f:
        env = parse_env_file(f.read())
    assert env["CUDA_VISIBLE_DEVICES"] == uuid_of(0) and env["CORTEX_HOOK_UNIT"] == "chat.service"
    assert stat.S_IMODE(os.stat(box.env_file("chat.service")).st_mode) == 0o644
    assert [n for n in os.listdir(box.runtime) if n.startswith(".") or n.endswith(".tmp")] == []


def test_sticky_world_writable_runtime_dir_is_refused(box):
    """Sticky world-writable is fine ABOVE the runtime dir (/tmp), never for the dir itself: another
    user could plant UNIT.env there, which systemd hands to ExecStartPre=+ as root."""
    one_gpu(box)
    os.makedirs(box.runtime)
    os.chmod(box.runtime, 0o1777)
    r = box.cli("allocate", "chat")
    assert r.returncode == 77
    assert_one_line_error(r.stderr, "runtime dir", "writable by group or others")
    assert box.json("leases")["leases"] == []
