"""Commit provenance: what makes a run's tree dirty, and which engines its commit describes."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from benchmarks import provenance
from benchmarks.provenance import commit_info, vouches_for


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


def test_dirty_is_unknown_not_false_when_git_status_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    answers = {"rev-parse": "abc123", "status": None}
    monkeypatch.setattr(provenance, "_git", lambda root, *args: answers[args[0]])
    assert commit_info(tmp_path) == {"git_commit": "abc123", "git_branch": "abc123", "git_dirty": ""}


def test_the_commit_vouches_only_for_an_engine_imported_from_the_tree(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    (tree / "taskito").mkdir(parents=True)
    (tmp_path / "site" / "taskito").mkdir(parents=True)
    assert vouches_for(tree, str(tree / "taskito"))
    assert not vouches_for(tree, str(tmp_path / "site" / "taskito"))
    assert not vouches_for(tree, str(tree / ".." / "site" / "taskito")), "resolved before comparing"
    assert not vouches_for(tree, None)
    assert not vouches_for(tree, "")
