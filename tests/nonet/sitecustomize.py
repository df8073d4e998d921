"""Loaded by every Python process started with this folder on PYTHONPATH: outbound network blocked.

Connections to loopback addresses (the Jupyter kernel's ZMQ channels) and Unix sockets stay
allowed; anything else raises, so a notebook that tries to download something fails loudly.
"""

import ipaddress
import socket

_original_connect = socket.socket.connect
_original_connect_ex = socket.socket.connect_ex


def _is_loopback(address) -> bool:
    if not isinstance(address, tuple):
        return True  # Unix domain socket path
    host = address[0]
    if host in ("localhost", ""):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _guarded_connect(self, address):
    if not _is_loopback(address):
        raise ConnectionRefusedError(f"network access blocked in tests: connect to {address!r}")
    return _original_connect(self, address)


def _guarded_connect_ex(self, address):
    if not _is_loopback(address):
        raise ConnectionRefusedError(f"network access blocked in tests: connect to {address!r}")
    return _original_connect_ex(self, address)


socket.socket.connect = _guarded_connect
socket.socket.connect_ex = _guarded_connect_ex
