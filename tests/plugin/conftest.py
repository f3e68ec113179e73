"""Each plugin test writes a small project of tests that use the fixtures and
runs pytest on it (in this process when it can, in a subprocess when the
process itself is under test: exit status, xdist, interpreter exit)."""

from __future__ import annotations

import os

import pytest

from pytest_taskito._settings import OPTIONS

# Hypothesis's plugin costs half a second per run and is not used here.
INI = """\
[pytest]
addopts = -p no:cacheprovider -p no:hypothesispytest --strict-markers --strict-config -s
asyncio_default_fixture_loop_scope = function
"""


def ini(*lines: str) -> str:
    """The projects' ini with ``lines`` added."""
    return INI + "".join(line + "\n" for line in lines)


# A subprocess run must never hang the suite: pytester kills it after this.
SUBPROCESS_LIMIT = 120


@pytest.fixture
def project(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    """A pytester project with a strict ini and none of the plugin's env vars set."""
    for option in OPTIONS:
        monkeypatch.delenv(option.env, raising=False)
    # When this suite itself runs under xdist, these would make the generated
    # runs believe they are xdist workers too (pytest-benchmark then disables itself).
    for name in ("PYTEST_XDIST_WORKER", "PYTEST_XDIST_WORKER_COUNT"):
        monkeypatch.delenv(name, raising=False)
    pytester.makeini(INI)
    return pytester


def cpu_count() -> int:
    return os.cpu_count() or 1
