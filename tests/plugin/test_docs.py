"""docs/testing.md's example project runs as written: every code block whose
first line is ``# <path>`` is a file of it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from taskito import Queue

DOC = Path(__file__).parent.parent.parent / "docs" / "testing.md"
FILES = {
    match["path"]: match["body"]
    for match in re.finditer(
        r"```(?:python|toml)\n# (?P<path>[\w/.]+)\n(?P<body>.*?)```", DOC.read_text(), re.S
    )
}


def test_the_doc_has_the_example_files() -> None:
    assert set(FILES) == {"myapp.py", "pyproject.toml", "tests/test_signup.py", "conftest.py"}


@pytest.mark.parametrize("with_conftest", [False, True], ids=["ini", "conftest"])
@pytest.mark.parametrize("args", [[], ["--taskito-workers=8"]], ids=["default", "8-workers"])
def test_the_documented_tests_pass(project: pytest.Pytester, with_conftest: bool, args: list[str]) -> None:
    (project.path / "tox.ini").unlink()
    for path, body in FILES.items():
        if path != "conftest.py" or with_conftest:
            target = project.path / path
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(body)
    # Hypothesis's plugin only costs time here.
    result = project.runpytest("-p", "no:hypothesispytest", *args)
    result.assert_outcomes(passed=6)
    if with_conftest:
        result.stdout.fnmatch_lines(
            [
                "taskito: workers=*, app=taskito_app fixture (conftest.py:6; overrides app=myapp:queue from ini taskito_app)"
            ]
        )
    else:
        result.stdout.fnmatch_lines(["taskito: workers=*, app=myapp:queue (ini taskito_app)"])
    # The app's own database exists (importing myapp made it) and stayed empty.
    with Queue(project.path / "data" / "tasks.db") as real:
        assert sum(real.stats().values()) == 0
