"""OpenSSH glob pattern lists (``*``, ``?``, ``!`` negation), as ``match_pattern_list``.

Shared by :mod:`wraith.ssh.known_hosts` (the client's host names) and
:mod:`wraith.ssh.authorized_keys` (``from=``, ``principals=``).  Its own small
module so that the client, which only checks known_hosts, does not load the
authorized_keys parser (time to first byte of ``wraith connect``).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator, Sequence

__all__ = ["glob_match", "match_pattern_list"]


@functools.lru_cache(maxsize=1024)
def _glob_re(pattern: str) -> re.Pattern[str]:
    parts = [".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern]
    return re.compile("".join(parts), re.IGNORECASE | re.DOTALL)


def glob_match(pattern: str, name: str) -> bool:
    """Does ``name`` match the glob ``pattern`` (``*``, ``?``; case-insensitive)?"""
    return _glob_re(pattern).fullmatch(name) is not None


def match_pattern_list(name: str, patterns: Sequence[str]) -> bool:
    """OpenSSH ``match_pattern_list``: ``*``/``?`` globs, case-insensitive, ``!`` negates.

    A matching negated pattern wins and gives False; otherwise any positive match gives
    True.
    """
    positive = False
    for negated, pat in split_negations(patterns):
        if glob_match(pat, name):
            if negated:
                return False
            positive = True
    return positive


def split_negations(patterns: Sequence[str]) -> Iterator[tuple[bool, str]]:
    """``(negated, pattern)`` for each non-empty entry: a leading ``!`` negates."""
    for raw in patterns:
        pat = raw.strip()
        negated = pat.startswith("!")
        if negated:
            pat = pat[1:]
        if pat:
            yield negated, pat
