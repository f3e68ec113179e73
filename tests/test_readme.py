"""The README's Python examples run as written."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).parent.parent / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)


def test_the_readme_has_examples() -> None:
    assert BLOCKS


@pytest.mark.parametrize("code", BLOCKS, ids=[f"block{i}" for i in range(len(BLOCKS))])
def test_readme_example_runs(code: str, tmp_path: Path) -> None:
    # A fresh interpreter in a fresh folder: the example's files land there.
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    if "cat.png resized to 640px" in code:
        assert proc.stdout.splitlines() == [
            "cat.png resized to 640px",
            "['a.png resized to 100px', 'b.png resized to 200px']",
        ]


def test_the_two_setup_commands_exist() -> None:
    setup = README.read_text().split("## Set up", 1)[1]
    block = re.search(r"```sh\n(.*?)```", setup, re.S)
    assert block is not None
    commands = [line.split("#")[0].strip() for line in block.group(1).splitlines() if line.strip()]
    assert commands == ["scripts/bench", "scripts/test"]
    for command in commands:
        script = README.parent / command
        assert script.is_file() and os.access(script, os.X_OK), command
