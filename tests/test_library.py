"""The programmatic API, in-process, on both backends: serve() + connect() + open_stream()."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
import trio
from conftest import Keys
from helpers import CURRENT, EchoServer, free_port, pattern_bytes

from wraith.options import ConnectOptions, ServeOptions
from wraith.proto.tunnel import OpenFailure
from wraith.ssh import keys as wkeys
from wraith.ssh.engine import ChannelOpenFailed
from wraith.ssh.known_hosts import UnknownHostKey


def _serve_opts(tmp_path: Path, keys: Keys) -> ServeOptions:
    # Keys as bytes (not paths): every key option takes either.
    return ServeOptions(
        engine=CURRENT.engine,
        listen=["tcp://127.0.0.1:0"],
        authorized_keys=keys.authorized_keys.read_bytes(),
        state_dir=tmp_path / "state",
    )


def _connect_opts(port: int, server: Any, keys: Keys, **kw: Any) -> ConnectOptions:
    fp = wkeys.fingerprint(server.config.host_key.public_key())
    kw.setdefault("host_key_fingerprints", [fp])
    return ConnectOptions(
        target=f"127.0.0.1:{port}", identity=keys.client.read_text(), engine=CURRENT.engine, **kw
    )


async def _trio_scenario(tmp_path: Path, keys: Keys, echo_port: int) -> list[object]:
    from wraith.io_trio import connect, serve

    results: list[object] = []
    async with serve(_serve_opts(tmp_path, keys)) as server:
        port = server.addresses[0][1]
        async with connect(_connect_opts(port, server, keys)) as client:
            assert client.socks_addresses == []  # the library opens no SOCKS port by itself
            stream = await client.open_stream("127.0.0.1", echo_port)
            assert isinstance(stream, trio.abc.HalfCloseableStream)
            payload = pattern_bytes(2 * 1024 * 1024)
            got = bytearray()
            async with trio.open_nursery() as nursery:

                async def send() -> None:
                    await stream.send_all(payload)
                    await stream.send_eof()

                nursery.start_soon(send)
                while chunk := await stream.receive_some():
                    got += chunk
            results.append(bytes(got) == payload)
            await stream.aclose()
            for host, port_ in (("127.0.0.1", free_port()), ("wraith-secret", 80)):
                try:
                    await client.open_stream(host, port_)
                    results.append("opened")
                except ChannelOpenFailed as e:
                    results.append(e.code)
        try:
            async with connect(
                _connect_opts(port, server, keys, host_key_fingerprints=[])
            ) as client:
                results.append("connected")
        except UnknownHostKey as e:
            results.append(e.fingerprint == wkeys.fingerprint(server.config.host_key.public_key()))
    return results


async def _asyncio_scenario(tmp_path: Path, keys: Keys, echo_port: int) -> list[object]:
    from wraith.io_asyncio import connect, serve

    results: list[object] = []
    async with serve(_serve_opts(tmp_path, keys)) as server:
        port = server.addresses[0][1]
        async with connect(_connect_opts(port, server, keys)) as client:
            assert client.socks_addresses == []
            reader, writer = await client.open_stream("127.0.0.1", echo_port)
            assert isinstance(reader, asyncio.StreamReader)
            assert isinstance(writer, asyncio.StreamWriter)
            payload = pattern_bytes(2 * 1024 * 1024)

            async def send() -> None:
                writer.write(payload)
                await writer.drain()
                writer.write_eof()

            sender = asyncio.ensure_future(send())
            got = await reader.read()  # until EOF
            await sender
            results.append(got == payload)
            writer.close()
            for host, port_ in (("127.0.0.1", free_port()), ("wraith-secret", 80)):
                try:
                    await client.open_stream(host, port_)
                    results.append("opened")
                except ChannelOpenFailed as e:
                    results.append(e.code)
        try:
            async with connect(
                _connect_opts(port, server, keys, host_key_fingerprints=[])
            ) as client:
                results.append("connected")
        except UnknownHostKey as e:
            results.append(e.fingerprint == wkeys.fingerprint(server.config.host_key.public_key()))
    return results


def test_library_serve_connect_open_stream(
    backend: str, tmp_path: Path, keys: Keys, echo: EchoServer
) -> None:
    if backend == "trio":
        results = trio.run(_trio_scenario, tmp_path, keys, echo.port)
    else:
        results = asyncio.run(_asyncio_scenario(tmp_path, keys, echo.port))
    assert results == [
        True,  # 2 MiB echoed intact, with half-close
        OpenFailure.CONNECT_FAILED,  # nothing listens there
        OpenFailure.ADMINISTRATIVELY_PROHIBITED,  # reserved wraith-* name
        True,  # unknown host key refused, with the server's fingerprint
    ]


def test_library_rejects_bad_options(tmp_path: Path) -> None:
    from wraith.config import ClientConfig, ConfigError

    with pytest.raises(ConfigError, match="not on loopback"):
        ClientConfig.from_options(
            ConnectOptions(
                target="127.0.0.1",
                identity=_make_key(tmp_path),
                socks=["0.0.0.0:1080"],
                host_key_fingerprints=[],
            )
        )
    with pytest.raises(ConfigError, match="bad -L spec"):
        ClientConfig.from_options(
            ConnectOptions(target="127.0.0.1", identity=_make_key(tmp_path), local_forwards=["x"])
        )
    with pytest.raises(ConfigError, match="unknown engine"):
        ClientConfig.from_options(
            ConnectOptions(target="127.0.0.1", identity=_make_key(tmp_path), engine="bogus")
        )


def _make_key(tmp_path: Path) -> Path:
    path = tmp_path / "id"
    if not path.exists():
        wkeys.generate_keypair(path)
    return path


@pytest.mark.integration
@pytest.mark.parametrize("backend_name", ["trio", "asyncio"])
def test_library_stealth_round_trip(
    backend_name: str, tmp_path: Path, keys: Keys, echo: EchoServer
) -> None:
    """ServeOptions(stealth=True) and ConnectOptions(stealth_path=...) in-process."""
    from pki import make_pki

    made = make_pki(tmp_path)
    serve_opts = ServeOptions(
        listen=["tls://127.0.0.1:0"],
        tls_cert=made.cert,
        tls_key=made.key,
        stealth=True,
        authorized_keys=keys.authorized_keys.read_bytes(),
        state_dir=tmp_path / "state",
    )

    def connect_opts(port: int, server: Any) -> ConnectOptions:
        return ConnectOptions(
            target=f"tls://localhost:{port}",
            identity=keys.client.read_text(),
            host_key_fingerprints=[wkeys.fingerprint(server.config.host_key.public_key())],
            tls_ca=made.ca,
            stealth_path=server.config.front.stealth.path,
        )

    async def trio_main() -> bytes:
        from wraith.io_trio import connect, serve

        async with (
            serve(serve_opts) as server,
            connect(connect_opts(server.addresses[0][1], server)) as client,
        ):
            stream = await client.open_stream("127.0.0.1", echo.port)
            await stream.send_all(b"through stealth")
            await stream.send_eof()
            got = b""
            while chunk := await stream.receive_some():
                got += chunk
            return got

    async def asyncio_main() -> bytes:
        from wraith.io_asyncio import connect, serve

        async with (
            serve(serve_opts) as server,
            connect(connect_opts(server.addresses[0][1], server)) as client,
        ):
            reader, writer = await client.open_stream("127.0.0.1", echo.port)
            writer.write(b"through stealth")
            writer.write_eof()
            got = await reader.read()
            writer.close()
            return got

    got = trio.run(trio_main) if backend_name == "trio" else asyncio.run(asyncio_main())
    assert got == b"through stealth"
