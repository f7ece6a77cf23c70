"""The fail2ban-style ban list and the pre-auth connection caps (wraith.proto.ratelimit)."""

from __future__ import annotations

import ipaddress
import math
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import wraith.proto.ratelimit as ratelimit
from wraith.proto.errors import LocalProtocolError
from wraith.proto.ratelimit import (
    DEFAULT_BAN_TIME,
    DEFAULT_FAILURE_WINDOW,
    DEFAULT_MAX_FAILURES,
    DEFAULT_PREAUTH_PER_SOURCE,
    DEFAULT_PREAUTH_TOTAL,
    REFUSED_PER_SOURCE,
    REFUSED_TOTAL,
    AuthRateLimiter,
    PreAuthLimiter,
    source_key,
)

# -- source_key ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("ip", "key"),
    [
        ("192.0.2.7", "192.0.2.7"),
        ("::ffff:192.0.2.7", "192.0.2.7"),
        ("::FFFF:c000:0207", "192.0.2.7"),
        ("2001:db8:1:2:3:4:5:6", "2001:db8:1:2::/64"),
        ("2001:0db8:0001:0002::", "2001:db8:1:2::/64"),
        ("2001:db8:1:3::1", "2001:db8:1:3::/64"),
        ("::1", "::/64"),
        ("fe80::1%eth0", "fe80::/64"),
        ("fe80::2", "fe80::/64"),
        ("not an address", "not an address"),
        ("", ""),
        ("[::1]", "[::1]"),
        ("192.0.2.7:22", "192.0.2.7:22"),
    ],
)
def test_source_key(ip: str, key: str) -> None:
    assert source_key(ip) == key


@given(st.ip_addresses(v=4))
def test_source_key_ipv4_is_the_address_plain_or_mapped(addr: ipaddress.IPv4Address) -> None:
    assert source_key(str(addr)) == str(addr)
    assert source_key(f"::ffff:{addr}") == str(addr)


@given(st.ip_addresses(v=6), st.integers(0, 2**64 - 1))
def test_source_key_ipv6_is_the_64(addr: ipaddress.IPv6Address, host: int) -> None:
    if addr.ipv4_mapped is not None:
        return
    key = source_key(str(addr))
    net = ipaddress.IPv6Network(key)
    assert net.prefixlen == 64
    assert addr in net
    # Every host of the /64 shares the bucket; the next /64 does not.
    sibling = ipaddress.IPv6Address(int(net.network_address) | host)
    if sibling.ipv4_mapped is None:
        assert source_key(str(sibling)) == key
    neighbour = ipaddress.IPv6Address((int(addr) + 2**64) % 2**128)
    if neighbour.ipv4_mapped is None:
        assert source_key(str(neighbour)) != key


@given(st.text())
def test_source_key_any_text(text: str) -> None:
    key = source_key(text)
    assert isinstance(key, str)
    assert source_key(key) == key  # a bucket is its own bucket


# -- constructors and defaults ------------------------------------------------


def test_defaults() -> None:
    assert (DEFAULT_MAX_FAILURES, DEFAULT_FAILURE_WINDOW, DEFAULT_BAN_TIME) == (5, 600.0, 900.0)
    assert (DEFAULT_PREAUTH_PER_SOURCE, DEFAULT_PREAUTH_TOTAL) == (10, 256)
    for name in ratelimit.__all__:
        assert hasattr(ratelimit, name), name
    # The defaults are the ones in use: 5 failures in 10 minutes ban for 15 minutes.
    limiter = AuthRateLimiter()
    assert [limiter.record_failure("192.0.2.1", t * 100.0) for t in range(5)] == [False] * 4 + [
        True
    ]
    assert limiter.banned_for("192.0.2.1", 400.0) == 900.0
    spread = AuthRateLimiter()
    assert not any(spread.record_failure("192.0.2.1", t * 150.0) for t in range(5))
    pre = PreAuthLimiter()
    assert [pre.admit("192.0.2.1") for _ in range(11)] == [None] * 10 + [REFUSED_PER_SOURCE]
    pre = PreAuthLimiter()
    assert [pre.admit(f"10.0.{i // 256}.{i % 256}") for i in range(257)][-2:] == [
        None,
        REFUSED_TOTAL,
    ]


@pytest.mark.parametrize(
    ("make", "problem"),
    [
        (lambda: AuthRateLimiter(max_failures=0), "max_failures must be an integer >= 1, got 0"),
        (lambda: AuthRateLimiter(max_failures=True), "max_failures"),
        (lambda: AuthRateLimiter(max_failures=2.0), "max_failures"),  # type: ignore[arg-type]
        (lambda: AuthRateLimiter(window=0), "window must be a number of seconds > 0, got 0"),
        (lambda: AuthRateLimiter(window=-1.0), "window"),
        (lambda: AuthRateLimiter(window=math.nan), "window"),
        (lambda: AuthRateLimiter(ban_time=0.0), "ban_time"),
        (lambda: AuthRateLimiter(ban_time="9"), "ban_time"),  # type: ignore[arg-type]
        (lambda: AuthRateLimiter(max_tracked=0), "max_tracked"),
        (lambda: PreAuthLimiter(per_source=0), "per_source must be an integer >= 1, got 0"),
        (lambda: PreAuthLimiter(total=-3), "total must be an integer >= 1, got -3"),
    ],
)
def test_constructors_validate(make: Callable[[], object], problem: str) -> None:
    with pytest.raises(LocalProtocolError, match=problem):
        make()


def test_constructors_accept_edge_values() -> None:
    forever = AuthRateLimiter(max_failures=1, window=math.inf, ban_time=math.inf, max_tracked=1)
    assert forever.record_failure("192.0.2.1", 0.0)
    assert forever.banned_for("192.0.2.1", 1e12) == math.inf
    one = PreAuthLimiter(per_source=1, total=1)
    assert one.admit("192.0.2.1") is None
    assert one.admit("192.0.2.2") == REFUSED_TOTAL


# -- AuthRateLimiter ------------------------------------------------------------


def test_ban_after_max_failures_within_window() -> None:
    limiter = AuthRateLimiter(max_failures=3, window=60.0, ban_time=100.0)
    assert not limiter.record_failure("192.0.2.1", 0.0)
    assert not limiter.record_failure("192.0.2.1", 10.0)
    assert not limiter.is_banned("192.0.2.1", 10.0)
    assert limiter.record_failure("192.0.2.1", 59.0)
    assert limiter.is_banned("192.0.2.1", 59.0)
    assert limiter.banned_for("192.0.2.1", 59.0) == 100.0
    assert limiter.banned_for("192.0.2.1", 100.0) == 59.0
    # Other sources are not touched.
    assert not limiter.is_banned("192.0.2.2", 60.0)
    assert limiter.banned_for("192.0.2.2", 60.0) == 0.0


def test_no_ban_when_failures_spread_wider_than_window() -> None:
    limiter = AuthRateLimiter(max_failures=3, window=60.0, ban_time=100.0)
    # Each failure is exactly `window` after the one two before it: never 3 in a window.
    for t in range(0, 600, 30):
        assert not limiter.record_failure("192.0.2.1", float(t)), t
    assert not limiter.is_banned("192.0.2.1", 599.0)
    # ...but three just inside one window (540, 570, 599) do ban.
    assert limiter.record_failure("192.0.2.1", 599.0)


def test_failure_exactly_window_old_no_longer_counts() -> None:
    limiter = AuthRateLimiter(max_failures=2, window=10.0, ban_time=5.0)
    assert not limiter.record_failure("192.0.2.1", 0.0)
    assert not limiter.record_failure("192.0.2.1", 10.0)
    assert limiter.record_failure("192.0.2.1", 19.5)


def test_ban_expires_and_is_forgotten() -> None:
    limiter = AuthRateLimiter(max_failures=2, window=60.0, ban_time=100.0)
    limiter.record_failure("192.0.2.1", 0.0)
    assert limiter.record_failure("192.0.2.1", 1.0)
    assert limiter.tracked == 1
    assert limiter.banned_for("192.0.2.1", 100.5) == 0.5
    assert limiter.banned_for("192.0.2.1", 101.0) == 0.0
    assert not limiter.is_banned("192.0.2.1", 101.0)
    assert limiter.tracked == 0
    # The history was cleared by the ban: one failure after it is not a second ban.
    assert not limiter.record_failure("192.0.2.1", 102.0)
    assert limiter.record_failure("192.0.2.1", 103.0)
    assert limiter.banned_for("192.0.2.1", 103.0) == 100.0


def test_failures_while_banned_neither_count_nor_extend() -> None:
    limiter = AuthRateLimiter(max_failures=2, window=1000.0, ban_time=100.0)
    limiter.record_failure("192.0.2.1", 0.0)
    assert limiter.record_failure("192.0.2.1", 0.0)
    for t in range(1, 100):
        assert not limiter.record_failure("192.0.2.1", float(t))
    assert limiter.banned_for("192.0.2.1", 99.0) == 1.0
    assert not limiter.is_banned("192.0.2.1", 100.0)
    # The failures made while banned were not counted toward the next ban.
    assert not limiter.record_failure("192.0.2.1", 100.0)
    assert limiter.tracked == 1


def test_ipv6_64_shares_a_ban_and_mapped_ipv4_is_ipv4() -> None:
    limiter = AuthRateLimiter(max_failures=3, window=60.0, ban_time=100.0)
    limiter.record_failure("2001:db8:1:2::1", 0.0)
    limiter.record_failure("2001:db8:1:2::ffff", 1.0)
    assert limiter.record_failure("2001:db8:1:2:aaaa:bbbb:cccc:dddd", 2.0)
    assert limiter.is_banned("2001:db8:1:2::99", 3.0)
    assert not limiter.is_banned("2001:db8:1:3::1", 3.0)
    assert limiter.tracked == 1

    limiter.record_failure("192.0.2.9", 10.0)
    limiter.record_failure("::ffff:192.0.2.9", 11.0)
    assert limiter.record_failure("192.0.2.9", 12.0)
    assert limiter.is_banned("::ffff:192.0.2.9", 13.0)
    assert not limiter.is_banned("192.0.2.10", 13.0)


def test_memory_is_bounded_with_many_sources() -> None:
    limiter = AuthRateLimiter(max_failures=3, window=60.0, ban_time=100.0, max_tracked=50)
    for i in range(5000):
        limiter.record_failure(f"10.{i // 65536}.{i // 256 % 256}.{i % 256}", i * 0.001)
        limiter.record_failure(f"2001:db8:{i:x}::1", i * 0.001)
        assert limiter.tracked <= 50
    assert limiter.tracked == 50
    # A bucket's history holds at most max_failures - 1 times (the next one bans).
    assert all(len(h) < 3 for h in limiter._failures.values())
    # The sources kept are the most recent ones: the newest can still be banned...
    newest = "2001:db8:1387::1"
    limiter.record_failure(newest, 5.0)
    assert limiter.record_failure(newest, 5.0)
    # ...while the oldest history was dropped and starts again from nothing.
    assert not limiter.record_failure("10.0.0.0", 5.0)
    assert not limiter.record_failure("10.0.0.0", 5.0)
    assert limiter.record_failure("10.0.0.0", 5.0)


def test_full_table_drops_expired_then_oldest_history_then_keeps_bans() -> None:
    limiter = AuthRateLimiter(max_failures=2, window=10.0, ban_time=100.0, max_tracked=3)
    limiter.record_failure("192.0.2.1", 0.0)
    assert limiter.record_failure("192.0.2.1", 0.0)  # a ban until 100
    limiter.record_failure("192.0.2.2", 1.0)  # history, expires at 11
    limiter.record_failure("192.0.2.3", 5.0)  # history, expires at 15
    assert limiter.tracked == 3
    # At 12 the table is full; 192.0.2.2's history has expired, so it goes, not 192.0.2.3's.
    limiter.record_failure("192.0.2.4", 12.0)
    assert limiter.tracked == 3
    assert limiter.record_failure("192.0.2.3", 13.0)  # its history survived
    # Now two bans and one history (.4); a new source evicts the history, not a ban.
    limiter.record_failure("192.0.2.5", 14.0)
    assert limiter.tracked == 3
    assert limiter.is_banned("192.0.2.1", 14.0)
    assert limiter.is_banned("192.0.2.3", 14.0)
    # Only bans left and the table full: the ban ending soonest (.1) makes room.
    assert limiter.record_failure("192.0.2.5", 15.0)
    limiter.record_failure("192.0.2.6", 16.0)
    assert limiter.tracked == 3
    assert not limiter.is_banned("192.0.2.1", 16.0)
    assert limiter.is_banned("192.0.2.3", 16.0)
    assert limiter.is_banned("192.0.2.5", 16.0)
    # .4's history (a failure at 12, still inside the window) was the one dropped at 14.
    assert not limiter.record_failure("192.0.2.4", 17.0)


def test_expired_bans_make_room_before_histories() -> None:
    limiter = AuthRateLimiter(max_failures=2, window=1000.0, ban_time=10.0, max_tracked=2)
    limiter.record_failure("192.0.2.1", 0.0)
    assert limiter.record_failure("192.0.2.1", 0.0)  # ban until 10
    limiter.record_failure("192.0.2.2", 1.0)  # history, lasts a long time
    limiter.record_failure("192.0.2.3", 20.0)  # the expired ban goes, not the history
    assert limiter.record_failure("192.0.2.2", 21.0)


def test_a_clock_stepping_back_is_held_at_the_latest_time() -> None:
    limiter = AuthRateLimiter(max_failures=2, window=10.0, ban_time=100.0)
    limiter.record_failure("192.0.2.1", 50.0)
    assert limiter.record_failure("192.0.2.1", 40.0)  # taken as 50
    assert limiter.banned_for("192.0.2.1", 0.0) == 100.0
    assert limiter.banned_for("192.0.2.1", 60.0) == 90.0


# -- AuthRateLimiter properties -------------------------------------------------

# Two IPv4 hosts (one also mapped) and two /64s with two hosts each: four buckets.
IPS = [
    "192.0.2.1",
    "::ffff:192.0.2.1",
    "192.0.2.2",
    "2001:db8::1",
    "2001:db8::2",
    "2001:db8:0:1::1",
    "2001:db8:0:1::2",
]
# Integer seconds, so the model's sums are exact and the answers compare with ==.
auth_ops = st.lists(
    st.tuples(st.sampled_from(["fail", "query"]), st.sampled_from(IPS), st.integers(0, 40)),
    max_size=80,
)


class AuthModel:
    """fail2ban with unbounded memory, written the obvious way."""

    def __init__(self, max_failures: int, window: float, ban_time: float) -> None:
        self.max_failures, self.window, self.ban_time = max_failures, window, ban_time
        self.failures: dict[str, list[float]] = {}
        self.ban_until: dict[str, float] = {}

    def banned_for(self, key: str, now: float) -> float:
        return max(0.0, self.ban_until.get(key, 0.0) - now)

    def record_failure(self, key: str, now: float) -> bool:
        if self.banned_for(key, now) > 0.0:
            return False
        recent = [t for t in self.failures.get(key, []) if now - t < self.window] + [now]
        if len(recent) >= self.max_failures:
            self.failures[key] = []
            self.ban_until[key] = now + self.ban_time
            return True
        self.failures[key] = recent
        return False


@settings(max_examples=300)
@given(auth_ops, st.integers(1, 4), st.integers(1, 30), st.integers(1, 30))
def test_auth_matches_model_when_memory_suffices(
    ops: list[tuple[str, str, int]], max_failures: int, window: int, ban_time: int
) -> None:
    limiter = AuthRateLimiter(
        max_failures=max_failures, window=window, ban_time=ban_time, max_tracked=4
    )
    model = AuthModel(max_failures, window, ban_time)
    now = 0.0
    for op, ip, dt in ops:
        now += dt
        key = source_key(ip)
        if op == "fail":
            assert limiter.record_failure(ip, now) == model.record_failure(key, now)
        assert limiter.banned_for(ip, now) == model.banned_for(key, now)
        assert limiter.is_banned(ip, now) == (model.banned_for(key, now) > 0.0)
        assert 0 <= limiter.tracked <= 4


@settings(max_examples=300)
@given(
    st.lists(
        st.tuples(st.booleans(), st.integers(0, 11), st.integers(0, 6)),
        max_size=120,
    ),
    st.integers(1, 3),
    st.integers(1, 20),
    st.integers(1, 20),
    st.integers(1, 4),
)
def test_auth_invariants_under_memory_pressure(
    ops: list[tuple[bool, int, int]],
    max_failures: int,
    window: int,
    ban_time: int,
    max_tracked: int,
) -> None:
    limiter = AuthRateLimiter(
        max_failures=max_failures, window=window, ban_time=ban_time, max_tracked=max_tracked
    )
    # Evictions only forget, so what we check holds whatever was dropped:
    counted: dict[int, list[float]] = {}  # failures counted since the source's last ban
    bans: dict[int, tuple[float, int]] = {}  # source -> (ban end, bans made before it)
    bans_made = 0
    now = 0.0
    for fail, source, dt in ops:
        now += dt
        ip = f"198.51.100.{source}"
        if fail:
            was_banned = limiter.is_banned(ip, now)
            banned = limiter.record_failure(ip, now)
            if was_banned:
                assert not banned
            else:
                counted.setdefault(source, []).append(now)
            if banned:
                # Never banned without max_failures real failures inside the window.
                assert sum(now - t < window for t in counted[source]) >= max_failures
                assert limiter.banned_for(ip, now) == ban_time
                counted[source] = []
                bans[source] = (now + ban_time, bans_made)
                bans_made += 1
        assert limiter.tracked <= max_tracked
        for other, (until, made_before) in list(bans.items()):
            left = limiter.banned_for(f"198.51.100.{other}", now)
            assert 0.0 <= left <= ban_time
            if left == until - now:
                continue
            # A live ban is dropped only when every bucket held is a ban, newer ones
            # included, and it ends soonest: so max_tracked - 1 newer bans were made.
            assert left == 0.0
            assert until <= now or bans_made - made_before - 1 >= max_tracked - 1
            del bans[other]


# -- PreAuthLimiter -------------------------------------------------------------


def test_preauth_per_source_cap() -> None:
    pre = PreAuthLimiter(per_source=2, total=10)
    assert pre.admit("192.0.2.1") is None
    assert pre.admit("::ffff:192.0.2.1") is None
    assert pre.admit("192.0.2.1") == REFUSED_PER_SOURCE
    assert REFUSED_PER_SOURCE == "too many unauthenticated connections from this source"
    assert pre.count("192.0.2.1") == 2
    assert pre.unauthenticated == 2
    # Another source, and another host of a different /64, still get in; the same /64 does not.
    assert pre.admit("192.0.2.2") is None
    assert pre.admit("2001:db8::1") is None
    assert pre.admit("2001:db8::2") is None
    assert pre.admit("2001:db8::3") == REFUSED_PER_SOURCE
    assert pre.admit("2001:db8:0:1::3") is None
    assert pre.count("2001:db8::99") == 2
    # A release frees one slot for that source.
    pre.release("192.0.2.1")
    assert pre.count("192.0.2.1") == 1
    assert pre.admit("192.0.2.1") is None
    assert pre.admit("192.0.2.1") == REFUSED_PER_SOURCE


def test_preauth_total_cap() -> None:
    pre = PreAuthLimiter(per_source=5, total=3)
    assert [pre.admit(f"192.0.2.{i}") for i in range(4)] == [None, None, None, REFUSED_TOTAL]
    assert REFUSED_TOTAL == "too many unauthenticated connections"
    assert pre.unauthenticated == 3
    assert pre.count("192.0.2.3") == 0  # a refusal counts nothing
    pre.release("192.0.2.0")
    assert pre.admit("192.0.2.3") is None
    # A full source is told about its own cap before the server's.
    full = PreAuthLimiter(per_source=1, total=1)
    full.admit("192.0.2.1")
    assert full.admit("192.0.2.1") == REFUSED_PER_SOURCE
    assert full.admit("192.0.2.2") == REFUSED_TOTAL


def test_preauth_release_below_zero_is_harmless() -> None:
    pre = PreAuthLimiter(per_source=2, total=2)
    pre.release("192.0.2.1")
    assert pre.count("192.0.2.1") == 0
    assert pre.unauthenticated == 0
    pre.admit("192.0.2.1")
    pre.admit("192.0.2.2")
    pre.release("192.0.2.1")
    pre.release("192.0.2.1")  # one too many: must not free 192.0.2.2's slot
    assert pre.unauthenticated == 1
    assert pre.count("192.0.2.2") == 1
    assert pre.admit("192.0.2.3") is None
    assert pre.admit("192.0.2.4") == REFUSED_TOTAL
    assert pre._counts == {"192.0.2.2": 1, "192.0.2.3": 1}  # buckets at zero are deleted


@settings(max_examples=300)
@given(
    st.lists(st.tuples(st.booleans(), st.sampled_from(IPS)), max_size=100),
    st.integers(1, 4),
    st.integers(1, 6),
)
def test_preauth_matches_model(ops: list[tuple[bool, str]], per_source: int, total: int) -> None:
    pre = PreAuthLimiter(per_source=per_source, total=total)
    model: dict[str, int] = {}  # bucket -> admitted minus released, floored at zero
    for admit, ip in ops:
        key = source_key(ip)
        if admit:
            if model.get(key, 0) >= per_source:
                want: str | None = REFUSED_PER_SOURCE
            elif sum(model.values()) >= total:
                want = REFUSED_TOTAL
            else:
                want = None
                model[key] = model.get(key, 0) + 1
            assert pre.admit(ip) == want
        else:
            pre.release(ip)
            model[key] = max(0, model.get(key, 0) - 1)
        for other in IPS:
            assert 0 <= pre.count(other) == model.get(source_key(other), 0) <= per_source
        assert pre.unauthenticated == sum(model.values()) <= total
        assert len(pre._counts) == sum(1 for n in model.values() if n)
