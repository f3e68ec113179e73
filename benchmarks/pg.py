"""PostgreSQL server URLs for the ``postgres`` mode: checking them, keeping
their passwords out of what the harness writes, and asking whether a server
answers. Standard library only: the sweep's own interpreter need not have a
PostgreSQL driver (the cells' engines bring theirs).
"""

from __future__ import annotations

import contextlib
import re
import socket
import struct
from urllib.parse import parse_qs, urlsplit

DEFAULT_PG_URL = "postgresql://postgres@127.0.0.1:5432/test"
SCHEMES = ("postgresql://", "postgres://")
# In a cell's folder: the schemas the cell made and has not dropped yet,
# one a line (see engines/pgcell.py), for the sweep to drop if the cell died.
SCHEMAS_FILE = "pg-schemas"
# user:password@ in any URL: the password is replaced before a URL is written anywhere.
_PASSWORD = re.compile(r"(?P<head>[a-z][a-z0-9+.-]*://[^/@:\s]*):(?P<password>[^@/\s]*)@", re.IGNORECASE)
# The SSLRequest message (length 8, code 80877103): every PostgreSQL server
# answers it with one byte, S or N, before any authentication.
_SSL_REQUEST = struct.pack("!II", 8, 80877103)


def redact(text: str) -> str:
    """``text`` with the password of every URL in it replaced by ``***``."""
    return _PASSWORD.sub(lambda m: f"{m['head']}:***@", text)


def check_url(url: str) -> str | None:
    """Why ``url`` is not a PostgreSQL URL the cells can use, or None."""
    if not url.startswith(SCHEMES):
        return f"expected postgresql://USER@HOST:PORT/DATABASE, got {redact(url)!r}"
    try:
        address(url)
    except ValueError as exc:
        return f"{redact(url)!r}: {exc}"
    return None


def address(url: str) -> tuple[str, int]:
    """The server's host (or Unix socket folder) and port, as libpq reads
    them from a URL: ``?host=`` and ``?port=`` win over the URL's own."""
    parts = urlsplit(url)
    query = parse_qs(parts.query)
    host = query.get("host", [parts.hostname or "localhost"])[0]
    port = int(query.get("port", [parts.port or 5432])[0])  # a bad port raises ValueError
    return host, port


def answers(url: str, timeout: float = 1.0) -> bool:
    """Whether a PostgreSQL server answers at ``url``'s address within
    ``timeout`` seconds: it replies to an SSLRequest, as any server does
    before it asks for a password. Says nothing about logging in."""
    try:
        host, port = address(url)
    except ValueError:
        return False
    try:
        if host.startswith("/"):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(timeout)
            with contextlib.closing(sock):
                sock.connect(f"{host}/.s.PGSQL.{port}")
                return _ssl_answer(sock)
        with socket.create_connection((host, port), timeout) as sock:
            return _ssl_answer(sock)
    except OSError:  # refused, unreachable, timed out, no such socket, or a name that does not resolve
        return False


def _ssl_answer(sock: socket.socket) -> bool:
    sock.sendall(_SSL_REQUEST)
    return sock.recv(1) in (b"S", b"N")
