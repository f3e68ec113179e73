"""Options: flags, env vars and ini twins, their precedence and validation,
the report header, the marker, and opting out."""

from __future__ import annotations

import pytest

from pytest_taskito import Settings

from .conftest import ini

SHOW_SETTINGS = """
def test_settings(taskito_settings, queue, worker):
    print("SETTINGS", taskito_settings.workers, taskito_settings.db, taskito_settings.timeout)
    assert worker.threads == taskito_settings.workers
    assert worker.timeout == taskito_settings.timeout
"""


def test_the_header_shows_each_setting_and_where_it_came_from(project: pytest.Pytester) -> None:
    project.makepyfile(SHOW_SETTINGS)
    result = project.runpytest()
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(
        ["taskito: workers=2 (default), db=memory (default), timeout=30s (default), app=none (default)"]
    )


@pytest.mark.parametrize(
    ("ini_line", "env", "args", "expected"),
    [
        ("", "", [], "workers=2 (default)"),
        ("taskito_workers = 3", "", [], "workers=3 (ini taskito_workers)"),
        ("taskito_workers = 3", "4", [], "workers=4 (env PYTEST_TASKITO_WORKERS)"),
        ("taskito_workers = 3", "4", ["--taskito-workers=5"], "workers=5 (--taskito-workers)"),
        ("", "", ["-o", "taskito_workers=6"], "workers=6 (ini taskito_workers)"),
    ],
)
def test_command_line_beats_env_beats_ini_beats_default(
    project: pytest.Pytester,
    monkeypatch: pytest.MonkeyPatch,
    ini_line: str,
    env: str,
    args: list[str],
    expected: str,
) -> None:
    project.makeini(ini(ini_line))
    if env:
        monkeypatch.setenv("PYTEST_TASKITO_WORKERS", env)
    project.makepyfile(SHOW_SETTINGS)
    result = project.runpytest(*args)
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines([f"taskito: {expected}, *", f"*SETTINGS {expected[8]} memory 30.0*"])


def test_every_option_has_its_three_forms(project: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    project.makeini(ini("taskito_timeout = 12.5"))
    monkeypatch.setenv("PYTEST_TASKITO_DB", "file")
    project.makepyfile(SHOW_SETTINGS)
    result = project.runpytest("--taskito-workers", "3")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(
        [
            "taskito: workers=3 (--taskito-workers), db=file (env PYTEST_TASKITO_DB), "
            "timeout=12.5s (ini taskito_timeout), app=none (default)",
            "*SETTINGS 3 file 12.5*",
        ]
    )
    help_text = project.runpytest("--help").stdout.str()
    for flag in (
        "--taskito-workers=N",
        "--taskito-db=memory|file",
        "--taskito-timeout=SECONDS",
        "--taskito-app",
    ):
        assert flag in help_text
    for name in ("PYTEST_TASKITO_WORKERS", "taskito_timeout (", "taskito_app (string)"):
        assert name in help_text


@pytest.mark.parametrize(
    ("where", "value", "message"),
    [
        (
            "cli",
            "--taskito-workers=0",
            "bad value for --taskito-workers: expected a whole number of worker threads >= 1, got '0'",
        ),
        (
            "cli",
            "--taskito-workers=two",
            "bad value for --taskito-workers: expected a whole number*got 'two'",
        ),
        (
            "cli",
            "--taskito-db=disk",
            "bad value for --taskito-db: expected one of memory, file, postgres, got 'disk'",
        ),
        (
            "cli",
            "--taskito-timeout=-1",
            "bad value for --taskito-timeout: expected a finite number of seconds > 0, got '-1'",
        ),
        ("cli", "--taskito-timeout=nan", "bad value for --taskito-timeout: *got 'nan'"),
        ("cli", "--taskito-app=myapp", "bad value for --taskito-app: expected 'package.module:attribute'*"),
        ("env", "PYTEST_TASKITO_TIMEOUT=soon", "bad value for env PYTEST_TASKITO_TIMEOUT: *got 'soon'"),
        (
            "ini",
            "taskito_db = sqlite",
            "bad value for ini taskito_db: expected one of memory, file, postgres, got 'sqlite'",
        ),
    ],
)
def test_bad_values_are_usage_errors(
    project: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, where: str, value: str, message: str
) -> None:
    args: list[str] = []
    if where == "cli":
        args.append(value)
    elif where == "env":
        name, _, text = value.partition("=")
        monkeypatch.setenv(name, text)
    else:
        project.makeini(ini(value))
    project.makepyfile("def test_never_runs(): raise AssertionError")
    result = project.runpytest(*args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"ERROR: taskito: {message}"])


def test_the_marker_overrides_options_for_one_test(project: pytest.Pytester) -> None:
    project.makepyfile(
        """
        import pytest

        pytestmark = pytest.mark.taskito(timeout=9)

        @pytest.mark.taskito(workers=3, db="file")
        def test_marked(taskito_settings, queue, worker, tmp_path):
            assert (taskito_settings.workers, taskito_settings.db, taskito_settings.timeout) == (3, "file", 9.0)
            assert taskito_settings.sources["workers"] == "marker"
            assert queue.db_path.startswith(str(tmp_path))
            assert worker.threads == 3

        @pytest.mark.taskito(timeout=2)
        def test_closest_marker_wins(taskito_settings, queue):
            assert taskito_settings.timeout == 2.0
            assert queue.db_path == ":memory:"

        def test_module_marker(taskito_settings):
            assert (taskito_settings.workers, taskito_settings.timeout) == (4, 9.0)
        """
    )
    # --strict-markers is in the project's ini: the marker is registered.
    result = project.runpytest("--taskito-workers=4")
    result.assert_outcomes(passed=3)
    assert "taskito(workers=N" in project.runpytest("--markers").stdout.str()


@pytest.mark.parametrize(
    ("marker", "message"),
    [
        ("taskito(8)", " takes keyword arguments only (workers=, db=, timeout=), got (8,)"),
        ("taskito(threads=8)", " got threads=; it accepts workers, db, timeout"),
        ("taskito(app='x:y')", " got app=; it accepts workers, db, timeout"),
        ("taskito(workers=0)", "(workers=...): expected a whole number of worker threads >= 1, got 0"),
        ("taskito(db='disk')", "(db=...): expected one of memory, file, postgres, got 'disk'"),
    ],
)
def test_bad_markers_error_the_test(project: pytest.Pytester, marker: str, message: str) -> None:
    project.makepyfile(
        f"""
        import pytest

        @pytest.mark.{marker}
        def test_marked(queue):
            pass
        """
    )
    result = project.runpytest()
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines([f"*UsageError: @pytest.mark.taskito{message}"])


def test_the_plugin_can_be_turned_off(project: pytest.Pytester) -> None:
    project.makepyfile("def test_uses(queue): pass")
    result = project.runpytest("-p", "no:taskito")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*fixture 'queue' not found*"])
    assert "taskito:" not in result.stdout.str()


def test_settings_describe_themselves() -> None:
    settings = Settings(workers=8, db="file", timeout=0.5, app="a.b:c", sources={"workers": "marker"})
    assert settings.describe() == (
        "workers=8 (marker), db=file (default), timeout=0.5s (default), app=a.b:c (default)"
    )


@pytest.mark.parametrize(
    "table",
    [
        "tool.pytest.ini_options",
        pytest.param(
            "tool.pytest",
            marks=pytest.mark.skipif(pytest.version_tuple < (9, 2), reason="typed TOML options: pytest 9.2"),
        ),
    ],
)
def test_toml_configs_may_give_numbers(project: pytest.Pytester, table: str) -> None:
    (project.path / "tox.ini").unlink()
    project.makepyprojecttoml(
        f"""
        [{table}]
        addopts = ["-p", "no:cacheprovider", "-p", "no:hypothesispytest", "-s"]
        asyncio_default_fixture_loop_scope = "function"
        taskito_workers = 3
        taskito_timeout = 2.5
        taskito_db = "file"
        """
    )
    project.makepyfile(SHOW_SETTINGS)
    result = project.runpytest()
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*SETTINGS 3 file 2.5*"])
