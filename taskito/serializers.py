"""How task arguments and results become bytes.

A serializer is any object with ``dumps(obj) -> bytes`` and ``loads(bytes) -> obj``.
Producers and workers of one queue must use the same one: the worker decodes
with the serializer of the ``Queue`` it runs on.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import pickle
from typing import Any, Protocol, runtime_checkable


@runtime_checkable
class Serializer(Protocol):
    def dumps(self, obj: Any) -> bytes: ...

    def loads(self, data: bytes) -> Any: ...


class PickleSerializer:
    """The default: any picklable Python value round-trips.

    Only decode payloads you trust (pickle runs code while loading); use
    ``Queue(signing_key=...)`` when other parties can write to the database.
    """

    def __init__(self, protocol: int = pickle.HIGHEST_PROTOCOL) -> None:
        self.protocol = protocol

    def dumps(self, obj: Any) -> bytes:
        return pickle.dumps(obj, self.protocol)

    def loads(self, data: bytes) -> Any:
        return pickle.loads(data)


class JsonSerializer:
    """JSON: portable and safe to decode, limited to JSON types (tuples come back as lists)."""

    def dumps(self, obj: Any) -> bytes:
        return json.dumps(obj, separators=(",", ":")).encode()

    def loads(self, data: bytes) -> Any:
        return json.loads(data)


class SignedSerializer:
    """Wraps another serializer: every payload is prefixed with an HMAC-SHA256
    of its bytes, and ``loads`` refuses (``SignatureError``) a payload whose
    signature does not match before decoding any of it. Use it when parties
    that do not hold the key can write to the database."""

    TAG_SIZE = hashlib.sha256().digest_size

    def __init__(self, inner: Serializer, key: bytes | str) -> None:
        if isinstance(key, str):
            key = key.encode()
        if not isinstance(key, bytes) or not key:
            raise TypeError("signing_key must be non-empty bytes or str")
        self.inner = inner
        self._key = key

    def _tag(self, data: bytes) -> bytes:
        return hmac.digest(self._key, data, "sha256")

    def dumps(self, obj: Any) -> bytes:
        data = self.inner.dumps(obj)
        return self._tag(data) + data

    def loads(self, data: bytes) -> Any:
        from taskito.exceptions import SignatureError

        tag, body = data[: self.TAG_SIZE], data[self.TAG_SIZE :]
        if len(tag) != self.TAG_SIZE or not hmac.compare_digest(tag, self._tag(body)):
            raise SignatureError(
                "payload signature does not match: not written with this queue's signing key"
            )
        return self.inner.loads(body)


def resolve(serializer: Serializer | str | None) -> Serializer:
    """The serializer a Queue uses: an object, a built-in name, or the pickle default."""
    if serializer is None or serializer == "pickle":
        return PickleSerializer()
    if serializer == "json":
        return JsonSerializer()
    if isinstance(serializer, str):
        from taskito.exceptions import InvalidArgumentError

        raise InvalidArgumentError(
            f"unknown serializer {serializer!r}: use 'pickle', 'json' or an object with dumps/loads"
        )
    if not (callable(getattr(serializer, "dumps", None)) and callable(getattr(serializer, "loads", None))):
        raise TypeError("serializer must have callable dumps(obj) -> bytes and loads(bytes) -> obj")
    return serializer
