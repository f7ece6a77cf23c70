"""Pending.abandon(): a channel that opens after its waiter gave up is closed, not leaked."""

from __future__ import annotations

from wraith.ssh.engine import Channel, Pending


class _Channel(Channel):
    def __init__(self) -> None:
        self.closed_calls = 0

    def set_waker(self, waker: object) -> None:
        pass

    def read(self, max_bytes: int) -> bytes | None:
        return None

    def write(self, data: bytes | memoryview) -> int:
        return 0

    def write_eof(self) -> None:
        pass

    def close(self) -> None:
        self.closed_calls += 1

    @property
    def lost(self) -> bool:
        return False

    @property
    def closed(self) -> bool:
        return self.closed_calls > 0


def test_a_channel_arriving_after_abandon_is_closed() -> None:
    woken: list[int] = []
    pending: Pending[Channel] = Pending()
    pending.set_waker(lambda: woken.append(1))
    pending.abandon()
    assert pending.abandoned
    chan = _Channel()
    pending.set_result(chan)
    assert chan.closed_calls == 1
    assert woken == []  # nobody is told: nobody waits


def test_a_channel_that_arrived_unseen_is_closed_on_abandon() -> None:
    pending: Pending[Channel] = Pending()
    chan = _Channel()
    pending.set_result(chan)
    pending.abandon()
    assert chan.closed_calls == 1


def test_errors_and_plain_values_are_just_dropped() -> None:
    pending: Pending[int] = Pending()
    pending.abandon()
    pending.set_result(7)  # nothing to close, nothing raised
    failed: Pending[Channel] = Pending()
    failed.abandon()
    failed.set_error(RuntimeError("refused"))
    assert failed.done
