"""Bad sweep options are argparse errors (exit 2) that say what is wrong."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from benchmarks import cli


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--workers", "0"], "argument --workers: must be at least 1, got 0"),
        (["--workers", "two"], "argument --workers: 'two' is not a number"),
        (["--engines", "kafka"], "unknown engine 'kafka'"),
        (["--engines", "taskito@bad label"], "the label after @ must be"),
        (["--db", "disk"], "argument --db: unknown disk"),
        (["--tasks", "noop,noop"], "names a value twice"),
        (["--jobs", "1"], "argument --jobs: must be at least 2"),
        (["--cell-timeout", "0"], "argument --cell-timeout: must be at least"),
        (["--cell-timeout", "nan"], "argument --cell-timeout: 'nan' is not a finite number"),
        (["--idle-gap", "0"], "argument --idle-gap: must be at least 0.001, got 0.0"),
        (["--idle-gap", "inf"], "argument --idle-gap: 'inf' is not a finite number"),
        (["--jobs", "0"], "argument --jobs: must be at least 2, got 0"),
        (["--jobs", "1e3"], "argument --jobs: '1e3' is not a whole number"),
        (["--repeat", "0"], "argument --repeat: must be at least 1, got 0"),
        (["--samples", "-1"], "argument --samples: must be at least 0, got -1"),
        (["--idle-samples", "-1"], "argument --idle-samples: must be at least 0, got -1"),
        (["--warmup", "-1"], "argument --warmup: must be at least 0, got -1"),
        (["--processes", "1,0"], "argument --processes: must be at least 1, got 0"),
        (["--workers", "1.5"], "argument --workers: '1.5' is not a whole number"),
        (["--python", "taskito"], "expected ENGINE=/path/to/python"),
        (["--python", "taskito=/no/such/python"], "/no/such/python is not an executable file"),
        (["--engines", "taskito", "--python", f"huey={sys.executable}"], "huey is not in --engines"),
        (["--redis", "redis://127.0.0.1:6379/0"], "give the server only"),
        (["--redis", "http://127.0.0.1"], "expected redis://HOST:PORT"),
        (["--engines", "celery", "--db", "memory"], "no engine in --engines runs on --db memory"),
    ],
)
def test_bad_sweep_options_exit_2_with_a_clear_message(
    args: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit:
        cli.main([*args, "--out", str(tmp_path / "never.csv")])
    assert exit.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: python -m benchmarks sweep ")
    assert message in err.splitlines()[-1], "one line says what is wrong"
    assert not (tmp_path / "never.csv").exists()


def test_an_existing_csv_is_not_overwritten_without_force(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "kept.csv"
    out.write_text("precious")
    with pytest.raises(SystemExit) as exit:
        cli.main(["sweep", "--out", str(out)])
    assert exit.value.code == 2
    assert "exists; pass --force" in capsys.readouterr().err
    assert out.read_text() == "precious"


def test_no_subcommand_means_the_default_sweep() -> None:
    args = cli.parser().parse_args(["sweep"])
    # Every engine but the async-only ones, which would only be skipped on noop.
    assert args.engines == [e for e in cli.ENGINES if e not in ("saq", "taskiq")]
    assert (args.tasks, args.async_concurrency) == (["noop"], 1000)
    assert args.db == ["memory", "file", "redis"]
    assert args.workers == [int(cli.DEFAULTS["workers"])]
    assert (args.jobs, args.repeat) == (cli.DEFAULTS["jobs"], cli.DEFAULTS["repeat"])
