"""SSH for Wraith: engine-neutral policy, and the engine that speaks the protocol.

The policy modules are pure functions of their inputs and share no state with any
engine, so the paramiko engine and a future Sans-IO engine make the same decisions:

- :mod:`wraith.ssh.keys`: Ed25519 keys and certificates, loaded from a path or a buffer;
  fingerprints; key generation and the server's host key in the state directory.
- :mod:`wraith.ssh.authorized_keys`: the OpenSSH ``authorized_keys`` format and its options.
- :mod:`wraith.ssh.auth`: the server's ``publickey`` decision, certificates included.
- :mod:`wraith.ssh.known_hosts`: the client's host key pin.

Nothing is imported here, so importing a submodule stays cheap.
"""

from __future__ import annotations
