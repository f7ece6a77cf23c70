"""Reconnect backoff (full jitter, capped, reset after a stable session) and -R re-registration."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from wraith.proto import forwards as fw
from wraith.proto.backoff import Backoff
from wraith.proto.errors import LocalProtocolError


def test_ceilings_double_up_to_the_cap() -> None:
    b = Backoff(initial=1.0, cap=10.0, rng=lambda: 1.0)
    assert [b.next_delay() for _ in range(6)] == [1.0, 2.0, 4.0, 8.0, 10.0, 10.0]
    assert b.attempt == 6


def test_full_jitter_draws_below_the_ceiling() -> None:
    draws = iter([0.0, 0.5, 0.25])
    b = Backoff(initial=2.0, cap=100.0, rng=lambda: next(draws))
    assert [b.next_delay() for _ in range(3)] == [0.0, 2.0, 2.0]


def test_a_stable_session_resets_the_sequence() -> None:
    b = Backoff(initial=1.0, cap=30.0, stable_after=60.0, rng=lambda: 1.0)
    for _ in range(4):
        b.next_delay()
    b.connected(100.0)
    b.lost(170.0)  # up for 70 s
    assert b.next_delay() == 1.0


def test_a_short_lived_session_keeps_climbing() -> None:
    b = Backoff(initial=1.0, cap=30.0, stable_after=60.0, rng=lambda: 1.0)
    for _ in range(4):
        b.next_delay()
    b.connected(100.0)
    b.lost(110.0)  # up for 10 s: a server that crashes on each login
    assert b.next_delay() == 16.0


@pytest.mark.parametrize(
    "kwargs",
    [{"initial": 0}, {"initial": -1}, {"initial": 5, "cap": 1}, {"stable_after": -1}],
)
def test_bad_settings_are_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(LocalProtocolError):
        Backoff(**kwargs)


@given(
    initial=st.floats(0.001, 100),
    extra=st.floats(0, 1000),
    draws=st.lists(st.floats(0, 1), min_size=1, max_size=80),
)
def test_every_delay_is_within_zero_and_its_ceiling(
    initial: float, extra: float, draws: list[float]
) -> None:
    cap = initial + extra
    it = iter(draws)
    b = Backoff(initial=initial, cap=cap, rng=lambda: next(it))
    for n in range(len(draws)):
        ceiling = b.ceiling()
        assert ceiling == min(cap, initial * 2.0**n)
        delay = b.next_delay()
        assert 0.0 <= delay <= ceiling <= cap


# -- -R forwards across sessions ------------------------------------------------------


def _registry(*specs: str) -> fw.ForwardRegistry:
    reg = fw.ForwardRegistry()
    for spec in specs:
        reg.add(fw.parse_remote(spec))
    return reg


def test_a_port_zero_forward_asks_for_its_old_port_after_a_reconnect() -> None:
    reg = _registry("0:localhost:5432")
    (entry,) = reg.pending_remote()
    assert entry.port_to_request() == 0
    reg.mark_active(entry.id, 40001)
    reg.session_lost()
    (again,) = reg.pending_remote()
    assert again.previous_port == 40001
    assert again.port_to_request() == 40001
    reg.mark_active(again.id, 40001)


def test_a_fixed_port_forward_asks_for_the_same_port() -> None:
    reg = _registry("8080:localhost:80")
    (entry,) = reg.pending_remote()
    reg.mark_active(entry.id, 8080)
    reg.session_lost()
    assert reg.pending_remote()[0].port_to_request() == 8080


def test_a_refused_forward_is_retried_on_the_same_session() -> None:
    reg = _registry("0:localhost:5432")
    (entry,) = reg.pending_remote()
    reg.mark_active(entry.id, 40001)
    reg.session_lost()
    reg.mark_failed(entry.id, "port taken")
    assert [e.id for e in reg.failed_remote()] == [entry.id]
    assert reg.pending_remote() == []
    reg.retry(entry.id)
    assert reg.pending_remote()[0].port_to_request() == 40001
    reg.mark_failed(entry.id, "still taken")
    reg.forget_previous_port(entry.id)
    reg.retry(entry.id)
    assert reg.pending_remote()[0].port_to_request() == 0


def test_retry_is_only_for_failed_remote_forwards() -> None:
    reg = _registry("0:localhost:5432")
    (entry,) = reg.pending_remote()
    with pytest.raises(LocalProtocolError):
        reg.retry(entry.id)  # REQUESTED, not FAILED
    local = reg.add(fw.parse_local("8080:localhost:80"))
    with pytest.raises(LocalProtocolError):
        reg.retry(local.id)


@given(st.lists(st.sampled_from(["bind", "fail", "lost", "retry", "forget"]), max_size=40))
def test_the_port_asked_for_is_always_the_spec_or_the_last_bound_one(ops: list[str]) -> None:
    reg = _registry("0:localhost:5432")
    fid = reg.pending_remote()[0].id
    last_bound: int | None = None
    port = 40000
    for op in ops:
        entry = reg.get(fid)
        try:
            if op == "bind":
                port += 1
                reg.mark_active(fid, entry.port_to_request() or port)
                last_bound = reg.get(fid).bound_port
            elif op == "fail":
                reg.mark_failed(fid, "no")
            elif op == "lost":
                reg.session_lost()
            elif op == "retry":
                reg.retry(fid)
            else:
                reg.forget_previous_port(fid)
                if entry.state is not fw.ForwardState.ACTIVE:
                    last_bound = None  # an active one keeps its bound port for next time
        except LocalProtocolError:
            assert reg.get(fid) == entry  # an illegal move changes nothing
            continue
        now = reg.get(fid)
        if now.state is fw.ForwardState.REQUESTED:
            assert now.port_to_request() in (0, last_bound)
