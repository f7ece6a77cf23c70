"""Pure protocol state machines: bytes in, events out.

Nothing in this package performs I/O or reads a clock; a test enforces that it
imports no socket, ssl, asyncio, trio, threading, time or paramiko module.
"""
