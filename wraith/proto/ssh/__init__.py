"""Wraith's Sans-IO SSH engine: transport, kex, userauth and connection as pure state machines.

Bytes come in through ``receive_data()``, events come out of ``next_event()``,
and bytes to send come out of ``data_to_send()``.  No sockets, threads or
clocks: time is passed in as ``now`` and timers go out as deadlines.  Only a
modern subset exists: curve25519 (and mlkem768x25519) key exchange, ssh-ed25519
host and user keys (and OpenSSH user certificates), AES-GCM and
chacha20-poly1305@openssh.com, strict kex.
"""
