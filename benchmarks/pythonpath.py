"""What the processes the harness starts (probes, cells, worker processes)
may import from this tree: the ``benchmarks`` package and nothing else.

The tree's root also holds this project's ``taskito``. A process whose path
reaches the root (as its working directory, on ``sys.path`` or in
``PYTHONPATH``) imports that ``taskito`` instead of the one its interpreter
has installed: under ``--python``, the released taskito or the PyPI
reference would silently be this tree's. So each such process gets a folder
that holds only a link to ``benchmarks``, put first on its path, and runs in
a folder of its own.

Standard library only: it runs in cells under any interpreter.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

# The package's real folder, whatever link it was imported through.
PACKAGE = Path(__file__).resolve().parent
FOLDER = "harness-path"


def expose(folder: Path) -> Path:
    """``folder/harness-path``, made if missing, holding only a link named
    ``benchmarks`` to this package: the entry to put on a child's path."""
    path = folder / FOLDER
    link = path / "benchmarks"
    if not link.is_symlink():
        path.mkdir(parents=True, exist_ok=True)
        link.symlink_to(PACKAGE, target_is_directory=True)
    return path


def boot(path: Path, module: str, function: str = "main") -> str:
    """Code for ``python -c`` that puts ``path`` (from ``expose``) first on
    the path and calls ``module.function()``."""
    return f"import sys; sys.path.insert(0, {str(path)!r}); from {module} import {function}; {function}()"


def environment(path: Path, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """``base`` (default: this process's environment) with ``path`` first in
    PYTHONPATH, for a child that imports ``benchmarks`` by name (a worker
    command given a module of it)."""
    env = dict(os.environ if base is None else base)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(path), env.get("PYTHONPATH")) if p)
    return env
