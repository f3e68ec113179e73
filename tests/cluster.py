"""Real `taskito worker` processes for tests: started on one database with
an app from tests/apps configured by environment variables, their output
kept in log files, killed at teardown."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


@dataclass
class Cluster:
    """Worker processes serving ``app`` (module:attribute) on one database."""

    tmp: Path
    app: str = "tests.apps.ledger_app:queue"
    procs: list[subprocess.Popen[str]] = field(default_factory=list)

    @property
    def db(self) -> str:
        return str(self.tmp / "jobs.db")

    @property
    def ledger(self) -> Path:
        return self.tmp / "ledger.txt"

    def env(self, **extra: str) -> dict[str, str]:
        return {
            **os.environ,
            "TASKITO_TEST_DB": self.db,
            "TASKITO_TEST_LEDGER": str(self.ledger),
            "PYTHONPATH": str(REPO),
            **extra,
        }

    def start_worker(self, threads: int = 2, *args: str, **env: str) -> subprocess.Popen[str]:
        """Starts ``taskito worker`` with ``threads`` threads; ``args`` are
        more command-line options, ``env`` more environment variables."""
        with open(self.tmp / f"worker{len(self.procs)}.log", "w") as log:
            # The child keeps its own copy of the descriptor.
            proc = subprocess.Popen(
                [sys.executable, "-m", "taskito", "worker", "--app", self.app, *args],
                cwd=REPO,
                env=self.env(TASKITO_TEST_WORKERS=str(threads), **env),
                stdout=log,
                stderr=subprocess.STDOUT,
                text=True,
            )
        self.procs.append(proc)
        return proc

    def logs(self) -> str:
        return "".join(p.read_text() for p in sorted(self.tmp.glob("*.log")))

    def ledger_rows(self) -> list[list[str]]:
        """The ledger's lines, split on spaces."""
        if not self.ledger.exists():
            return []
        return [line.split() for line in self.ledger.read_text().splitlines()]

    def stop_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=30)


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> float:
    """Polls `condition` until it holds; returns the seconds it took."""
    start = time.monotonic()
    tick = threading.Event()
    while not condition():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        tick.wait(0.01)
    return time.monotonic() - start
