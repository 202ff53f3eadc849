"""How the policy tests read a policy: TEXT as the file /etc/cortex-hook/policy.yaml, and a
mistake's message (one line, or the test fails)."""

import textwrap

import pytest

from cortex_hook.errors import PolicyError
from cortex_hook.policy.parse import parse_policy

PATH = "/etc/cortex-hook/policy.yaml"


def parse(text):
    """The Policy of TEXT (dedented), read as PATH."""
    return parse_policy(textwrap.dedent(text), PATH)


def mistake(text):
    """The message of the PolicyError that reading TEXT raises: one line."""
    with pytest.raises(PolicyError) as err:
        parse(text)
    message = str(err.value)
    assert "\n" not in message, message
    return message
