"""Process trees on Linux, read from /proc: who descends from whom, memory.

Used to kill a cell with every worker it started (some engines' workers
start their own sessions, so a process group does not reach them) and to
add up the memory of a cell's processes.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys
import time
from collections.abc import Collection
from pathlib import Path

PROC = Path("/proc")
PR_SET_CHILD_SUBREAPER = 36  # <linux/prctl.h>


def _parents() -> dict[int, int]:
    parents = {}
    for entry in PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:  # gone while we looked
            continue
        # The command name (field 2) is in parentheses and may hold spaces.
        fields = stat[stat.rindex(")") + 2 :].split()
        parents[int(entry.name)] = int(fields[1])
    return parents


def descendants(pid: int) -> list[int]:
    """Every living process below ``pid`` (not ``pid`` itself)."""
    if not PROC.is_dir():
        return []
    children: dict[int, list[int]] = {}
    for child, parent in _parents().items():
        children.setdefault(parent, []).append(child)
    found: list[int] = []
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def kill_tree(pid: int) -> None:
    """SIGKILLs ``pid`` and everything below it. ``pid`` must be a child of
    this process not yet waited for, so that its number cannot have been
    reused by another process.

    The tree is read first and everything killed after, because children
    of a dead process are re-parented and could no longer be found. Two
    rounds catch a process forked while the first was under way."""
    for _ in range(2):
        for victim in [pid, *descendants(pid)]:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(victim, signal.SIGKILL)


def become_subreaper() -> bool:
    """Makes this process the one that inherits its orphaned descendants
    (``prctl(PR_SET_CHILD_SUBREAPER)``), instead of init: a worker whose
    cell died stays below this process, where ``descendants`` finds it.
    Idempotent. False where Linux refuses or is not there."""
    if not sys.platform.startswith("linux"):
        return False
    libc = ctypes.CDLL(None, use_errno=True)
    return bool(libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0)


def kill_descendants_except(keep: Collection[int], timeout: float = 10.0) -> list[int]:
    """SIGKILLs every descendant of this process whose pid is not in
    ``keep`` (those that were there before), and reaps the ones that are or
    become its children (a subreaper's adopted orphans: nobody else will
    wait for them). Repeats until none is left, as killing a process hands
    its children to this one, or ``timeout`` runs out. Returns the pids
    killed.

    Only for a process that starts no other children meanwhile, such as
    the sweep between two cells."""
    me = os.getpid()
    killed: set[int] = set()
    deadline = time.monotonic() + timeout
    while left := [pid for pid in descendants(me) if pid not in keep]:
        for pid in left:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
            killed.add(pid)
            with contextlib.suppress(ChildProcessError):  # not (yet) a child of this process
                os.waitpid(pid, os.WNOHANG)
        if time.monotonic() > deadline:
            break
        time.sleep(0.005)  # for the kernel to finish the kills and re-parent
    return sorted(killed)


def kill_group(pgid: int) -> None:
    """SIGKILLs what is left of a process group whose leader has exited
    (and may have been waited for: a group's number is not reused while
    any member lives)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def pss_bytes(pid: int) -> int | None:
    """``pid``'s proportional set size now (Pss in /proc/PID/smaps_rollup):
    its resident memory with each page shared with other processes counted
    as its share (a page that 3 processes map counts a third in each). None
    if it cannot be read (gone, or a kernel older than 4.14)."""
    try:
        rollup = (PROC / str(pid) / "smaps_rollup").read_text()
    except OSError:
        return None
    for line in rollup.splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1]) * 1024
    return None


def tree_pss_bytes(pid: int) -> int | None:
    """The PSS of ``pid`` and every process below it, added up: forked
    workers' copy-on-write pages count once in all, not once per process.
    Pages also mapped by processes outside the tree (the interpreter's own
    files, mapped by the sweep too) count only in part. None if ``pid``'s
    own cannot be read; a descendant that exits meanwhile is left out."""
    own = pss_bytes(pid)
    if own is None:
        return None
    return own + sum(pss_bytes(child) or 0 for child in descendants(pid))
