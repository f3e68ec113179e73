"""What a database that cannot be used says: each situation made for real
(another process holding the lock, a file that is not a database, another
application's tables, no write permission, a read-only filesystem), and each
error names the file and what to do."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from taskito import Queue, StorageError


def make_database(path: Path) -> None:
    """A taskito database at ``path`` with one pending job, closed."""
    with Queue(path) as q:
        q.task(name="t")(lambda: None).delay()


def test_a_database_locked_past_busy_timeout_says_so(tmp_path: Path) -> None:
    path = tmp_path / "locked.db"
    make_database(path)
    # Another process (not this one: two SQLite copies in one process are
    # refused) holds the write lock until its stdin closes.
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sqlite3, sys\n"
            f"c = sqlite3.connect({str(path)!r}, isolation_level=None)\n"
            "c.execute('BEGIN IMMEDIATE')\n"
            "print('locked', flush=True)\n"
            "sys.stdin.read()\n",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "locked\n"
        with Queue(path, busy_timeout=0.2) as q:
            task = q.task(name="t")(lambda: None)
            with pytest.raises(StorageError) as info:
                task.delay()
            assert str(info.value).startswith(
                f"{path} is locked by another process for more than 0.2s (busy_timeout); "
            )
            assert "end it, or raise busy_timeout" in str(info.value)
            holder.communicate(input="", timeout=30)
            task.delay()
            assert q.stats()["pending"] == 2, "usable once the other process let go"
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()


def test_a_file_that_is_not_a_database_says_so(tmp_path: Path) -> None:
    path = tmp_path / "notes.db"
    path.write_bytes(b"these are my notes, not a database\n" * 100)
    with pytest.raises(StorageError) as info:
        Queue(path)
    assert type(info.value) is StorageError
    assert str(info.value).startswith(f"{path} is not a SQLite database or is corrupt (")
    assert "point db_path at another file, or restore this one from a backup" in str(info.value)


@pytest.mark.parametrize("table", ["jobs", "workers"])
def test_another_applications_table_is_not_ours(tmp_path: Path, table: str) -> None:
    path = tmp_path / "app.db"
    other = sqlite3.connect(path)
    other.execute(f"CREATE TABLE {table} (id INTEGER PRIMARY KEY, title TEXT)")
    other.commit()
    other.close()
    with pytest.raises(StorageError) as info:
        Queue(path)
    assert (
        str(info.value) == f"{path} has a table named {table} that taskito did not create; use another file"
    )
    assert "CREATE" not in str(info.value), "the schema's SQL is not the message"
    # Untouched: the other application's table is as it was.
    other = sqlite3.connect(path)
    try:
        assert other.execute("SELECT name FROM sqlite_master").fetchall() == [(table,)]
    finally:
        other.close()


# Opens the database given as argv[1] and prints what happened, as JSON.
PROBE = textwrap.dedent(
    """
    import json, sys
    from taskito import Queue, StorageError
    try:
        Queue(sys.argv[1]).close()
        print(json.dumps({"opened": True}))
    except StorageError as exc:
        print(json.dumps({
            "opened": False,
            "type": type(exc).__name__,
            "permission": isinstance(exc, PermissionError),
            "message": str(exc),
        }))
    """
)

# Root ignores permission bits through these capabilities; a child that
# dropped them from its bounding set (then exec'd) is held to the bits like
# anyone else, while still able to read the interpreter under /root.
DROP_DAC_CAPABILITIES = textwrap.dedent(
    """
    import ctypes, os, sys
    libc = ctypes.CDLL(None, use_errno=True)
    PR_CAPBSET_DROP = 24
    for cap in (1, 2, 3):  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, CAP_FOWNER
        if libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")
    os.execv(sys.executable, [sys.executable, *sys.argv[1:]])
    """
)


def probe(db: Path, *, prefix: tuple[str, ...] = ()) -> dict[str, object]:
    """Opens ``db`` in a child process (as a user held to permission bits)."""
    command = [*prefix, sys.executable]
    if os.geteuid() == 0:
        command += ["-c", DROP_DAC_CAPABILITIES, "-c", PROBE, str(db)]
    else:
        command += ["-c", PROBE, str(db)]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    result: dict[str, object] = json.loads(proc.stdout)
    return result


@pytest.fixture
def locked_down(tmp_path: Path) -> Iterator[Path]:
    """A folder whose permissions a test may take away; given back afterwards."""
    folder = tmp_path / "locked-down"
    folder.mkdir()
    yield folder
    folder.chmod(0o755)


@pytest.mark.parametrize(
    ("file_mode", "reason"),
    [
        (0o444, "Permission denied"),
        # The file is writable, but SQLite must create its -wal and -shm beside it.
        (0o666, "its folder {folder} is not writable (Permission denied"),
    ],
    ids=["read-only-file", "read-only-folder"],
)
def test_an_existing_database_without_write_permission_says_why(
    locked_down: Path, file_mode: int, reason: str
) -> None:
    db = locked_down / "jobs.db"
    make_database(db)
    db.chmod(file_mode)
    locked_down.chmod(0o555)
    result = probe(db)
    assert result["type"] == "StoragePermissionError" and result["permission"], result
    message = str(result["message"])
    assert message.startswith(f"cannot write to {db}: {reason.format(folder=locked_down)}"), message
    assert "fix the permissions, or put the database on a writable filesystem" in message


def test_an_existing_database_on_a_read_only_filesystem_says_why(tmp_path: Path) -> None:
    unshare = shutil.which("unshare")
    if unshare is None:
        pytest.skip("needs unshare(1) to mount a read-only filesystem")
    made = tmp_path / "jobs.db"
    make_database(made)
    mount = tmp_path / "ro"
    mount.mkdir()
    # A private mount namespace (as root of a new user namespace, so it needs
    # no privilege): a tmpfs holding a copy of the database, made read-only.
    script = (
        f"mount -t tmpfs tmpfs {mount} && cp {made} {mount}/ && mount -o remount,ro {mount} && "
        f'exec "$0" -c "$1" {mount / "jobs.db"}'
    )
    setup = subprocess.run(
        [unshare, "--user", "--map-root-user", "--mount", "sh", "-c", "true"], capture_output=True
    )
    if setup.returncode != 0:
        pytest.skip(f"cannot create a mount namespace here: {setup.stderr.decode().strip()}")
    proc = subprocess.run(
        [unshare, "--user", "--map-root-user", "--mount", "sh", "-c", script, sys.executable, PROBE],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["type"] == "StoragePermissionError" and result["permission"], result
    assert result["message"].startswith(
        f"cannot write to {mount / 'jobs.db'}: Read-only file system (os error 30); "
    ), result


def test_a_missing_folder_that_cannot_be_created_is_a_permission_error(locked_down: Path) -> None:
    locked_down.chmod(0o555)
    result = probe(locked_down / "sub" / "jobs.db")
    assert result["type"] == "StoragePermissionError", result
    assert str(result["message"]).startswith(f"cannot create the folder {locked_down / 'sub'}: "), result
