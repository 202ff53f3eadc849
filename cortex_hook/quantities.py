"""Sizes and durations as sysadmins write them (`20GiB`, `90%`, `5m`), parsed and printed."""

import re

_SIZE_UNITS = {
    "": 1, "b": 1,
    "k": 1024, "kib": 1024, "kb": 1000,
    "m": 1024**2, "mib": 1024**2, "mb": 1000**2,
    "g": 1024**3, "gib": 1024**3, "gb": 1000**3,
    "t": 1024**4, "tib": 1024**4, "tb": 1000**4,
}
# patterns, not compiled at import: re compiles (and caches) them the first time a policy is parsed,
# which the start path, reading the parsed policy, never does
_SIZE_PATTERN = r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*"
_DURATION_UNITS = {
    "ms": 0.001, "msec": 0.001,
    "s": 1, "sec": 1, "second": 1, "seconds": 1,
    "m": 60, "min": 60, "minute": 60, "minutes": 60,
    "h": 3600, "hr": 3600, "hour": 3600, "hours": 3600,
    "d": 86400, "day": 86400, "days": 86400,
}
_DURATION_PATTERN = r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)"


def parse_size(text):
    """`20GiB`, `512MiB`, `24GB`, `1.5G` or a plain byte count -> bytes (int); ValueError if not."""
    if isinstance(text, bool):
        raise ValueError("expected a size such as 20GiB")
    if isinstance(text, int):
        if text < 0:
            raise ValueError("a size cannot be negative")
        return text
    m = re.fullmatch(_SIZE_PATTERN, str(text))
    if not m or m.group(2).lower() not in _SIZE_UNITS:
        raise ValueError(f"expected a size such as 20GiB, 512MiB or 24GB, got {text!r}")
    return int(float(m.group(1)) * _SIZE_UNITS[m.group(2).lower()])


def parse_fraction(text):
    """`90%` -> 0.9; ValueError unless it is a percentage between 0 and 100."""
    s = str(text).strip()
    if not s.endswith("%"):
        raise ValueError(f"expected a percentage such as 90%, got {text!r}")
    try:
        value = float(s[:-1])
    except ValueError:
        raise ValueError(f"expected a percentage such as 90%, got {text!r}") from None
    if not 0 <= value <= 100:
        raise ValueError(f"a percentage must be between 0% and 100%, got {text!r}")
    return value / 100


def parse_duration(text):
    """`5m`, `90s`, `1h 30m`, `1min30s` or a plain number of seconds -> seconds (float)."""
    if isinstance(text, bool):
        raise ValueError("expected a duration such as 30s or 5m")
    if isinstance(text, (int, float)):
        if text < 0:
            raise ValueError("a duration cannot be negative")
        return float(text)
    s = str(text).strip()
    total, pos = 0.0, 0
    if not s:
        raise ValueError("expected a duration such as 30s or 5m, got an empty value")
    while pos < len(s):
        m = re.compile(_DURATION_PATTERN).match(s, pos)  # cached by re
        if not m or m.end() == pos:
            raise ValueError(f"expected a duration such as 30s, 5m or 1h, got {text!r}")
        unit = m.group(2).lower() or "s"
        if unit not in _DURATION_UNITS:
            raise ValueError(f"unknown time unit {m.group(2)!r} in {text!r} (use ms, s, m, h or d)")
        total += float(m.group(1)) * _DURATION_UNITS[unit]
        pos = m.end()
        while pos < len(s) and s[pos].isspace():
            pos += 1
    return total


def systemd_timespan(seconds):
    """SECONDS as a systemd time span, exactly (`90s`, `1036800s`, `1500000us`): never a rounded
    float such as `1.0368e+06s`, which systemd refuses."""
    usec = round(seconds * 1_000_000)
    return f"{usec // 1_000_000}s" if usec % 1_000_000 == 0 else f"{usec}us"


def format_size(n):
    """Bytes -> a short human string in binary units (`79.1 GiB`); `?` when unknown."""
    if n is None:
        return "?"
    for unit, factor in (("TiB", 1024**4), ("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if abs(n) >= factor:
            return f"{n / factor:.1f} {unit}"
    return f"{n} B"


def format_duration(seconds):
    """Seconds -> `5m`, `90s`, `1h30m`."""
    seconds = int(round(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    out = (f"{h}h" if h else "") + (f"{m}m" if m else "") + (f"{s}s" if s or not (h or m) else "")
    return out


def format_ago(seconds):
    """How long ago, as a person says it: `4 s ago`, `12 min ago`, `2h5m ago`."""
    seconds = max(0, int(seconds))
    if seconds < 60:
        return f"{seconds} s ago"
    if seconds < 3600:
        return f"{seconds // 60} min ago"
    return f"{format_duration(seconds)} ago"
