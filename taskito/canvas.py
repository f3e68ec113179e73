"""Workflows: signatures, and ``chain``, ``group``, ``chord``, ``chunks`` and
``starmap`` built from them.

A workflow is stored whole, in one transaction, as jobs that depend on
each other (``JobResult.dependencies``): a step waits in the database until
the steps before it completed, and the worker that runs it prepends their
results to its arguments. Nothing waits or polls in the producer, so
``.delay()`` returns at once and the workflow goes on if the producer exits
or a worker dies between steps.

How a part of a workflow takes the result of the part before it:

- a signature ``task.s(...)`` gets the previous step's result as its first
  argument; after a group, the list of the group's results (a chord);
  ``task.si(...)`` gets nothing (it only waits for the previous step);
- a chain passes the previous result to its first part;
- a group passes it to each member.

What may be nested (anything else raises ``InvalidArgumentError``):

- in a chain: signatures, chains (their steps are spliced in), groups (the
  next step receives the list of their results: ``chain(group(...), cb.s())``
  is ``chord(group(...), cb.s())``) and chords;
- in a group: signatures, and chains and chords that end in one job (a
  group of groups would need a list of lists, which one job cannot be fed);
- a chord's header is a group (or signatures), its callback a signature or
  a chain.

``group(..., max_concurrency=k)`` runs its members in ``k`` lanes: member
``i + k`` waits for member ``i`` to end, whatever its outcome, so a failure
in one lane cancels nothing in another. Such a group must not take the
previous step's result (one job cannot both wait for a result and follow a
lane that may have failed).
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from taskito import _options
from taskito._canvas_graph import Ends, Graph, GraphNode, submit
from taskito.exceptions import InvalidArgumentError
from taskito.group_result import GroupResult

if TYPE_CHECKING:
    from taskito.app import Queue
    from taskito.result import JobResult
    from taskito.task import TaskWrapper

# The options a signature's job may override, as ``apply_async`` names them.
SIGNATURE_OPTIONS = frozenset(
    {"priority", "delay", "queue", "max_retries", "timeout", "unique_key", "expires", "metadata"}
)


# ── signatures ───────────────────────────────────────────────────────────


class Signature:
    """One task call, not yet enqueued: ``task.s(*args, **kwargs)`` (in a
    workflow, the previous step's result is prepended to ``args``) or
    ``task.si(...)`` (immutable: its arguments are used as they are).

    ``options`` are the job's enqueue options (``priority``, ``delay``,
    ``queue``, ``max_retries``, ``timeout``, ``unique_key``, ``expires``,
    ``metadata``, as ``apply_async`` takes them); ``set(**options)`` adds
    to them.
    """

    __slots__ = ("args", "immutable", "kwargs", "options", "task")

    # One job: its result is one value.
    _many = False

    def __init__(
        self,
        task: TaskWrapper[Any, Any],
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
        options: dict[str, Any] | None = None,
        immutable: bool = False,
    ) -> None:
        self.task = task
        self.args, self.kwargs = _options.call_args(args, kwargs)
        self.options: dict[str, Any] = {}
        self.immutable = immutable
        if options:
            self.set(**options)

    def set(self, **options: Any) -> Signature:
        """Adds enqueue options to this signature (as Celery's ``set`` does:
        in place) and returns it, so that ``task.s(x).set(priority=5)``
        reads as one expression."""
        unknown = sorted(set(options) - SIGNATURE_OPTIONS)
        if unknown:
            raise InvalidArgumentError(
                f"unknown signature option(s) {', '.join(unknown)}; the options are "
                f"{', '.join(sorted(SIGNATURE_OPTIONS))}"
            )
        self.options.update(options)
        return self

    def delay(self) -> JobResult:
        """Enqueues this one call; its ``JobResult``."""
        return self.apply()

    def apply(self, queue: Queue | None = None) -> JobResult:
        """Enqueues this one call, on ``queue``'s database if given (else its
        task's); its ``JobResult``."""
        result = submit(self, queue)
        assert not isinstance(result, GroupResult)
        return result

    async def apply_async(self, queue: Queue | None = None) -> JobResult:
        """``apply()`` for asyncio: the enqueue runs in a worker thread."""
        return await asyncio.to_thread(self.apply, queue)

    def _build(self, graph: Graph, previous: Ends | None, gate: list[int]) -> Ends:
        if previous is None:
            # First of its workflow, or behind a lane of a group: it waits for
            # the lane's previous member to end (whatever the outcome), and
            # takes nothing from it.
            node = GraphNode(self, list(gate), "none", "finish" if gate else "success")
        else:
            feed = "none" if self.immutable else "all" if previous.many else "one"
            node = GraphNode(self, list(previous.nodes), feed, "success")
        return Ends([graph.add(node)], many=False)

    def _tasks(self) -> Iterator[TaskWrapper[Any, Any]]:
        yield self.task

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Signature) and (
            (self.task, self.args, self.kwargs, self.options, self.immutable)
            == (other.task, other.args, other.kwargs, other.options, other.immutable)
        )

    __hash__ = None  # type: ignore[assignment]  # mutable, like a dict

    def __repr__(self) -> str:
        call = [repr(a) for a in self.args] + [f"{k}={v!r}" for k, v in self.kwargs.items()]
        method = "si" if self.immutable else "s"
        options = f".set({', '.join(f'{k}={v!r}' for k, v in self.options.items())})" if self.options else ""
        return f"{self.task.name}.{method}({', '.join(call)}){options}"


# ── compositions ─────────────────────────────────────────────────────────


class Canvas(ABC):
    """What ``chain``, ``group`` and ``chord`` share: enqueueing the whole
    workflow in one transaction."""

    def delay(self) -> JobResult | GroupResult:
        """Stores the whole workflow and returns at once: the ``JobResult`` of
        its last job, or a ``GroupResult`` if it ends in a group."""
        return submit(self, None)

    def apply(self, queue: Queue | None = None) -> JobResult | GroupResult:
        """``delay()``, on ``queue``'s database if given (else the tasks')."""
        return submit(self, queue)

    async def apply_async(self, queue: Queue | None = None) -> JobResult | GroupResult:
        """``apply()`` for asyncio: the enqueue runs in a worker thread."""
        return await asyncio.to_thread(self.apply, queue)

    @property
    @abstractmethod
    def _many(self) -> bool:
        """Whether it ends in a group (its result is a list of jobs' results)."""

    @abstractmethod
    def _build(self, graph: Graph, previous: Ends | None, gate: list[int]) -> Ends: ...

    @abstractmethod
    def _tasks(self) -> Iterator[TaskWrapper[Any, Any]]: ...


Part = Signature | Canvas


class chain(Canvas):  # the reference project's and Celery's name: lower case
    """Runs its parts one after another, each given the previous one's result
    (see the module's docstring); ``delay()`` returns the last job's
    ``JobResult`` (a ``GroupResult`` if the chain ends in a group)."""

    def __init__(self, *parts: Part) -> None:
        _check_parts("chain", parts)
        if not parts:
            raise InvalidArgumentError("chain needs at least one step")
        # A chain in a chain is its steps in place.
        self.signatures: list[Part] = []
        for part in parts:
            self.signatures.extend(part.signatures if isinstance(part, chain) else [part])

    @property
    def _many(self) -> bool:
        return self.signatures[-1]._many

    def _build(self, graph: Graph, previous: Ends | None, gate: list[int]) -> Ends:
        ends = self.signatures[0]._build(graph, previous, gate)
        for part in self.signatures[1:]:
            ends = part._build(graph, ends, [])
        return ends

    def _tasks(self) -> Iterator[TaskWrapper[Any, Any]]:
        for part in self.signatures:
            yield from part._tasks()

    def __repr__(self) -> str:
        return " | ".join(map(repr, self.signatures))


class group(Canvas):
    """Runs its members side by side; ``delay()`` returns a ``GroupResult``.

    ``group(a.s(), b.s())`` or ``group([a.s(), b.s()])``. With
    ``max_concurrency=k``, at most ``k`` members run at once (see the
    module's docstring).
    """

    def __init__(self, *members: Part | Iterable[Part], max_concurrency: int | None = None) -> None:
        parts: Sequence[Any] = members
        if len(members) == 1 and not isinstance(members[0], Signature | Canvas):
            if not isinstance(members[0], Iterable) or isinstance(members[0], str | bytes):
                raise InvalidArgumentError(
                    f"group member 0 is {type(members[0]).__name__}, not a signature (task.s(...)), "
                    "chain or chord"
                )
            parts = list(members[0])
        _check_parts("group", parts)
        if not parts:
            raise InvalidArgumentError("group needs at least one member")
        for i, part in enumerate(parts):
            if isinstance(part, group):
                raise InvalidArgumentError(
                    f"group member {i} is a group: list its members in this group instead"
                )
            if part._many:
                raise InvalidArgumentError(
                    f"group member {i} ends in a group: a member must end in one job "
                    "(add a step after it to gather its results)"
                )
        if max_concurrency is not None:
            max_concurrency = _options.count("max_concurrency", max_concurrency, minimum=1)
        self.signatures: list[Part] = list(parts)
        self.max_concurrency = max_concurrency

    def delay(self) -> GroupResult:
        return self.apply()

    def apply(self, queue: Queue | None = None) -> GroupResult:
        result = submit(self, queue)
        assert isinstance(result, GroupResult)
        return result

    async def apply_async(self, queue: Queue | None = None) -> GroupResult:
        return await asyncio.to_thread(self.apply, queue)

    @property
    def _many(self) -> bool:
        return True

    def _build(self, graph: Graph, previous: Ends | None, gate: list[int]) -> Ends:
        lanes = self.max_concurrency
        if lanes is not None and previous is not None:
            raise InvalidArgumentError(
                "a group with max_concurrency cannot follow another step: its members would wait "
                "for both the previous result and their lane; make it the first part of the workflow"
            )
        ends: list[int] = []
        for i, member in enumerate(self.signatures):
            lane = [ends[i - lanes]] if lanes is not None and i >= lanes else []
            member_ends = member._build(graph, previous, gate + lane)
            ends.extend(member_ends.nodes)
        return Ends(ends, many=True)

    def _tasks(self) -> Iterator[TaskWrapper[Any, Any]]:
        for part in self.signatures:
            yield from part._tasks()

    def __repr__(self) -> str:
        limit = "" if self.max_concurrency is None else f", max_concurrency={self.max_concurrency}"
        return f"group({', '.join(map(repr, self.signatures))}{limit})"


class chord(Canvas):
    """Runs ``header`` (a group, or signatures) and then ``body``, given the
    list of the header's results in the header's order; ``delay()`` returns
    the body's ``JobResult``. The body runs once every member completed: if
    one fails, it is cancelled."""

    def __init__(self, header: group | Iterable[Part], body: Signature | chain) -> None:
        if not isinstance(header, group):
            if isinstance(header, Signature | Canvas) or not isinstance(header, Iterable):
                raise InvalidArgumentError(
                    f"chord's header must be a group or a list of signatures, got {type(header).__name__}"
                )
            header = group(*header)
        if not isinstance(body, Signature | chain) or (isinstance(body, chain) and body._many):
            raise InvalidArgumentError(
                f"chord's body must be a signature (task.s(...)) or a chain ending in one job, "
                f"got {type(body).__name__}"
            )
        self.header = header
        self.body = body

    def delay(self) -> JobResult:
        return self.apply()

    def apply(self, queue: Queue | None = None) -> JobResult:
        result = submit(self, queue)
        assert not isinstance(result, GroupResult)
        return result

    async def apply_async(self, queue: Queue | None = None) -> JobResult:
        return await asyncio.to_thread(self.apply, queue)

    @property
    def _many(self) -> bool:
        return False

    def _build(self, graph: Graph, previous: Ends | None, gate: list[int]) -> Ends:
        return self.body._build(graph, self.header._build(graph, previous, gate), [])

    def _tasks(self) -> Iterator[TaskWrapper[Any, Any]]:
        yield from self.header._tasks()
        yield from self.body._tasks()

    def __repr__(self) -> str:
        return f"chord({self.header!r}, {self.body!r})"


def chunks(task: TaskWrapper[Any, Any], items: Iterable[Any], n: int) -> group:
    """A group of jobs of ``task``, each called once with a list of (up to)
    ``n`` consecutive ``items`` as its one argument (as the reference
    project does); their results, in order, are the group's."""
    size = _options.count("n", n, minimum=1)
    values = list(items)
    if not values:
        raise InvalidArgumentError("chunks needs at least one item")
    return group(*(task.s(values[i : i + size]) for i in range(0, len(values), size)))


def starmap(task: TaskWrapper[Any, Any], args_list: Iterable[tuple[Any, ...] | list[Any]]) -> group:
    """A group of jobs of ``task``, one per argument tuple: ``task(*args)``."""
    members = []
    for i, args in enumerate(args_list):
        if not isinstance(args, tuple | list):
            raise InvalidArgumentError(
                f"starmap takes argument tuples; item {i} is {type(args).__name__} "
                "(write [(x,) for x in items] for one argument each)"
            )
        members.append(task.s(*args))
    if not members:
        raise InvalidArgumentError("starmap needs at least one argument tuple")
    return group(*members)


# ── checks ───────────────────────────────────────────────────────────────


def _check_parts(kind: str, parts: Sequence[Any]) -> None:
    for i, part in enumerate(parts):
        if not isinstance(part, Signature | Canvas):
            word = "step" if kind == "chain" else "member"
            raise InvalidArgumentError(
                f"{kind} {word} {i} is {type(part).__name__}, not a signature (task.s(...)), "
                "chain, group or chord"
            )
