"""What a Queue can tell and do about jobs already stored: look them up, list
them, cancel them, revive or purge dead letters, count them, and see which
workers serve the database. Everything goes through the Queue's client, so
``Queue.redirect`` moves it all at once."""

from __future__ import annotations

import asyncio
from typing import Any

from taskito import _client, _options
from taskito.exceptions import InvalidArgumentError, JobNotFoundError
from taskito.result import JobCounts, JobResult


class JobsAPI:
    """The job-reading and job-managing half of ``Queue``."""

    _client: _client.Client

    def get_job(self, job_id: str) -> JobResult | None:
        client = self._client
        data = client.engine.get_job(job_id)
        return None if data is None else client.job(job_id, data)

    def list_jobs(
        self,
        status: str | None = None,
        queue: str | None = None,
        task_name: str | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> list[JobResult]:
        """Jobs matching every given filter, newest first."""
        client = self._client
        rows = client.engine.list_jobs(
            status,
            queue,
            task_name,
            _options.count("limit", limit),
            _options.count("offset", offset),
        )
        return [client.job(row["id"], row) for row in rows]

    def cancel_job(self, job_id: str) -> bool:
        """Cancels a job that has not started. False if it is running, final or unknown."""
        return bool(self._client.engine.cancel(job_id))

    def cancel_running_job(self, job_id: str) -> bool:
        """Asks a running job to stop: its task sees the request at its next
        ``current_job.check_cancelled()``, which raises ``JobCancelledError``;
        if the task lets it propagate (or fails), the job ends cancelled. A
        job that has not started is cancelled at once. False if the job is
        final or unknown."""
        return self._client.engine.request_cancel(job_id) in ("cancelled", "requested")

    def dead_letters(self, limit: int = 50, offset: int = 0) -> list[JobResult]:
        """Jobs that failed for good (status ``dead``), newest first; each
        one's ``errors`` lists every failed attempt."""
        return self.list_jobs(status="dead", limit=limit, offset=offset)

    def retry_dead(self, job_id: str) -> JobResult:
        """Puts a dead job back in the queue, with its original task,
        arguments and options and a fresh set of attempts."""
        client = self._client
        if not client.engine.retry_dead(job_id):
            job = self.get_job(job_id)
            if job is None:
                raise JobNotFoundError(f"no job with id {job_id}")
            raise InvalidArgumentError(f"job {job_id} is {job.status}, not dead")
        return client.job(job_id)

    def purge_dead(self, older_than: float = 0.0) -> int:
        """Deletes dead jobs that died more than ``older_than`` seconds (or a
        timedelta) ago; returns how many."""
        return int(self._client.engine.purge_dead(_options.seconds("older_than", older_than)))

    def purge_finished(self, older_than: float = 0.0) -> int:
        """Deletes completed, cancelled and expired jobs (and their results) that
        finished more than ``older_than`` seconds (or a timedelta) ago;
        returns how many. ``result_ttl`` does this continuously."""
        return int(self._client.engine.purge_finished(_options.seconds("older_than", older_than)))

    def stats(self) -> JobCounts:
        """Job counts by status: pending, claimed (held by a worker, not
        started), running, complete, failed, dead, cancelled (the names
        ``job.status`` uses). ``stats()["completed"]`` still answers, with the
        ``complete`` count: an alias kept for compatibility with the reference
        project, not a key of its own."""
        return JobCounts(self._client.engine.stats())

    async def astats(self) -> JobCounts:
        """``stats()`` for asyncio: the database read runs in a worker thread,
        never on the event loop's."""
        return await asyncio.to_thread(self.stats)

    def workers(self) -> list[dict[str, Any]]:
        """The workers serving this database, oldest first, as each records
        itself: id, host, pid, threads, queues (None: all), tasks (the task
        names it runs), started_at and heartbeat_at (Unix seconds). A worker
        whose heartbeat lapsed for a lease is gone and not listed."""
        return list(self._client.engine.workers())

    def unserved_tasks(self) -> dict[str, int]:
        """Jobs waiting for a worker that has their task: pending (or
        waiting to retry) jobs of each task name no live worker has, by name.
        They run as soon as a worker that has the task starts (during a
        rolling deploy, say); one no worker ever had is dead-lettered after
        ``unknown_task_grace``."""
        return dict(self._client.engine.unserved_tasks())
