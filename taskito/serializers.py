"""How task arguments and results become bytes.

A serializer is any object with ``dumps(obj) -> bytes`` and ``loads(bytes) -> obj``.
Producers and workers of one queue must use the same one: the worker decodes
with the serializer of the ``Queue`` it runs on.
"""

from __future__ import annotations

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
