"""Commit provenance: what makes a run's tree dirty."""

from __future__ import annotations

import subprocess
from pathlib import Path

from benchmarks.provenance import commit_info


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, check=True).stdout.strip()


def test_dirty_means_tracked_files_changed_outside_results(tmp_path: Path) -> None:
    git(tmp_path, "init", "-q", "-b", "main")
    (tmp_path / "results").mkdir()
    (tmp_path / "code.py").write_text("x = 1\n")
    (tmp_path / "results" / "reference-a.csv").write_text("a\n")
    git(tmp_path, "add", ".")
    git(tmp_path, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "init")
    head = git(tmp_path, "rev-parse", "HEAD")

    assert commit_info(tmp_path) == {"git_commit": head, "git_branch": "main", "git_dirty": "False"}
    (tmp_path / "results" / "reference-a.csv").write_text("b\n")  # a reference run being redone
    (tmp_path / "notes.txt").write_text("untracked\n")
    assert commit_info(tmp_path)["git_dirty"] == "False"
    (tmp_path / "code.py").write_text("x = 2\n")
    assert commit_info(tmp_path)["git_dirty"] == "True"


def test_outside_a_repository_the_commit_is_unknown(tmp_path: Path) -> None:
    assert commit_info(tmp_path)["git_commit"] == "unknown"
