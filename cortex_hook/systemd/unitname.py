"""systemd unit names: validation against systemd's own grammar, before a name touches a path."""

from ..errors import UsageError

UNIT_NAME_MAX = 255
_VALID_CHARS = frozenset(
    "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ:-_.\\@"
)


def normalize_unit(name):
    """Return NAME as a full service unit name (`chat` -> `chat.service`) or raise UsageError.

    The grammar is systemd's `unit_name_is_valid()`: at most 255 bytes; only
    `[A-Za-z0-9:_.\\-@]`; a non-empty prefix; a known suffix (only `.service` runs servers);
    an instance after the first `@` (a bare template `foo@.service` cannot run).
    """
    if not isinstance(name, str) or not name:
        raise UsageError("unit name is empty")
    if not name.endswith(".service"):
        dot = name.rfind(".")
        at = name.find("@")
        # "chat" or "vllm@llama3.1" (a dot inside the instance is not a suffix) mean .service
        if dot > 0 and (at < 0 or dot < at) and _looks_like_suffix(name[dot + 1:]):
            raise UsageError(f"unit {name!r}: only .service units can be allocated GPUs")
        name += ".service"
    bad = sorted(set(name) - _VALID_CHARS)
    if bad:
        shown = ", ".join(repr(c) for c in bad)
        raise UsageError(
            f"unit {name!r} contains {shown}, which systemd does not allow in unit names "
            "(escape with `systemd-escape`)"
        )
    if len(name.encode()) > UNIT_NAME_MAX:
        raise UsageError(f"unit name is longer than {UNIT_NAME_MAX} bytes: {name[:40]!r}...")
    stem = name[: -len(".service")]
    if not stem or stem.startswith("@"):
        raise UsageError(f"unit {name!r} has an empty name before '@' or '.service'")
    if stem.endswith("@"):
        raise UsageError(f"unit {name!r} is a template; name an instance, e.g. {stem}NAME.service")
    return name


def is_template(unit):
    """True for a template's name (`vllm@.service`), not an instance's (`vllm@x.service`)."""
    return unit.rpartition(".")[0].endswith("@")


def _looks_like_suffix(s):
    return s in {
        "socket", "device", "mount", "automount", "swap", "target", "path", "timer",
        "slice", "scope",
    }
