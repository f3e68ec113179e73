"""What a workflow (``taskito.canvas``) is stored as: a graph of jobs, one
per signature, each waiting for earlier ones; stored in one transaction
through ``Client.submit_graph``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from taskito.exceptions import InvalidArgumentError
from taskito.group_result import GroupResult

if TYPE_CHECKING:
    from collections.abc import Iterator

    from taskito._client import Client
    from taskito.app import Queue
    from taskito.canvas import Signature
    from taskito.result import JobResult
    from taskito.task import TaskWrapper


@dataclass
class GraphNode:
    """One job of a workflow: its call, the earlier jobs of the same graph it
    waits for (``after``, by index), and how their results reach it."""

    signature: Signature
    after: list[int]
    # "none", "one" (the single parent's result is prepended) or "all" (the
    # list of the parents' results, in ``after`` order, is prepended).
    feed: str
    # "success": cancelled if a parent fails; "finish": runs after any outcome.
    mode: str


@dataclass
class Ends:
    """What a part of a workflow ends in: the jobs whose results are its
    result, and whether that is one result or a list (a group)."""

    nodes: list[int]
    many: bool


@dataclass
class Graph:
    nodes: list[GraphNode] = field(default_factory=list)

    def add(self, node: GraphNode) -> int:
        self.nodes.append(node)
        return len(self.nodes) - 1


class Part(Protocol):
    """A signature or a composition of them, as the graph sees it."""

    def _build(self, graph: Graph, previous: Ends | None, gate: list[int]) -> Ends:
        """Adds its jobs to ``graph``, given what the part before it ended in
        (None: nothing), and ``gate``: jobs its first jobs wait for, taking
        nothing from them, whatever their outcome (a group's lane)."""
        ...

    def _tasks(self) -> Iterator[TaskWrapper[Any, Any]]: ...


def submit(workflow: Part, queue: Queue | None) -> JobResult | GroupResult:
    """Stores ``workflow`` whole; the JobResult of its last job, or a
    GroupResult if it ends in a group."""
    graph = Graph()
    ends = workflow._build(graph, None, [])
    client = _client(workflow, queue)
    # Every payload is serialized before anything is stored.
    nodes = [
        {
            **node.signature.options,
            "task": node.signature.task,
            "payload": client.dump_call(node.signature.task.name, node.signature.args, node.signature.kwargs),
            "after": node.after,
            "feed": node.feed,
            "mode": node.mode,
        }
        for node in graph.nodes
    ]
    jobs = client.submit_graph(nodes)
    if ends.many:
        return GroupResult([jobs[i] for i in ends.nodes])
    return jobs[ends.nodes[0]]


def _client(workflow: Part, queue: Queue | None) -> Client:
    """The Client the whole workflow is stored through: ``queue``'s, or the
    one Queue all its tasks belong to (one transaction, one database)."""
    if queue is not None:
        return queue._client
    queues = {id(task._queue): task._queue for task in workflow._tasks()}
    if len(queues) > 1:
        raise InvalidArgumentError(
            "the workflow's tasks belong to different Queues: pass the Queue to store it on, as apply(queue)"
        )
    return next(iter(queues.values()))._client
