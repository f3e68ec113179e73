"""compare and report on the fixture CSVs (see data/README.md for what they hold)."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib.image
import pytest

from benchmarks import cli, compare, report

DATA = Path(__file__).parent / "data"
A, B = DATA / "a.csv", DATA / "b.csv"


def test_summarize_groups_repetitions_into_median_min_max() -> None:
    summary = compare.summarize(compare.load(A))
    row = summary.loc[("taskito", "noop", "file", 2)]
    assert (row["drain_per_s:median"], row["drain_per_s:min"], row["drain_per_s:max"]) == (
        10500,
        10000,
        11000,
    )
    assert (row["runs"], row["problems"]) == (3, 0)
    # Skipped engines measured nothing and have no row.
    assert "celery" not in summary.index.get_level_values("engine")


def test_summarize_counts_the_repetitions_that_did_not_finish() -> None:
    row = compare.summarize(compare.load(B)).loc[("huey", "noop", "file", 2)]
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
