"""What ``wraith connect`` does at start-up: the client path loads no server code.

Imports are most of ``wraith connect``'s time to first byte, so the client
never loads the server, its TLS front (h11, the decoy site, stealth), the
authorized_keys parser or paramiko.  Those checks run in a fresh interpreter,
since this test process has imported everything already.  And main() keeps the
cyclic garbage collector off during start-up, then gives it back.
"""

from __future__ import annotations

import gc
import json
import subprocess
import sys
from pathlib import Path

import pytest

#: Never imported by the client path (sansio engine, tcp:// target, text logs).
NOT_FOR_THE_CLIENT = (
    "h11",
    "json",
    "paramiko",
    "wraith.decoy",
    "wraith.front",
    "wraith.gate",
    "wraith.proto.decoy",
    "wraith.proto.proxyproto",
    "wraith.proto.ratelimit",
    "wraith.proto.sniff",
    "wraith.proto.stealth",
    "wraith.ssh.auth",
    "wraith.ssh.authlog",
    "wraith.ssh.authorized_keys",
    "wraith.ssh.paramiko_engine",
    "wraith.ssh.tunnels",
)


def _modules_after(code: str) -> set[str]:
    # json is imported after the code under test, so it is seen only if the code did.
    script = "import sys\n" + code + "\nbefore = sorted(sys.modules)\n"
    script += "import json\nprint(json.dumps(before))"
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    return set(json.loads(out))


@pytest.mark.parametrize("backend", ["trio", "asyncio"])
def test_the_client_path_imports_no_server_code(backend: str) -> None:
    loaded = _modules_after(
        "import wraith.cli, wraith.logs\n"
        f"from wraith.io_{backend} import connect\n"
        "from wraith.config import ClientConfig\n"
        "from wraith.ssh import sansio_engine"
    )
    assert f"wraith.io_{backend}.client" in loaded
    server = {f"wraith.io_{backend}.server", f"wraith.io_{backend}.front"}
    assert sorted(loaded & (server | set(NOT_FOR_THE_CLIENT))) == []
    if backend == "trio":
        assert "wraith.io_trio.tls" not in loaded  # only for tls:// targets


@pytest.mark.parametrize("backend", ["trio", "asyncio"])
def test_the_driver_packages_import_nothing_until_asked(backend: str) -> None:
    loaded = _modules_after(f"import wraith.io_{backend}")
    assert sorted(m for m in loaded if m.startswith(f"wraith.io_{backend}.")) == []


def test_the_driver_packages_still_export_every_name() -> None:
    import wraith.io_asyncio as aio
    import wraith.io_trio as tr
    from wraith.io_asyncio import client as aio_client
    from wraith.io_asyncio import dial, server, streams
    from wraith.io_trio import ChannelStream, Client, Server, connect, serve
    from wraith.io_trio import client as tr_client
    from wraith.io_trio import server as tr_server
    from wraith.io_trio import streams as tr_streams

    assert (connect, Client) == (tr_client.connect, tr_client.Client)
    assert (serve, Server) == (tr_server.serve, tr_server.Server)
    assert ChannelStream is tr_streams.ChannelStream
    assert aio.connect is aio_client.connect and aio.Client is aio_client.Client
    assert aio.serve is server.serve and aio.Server is server.Server
    assert aio.open_channel_streams is streams.open_channel_streams
    # The dialling helpers moved to .dial; the server module still has them.
    assert (server.DialError, server.dial, server.tcp_connect) == (
        dial.DialError,
        dial.dial,
        dial.tcp_connect,
    )
    for module in (tr, aio):
        assert set(module.__all__) <= set(dir(module))
        with pytest.raises(AttributeError):
            _ = module.no_such_name


def test_main_gives_the_collector_back(tmp_path: Path) -> None:
    """main() turns the cyclic GC off for start-up; it leaves it as it found it."""
    from wraith import cli

    assert gc.isenabled()
    assert cli.main(["keygen", "-f", str(tmp_path / "a")]) == 0
    assert gc.isenabled()
    gc.disable()
    try:
        assert cli.main(["keygen", "-f", str(tmp_path / "b")]) == 0
        assert not gc.isenabled()
    finally:
        gc.enable()
