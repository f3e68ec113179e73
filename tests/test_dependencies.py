"""Dependencies: depends_on= on apply_async/enqueue, and the graph enqueue
the canvas uses (Client.submit_graph): waiting, feeding results on, modes,
and cancellation cascading through dependents, on every backend."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from taskito import InvalidArgumentError, JobCancelledError, JobNotFoundError, Queue, TaskFailedError
from tests.conftest import MakeQueue


def tasks(queue: Queue) -> dict[str, Any]:
    @queue.task(name="add")
    def add(a: int, b: int = 0) -> int:
        return a + b

    @queue.task(name="total")
    def total(values: list[int | None]) -> int:
        return sum(v or 0 for v in values)

    @queue.task(name="fail", max_retries=0)
    def fail(*args: Any) -> None:
        raise ValueError("step failed")

    return {"add": add, "total": total, "fail": fail}


def test_a_job_waits_for_its_dependencies(make_queue: MakeQueue) -> None:
    queue = make_queue()
    order: list[str] = []
    gate = threading.Event()

    @queue.task()
    def first() -> None:
        assert gate.wait(timeout=10)
        order.append("first")

    @queue.task()
    def second() -> None:
        order.append("second")

    a = first.delay()
    b = second.apply_async(depends_on=a)
    c = queue.enqueue(second.name, depends_on=[a.id, b])
    assert b.status == "pending" and c.status == "pending"
    assert b.dependencies == [a.id]
    assert c.dependencies == [a.id, b.id]
    assert a.dependents == [b.id, c.id]
    assert c.to_dict()["dependencies"] == [a.id, b.id]
    queue.start_worker()
    gate.set()
    c.result(timeout=10)
    assert order == ["first", "second", "second"]


def test_an_unknown_dependency_raises_and_stores_nothing(make_queue: MakeQueue) -> None:
    queue = make_queue()
    t = tasks(queue)
    with pytest.raises(JobNotFoundError, match="00000000000000ab"):
        t["add"].apply_async((1,), depends_on="00000000000000ab")
    with pytest.raises(JobNotFoundError):
        t["add"].apply_async((1,), depends_on=["not-an-id"])
    with pytest.raises(InvalidArgumentError, match="depends_on"):
        t["add"].apply_async((1,), depends_on=42)  # type: ignore[arg-type]
    assert sum(queue.stats().values()) == 0


def test_a_failed_step_cancels_its_dependents_transitively(make_queue: MakeQueue) -> None:
    queue = make_queue()
    t = tasks(queue)
    root = t["fail"].delay()
    child = t["add"].apply_async((1,), depends_on=root)
    grandchild = t["add"].apply_async((2,), depends_on=child)
    great = t["add"].apply_async((3,), depends_on=[grandchild])
    bystander = t["add"].delay(4)
    queue.start_worker()
    with pytest.raises(TaskFailedError):
        root.result(timeout=10)
    for job in (child, grandchild, great):
        with pytest.raises(TaskFailedError, match=f"dependency {root.id} \\(fail\\) died") as raised:
            job.result(timeout=10)
        assert raised.value.job_id == job.id
        assert job.status == "cancelled"
    assert bystander.result(timeout=10) == 4
    assert queue.stats()["cancelled"] == 3


def test_dependencies_already_settled_at_enqueue(make_queue: MakeQueue) -> None:
    queue = make_queue()
    t = tasks(queue)
    queue.start_worker()
    done = t["add"].delay(1)
    assert done.result(timeout=10) == 1
    dead = t["fail"].delay()
    with pytest.raises(TaskFailedError):
        dead.result(timeout=10)
    # Complete counts as satisfied: the job runs.
    assert t["add"].apply_async((2,), depends_on=done).result(timeout=10) == 2
    # Already dead: cancelled at once, naming it.
    late = t["add"].apply_async((3,), depends_on=[done, dead])
    assert late.status == "cancelled"
    with pytest.raises(TaskFailedError, match=f"dependency {dead.id} \\(fail\\) died"):
        late.result(timeout=1)
    # Reviving the dependency does not revive what it cancelled.
    assert queue.retry_dead(dead.id)
    with pytest.raises(TaskFailedError):
        dead.result(timeout=10)
    assert late.status == "cancelled"


def test_cancelling_a_dependency_cancels_its_dependents(make_queue: MakeQueue) -> None:
    queue = make_queue()
    t = tasks(queue)
    parent = t["add"].apply_async((1,), delay=3600)
    child = t["add"].apply_async((2,), depends_on=parent)
    assert queue.cancel_job(parent.id)
    with pytest.raises(TaskFailedError, match="was cancelled"):
        child.result(timeout=10)
    # A waiting job can be cancelled itself; its own dependents follow.
    other = t["add"].apply_async((1,), delay=3600)
    waiting = t["add"].apply_async((2,), depends_on=other)
    after = t["add"].apply_async((3,), depends_on=waiting)
    assert queue.cancel_job(waiting.id)
    with pytest.raises(JobCancelledError):
        waiting.result(timeout=1)
    with pytest.raises(TaskFailedError, match=waiting.id):
        after.result(timeout=10)
    assert other.status == "pending"


def test_a_graph_feeds_results_on_and_finish_mode_runs_after_failures(make_queue: MakeQueue) -> None:
    queue = make_queue()
    t = tasks(queue)
    client = queue._client

    def node(task: str, *args: Any, **extra: Any) -> dict[str, Any]:
        return {"task": t[task], "payload": client.dump_call(task, args, {}), **extra}

    jobs = client.submit_graph(
        [
            node("add", 1, 2),  # 0: 3
            node("add", 10, after=[0], feed="one"),  # 1: 13
            node("add", 5, 5),  # 2: 10
            node("total", after=[1, 2], feed="all"),  # 3: 23
            node("fail"),  # 4: dies
            node("total", depends_on=[], after=[4, 2], mode="finish", feed="all"),  # 5: 10
            node("add", 1, after=[4], feed="one"),  # 6: cancelled
        ]
    )
    assert [j.status for j in jobs] == ["pending"] * 7
    queue.start_worker()
    assert jobs[3].result(timeout=10) == 23
    assert jobs[5].result(timeout=10) == 10
    with pytest.raises(TaskFailedError, match=jobs[4].id):
        jobs[6].result(timeout=10)
    assert jobs[3].dependencies == [jobs[1].id, jobs[2].id]


def test_a_graph_with_a_bad_node_stores_nothing(make_queue: MakeQueue) -> None:
    queue = make_queue()
    t = tasks(queue)
    client = queue._client
    payload = client.dump_call("add", (1,), {})
    bad_graphs: list[tuple[list[dict[str, Any]], type[Exception]]] = [
        ([{"task": t["add"], "payload": payload}, {"task": t["add"], "payload": payload, "after": [1]}], InvalidArgumentError),
        ([{"task": t["add"], "payload": payload, "depends_on": ["0000000000000001"]}], JobNotFoundError),
        ([{"task": t["add"], "payload": payload, "feed": "some"}], InvalidArgumentError),
        ([{"task": t["add"], "payload": payload, "mode": "maybe"}], InvalidArgumentError),
        ([{"task": t["add"], "payload": payload, "colour": "red"}], InvalidArgumentError),
        ([{"task": t["add"], "payload": payload}, {"task": t["add"], "payload": payload, "after": [0], "feed": "one", "depends_on": []}, {"task": t["add"], "payload": payload, "after": [0, 1], "feed": "one"}], InvalidArgumentError),
    ]  # fmt: skip
    for graph, error in bad_graphs:
        with pytest.raises(error):
            client.submit_graph(graph)
    assert sum(queue.stats().values()) == 0
