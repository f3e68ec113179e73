"""The app of ``taskito worker --app benchmarks.apps.taskito_app:queue``
in a cell's worker processes: the Queue and task the cell declared, from
the settings in its environment (see ``benchmarks.apps``). The taskito it
imports is the interpreter's own: this tree's, or another one under
``--python`` (the PyPI reference included; its CLI takes the same --app)."""

from __future__ import annotations

from benchmarks.apps import AppSettings, build
from taskito import Queue

queue, task = build(Queue, AppSettings.from_env())
