"""Unique jobs: unique_key= on apply_async/enqueue and as a task option. A
live job with the key is returned instead of a second one; a final one frees
the key; producers in several processes racing on the same keys store one
job per key."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from typing import Any

import pytest

from taskito import InvalidArgumentError, Queue
from tests.conftest import MakeQueue


def test_a_live_key_returns_the_same_job(make_queue: MakeQueue) -> None:
    queue = make_queue()

    @queue.task()
    def send(to: str) -> str:
        return to

    first = send.apply_async(("a@x",), unique_key="welcome:a")
    again = send.apply_async(("other",), unique_key="welcome:a")
    by_name = queue.enqueue(send.name, ("b",), unique_key="welcome:a")
    other = send.apply_async(("b@x",), unique_key="welcome:b")
    assert again.id == first.id == by_name.id
    assert other.id != first.id
    assert queue.stats()["pending"] == 2
    assert first.to_dict()["unique_key"] == "welcome:a"


def test_a_finished_job_frees_its_key(make_queue: MakeQueue) -> None:
    queue = make_queue()

    @queue.task()
    def work(n: int) -> int:
        return n

    first = work.apply_async((1,), unique_key="k")
    queue.start_worker()
    assert first.result(timeout=10) == 1
    second = work.apply_async((2,), unique_key="k")
    assert second.id != first.id
    assert second.result(timeout=10) == 2
    cancelled = work.apply_async((3,), unique_key="c", delay=60)
    assert queue.cancel_job(cancelled.id)
    assert work.apply_async((4,), unique_key="c", delay=60).id != cancelled.id


def test_the_task_option_derives_the_key_from_the_arguments(make_queue: MakeQueue) -> None:
    queue = make_queue()
    seen: list[tuple[Any, ...]] = []

    def key(args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
        seen.append((args, kwargs))
        return f"report:{args[0]}"

    @queue.task(unique_key=key)
    def report(user: int, fmt: str = "pdf") -> str:
        return f"{user}.{fmt}"

    a = report.delay(1)
    b = report.delay(1, fmt="csv")
    c = report.apply_async((2,))
    d = report.apply_async((2,), unique_key="explicit")
    many = report.map([(1,), (3,)])
    assert a.id == b.id == many[0].id
    assert len({a.id, c.id, d.id, many[1].id}) == 4
    assert seen[:2] == [((1,), {}), ((1,), {"fmt": "csv"})]
    assert report.options["unique_key"] is key


@pytest.mark.parametrize("bad", [5, b"key", ["k"], ""])
def test_a_key_of_the_wrong_type_raises_and_stores_nothing(make_queue: MakeQueue, bad: Any) -> None:
    queue = make_queue()

    @queue.task()
    def noop() -> None: ...

    with pytest.raises(InvalidArgumentError, match="unique_key"):
        noop.apply_async(unique_key=bad)

    @queue.task(name="keyed", unique_key=lambda args, kwargs: bad)
    def keyed() -> None: ...

    with pytest.raises(InvalidArgumentError, match="unique_key"):
        keyed.delay()
    with pytest.raises(InvalidArgumentError, match="unique_key must be a callable"):
        queue.task(name="broken", unique_key="not callable")(lambda: None)  # type: ignore[arg-type]
    assert sum(queue.stats().values()) == 0


def test_threads_racing_on_one_key_store_one_job(make_queue: MakeQueue) -> None:
    queue = make_queue()

    @queue.task()
    def noop() -> None: ...

    barrier = threading.Barrier(8)
    ids: list[str] = []

    def produce() -> None:
        barrier.wait(timeout=10)
        for i in range(50):
            ids.append(noop.apply_async(unique_key=f"k{i}").id)

    threads = [threading.Thread(target=produce) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert len(set(ids)) == 50
    assert queue.stats()["pending"] == 50


PRODUCER = textwrap.dedent(
    """
    import sys
    from taskito import Queue

    kwargs = eval(sys.argv[1])
    queue = Queue(**kwargs)

    @queue.task(name="unique.noop")
    def noop(i):
        return i

    sys.stdout.write("ready\\n")
    sys.stdout.flush()
    sys.stdin.readline()  # everyone starts together
    for i in range(1000):
        noop.apply_async((i,), unique_key=f"key-{i}")
    queue.close()
    """
)


def test_four_producer_processes_store_one_job_per_key(database: dict[str, Any], tmp_path: Path) -> None:
    if database.get("db_path") == ":memory:":
        pytest.skip("processes cannot share a :memory: database")
    script = tmp_path / "producer.py"
    script.write_text(PRODUCER)
    producers = [
        subprocess.Popen(
            [sys.executable, str(script), repr(database)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    try:
        for p in producers:
            assert p.stdout is not None
            assert p.stdout.readline() == "ready\n"
        for p in producers:
            assert p.stdin is not None
            p.stdin.write("go\n")
            p.stdin.flush()
        for p in producers:
            assert p.wait(timeout=100) == 0
    finally:
        for p in producers:
            if p.poll() is None:
                p.kill()
                p.wait(timeout=10)
            for pipe in (p.stdin, p.stdout):
                if pipe is not None:
                    pipe.close()
    with Queue(**database) as queue:
        assert queue.stats()["pending"] == 1000
        keys = {job.to_dict()["unique_key"] for job in queue.list_jobs(limit=2000)}
        assert keys == {f"key-{i}" for i in range(1000)}
