"""A state database of the test's own."""

import pytest

from cortex_hook.state import State


@pytest.fixture
def db(tmp_path):
    """An open State on a fresh database under the test's temp dir."""
    path = str(tmp_path / "state" / "state.db")
    with State.open(path) as state:
        yield state
