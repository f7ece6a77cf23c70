"""An asyncssh peer for tests/test_interop_peers.py: an SSH client or server on 127.0.0.1.

Runs until it is terminated (or its connection ends), and reports on stdout,
one line each, what the test waits for:

``port N``
    server: listening on 127.0.0.1:N
``local-port N`` / ``remote-port N``
    client: the direct-tcpip listener (on 127.0.0.1) or the tcpip-forward port
    the server granted is ready
``cipher SEND RECV``
    the negotiated ciphers, once authentication is complete
``kex N``
    the N-th key exchange of the process completed (1 is the initial one)
``closed``
    a connection ended

asyncssh starts a re-exchange after every ``--rekey-bytes`` it sends.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys

import asyncssh


def say(line: str) -> None:
    print(line, flush=True)


class KexCounter(logging.Handler):
    """Reports each "Completed key exchange" that asyncssh logs (at debug level 1)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage().endswith("Completed key exchange"):
            self.count += 1
            say(f"kex {self.count}")


def setup_logging() -> None:
    logger = logging.getLogger("asyncssh")
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    logger.addHandler(KexCounter())
    stderr = logging.StreamHandler(sys.stderr)
    stderr.setLevel(logging.INFO)
    logger.addHandler(stderr)


def report_ciphers(conn: asyncssh.SSHClientConnection | asyncssh.SSHServerConnection) -> None:
    say(f"cipher {conn.get_extra_info('send_cipher')} {conn.get_extra_info('recv_cipher')}")


async def run_client(args: argparse.Namespace) -> None:
    conn = await asyncssh.connect(
        "127.0.0.1",
        args.port,
        username="tester",
        client_keys=[args.key],
        known_hosts=args.known_hosts,
        agent_path=None,
        config=None,
        encryption_algs=[args.cipher],
        rekey_bytes=args.rekey_bytes,
    )
    async with conn:
        report_ciphers(conn)
        if args.local is not None:
            local = await conn.forward_local_port("127.0.0.1", 0, "127.0.0.1", args.local)
            say(f"local-port {local.get_port()}")
        if args.remote is not None:
            remote = await conn.forward_remote_port("127.0.0.1", 0, "127.0.0.1", args.remote)
            say(f"remote-port {remote.get_port()}")
        await conn.wait_closed()
    say("closed")


class Server(asyncssh.SSHServer):
    """Allows direct-tcpip and tcpip-forward, as sshd with AllowTcpForwarding yes."""

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        self._conn = conn

    def auth_completed(self) -> None:
        report_ciphers(self._conn)

    def connection_lost(self, exc: Exception | None) -> None:
        say("closed")

    def connection_requested(
        self, dest_host: str, dest_port: int, orig_host: str, orig_port: int
    ) -> bool:
        return True

    def server_requested(self, listen_host: str, listen_port: int) -> object:
        # As returning True, but bound to the IPv4 loopback only: for "localhost"
        # asyncssh would bind ::1 too.  The forwarded-tcpip channels still carry
        # the address the client asked for, and the allocated port.
        if listen_host not in ("localhost", "127.0.0.1"):
            return False
        return self._conn.forward_local_port("127.0.0.1", listen_port, listen_host, listen_port)


async def run_server(args: argparse.Namespace) -> None:
    server = await asyncssh.listen(
        "127.0.0.1",
        0,
        server_factory=Server,
        server_host_keys=[args.host_key],
        authorized_client_keys=args.authorized_keys,
        encryption_algs=[args.cipher],
        rekey_bytes=args.rekey_bytes,
        allow_pty=False,
        config=None,
    )
    say(f"port {server.get_port()}")
    await server.wait_closed()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cipher", required=True)
    parser.add_argument("--rekey-bytes", type=int, default=1 << 20)
    sub = parser.add_subparsers(dest="role", required=True)
    client = sub.add_parser("client")
    client.add_argument("--port", type=int, required=True)
    client.add_argument("--key", required=True, help="client private key")
    client.add_argument("--known-hosts", required=True)
    client.add_argument("--local", type=int, help="direct-tcpip to this 127.0.0.1 port")
    client.add_argument("--remote", type=int, help="tcpip-forward to this 127.0.0.1 port")
    server = sub.add_parser("server")
    server.add_argument("--host-key", required=True)
    server.add_argument("--authorized-keys", required=True)
    args = parser.parse_args()
    setup_logging()
    asyncio.run(run_client(args) if args.role == "client" else run_server(args))


if __name__ == "__main__":
    main()
