"""The pumps' read policy (wraith.pumping.Reads), driven with a recording session."""

from __future__ import annotations

from wraith.pumping import READ_SIZE, SMALL_READ, TRIM_AFTER, YIELD_EVERY, Reads
from wraith.ssh.engine import ByteSession, Waker


class Recorder(ByteSession):
    def __init__(self) -> None:
        self.filled: list[int] = []
        self.received: list[bytes] = []
        self.trims = 0
        self.timer: float | None = None
        self.asked: list[int] = []

    def receive_data(self, data: bytes | bytearray, now: float) -> None:
        self.received.append(bytes(data))

    def get_buffer(self, size: int) -> memoryview | None:
        self.asked.append(size)
        return memoryview(bytearray(size))

    def buffer_filled(self, n: int, now: float) -> None:
        self.filled.append(n)

    def trim(self) -> None:
        self.trims += 1

    def data_to_send(self) -> bytes:
        return b""

    def set_output_waker(self, waker: Waker | None) -> None:
        pass

    def get_timer(self) -> float | None:
        return self.timer

    def handle_timer(self, now: float) -> None:
        pass

    @property
    def finished(self) -> bool:
        return False


def make() -> tuple[Recorder, Reads, list[int]]:
    session = Recorder()
    wakes: list[int] = []
    return session, Reads(session, lambda: wakes.append(1)), wakes


def test_reads_start_small_grow_while_full_and_shrink_again() -> None:
    session, reads, _ = make()
    assert reads.want == SMALL_READ
    sizes = []
    for _ in range(5):
        reads.buffer()
        sizes.append(reads.want)
        assert reads.filled(reads.want, 0.0)  # full reads: a bulk transfer
    assert sizes[0] == SMALL_READ and sizes[-1] == READ_SIZE
    assert sizes == sorted(sizes)
    assert reads.filled(100, 0.1)  # a small read (a window adjust, say)
    assert reads.want == SMALL_READ
    assert session.filled[-1] == 100
    assert session.trims == 0  # the link was busy a moment ago


def test_a_quiet_link_gives_back_its_big_buffer() -> None:
    session, reads, _ = make()
    reads.filled(SMALL_READ, 0.0)
    reads.filled(10, TRIM_AFTER / 2)
    assert session.trims == 0
    reads.filled(10, TRIM_AFTER + 0.5)
    assert session.trims == 1


def test_eof_ends_the_loop_and_wakes_the_writer() -> None:
    session, reads, wakes = make()
    assert not reads.filled(0, 1.0)
    assert session.received == [b""]
    assert wakes == [1]
    session2, reads2, _ = make()
    assert reads2.got(b"tls bytes", 1.0)
    assert not reads2.got(b"", 2.0)
    assert session2.received == [b"tls bytes", b""]


def test_the_writer_is_woken_only_when_the_timer_moved() -> None:
    session, reads, wakes = make()
    reads.filled(10, 0.0)
    reads.filled(10, 0.0)
    assert wakes == []  # no output and the same (absent) timer: nothing to do
    session.timer = 5.0
    reads.filled(10, 0.0)
    reads.filled(10, 0.0)
    assert wakes == [1]


def test_the_reader_yields_after_a_burst() -> None:
    _, reads, _ = make()
    yields = 0
    for _ in range(4 * YIELD_EVERY // READ_SIZE):
        reads.filled(READ_SIZE, 0.0)
        yields += reads.should_yield
    assert yields == 4
    assert not reads.should_yield


def test_the_allocator_tuning_takes_on_glibc() -> None:
    import platform

    from wraith.memtune import tune_allocator

    took = tune_allocator()
    # This machine is Debian (glibc): the settings must take.
    assert took == (platform.libc_ver()[0] == "glibc")
