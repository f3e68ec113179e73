"""Finding the Queue that ``--app module:attribute`` names, and saying in one
line what went wrong when it cannot be found: the exception an import
raised, at the line of the user's code that raised it."""

from __future__ import annotations

import importlib
import os
import sys
import sysconfig
import traceback

import taskito.app as _app
from taskito import _queue_worker
from taskito.app import Queue

MAIN_GUARD = 'if __name__ == "__main__":'


class AppError(Exception):
    """``--app`` does not name a usable Queue."""


def load_app(spec: str) -> Queue:
    """Imports ``module:attribute`` (attribute may be dotted) and returns the Queue it names."""
    module_name, sep, attribute = spec.partition(":")
    if not sep or not module_name or not attribute:
        raise AppError(
            f"--app must look like 'module:attribute' (for example 'myapp.tasks:queue'), got {spec!r}"
        )
    # Like `python -m`, make modules in the current folder importable.
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    workers_before = _queue_worker._workers_started
    try:
        target: object = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and (module_name + ".").startswith(exc.name + "."):
            raise AppError(
                f"cannot import {module_name!r}: no such module (run from the folder that contains it?)"
            ) from None
        raise AppError(f"importing {module_name!r} failed: {describe_failure(exc)}") from None
    except (Exception, SystemExit) as exc:
        message = f"importing {module_name!r} failed: {describe_failure(exc)}"
        if isinstance(exc, SystemExit):
            message += (
                f"; the module exits when imported: if it is a script, put its work under `{MAIN_GUARD}`"
            )
        raise AppError(message) from None
    if _queue_worker._workers_started != workers_before:
        raise AppError(
            f"importing {module_name!r} started a worker (it calls start_worker() or run_worker() "
            f"at import), and `taskito worker` runs its own: put that call under `{MAIN_GUARD}`"
        )
    for part in attribute.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise AppError(f"{module_name!r} has no attribute {attribute!r}") from None
    if not isinstance(target, Queue):
        raise AppError(f"{spec!r} is a {type(target).__name__}, not a taskito.Queue")
    if target.closed:
        raise AppError(
            f"{spec!r} is a closed Queue: importing {module_name!r} closed it (is it a script that "
            f"does its work at import?); put that work under `{MAIN_GUARD}`"
        )
    return target


def describe_failure(exc: BaseException) -> str:
    """``file:line: Type: message``, where file:line is the innermost frame
    of the user's code (not the standard library's, an installed package's
    or taskito's); for a syntax error, the line that does not parse."""
    if isinstance(exc, SyntaxError) and exc.filename:
        text = f"{type(exc).__name__}: {exc.msg}"
        return f"{_shown(exc.filename)}:{exc.lineno}: {text}"
    message = str(exc)
    text = f"{type(exc).__name__}: {message}" if message else type(exc).__name__
    frame = _innermost_user_frame(exc)
    return text if frame is None else f"{_shown(frame.filename)}:{frame.lineno}: {text}"


def _innermost_user_frame(exc: BaseException) -> traceback.FrameSummary | None:
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if not f.filename.startswith("<")]
    others = [f for f in frames if not _is_library(f.filename)]
    # An app installed into site-packages has only library frames: then the
    # innermost frame outside the standard library and taskito is the best guess.
    candidates = others or [f for f in frames if not _is_library(f.filename, installed=False)]
    return candidates[-1] if candidates else None


_TASKITO_DIR = os.path.dirname(os.path.abspath(_app.__file__))


def _library_dirs(installed: bool) -> list[str]:
    paths = sysconfig.get_paths()
    keys = ["stdlib", "platstdlib"] + (["purelib", "platlib"] if installed else [])
    return [os.path.abspath(paths[key]) for key in keys if key in paths] + [_TASKITO_DIR]


def _is_library(filename: str, *, installed: bool = True) -> bool:
    path = os.path.abspath(filename)
    return any(path == d or path.startswith(d + os.sep) for d in _library_dirs(installed))


def _shown(filename: str) -> str:
    """A path relative to the current folder when it is inside it."""
    path = os.path.abspath(filename)
    relative = os.path.relpath(path, os.getcwd())
    return path if relative.startswith(os.pardir) else relative
