"""A state database cortex-hook cannot use (garbage, truncated, newer schema, a symlink): exit 74
with one line, and the file left exactly as it was."""
import os
import sqlite3

import pytest

from cortex_hook.state import SCHEMA_VERSION, State

from ..helpers.box import assert_one_line_error, fingerprint, gpus_box, query, uuid_of


A = uuid_of(0)


# -- broken state files: exit 74, file untouched --------------------------------------------------
def _real_database(box):
    """A real state database with some content (many history rows, so it spans many pages)."""
    gpus_box(box, 2)
    assert box.cli("priority", "order", "1", "0").returncode == 0
    assert box.cli("drain", "1", "--reason", "x" * 200).returncode == 0
    assert box.cli("allocate", "keep").returncode == 0
    with State.open(box.state) as state:
        for i in range(300):
            state.record(f"filler{i}.service", "allocate", [A], {"pad": "y" * 100}, 1000)
    assert query(box.state, "PRAGMA page_count")[0][0] > 10


def _make_garbage(box):
    gpus_box(box, 2)
    os.makedirs(os.path.dirname(box.state))
    with open(box.state, "wb") as f:
        f.write(b"this is not an SQLite database\n" * 200)


def _make_truncated(box):
    _real_database(box)
    with open(box.state, "rb") as f:
        data = f.read()
    with open(box.state, "wb") as f:
        f.write(data[: len(data) // 2])


def _make_truncated_mid_page(box):
    _real_database(box)
    with open(box.state, "rb") as f:
        data = f.read()
    with open(box.state, "wb") as f:
        f.write(data[: 4096 * 3 + 1000])


def _make_newer(box):
    _real_database(box)
    conn = sqlite3.connect(box.state)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()


BROKEN = {"garbage": (_make_garbage, "not a usable SQLite database"),
          "truncated": (_make_truncated, "not a usable SQLite database"),
          "truncated-mid-page": (_make_truncated_mid_page, "not a usable SQLite database"),
          "newer-schema": (_make_newer, "newer")}
COMMANDS = [["allocate", "chat"], ["release", "keep"], ["status"], ["leases", "--reap"], ["history"],
            ["priority", "list"], ["priority", "set", "0", "0"], ["drain", "0", "--reason", "r"], ["plan", "chat"]]


@pytest.mark.parametrize("kind", sorted(BROKEN))
def test_broken_state_is_exit_74_and_never_modified(box, kind):
    make, needle = BROKEN[kind]
    make(box)
    before = fingerprint(box.state)
    listing = sorted(os.listdir(os.path.dirname(box.state)))
    for args in COMMANDS:
        r = box.cli(*args)
        assert r.returncode == 74, (args, r.returncode, r.stdout, r.stderr)
        assert_one_line_error(r.stderr, box.state, needle)
        assert fingerprint(box.state) == before, args
        assert sorted(os.listdir(os.path.dirname(box.state))) == listing, args
    assert not os.path.exists(box.env_file("chat.service"))


def test_newer_schema_message_says_upgrade(box):
    _make_newer(box)
    r = box.cli("leases")
    assert r.returncode == 74
    assert_one_line_error(r.stderr, f"schema version {SCHEMA_VERSION + 1}", "upgrade cortex-hook")


def test_state_path_that_is_a_symlink_is_refused(box, tmp_path):
    gpus_box(box, 2)
    real = tmp_path / "elsewhere" / "real.db"
    with State.open(str(real)):
        pass
    os.makedirs(os.path.dirname(box.state))
    os.symlink(real, box.state)
    before = fingerprint(real)
    for args in (["leases"], ["allocate", "a"], ["status"]):
        r = box.cli(*args)
        assert r.returncode == 74, (args, r.stdout, r.stderr)
        assert_one_line_error(r.stderr, "symlink")
    assert fingerprint(real) == before and os.path.islink(box.state)


def test_an_empty_state_file_is_refused_not_rebuilt(box):
    """A 0-byte state.db (a truncated one) used to be taken for a fresh database: the live leases,
    priorities and drains gone without a word, GPUs handed out twice."""
    gpus_box(box, 1)
    os.makedirs(os.path.dirname(box.state))
    open(box.state, "wb").close()
    for args in (("allocate", "a"), ("release", "a"), ("priority", "order", "0"), ("leases",)):
        r = box.cli(*args)
        assert r.returncode == 74, (args, r.stderr)
        assert_one_line_error(r.stderr, "empty (0 bytes)", "left untouched")
    assert os.path.getsize(box.state) == 0 and not os.path.exists(box.env_file("a.service"))
