"""Workflows (taskito.canvas) through the public API and the real engine, on
every backend: chains, signatures, groups, chords, chunks, starmap, lanes
(max_concurrency), a failing step, and bad input refused before anything is
stored."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

from taskito import (
    GroupResult,
    InvalidArgumentError,
    JobResult,
    Queue,
    SerializationError,
    TaskFailedError,
    chain,
    chord,
    chunks,
    group,
    starmap,
)

from .conftest import MakeQueue


def arithmetic(queue: Queue) -> tuple[Any, Any, Any]:
    @queue.task(name="add")
    def add(a: int, b: int) -> int:
        return a + b

    @queue.task(name="mul")
    def mul(a: int, b: int) -> int:
        return a * b

    @queue.task(name="echo")
    def echo(*args: Any) -> list[Any]:
        return list(args)

    return add, mul, echo


def stored(queue: Queue) -> int:
    return sum(queue.stats().values())


def test_a_chain_passes_each_result_to_the_next_step(job_queue: Queue) -> None:
    add, mul, _ = arithmetic(job_queue)
    job_queue.start_worker()
    last = chain(add.s(1, 2), add.s(10), mul.s(2)).delay()
    assert isinstance(last, JobResult)
    assert last.result(timeout=20) == (1 + 2 + 10) * 2
    # The steps are stored jobs linked by their dependencies, last to first.
    middle = job_queue.get_job(last.dependencies[0])
    assert middle is not None and middle.task_name == "add" and middle.result(timeout=5) == 13
    first = job_queue.get_job(middle.dependencies[0])
    assert first is not None and first.dependencies == [] and first.result(timeout=5) == 3
    assert first.dependents == [middle.id] and middle.dependents == [last.id]


def test_an_immutable_signature_ignores_the_previous_result_but_waits_for_it(job_queue: Queue) -> None:
    order: list[str] = []

    @job_queue.task(name="first")
    def first() -> str:
        order.append("first")
        return "ignored"

    @job_queue.task(name="second")
    def second(*args: Any) -> list[Any]:
        order.append("second")
        return list(args)

    job_queue.start_worker()
    assert chain(first.s(), second.si(5, 6)).delay().result(timeout=20) == [5, 6]
    assert order == ["first", "second"]
    # The mutable one gets the result prepended.
    assert chain(first.s(), second.s(5)).delay().result(timeout=20) == ["ignored", 5]


def test_a_chain_of_chains_is_one_chain(job_queue: Queue) -> None:
    add, mul, _ = arithmetic(job_queue)
    job_queue.start_worker()
    inner = chain(add.s(1, 1), mul.s(3))
    workflow = chain(inner, chain(add.s(4)), mul.s(10))
    assert len(workflow.signatures) == 4
    assert workflow.delay().result(timeout=20) == ((1 + 1) * 3 + 4) * 10


def test_group_results_keep_the_group_order_not_the_finishing_order(make_queue: MakeQueue) -> None:
    queue = make_queue(workers=3)
    last_done = threading.Event()

    @queue.task(name="member")
    def member(i: int) -> int:
        if i == 0:
            # Finishes after the others.
            assert last_done.wait(10)
        if i == 2:
            last_done.set()
        return i * 10

    queue.start_worker()
    result = group(member.s(0), member.s(1), member.s(2)).delay()
    assert isinstance(result, GroupResult)
    assert result.results(timeout=20) == [0, 10, 20]
    assert result.join(timeout=5) == [0, 10, 20]
    assert [job.result(timeout=5) for job in result] == [0, 10, 20]
    assert len(result) == 3 and result[1] == result.jobs[1]
    assert result.ready() and result.completed_count() == 3


def test_group_accepts_a_list_of_members(job_queue: Queue) -> None:
    add, _, _ = arithmetic(job_queue)
    job_queue.start_worker()
    assert group([add.s(i, i) for i in range(4)]).delay().results(timeout=20) == [0, 2, 4, 6]


def test_a_chord_of_100_gives_the_callback_every_result_in_order(job_queue: Queue) -> None:
    _, mul, echo = arithmetic(job_queue)

    @job_queue.task(name="total")
    def total(values: list[int], extra: int) -> tuple[list[int], int]:
        return values, sum(values) + extra

    job_queue.start_worker()
    callback = chord(group(mul.s(i, i) for i in range(100)), total.s(1)).delay()
    assert isinstance(callback, JobResult)
    values, summed = callback.result(timeout=60)
    assert values == [i * i for i in range(100)]
    assert summed == sum(i * i for i in range(100)) + 1
    assert len(callback.dependencies) == 100
    # A group followed by a step in a chain is the same chord.
    assert chain(group(mul.s(2, 3), mul.s(4, 5)), echo.s("x")).delay().result(timeout=20) == [[6, 20], "x"]


def test_a_group_of_chains_feeding_a_chord_then_a_last_step(job_queue: Queue) -> None:
    # The reference project's ETL example: extract and transform per source,
    # aggregate, load.
    @job_queue.task(name="extract")
    def extract(source: str) -> str:
        return f"rows of {source}"

    @job_queue.task(name="transform")
    def transform(data: str) -> str:
        return data.upper()

    @job_queue.task(name="aggregate")
    def aggregate(results: list[str]) -> str:
        return " + ".join(results)

    @job_queue.task(name="load")
    def load(data: str) -> str:
        return f"loaded {data}"

    job_queue.start_worker()
    pipeline = chain(
        chord(
            group(chain(extract.s(src), transform.s()) for src in ("db", "api", "csv")),
            aggregate.s(),
        ),
        load.s(),
    )
    assert pipeline.delay().result(timeout=30) == "loaded ROWS OF DB + ROWS OF API + ROWS OF CSV"


def test_a_chain_ending_in_a_group_gives_each_member_the_previous_result(job_queue: Queue) -> None:
    add, mul, _ = arithmetic(job_queue)
    job_queue.start_worker()
    result = chain(add.s(2, 3), group(mul.s(10), add.s(1), add.si(0, 0))).delay()
    assert isinstance(result, GroupResult)
    assert result.results(timeout=20) == [50, 6, 0]


def test_chunks_call_the_task_once_per_chunk_with_a_list(job_queue: Queue) -> None:
    @job_queue.task(name="batch")
    def batch(items: list[int]) -> list[int]:
        return [x * 2 for x in items]

    job_queue.start_worker()
    result = chunks(batch, range(7), 3).delay()
    assert isinstance(result, GroupResult) and len(result) == 3
    assert result.results(timeout=20) == [[0, 2, 4], [6, 8, 10], [12]]


def test_starmap_calls_the_task_once_per_argument_tuple(job_queue: Queue) -> None:
    add, _, _ = arithmetic(job_queue)
    job_queue.start_worker()
    assert starmap(add, [(1, 2), [3, 4], (5, 6)]).delay().results(timeout=20) == [3, 7, 11]


def test_max_concurrency_runs_members_in_lanes(make_queue: MakeQueue) -> None:
    lanes = 2
    queue = make_queue(workers=4)
    lock = threading.Condition()
    running = 0
    peak = 0
    events: list[tuple[str, int]] = []

    @queue.task(name="laned")
    def laned(i: int) -> int:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
            events.append(("start", i))
            lock.notify_all()
            # Holds its thread until a member beyond the limit runs beside it
            # (which fails the test) or a short while passes: four executor
            # threads would run more than two members at once without lanes.
            lock.wait_for(lambda: running > lanes, timeout=0.3)
            running -= 1
            events.append(("end", i))
        return i

    queue.start_worker()
    members = 8
    result = group(*(laned.s(i) for i in range(members)), max_concurrency=lanes).delay()
    assert result.results(timeout=60) == list(range(members))
    assert peak <= lanes, f"{peak} members ran at once"
    for i in range(members - lanes):
        assert events.index(("end", i)) < events.index(("start", i + lanes)), f"member {i + lanes}"


def test_a_failure_in_one_lane_cancels_nothing(job_queue: Queue) -> None:
    @job_queue.task(name="maybe", max_retries=0)
    def maybe(fail: bool) -> str:
        if fail:
            raise ValueError("this member fails")
        return "ok"

    job_queue.start_worker()
    result = group(maybe.s(True), maybe.s(False), maybe.s(False), max_concurrency=1).delay()
    assert [job.result(timeout=20) for job in result[1:]] == ["ok", "ok"]
    with pytest.raises(TaskFailedError):
        result.results(timeout=20)
    assert result.ready() and result.completed_count() == 2
    assert result[1].dependencies == [result[0].id]


def test_a_failing_middle_step_cancels_the_rest_and_the_last_result_names_it(job_queue: Queue) -> None:
    add, _, _ = arithmetic(job_queue)
    ran: list[int] = []

    @job_queue.task(name="boom", max_retries=0)
    def boom(x: int) -> int:
        raise RuntimeError(f"boom at {x}")

    @job_queue.task(name="after")
    def after(x: int) -> int:
        ran.append(x)
        return x

    job_queue.start_worker()
    last = chain(add.s(1, 2), boom.s(), after.s(), after.s()).delay()
    with pytest.raises(TaskFailedError) as failed:
        last.result(timeout=20)
    third = job_queue.get_job(last.dependencies[0])
    assert third is not None
    middle = job_queue.get_job(third.dependencies[0])
    assert middle is not None and middle.task_name == "boom"
    assert middle.status == "dead"
    assert third.status == last.status == "cancelled"
    message = str(failed.value)
    assert middle.id in message and "boom" in message, message
    assert ran == []


def test_a_chord_whose_member_fails_cancels_its_callback(job_queue: Queue) -> None:
    @job_queue.task(name="maybe", max_retries=0)
    def maybe(fail: bool) -> bool:
        if fail:
            raise ValueError("no")
        return fail

    @job_queue.task(name="gather")
    def gather(values: list[bool]) -> list[bool]:
        return values

    job_queue.start_worker()
    callback = chord([maybe.s(False), maybe.s(True), maybe.s(False)], gather.s()).delay()
    with pytest.raises(TaskFailedError):
        callback.result(timeout=20)
    assert callback.status == "cancelled"


def test_signature_options_reach_the_job(job_queue: Queue) -> None:
    add, _, _ = arithmetic(job_queue)
    step = add.s(1).set(priority=7, queue="other", max_retries=5)
    assert step.options == {"priority": 7, "queue": "other", "max_retries": 5}
    last = chain(add.s(1, 1), step).delay()
    data = last.to_dict()
    assert (data["priority"], data["queue"], data["max_retries"]) == (7, "other", 5)
    first = job_queue.get_job(last.dependencies[0])
    assert first is not None and first.to_dict()["queue"] == "default"


def test_a_step_whose_unique_key_is_live_is_that_job(job_queue: Queue) -> None:
    add, _, _ = arithmetic(job_queue)
    a = chain(add.s(1, 1).set(unique_key="shared"), add.s(10)).delay()
    b = chain(add.s(1, 1).set(unique_key="shared"), add.s(20)).delay()
    # Both chains wait for (and are fed) the one live job with the key.
    assert a.dependencies == b.dependencies
    job_queue.start_worker()
    assert (a.result(timeout=20), b.result(timeout=20)) == (12, 22)
    assert job_queue.stats()["complete"] == 3


def test_a_signature_alone_and_asyncio(job_queue: Queue) -> None:
    add, mul, _ = arithmetic(job_queue)
    job_queue.start_worker()
    assert add.s(2, 3).delay().result(timeout=20) == 5
    assert add.s(2, 3).apply(job_queue).result(timeout=20) == 5

    async def main() -> tuple[Any, Any]:
        last = await chain(add.s(1, 1), mul.s(5)).apply_async()
        members = await group(add.s(1, 1), add.s(2, 2)).apply_async()
        assert isinstance(last, JobResult) and isinstance(members, GroupResult)
        return await last.aresult(timeout=20), await members.aresults(timeout=20)

    assert asyncio.run(main()) == (10, [2, 4])


def test_a_signature_used_twice_makes_two_jobs(job_queue: Queue) -> None:
    add, _, _ = arithmetic(job_queue)
    job_queue.start_worker()
    step = add.s(100)
    a = chain(add.s(1, 1), step).delay()
    b = chain(add.s(2, 2), step).delay()
    assert (a.result(timeout=20), b.result(timeout=20)) == (102, 104)
    assert a.id != b.id


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda add: chain(add.s(1, 1), 5), "chain step 1 is int"),
        (lambda add: chain(), "chain needs at least one step"),
        (lambda add: group(add.s(1, 1), "x"), "group member 1 is str"),
        (lambda add: group(), "group needs at least one member"),
        (lambda add: group(7), "group member 0 is int"),
        (lambda add: group(group(add.s(1, 1)), add.s(1, 1)), "group member 0 is a group"),
        (lambda add: group(chain(add.s(1, 1), group(add.s(1))), add.s(1, 1)), "member 0 ends in a group"),
        (lambda add: group(add.s(1, 1), max_concurrency=0), "max_concurrency must be between 1"),
        (lambda add: chord(add.s(1, 1), add.s()), "chord's header must be a group"),
        (lambda add: chord([add.s(1, 1), None], add.s()), "group member 1 is NoneType"),
        (lambda add: chord(group(add.s(1, 1)), group(add.s())), "chord's body must be a signature"),
        (lambda add: chunks(add, [1, 2], 0), "n must be between 1"),
        (lambda add: chunks(add, [], 2), "chunks needs at least one item"),
        (lambda add: starmap(add, [(1, 2), 3]), "item 1 is int"),
        (lambda add: starmap(add, []), "starmap needs at least one"),
        (lambda add: add.s(1).set(priorty=3), "unknown signature option(s) priorty"),
    ],
)
def test_bad_workflows_are_refused_where_they_are_built(job_queue: Queue, build: Any, message: str) -> None:
    add, _, _ = arithmetic(job_queue)
    with pytest.raises(InvalidArgumentError, match=message.replace("(", r"\(").replace(")", r"\)")):
        build(add)
    assert stored(job_queue) == 0


def test_workflows_that_cannot_be_stored_store_nothing(make_queue: MakeQueue) -> None:
    queue = make_queue()
    add, _, _ = arithmetic(queue)
    other = make_queue(db_path=":memory:")
    foreign = other.task(name="foreign")(lambda: None)
    with pytest.raises(InvalidArgumentError, match="max_concurrency cannot follow another step"):
        chain(add.s(1, 1), group(add.s(1), add.s(2), max_concurrency=1)).delay()
    with pytest.raises(SerializationError):
        chain(add.s(1, 1), add.s(threading.Lock())).delay()
    with pytest.raises(TypeError, match="priority must be an int"):
        chain(add.s(1, 1), add.s(1).set(priority="high")).delay()
    with pytest.raises(InvalidArgumentError, match="different Queues"):
        chain(add.s(1, 1), foreign.si()).delay()
    assert stored(queue) == 0
