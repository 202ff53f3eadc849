"""Sizes and durations as sysadmins write them (quantities.py)."""

import pytest

from cortex_hook.quantities import format_duration, format_size, parse_duration, parse_fraction, parse_size


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


def test_systemd_time_spans_are_exact():
    from cortex_hook.quantities import systemd_timespan
    assert [systemd_timespan(s) for s in (12 * 86400, 30, 1.5, 0.25, 3600.000001)] == \
        ["1036800s", "30s", "1500000us", "250000us", "3600000001us"]
