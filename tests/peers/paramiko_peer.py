"""A paramiko peer for tests/test_interop_peers.py: an SSH client or server on 127.0.0.1.

This is upstream paramiko driven directly (not Wraith's paramiko engine).  It
runs until it is terminated (or its transport ends) and reports on stdout, one
line each, what the test waits for:

``port N``
    server: listening on 127.0.0.1:N (one connection is served)
``local-port N`` / ``remote-port N``
    client: a listener on 127.0.0.1:N whose connections go out as direct-tcpip
    channels, or the tcpip-forward port the server granted, is ready
``cipher OUT IN``
    the negotiated ciphers, once authentication is complete
``kex N``
    the N-th key exchange completed (1 is the initial one)
``closed``
    the transport ended

Re-exchanges: paramiko's Packetizer asks for one after REKEY_BYTES (or
REKEY_PACKETS) sent *or* received; both are lowered from 2**29 here
(``--rekey-bytes``), so a 20 MB transfer crosses dozens of them, started by
paramiko in the middle of the stream.
"""

from __future__ import annotations

import argparse
import logging
import socket
import sys
import threading
from collections.abc import Callable

import paramiko
from paramiko.common import MSG_CHANNEL_CLOSE
from paramiko.packet import Packetizer

BUF = 64 * 1024
LOOPBACK = ("localhost", "127.0.0.1")


def say(line: str) -> None:
    print(line, flush=True)


class KexCounter(logging.Handler):
    """Reports each "Switch to new keys" (paramiko's log line for a peer's NEWKEYS)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        # (Handler.handle() holds the handler's lock around emit.)
        if record.getMessage().startswith("Switch to new keys"):
            self.count += 1
            say(f"kex {self.count}")


def setup_logging() -> None:
    logger = logging.getLogger("paramiko")
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    logger.addHandler(KexCounter())
    stderr = logging.StreamHandler(sys.stderr)
    stderr.setLevel(logging.INFO)
    logger.addHandler(stderr)


def work_around_paramiko_822() -> None:
    """Keep paramiko's transport thread from deadlocking on a CLOSE during its own rekey.

    paramiko issue #822 (open since 2016): when paramiko has sent KEXINIT and a
    CHANNEL_CLOSE the peer sent before seeing it arrives, the transport thread
    answers CLOSE with ``_send_user_message``, which waits for the end of the
    key exchange -- which only that same thread can bring about.  It waits 30 s,
    raises "Key-exchange timed out waiting for key negotiation" and drops the
    connection.  The peer did nothing wrong, so answer from a helper thread
    instead: the CLOSE then goes out after NEWKEYS, as RFC 4253 7.1 wants.
    """
    original = paramiko.Channel._handle_close

    def handle_close(self: paramiko.Channel, m: paramiko.Message) -> None:
        transport = self.transport
        if threading.current_thread() is transport and not transport.clear_to_send.is_set():
            threading.Thread(target=original, args=(self, m), daemon=True).start()
        else:
            original(self, m)

    # The transport dispatches from a table of functions, not through the class.
    paramiko.Transport._channel_handler_table[MSG_CHANNEL_CLOSE] = handle_close


def configure(transport: paramiko.Transport, cipher: str) -> None:
    options = transport.get_security_options()
    options.ciphers = (cipher,)


def report_ciphers(transport: paramiko.Transport) -> None:
    say(f"cipher {transport.local_cipher} {transport.remote_cipher}")


def bridge(sock: socket.socket, chan: paramiko.Channel) -> None:
    """Copy both ways between ``sock`` and ``chan``, passing EOF on; close both at the end."""
    done = threading.Barrier(2, action=lambda: (chan.close(), sock.close()))

    def pump(
        read: Callable[[int], bytes], write: Callable[[bytes], object], eof: Callable[[], object]
    ) -> None:
        try:
            while data := read(BUF):
                write(data)
            eof()
        except (OSError, EOFError, paramiko.SSHException):
            chan.close()
            sock.close()
        finally:
            done.wait()

    def sock_eof() -> None:
        sock.shutdown(socket.SHUT_WR)

    threading.Thread(
        target=pump, args=(sock.recv, chan.sendall, chan.shutdown_write), daemon=True
    ).start()
    threading.Thread(target=pump, args=(chan.recv, sock.sendall, sock_eof), daemon=True).start()


def serve_listener(
    listener: socket.socket, open_channel: Callable[[tuple[str, int]], paramiko.Channel]
) -> None:
    """Accept on ``listener`` forever; bridge each connection to a channel from ``open_channel``."""

    def accept_loop() -> None:
        while True:
            try:
                sock, origin = listener.accept()
            except OSError:
                return
            try:
                chan = open_channel(origin)
            except (paramiko.SSHException, EOFError):
                sock.close()
                continue
            bridge(sock, chan)

    threading.Thread(target=accept_loop, daemon=True).start()


# -- client ---------------------------------------------------------------------------------------


def run_client(args: argparse.Namespace) -> None:
    sock = socket.create_connection(("127.0.0.1", args.port), timeout=15)
    transport = paramiko.Transport(sock)
    configure(transport, args.cipher)
    transport.start_client(timeout=15)
    expected = args.host_key_pub.split()
    key = transport.get_remote_server_key()
    if (key.get_name(), key.get_base64()) != (expected[0], expected[1]):
        sys.exit(f"host key mismatch: {key.get_name()} {key.get_base64()}")
    transport.auth_publickey("tester", paramiko.Ed25519Key.from_private_key_file(args.key))
    report_ciphers(transport)
    if args.local is not None:
        dest = ("127.0.0.1", args.local)
        listener = socket.create_server(("127.0.0.1", 0))
        serve_listener(
            listener, lambda origin: transport.open_channel("direct-tcpip", dest, origin)
        )
        say(f"local-port {listener.getsockname()[1]}")
    if args.remote is not None:
        target = ("127.0.0.1", args.remote)

        def forwarded(
            chan: paramiko.Channel, origin: tuple[str, int], server: tuple[str, int]
        ) -> None:
            # Called on paramiko's transport thread: connect elsewhere.
            def connect() -> None:
                try:
                    sock = socket.create_connection(target, timeout=15)
                except OSError:
                    chan.close()
                    return
                sock.settimeout(None)
                bridge(sock, chan)

            threading.Thread(target=connect, daemon=True).start()

        port = transport.request_port_forward("127.0.0.1", 0, handler=forwarded)
        say(f"remote-port {port}")
    while transport.is_active():
        transport.join(1)
    say("closed")


# -- server ---------------------------------------------------------------------------------------


class Server(paramiko.ServerInterface):
    """Public key auth for one key; direct-tcpip and tcpip-forward to and on 127.0.0.1."""

    def __init__(self, transport: paramiko.Transport, allowed: tuple[str, str]) -> None:
        self.transport = transport
        self.allowed = allowed
        self.pending: dict[int, socket.socket] = {}
        self.listeners: dict[tuple[str, int], socket.socket] = {}

    def get_allowed_auths(self, username: str) -> str:
        return "publickey"

    def check_auth_publickey(self, username: str, key: paramiko.PKey) -> int:
        if (key.get_name(), key.get_base64()) == self.allowed:
            return paramiko.AUTH_SUCCESSFUL
        return paramiko.AUTH_FAILED

    def check_channel_request(self, kind: str, chanid: int) -> int:
        return paramiko.OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED

    def check_channel_direct_tcpip_request(
        self, chanid: int, origin: tuple[str, int], destination: tuple[str, int]
    ) -> int:
        if destination[0] not in LOOPBACK:
            return paramiko.OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED
        try:
            sock = socket.create_connection(("127.0.0.1", destination[1]), timeout=15)
        except OSError:
            return paramiko.OPEN_FAILED_CONNECT_FAILED
        sock.settimeout(None)
        self.pending[chanid] = sock
        return paramiko.OPEN_SUCCEEDED

    def check_port_forward_request(self, address: str, port: int) -> int | bool:
        if address not in LOOPBACK:
            return False
        try:
            listener = socket.create_server(("127.0.0.1", port))
        except OSError:
            return False
        bound = int(listener.getsockname()[1])
        self.listeners[address, bound] = listener
        serve_listener(
            listener,
            lambda origin: self.transport.open_forwarded_tcpip_channel(origin, (address, bound)),
        )
        return bound

    def cancel_port_forward_request(self, address: str, port: int) -> None:
        listener = self.listeners.pop((address, port), None)
        if listener is not None:
            listener.close()

    def check_global_request(self, kind: str, msg: paramiko.Message) -> bool:
        return False  # keepalive@openssh.com and anything else: REQUEST_FAILURE


def run_server(args: argparse.Namespace) -> None:
    host_key = paramiko.Ed25519Key.from_private_key_file(args.host_key)
    allowed = args.authorized_key.split()
    listener = socket.create_server(("127.0.0.1", 0))
    say(f"port {listener.getsockname()[1]}")
    sock, _ = listener.accept()
    listener.close()
    transport = paramiko.Transport(sock)
    configure(transport, args.cipher)
    transport.add_server_key(host_key)
    server = Server(transport, (allowed[0], allowed[1]))
    transport.start_server(server=server)
    reported = False
    while transport.is_active():
        chan = transport.accept(1)
        if not reported and transport.is_authenticated():
            report_ciphers(transport)
            reported = True
        if chan is None:
            continue
        sock = server.pending.pop(chan.get_id(), None)
        if sock is None:
            chan.close()
        else:
            bridge(sock, chan)
    say("closed")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cipher", required=True)
    parser.add_argument("--rekey-bytes", type=int, default=1 << 20)
    parser.add_argument("--rekey-packets", type=int, default=1 << 12)
    sub = parser.add_subparsers(dest="role", required=True)
    client = sub.add_parser("client")
    client.add_argument("--port", type=int, required=True)
    client.add_argument("--key", required=True, help="client private key")
    client.add_argument("--host-key-pub", required=True, help="the server's .pub line")
    client.add_argument("--local", type=int, help="direct-tcpip to this 127.0.0.1 port")
    client.add_argument("--remote", type=int, help="tcpip-forward to this 127.0.0.1 port")
    server = sub.add_parser("server")
    server.add_argument("--host-key", required=True)
    server.add_argument("--authorized-key", required=True, help="the client's .pub line")
    args = parser.parse_args()
    Packetizer.REKEY_BYTES = args.rekey_bytes
    Packetizer.REKEY_PACKETS = args.rekey_packets
    work_around_paramiko_822()
    setup_logging()
    (run_client if args.role == "client" else run_server)(args)


if __name__ == "__main__":
    main()
