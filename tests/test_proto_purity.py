"""wraith.proto stays Sans-IO: no module under it imports anything that does I/O.

The check reads the source with ``ast`` rather than importing it, so it sees
imports inside functions and ``if TYPE_CHECKING`` blocks too, and it covers
subpackages added later.  Dynamic imports (``__import__``, ``importlib``) are
refused as well, since they would slip past a static check.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import wraith.proto

PROTO_DIR = Path(wraith.proto.__file__).parent

# errno is allowed: it is a table of constants.
FORBIDDEN = frozenset(
    {
        "socket",
        "ssl",
        "asyncio",
        "trio",
        "anyio",
        "threading",
        "_thread",
        "time",
        "paramiko",
        "selectors",
        "select",
        "subprocess",
        "multiprocessing",
        "concurrent",
        "os",
        "signal",
        "importlib",
    }
)


def forbidden_imports(
    source: str, filename: str = "<string>", package: str = "wraith.proto"
) -> list[str]:
    """Every forbidden import or dynamic import in ``source``, as readable strings.

    ``package`` is the package the source lives in, to resolve relative imports:
    ``from .. import io_trio`` must not escape ``wraith.proto`` either.
    """
    found = []
    for node in ast.walk(ast.parse(source, filename)):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0:
                names = [node.module or ""]
            else:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                mod = ".".join([*base, node.module] if node.module else base)
                names = [mod] if node.module else [f"{mod}.{a.name}" for a in node.names]
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id == "__import__"
        ):
            found.append(f"{filename}:{node.lineno}: __import__()")
        for name in names:
            parts = name.split(".")
            outside_proto = parts[0] == "wraith" and parts[:2] != ["wraith", "proto"]
            if parts[0] in FORBIDDEN or outside_proto:
                found.append(f"{filename}:{node.lineno}: imports {name}")
    return found


def proto_files() -> list[Path]:
    return sorted(PROTO_DIR.rglob("*.py"))


def test_there_is_something_to_check() -> None:
    names = {p.name for p in proto_files()}
    assert {"__init__.py", "errors.py", "socks5.py", "forwards.py", "names.py"} <= names


@pytest.mark.parametrize("path", proto_files(), ids=lambda p: str(p.relative_to(PROTO_DIR)))
def test_proto_module_is_pure(path: Path) -> None:
    rel = path.relative_to(PROTO_DIR.parent.parent).with_suffix("")
    package = ".".join(rel.parts[:-1])  # __init__ and plain modules alike live in their parent
    assert forbidden_imports(path.read_text(encoding="utf-8"), str(path), package) == []


@pytest.mark.parametrize(
    "source",
    [
        "import socket",
        "import os.path",
        "import json, asyncio",
        "from time import monotonic",
        "from concurrent.futures import Future",
        "def f():\n    import trio",
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import paramiko",
        "mod = __import__('socket')",
        "import importlib\nimportlib.import_module('ssl')",
        "from wraith.io_trio import driver",
        "from wraith import io_asyncio",
        "from .. import io_trio",
        "from ..ssh import client",
    ],
)
def test_the_check_catches_bad_sources(source: str) -> None:
    assert forbidden_imports(source) != []


@pytest.mark.parametrize(
    "source",
    [
        "import errno",
        "import ipaddress, enum, struct",
        "from dataclasses import dataclass",
        "from . import errors",
        "from .errors import RemoteProtocolError",
        "from wraith.proto.errors import LocalProtocolError",
        "import timeit_like_name_is_not_time",
        "from . import socks5_events",
    ],
)
def test_the_check_allows_pure_sources(source: str) -> None:
    assert forbidden_imports(source) == []
