"""compare and report on the fixture CSVs (see data/README.md for what they hold)."""

from __future__ import annotations

import math
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import matplotlib.image
import pytest

from benchmarks import cli, compare, report

ROOT = Path(__file__).resolve().parent.parent.parent
DATA = Path(__file__).parent / "data"
A, B = DATA / "a.csv", DATA / "b.csv"


def test_summarize_groups_repetitions_into_median_min_max() -> None:
    summary = compare.summarize(compare.load(A))
    # a.csv predates placements: taskito's workers were threads of the cell's process.
    row = summary.loc[("taskito", "noop", "file", "thread", 0, 2)]
    assert (row["drain_per_s:median"], row["drain_per_s:min"], row["drain_per_s:max"]) == (
        10500,
        10000,
        11000,
    )
    assert (row["runs"], row["problems"]) == (3, 0)
    # Skipped engines measured nothing and have no row.
    assert "celery" not in summary.index.get_level_values("engine")


def test_summarize_counts_the_repetitions_that_did_not_finish() -> None:
    row = compare.summarize(compare.load(B)).loc[("huey", "noop", "file", "thread", 0, 2)]
    assert (row["runs"], row["problems"]) == (2, 1)


def test_render_pivots_workers_across_per_task_and_lists_problems() -> None:
    text = compare.render(compare.load(B))
    assert (
        "## noop: drain of a pre-loaded batch, first to last completion (jobs/s), median of 3 (min–max)"
        in text
    )
    lines = text.splitlines()
    header = next(line for line in lines if line.startswith("| engine") and "1 worker" in line)
    assert header.split("|")[1:-1] == [" engine   ", " db     ", f"{'1 worker':>22} ", f"{'2 workers':>31} "]
    assert any("| taskito  | file   |" in line and "6,000 (5,900–6,200)" in line for line in lines)
    assert any("| huey     | file   |" in line and "[1 not ok]" in line for line in lines)
    assert "- huey file workers=2 noop rep 3: timeout: killed after 120s" in text
    assert "- celery: skipped: no Redis server at redis://127.0.0.1:1" in text
    # taskito rows come first, DB modes in their declared order.
    engines = [
        line.split("|")[1].strip()
        for line in lines
        if line.startswith("| taskito") or line.startswith("| huey")
    ]
    assert engines.index("taskito") < engines.index("huey")


def test_diff_flags_a_regression_by_ratio_not_noise_within_the_ranges() -> None:
    a, b = compare.load(A), compare.load(B)
    table, regressions = compare.diff(a, b, "drain_per_s", threshold=0.10)
    assert regressions == 1
    rows = {tuple(c.strip() for c in line.split("|")[1:5]): line for line in table.splitlines()[2:]}
    assert rows[("taskito", "noop", "file", "2")].split("|")[-3:-1] == ["  0.57 ", " REGRESSION "]
    # 14% worse, but B's best (21,000) beats A's worst (20,000): noise, not flagged.
    assert rows[("taskito", "noop", "memory", "2")].split("|")[-3].strip() == "0.86"
    assert "REGRESSION" not in rows[("taskito", "noop", "memory", "2")]
    assert "improved" in rows[("huey", "noop", "file", "1")]
    assert next(iter(rows)) == ("taskito", "noop", "memory", "1"), "registry order, not the alphabet"


def test_diff_knows_lower_latency_is_better() -> None:
    table, regressions = compare.diff(compare.load(A), compare.load(B), "latency_rtt_p50_ms", 0.10)
    assert regressions == 1
    flagged = [line for line in table.splitlines() if "REGRESSION" in line]
    assert len(flagged) == 1 and "| taskito  | noop   | memory | 1 " in flagged[0]


def test_judge_flags_failures_appearing_where_there_were_none() -> None:
    import pandas as pd

    none = pd.Series({"failures:median": 0.0, "failures:min": 0.0, "failures:max": 0.0})
    some = pd.Series({"failures:median": 3.0, "failures:min": 2.0, "failures:max": 5.0})
    assert compare.judge("failures", none, some, 0.10) == "REGRESSION"
    assert compare.judge("failures", none, none, 0.10) == ""
    missing = pd.Series({"failures:median": math.nan, "failures:min": math.nan, "failures:max": math.nan})
    assert compare.judge("failures", missing, some, 0.10) == ""


def test_compare_command_with_two_files_and_a_plot(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    png = tmp_path / "plots" / "ab.png"
    assert cli.main(["compare", str(A), str(B), "--plot", str(png)]) == 0
    out = capsys.readouterr().out
    assert "## B/A: drain of a pre-loaded batch, first to last completion (jobs/s, higher is better)" in out
    assert "## B/A: delay().result() round trip p50 (ms, lower is better)" in out
    assert "2 regression(s) flagged" in out
    image = matplotlib.image.imread(png)
    assert image.shape[0] > 200 and image.shape[1] > 400

    assert cli.main(["compare", str(A), str(B), "--fail-on-regression"]) == 1
    assert cli.main(["compare", str(A), str(B), "--fail-on-regression", "--metric", "enqueue_map_per_s"]) == 0


def test_compare_command_with_one_file(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["compare", str(A), "--metric", "peak_pss_mb"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"# {A}\n")
    assert "; commit 93020d14f9; AMD EPYC x 2 CPUs; Linux" in out
    assert "## noop: memory of the cell and its workers (largest PSS total read) (MiB)" in out
    assert "## noop: all metrics, medians" in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["compare", "OTHER_CSV"], "other.csv: not a benchmark CSV (no column status, engine"),
        (["compare", str(DATA / "README.md")], "README.md: cannot read it as CSV"),
        (["compare", str(DATA / "missing.csv")], "missing.csv: cannot read it as CSV"),
        (["compare", str(A), str(B), str(A)], "one or two CSVs"),
        (["compare", str(A), "--metric", "speed"], "invalid choice: 'speed'"),
        (["compare", str(A), "--threshold", "-1"], "must be at least 0.0"),
        (["compare", str(A), "--threshold", "nan"], "argument --threshold: 'nan' is not a finite number"),
    ],
)
def test_compare_rejects_bad_input(
    args: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    other = tmp_path / "other.csv"
    other.write_text("name,speed\nx,1\n")
    with pytest.raises(SystemExit) as exit:
        cli.main([str(other) if arg == "OTHER_CSV" else arg for arg in args])
    assert exit.value.code == 2
    assert message in capsys.readouterr().err


def test_a_sweep_by_another_version_of_the_harness_is_refused_as_such(tmp_path: Path) -> None:
    old = tmp_path / "old.csv"
    header, rest = A.read_text().split("\n", 1)
    old.write_text(header.replace("peak_pss_mb", "peak_rss_mb") + "\n" + rest)
    with pytest.raises(
        compare.NotABenchmarkCSV, match="another version of the harness \\(no column peak_pss_mb\\)"
    ):
        compare.load(old)


def test_report_writes_tables_plot_and_glossary(tmp_path: Path) -> None:
    out = tmp_path / "results" / "README.md"
    assert cli.main(["report", str(A), "--out", str(out)]) == 0
    text = out.read_text()
    assert text.startswith("# Benchmark results\n")
    assert "## a\n" in text
    assert "Reproduce with `python -m benchmarks sweep --engines taskito,huey,celery" in text
    assert "![drain throughput against workers](a.png)" in text
    assert (
        "### noop: drain of a pre-loaded batch, first to last completion (jobs/s), median of 3 (min–max)"
        in text
    )
    assert "| `peak_pss_mb` |" in text
    assert matplotlib.image.imread(out.parent / "a.png").shape[0] > 200


def test_report_defaults_to_the_reference_runs(tmp_path: Path) -> None:
    folder = tmp_path / "results"
    folder.mkdir()
    (folder / "reference-one.csv").write_bytes(A.read_bytes())
    (folder / "run-20260101-000000.csv").write_bytes(B.read_bytes())
    assert report.references(folder) == [folder / "reference-one.csv"]
    report.write(report.references(folder), folder / "README.md")
    text = (folder / "README.md").read_text()
    assert "## reference-one\n" in text and "run-2026" not in text


def with_placements(tmp_path: Path) -> Path:
    """a.csv as this harness writes it now: where each row's workers ran,
    and taskito's file cells run again with one `taskito worker` process
    (round trips after idle gaps too), plus the skip of its memory ones."""
    import pandas as pd

    old = pd.read_csv(A, dtype=str, keep_default_na=False)
    old["placement"] = ["process" if e == "celery" else "thread" for e in old["engine"]]
    old["processes"] = ["1" if e == "celery" else "0" for e in old["engine"]]
    placed = old[(old["engine"] == "taskito") & (old["db"] == "file")].copy()
    placed["placement"], placed["processes"] = "process", "1"
    placed["drain_per_s"] = "30000"
    placed["latency_rtt_idle_p50_ms"], placed["latency_rtt_idle_p99_ms"] = "51.5", "52.5"
    skipped = old[(old["engine"] == "taskito") & (old["db"] == "memory")].copy()
    skipped["placement"], skipped["processes"], skipped["status"] = "process", "1", "skipped"
    skipped["error"] = "memory: an in-memory database belongs to one process"
    path = tmp_path / "placed.csv"
    pd.concat([old, placed, skipped]).to_csv(path, index=False)
    return path


def test_a_csv_made_before_placements_reads_as_threads_for_taskito_and_processes_for_peers() -> None:
    frame = compare.load(A)
    where = {
        (e, p, n) for e, p, n in zip(frame["engine"], frame["placement"], frame["processes"], strict=True)
    }
    # Celery's --concurrency=N was its workers then: N prefork processes of one task each.
    assert where == {
        ("taskito", "thread", 0), ("huey", "thread", 0), ("celery", "process", 1), ("celery", "process", 2)
    }  # fmt: skip
    import pandas as pd

    written = pd.read_csv(A)
    celery = frame["engine"] == "celery"
    assert list(frame[celery]["processes"]) == list(written[written["engine"] == "celery"]["workers"])
    assert set(frame[celery]["workers"]) == {1}
    assert frame["latency_rtt_idle_p50_ms"].isna().all()
    assert (frame["idle_samples"] == 0).all()
    text = compare.render(frame)
    assert "Workers ran as threads in the measuring process in every row." in text
    assert "idle rtt" not in text, "not measured: no column"


def test_compare_of_an_old_csv_with_a_new_one_pairs_thread_rows_and_says_where_each_ran(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    new = with_placements(tmp_path)
    table, regressions = compare.diff(compare.load(A), compare.load(new), "drain_per_s", threshold=0.10)
    assert regressions == 0
    lines = table.splitlines()
    assert lines[0].split("|")[1:6] == [
        " engine   ",
        " task   ",
        " db     ",
        " workers   ",
        f" {compare.WHERE:<32} ",
    ]
    rows = {tuple(c.strip() for c in line.split("|")[1:6]): line for line in lines[2:]}
    thread = rows[("taskito", "noop", "file", "2", "threads in the measuring process")]
    assert thread.split("|")[-3].strip() == "1.00", "the same cell on both sides"
    process = rows[("taskito", "noop", "file", "2", "1 process, `taskito worker`")]
    assert "(not in A)" in process and "30,000" in process

    assert (
        cli.main(
            ["compare", str(A), str(new), "--metric", "drain_per_s", "--metric", "latency_rtt_idle_p50_ms"]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "## B/A: round trip after an idle gap, p50 (ms, lower is better)" in out
    idle = [line for line in out.splitlines() if "| taskito  | noop   | file   | 1 " in line][-1]
    assert [c.strip() for c in idle.split("|")[5:8]] == ["1 process, `taskito worker`", "(not in A)", "51.5"]


def test_one_csv_with_placements_labels_every_row_and_lists_the_skip_once(tmp_path: Path) -> None:
    text = compare.render(compare.load(with_placements(tmp_path)))
    assert "Workers ran as" not in text
    assert "| taskito  | file   | threads in the measuring process |" in text
    assert "| taskito  | file   | 1 process, `taskito worker`      |" in text
    assert "| celery" not in text, "skipped, so not in the tables"
    assert "idle rtt p50 ms" in text and "51.5" in text
    assert text.count("- taskito: skipped: memory: an in-memory database belongs to one process") == 1


def test_the_plot_draws_a_line_per_placement(tmp_path: Path) -> None:
    from benchmarks import plot

    png = plot.throughput({"placed": compare.load(with_placements(tmp_path))}, tmp_path / "placed.png")
    assert matplotlib.image.imread(png).shape[0] > 200


def test_the_report_says_where_the_workers_of_each_row_ran(tmp_path: Path) -> None:
    out = tmp_path / "results" / "README.md"
    assert cli.main(["report", str(with_placements(tmp_path)), "--out", str(out)]) == 0
    text = out.read_text()
    assert "| taskito  | file   | 1 process, `taskito worker`      |" in text
    assert "| `placement` |" in text and "| `latency_rtt_idle_p50_ms` |" in text


def broken(tmp_path: Path, name: str, column: str, value: str, row: int = 2) -> Path:
    """a.csv with one cell (0-based data ``row``) set to ``value``."""
    import pandas as pd

    frame = pd.read_csv(A, dtype=str, keep_default_na=False)
    frame.loc[row, column] = value
    path = tmp_path / name
    frame.to_csv(path, index=False)
    return path


def header_only(tmp_path: Path) -> Path:
    """What Ctrl-C of a sweep before its first cell finished leaves."""
    path = tmp_path / "stopped.csv"
    path.write_text(A.read_text().split("\n", 1)[0] + "\n")
    return path


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (
            header_only,
            "stopped.csv: no rows, only the header (a sweep stopped before its first cell finished): "
            "run the sweep again",
        ),
        (
            lambda tmp: broken(tmp, "word.csv", "drain_per_s", "fast"),
            "word.csv: data row 3 (taskito file workers=1 rep 1): column drain_per_s holds 'fast', "
            "not a number; correct or delete that row, or run the sweep again",
        ),
        (
            lambda tmp: broken(tmp, "half.csv", "workers", "2.5"),
            "half.csv: data row 3 (taskito file workers=2.5 rep 1): column workers holds '2.5', not a whole number",
        ),
        (
            lambda tmp: broken(tmp, "blank.csv", "repetition", ""),
            "blank.csv: data row 3 (taskito file workers=1 rep ?): column repetition is empty",
        ),
    ],
)
@pytest.mark.parametrize("command", ["compare one", "compare A and it", "report"])
def test_an_empty_or_malformed_csv_is_one_usage_error_naming_file_row_and_column(
    make: Callable[[Path], Path],
    message: str,
    command: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    bad = make(tmp_path)
    argv = {
        "compare one": ["compare", str(bad)],
        "compare A and it": ["compare", str(A), str(bad)],
        "report": ["report", str(A), str(bad), "--out", str(tmp_path / "results" / "README.md")],
    }[command]
    with pytest.raises(SystemExit) as exit:
        cli.main(argv)
    assert exit.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"usage: python -m benchmarks {argv[0]} "), "a usage error, not a traceback"
    last = err.splitlines()[-1]
    assert last.startswith(f"python -m benchmarks {argv[0]}: error: ") and message in last
    assert not (tmp_path / "results").exists(), "no report, and no plot of the good CSV either"


def test_compare_of_a_header_only_csv_prints_no_traceback(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks", "compare", str(header_only(tmp_path))],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.splitlines()[-1].endswith("run the sweep again")
