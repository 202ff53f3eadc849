"""Unit names against systemd's grammar; sizes and durations as sysadmins write them."""

import pytest

from cortex_hook.errors import UsageError
from cortex_hook.quantities import format_duration, format_size, parse_duration, parse_fraction, parse_size
from cortex_hook.systemd.unitname import normalize_unit


@pytest.mark.parametrize("given, expected", [
    ("chat", "chat.service"), ("chat.service", "chat.service"), ("vllm@llama-70b", "vllm@llama-70b.service"),
    ("vllm@llama3.1", "vllm@llama3.1.service"), ("vllm@my\\x2dmodel.service", "vllm@my\\x2dmodel.service"),
    ("a:b_c.d-e.service", "a:b_c.d-e.service"), ("x@a@b.service", "x@a@b.service"),
])
def test_valid_units(given, expected):
    assert normalize_unit(given) == expected


@pytest.mark.parametrize("bad, needle", [
    ("", "empty"), ("chat.socket", "only .service"), ("a b.service", "' '"), ("a/b.service", "'/'"),
    ("a\nb", "'\\n'"), ("a$b", "'$'"), ("a%b", "'%'"), ("vllm@.service", "template"),
    ("@x.service", "empty name"), (".service", "empty name"), ("x" * 250 + ".service", "longer than 255"),
    ("ünïcode", "which systemd does not allow"),
])
def test_invalid_units(bad, needle):
    with pytest.raises(UsageError) as info:
        normalize_unit(bad)
    assert needle in str(info.value)


def test_sizes():
    assert parse_size("20GiB") == 20 * 1024**3
    assert parse_size("24GB") == 24 * 10**9
    assert parse_size(" 512 MiB ") == 512 * 1024**2
    assert parse_size(1234) == 1234
    for bad in ("20 gigs", "-1GiB", "GiB", True, -5):
        with pytest.raises(ValueError):
            parse_size(bad)
    assert parse_fraction("90%") == 0.9
    with pytest.raises(ValueError):
        parse_fraction("101%")
    assert format_size(None) == "?" and format_size(1536 * 1024**2) == "1.5 GiB"


def test_durations():
    assert parse_duration("5m") == 300
    assert parse_duration("1h 30m") == 5400
    assert parse_duration("1min30s") == 90
    assert parse_duration("250ms") == 0.25
    assert parse_duration(42) == 42.0
    for bad in ("", "soon", "5 fortnights", "-3s", True):
        with pytest.raises(ValueError):
            parse_duration(bad)
    assert format_duration(5400) == "1h30m" and format_duration(0) == "0s"
