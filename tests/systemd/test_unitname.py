"""Unit names against systemd's grammar, before a name touches a path (systemd/unitname.py)."""

import pytest

from cortex_hook.errors import UsageError
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
