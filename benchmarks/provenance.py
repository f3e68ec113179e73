"""Where a measurement was made: the commit and the machine (the fields of
pytest-benchmark's commit_info and machine_info that matter here)."""

from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path


def _git(root: Path, *args: str) -> str | None:
    try:
        proc = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return proc.stdout.strip() if proc.returncode == 0 else None


def commit_info(root: Path) -> dict[str, str]:
    """The checked-out commit. Dirty means tracked files differ from it;
    untracked files and results/ (the benchmark's own output, such as a
    reference run being redone) do not count. "" where git cannot say."""
    commit = _git(root, "rev-parse", "HEAD")
    if commit is None:
        return {"git_commit": "unknown", "git_branch": "", "git_dirty": ""}
    status = _git(root, "status", "--porcelain", "--untracked-files=no", "--", ".", ":(exclude)results")
    return {
        "git_commit": commit,
        "git_branch": _git(root, "rev-parse", "--abbrev-ref", "HEAD") or "",
        "git_dirty": "" if status is None else str(bool(status)),
    }


def vouches_for(root: Path, engine_path: str | None) -> bool:
    """Whether ``root``'s commit describes an engine imported from
    ``engine_path``: only if it was imported from inside the tree."""
    return bool(engine_path) and Path(str(engine_path)).resolve().is_relative_to(root.resolve())


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info() -> dict[str, str]:
    return {
        "cpu_model": cpu_model(),
        "cpu_count": str(os.cpu_count() or ""),
        "os": platform.platform(),
    }


def load_avg() -> str:
    try:
        return f"{os.getloadavg()[0]:.2f}"
    except OSError:
        return ""
