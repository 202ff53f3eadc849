"""The records' one serialisation: every record goes to plain data (what marshal and JSON hold)
and comes back equal, nested records, sets and tuples included."""

import json
import marshal

import pytest
from hypothesis import given, settings, strategies as st

from cortex_hook.model import (Decision, Drain, Gpu, HealthPolicy, Launch, Lease, Policy, Process, Reason,
                               Record, ScoreTerm, ServicePolicy, Snapshot, Trouble, Verdict)

text = st.text(max_size=12)
maybe_int = st.none() | st.integers(min_value=0, max_value=2**40)

gpus = st.builds(
    Gpu, index=st.integers(0, 64), uuid=st.none() | text, name=text, memory_free=maybe_int,
    temperature=st.none() | st.integers(0, 120), retired_pages_pending=st.none() | st.booleans(),
    nvlink_peers=st.none() | st.frozensets(text, max_size=3),
    topology=st.dictionaries(text, st.integers(0, 50), max_size=3),
    processes=st.none() | st.tuples(st.builds(Process, pid=st.integers(1, 10**6), used_memory=maybe_int)),
    problems=st.tuples(text), parent_uuid=st.none() | text, mig_index=st.none() | st.integers(0, 7),
)
services = st.builds(
    ServicePolicy, match=text, gpus=st.integers(1, 8) | st.just("all"), min_free_fraction=st.none() | st.floats(0, 1),
    options=st.dictionaries(text, st.integers() | text, max_size=2),
    option_marks=st.dictionaries(text, st.tuples(st.integers(1, 99), st.integers(1, 99)), max_size=2),
    watchdog_seconds=st.none() | st.floats(1, 1e6),
)
verdicts = st.builds(Verdict, gpu=gpus, reasons=st.lists(st.builds(Reason, code=text, text=text), max_size=2),
                     terms=st.lists(st.builds(ScoreTerm, name=text, value=st.floats(0, 1), weight=st.floats(0, 2)),
                                    max_size=2),
                     priority=maybe_int, selected=st.booleans())
decisions = st.builds(Decision, unit=text, service=services, verdicts=st.lists(verdicts, max_size=3),
                      chosen=st.lists(gpus, max_size=2), ok=st.booleans(), summary=text,
                      launch=st.builds(Launch, env=st.dictionaries(text, text, max_size=3),
                                       argv=st.none() | st.lists(text, max_size=3)))
policies = st.builds(Policy, services=st.lists(services, max_size=2),
                     reservations=st.dictionaries(text, st.tuples(text), max_size=2),
                     health=st.builds(HealthPolicy, max_temperature=st.none() | st.integers(1, 120),
                                      fatal_xids=st.tuples(st.integers(1, 200)),
                                      recover_seconds=st.none() | st.floats(0, 1e6)))
snapshots = st.builds(Snapshot, priorities=st.dictionaries(text, st.integers(0, 9), max_size=3),
                      drains=st.dictionaries(text, st.builds(Drain, uuid=text, reason=text, since=st.floats(0, 1e9),
                                                             source=st.sampled_from(["admin", "monitor"]),
                                                             detail=text), max_size=2),
                      trouble=st.dictionaries(text, st.lists(st.builds(Trouble, uuid=text, at=st.floats(0, 1e9),
                                                                       kind=text, count=st.integers(1, 99),
                                                                       detail=text), max_size=2), max_size=2),
                      leases=st.lists(st.builds(Lease, unit=text, uuid=text, pid=maybe_int), max_size=2))


@settings(max_examples=60, deadline=None)
@given(st.one_of(decisions, policies, snapshots))
def test_every_record_round_trips_through_plain_data(record):
    plain = record.to_plain()
    assert type(record).from_plain(marshal.loads(marshal.dumps(plain))) == record
    assert type(record).from_plain(json.loads(json.dumps(plain))) == record


def test_plain_data_is_plain():
    gpu = Gpu(index=0, uuid="GPU-a", nvlink_peers=frozenset({"b", "a"}), processes=(Process(1, 2),))
    assert gpu.to_plain()["nvlink_peers"] == ["a", "b"]
    assert gpu.to_plain()["processes"] == [{"pid": 1, "used_memory": 2}]
    back = Gpu.from_plain(gpu.to_plain())
    assert back.nvlink_peers == frozenset({"a", "b"}) and back.processes == (Process(1, 2),)


def test_a_missing_field_takes_its_default_and_an_unknown_one_is_ignored():
    assert Gpu.from_plain({"index": 3, "uuid": None, "from_a_newer_version": 1}) == Gpu(index=3, uuid=None)


def test_records_refuse_what_they_do_not_have():
    with pytest.raises(TypeError, match="needs 'uuid'"):
        Gpu(index=1)
    with pytest.raises(TypeError, match="no field 'colour'"):
        Gpu(index=1, uuid=None, colour="red")
    assert Record.FIELDS == () and "__slots__" in vars(Gpu)
