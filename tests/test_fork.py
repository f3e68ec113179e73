"""A Queue across os.fork(): a file reopens in the child, :memory: refuses,
and the parent's worker is left alone."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from taskito import Queue, QueueClosedError


def _in_child(body: Any) -> int:
    """Runs `body` in a forked child; returns its exit code (0: returned True)."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        try:
            code = 0 if body() else 1
        except BaseException:
            code = 2
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def test_a_file_queue_reopens_in_a_forked_child(tmp_path: Path) -> None:
    with Queue(str(tmp_path / "fork.db")) as q:

        @q.task(name="t")
        def t() -> None: ...

        t.delay()

        def child() -> bool:
            t.delay()
            return q.stats()["pending"] == 2

        assert _in_child(child) == 0
        assert q.stats()["pending"] == 2, "the parent's connection still works"


def test_a_memory_queue_refuses_to_follow_a_fork() -> None:
    with Queue(":memory:") as q:

        def child() -> bool:
            try:
                q.stats()
            except QueueClosedError as exc:
                return "fork" in str(exc)
            return False

        assert _in_child(child) == 0
        assert q.stats()["pending"] == 0


def test_a_forked_child_leaves_the_parents_worker_alone(tmp_path: Path) -> None:
    with Queue(str(tmp_path / "forkw.db"), workers=1) as q:

        @q.task(name="t")
        def t() -> int:
            return 2

        q.start_worker()
        assert t.delay().result(timeout=10) == 2

        def child() -> bool:
            # Closing in the child must neither stop the parent's threads
            # (which do not exist here) nor close the parent's connections.
            q.close()
            return True

        assert _in_child(child) == 0
        assert t.delay().result(timeout=10) == 2, "the parent's worker still runs"
