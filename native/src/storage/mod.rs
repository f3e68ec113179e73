//! Where jobs live. The engine talks to storage only through [`Storage`]:
//! SQLite (one machine, `sqlite/`) and PostgreSQL (workers on many machines,
//! `postgres/`) sit behind it, and the dispatcher, the executors and the
//! bindings do not know which one they talk to.

mod common;
mod cron;
mod postgres;
mod rate_limit;
#[cfg(test)]
mod schedule_tests;
mod sqlite;
#[cfg(test)]
mod workflow_tests;

use std::time::Duration;

use crate::error::Result;
use crate::job::{
    Applied, AttemptRef, ClaimedJob, ErrorRecord, Finished, GraphNode, JobFilter, JobOptions,
    JobRecord, Micros, Outcome, Stats, WorkerRecord,
};
use crate::wakeup::Wakeups;

pub use cron::{
    CatchUp, FiredTicks, PeriodicRecord, PeriodicSchedule, Schedule,
    LOOKAHEAD as PERIODIC_LOOKAHEAD,
};
pub use postgres::{redact as redact_url, PostgresConfig, PostgresStorage, APPLICATION_NAME};
pub use rate_limit::{parse_rate, LimitScope, LimitedClaim, RateLimit, RateLimits};
pub use sqlite::{Durability, SqliteConfig, SqliteStorage, MEMORY};

/// A schema of its own on the PostgreSQL test server, for tests elsewhere.
#[cfg(test)]
pub(crate) use postgres::tests::Scratch as PostgresScratch;

/// What a worker asks for when it claims jobs: `start` jobs its executors
/// start now (marked running), then `hold` more it keeps as claimed (its
/// prefetch: leased, not started), all in claim order.
#[derive(Clone, Debug)]
pub struct ClaimRequest<'a> {
    pub worker_id: &'a str,
    /// Serve only these queues; `None` serves every queue.
    pub queues: Option<&'a [String]>,
    /// Take only jobs of these tasks (the ones the worker can run); `None`
    /// takes any task.
    pub tasks: Option<&'a [String]>,
    /// Take only jobs of a priority above this one.
    pub above_priority: Option<i64>,
    /// Leave out jobs of these tasks and queues: the rate-limited ones,
    /// which only `claim_limited` takes.
    pub skip_tasks: Option<&'a [String]>,
    pub skip_queues: Option<&'a [String]>,
    pub start: usize,
    pub hold: usize,
    pub lease: Duration,
}

impl<'a> ClaimRequest<'a> {
    /// Up to `limit` jobs of any task from `queues`, all to start now.
    pub fn to_run(
        worker_id: &'a str,
        queues: Option<&'a [String]>,
        limit: usize,
        lease: Duration,
    ) -> Self {
        ClaimRequest {
            worker_id,
            queues,
            tasks: None,
            above_priority: None,
            skip_tasks: None,
            skip_queues: None,
            start: limit,
            hold: 0,
            lease,
        }
    }

    pub fn limit(&self) -> usize {
        self.start + self.hold
    }
}

/// Which ready jobs a worker could take: its queues and tasks.
#[derive(Clone, Copy, Debug, Default)]
pub struct JobScope<'a> {
    pub queues: Option<&'a [String]>,
    pub tasks: Option<&'a [String]>,
}

/// A job taken out of circulation because its row could not be read (a
/// cell of the wrong type, a status that is no state): dead-lettered with an
/// error naming the cells, so that it never stalls the jobs around it.
#[derive(Clone, Debug, PartialEq)]
pub struct QuarantinedJob {
    pub id: i64,
    /// Which cells could not be read, and why.
    pub problem: String,
}

/// A ready job that waited so long for a task no worker has ever known
/// that it was dead-lettered.
#[derive(Clone, Debug, PartialEq)]
pub struct UnknownTaskJob {
    pub id: i64,
    pub task_name: String,
}

/// The worker a job is claimed for as it is enqueued.
#[derive(Clone, Debug)]
pub struct DirectClaim<'a> {
    pub worker_id: &'a str,
    pub lease: Duration,
}

/// What a worker records about itself in the registry. The backend stamps
/// the times, with its own clock.
#[derive(Clone, Debug)]
pub struct WorkerRegistration<'a> {
    pub id: &'a str,
    pub host: &'a str,
    pub pid: u32,
    /// Executor threads.
    pub threads: u32,
    /// The queues it serves; `None`: every queue.
    pub queues: Option<&'a [String]>,
    /// The task names it can run.
    pub tasks: &'a [String],
    /// Counted as gone once this passes without a heartbeat.
    pub lease: Duration,
}

/// A job whose lease ran out while it was running (its worker died or hung).
#[derive(Clone, Debug, PartialEq)]
pub struct ReapedJob {
    pub id: i64,
    /// `Applied::Retry` (it runs again) or `Applied::Dead` (out of attempts).
    pub applied: Applied,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CancelRequest {
    /// It had not started: it is cancelled now.
    Cancelled,
    /// It is running: the request is recorded for the task to see.
    Requested,
    AlreadyFinal,
    NotFound,
}

/// Times: the engine hands storage durations, never instants, and a
/// backend measures them from its own clock: SQLite from this process's
/// (`clock::now_micros`), PostgreSQL from the database server's `now()`, so
/// that workers on machines whose clocks disagree still agree on leases and
/// due times. Times that come back to the engine (a retry's due time, the
/// next due job) are converted to this process's clock.
pub trait Storage: Send + Sync {
    /// Inserts one job per payload, all with `options`, in one transaction.
    /// Returns their ids in payload order.
    fn enqueue(&self, options: &JobOptions, payloads: &[Vec<u8>]) -> Result<Vec<i64>>;

    /// Enqueues one job already claimed by `claim.worker_id` (running, first
    /// attempt, leased), and returns it, when it may run at once: it is due
    /// now and no claimable job is waiting ahead of it. Otherwise enqueues it
    /// like `enqueue` and returns `None`. Saves a lone job the claim round
    /// trip when its own process runs an idle worker.
    fn enqueue_claimed(
        &self,
        options: &JobOptions,
        payload: &[u8],
        claim: &DirectClaim,
    ) -> Result<(i64, Option<ClaimedJob>)>;

    /// Atomically takes up to `request.limit()` due jobs: highest priority
    /// first, then earliest due time, then enqueue order. Each is leased by
    /// `worker_id` and its attempt counter goes up by one; the first
    /// `request.start` are marked running (started now), the rest claimed.
    /// Returned in claim order.
    fn claim(&self, request: &ClaimRequest) -> Result<Vec<ClaimedJob>>;

    /// Starts claimed jobs (claimed to running, started now) that are
    /// still this attempt's; one flag per job, false for a job that was
    /// cancelled or taken back meanwhile (it must not run).
    fn start_claimed(&self, jobs: &[AttemptRef]) -> Result<Vec<bool>>;

    /// The highest priority among ready jobs in `scope`, if any is ready.
    fn best_ready_priority(&self, scope: JobScope) -> Result<Option<i64>>;

    /// Records finished attempts in one transaction. Each outcome is fenced:
    /// it applies only while its job is still running under the same attempt.
    /// The outcomes' times are this process's clock; a retry's due time
    /// comes back in it too.
    fn complete(&self, outcomes: &[Outcome]) -> Result<Vec<Applied>>;

    /// Makes delayed jobs and retries whose time has come claimable. Returns
    /// when the next waiting job falls due, if any does, in this process's
    /// clock.
    fn promote_due(&self) -> Result<Option<Micros>>;

    /// Extends the leases of these attempts (those still running or claimed)
    /// to `lease` from now.
    fn renew_leases(&self, jobs: &[AttemptRef], lease: Duration) -> Result<usize>;

    /// Hands running or claimed jobs back so that any worker can take them.
    /// With `refund_attempt` the attempt is not counted (it never started).
    fn release(&self, jobs: &[AttemptRef], refund_attempt: bool) -> Result<usize>;

    /// Recovers running and claimed jobs whose lease has expired: a running
    /// one failed its attempt (`WorkerLost`), a claimed one never started
    /// and is simply ready again.
    fn reap_expired(&self) -> Result<Vec<ReapedJob>>;

    /// Cancels a job that has not started. False if it is running or final.
    fn cancel(&self, id: i64) -> Result<bool>;

    /// Cancels a job that has not started, or asks a running one to stop
    /// (the task sees it through `cancel_requested`).
    fn request_cancel(&self, id: i64) -> Result<CancelRequest>;

    fn cancel_requested(&self, id: i64) -> Result<bool>;

    /// Of the jobs `ids`, those whose cancellation was requested, in any
    /// order. A worker asks it about the coroutines it runs, to stop them.
    fn cancel_requests(&self, ids: &[i64]) -> Result<Vec<i64>> {
        let mut requested = Vec::new();
        for &id in ids {
            if self.cancel_requested(id)? {
                requested.push(id);
            }
        }
        Ok(requested)
    }

    /// Puts a dead job back in the queue with its original options and a
    /// fresh set of attempts. False if the job is not dead.
    fn retry_dead(&self, id: i64) -> Result<bool>;

    /// Deletes dead jobs that died more than `older_than` ago.
    fn purge_dead(&self, older_than: Duration) -> Result<usize>;

    fn get_job(&self, id: i64) -> Result<Option<JobRecord>>;

    /// `Some` once the job is final; `Err(JobNotFound)` if there is no such job.
    fn finished(&self, id: i64) -> Result<Option<Finished>>;

    fn list_jobs(&self, filter: &JobFilter) -> Result<Vec<JobRecord>>;

    /// Every failed attempt of a job, oldest first.
    fn errors(&self, id: i64) -> Result<Vec<ErrorRecord>>;

    fn stats(&self) -> Result<Stats>;

    /// Deletes completed and cancelled jobs that finished more than
    /// `older_than` ago.
    fn purge_finished(&self, older_than: Duration) -> Result<usize>;

    /// True when another process committed since the last call: the cheap
    /// check idle workers make before they look for work.
    fn external_change(&self) -> Result<bool>;

    /// Moves committed writes from the log into the database without
    /// blocking writers, so that commits rarely have to do it themselves.
    fn checkpoint(&self) -> Result<()>;

    /// The wake-ups this database's producers, workers and result waiters
    /// share (across processes where the backend can).
    fn wakeups(&self) -> &Wakeups;

    /// Records a worker in the registry (or updates its row: its tasks
    /// change as they are registered), and its task names as known. Its
    /// heartbeat is now, and lapses after `worker.lease`.
    fn register_worker(&self, worker: &WorkerRegistration) -> Result<()>;

    /// Renews a worker's heartbeat for another `lease`; false if its row is
    /// gone (others took it for dead), in which case the worker registers
    /// again.
    fn renew_worker(&self, id: &str, lease: Duration) -> Result<bool>;

    fn unregister_worker(&self, id: &str) -> Result<()>;

    /// Workers whose heartbeat has not lapsed.
    fn workers(&self) -> Result<Vec<WorkerRecord>>;

    /// Deletes the rows of workers whose heartbeat lapsed.
    fn forget_lapsed_workers(&self) -> Result<usize>;

    /// Jobs waiting (pending, or failed and due to retry) for a task that no
    /// live worker has, counted by task name.
    fn unserved_tasks(&self) -> Result<Vec<(String, u64)>>;

    /// Fails if the database is no longer where it was opened (its file
    /// deleted or replaced), so that a worker stops instead of serving a
    /// database no one else will open.
    fn check_still_there(&self) -> Result<()> {
        Ok(())
    }

    /// Quarantines rows that cannot be read and no claim would reach (a
    /// status that is no state), and returns them with the ones claims
    /// quarantined since the last call. Backends whose columns are typed
    /// cannot hold such rows.
    fn quarantine_unreadable(&self) -> Result<Vec<QuarantinedJob>> {
        Ok(Vec::new())
    }

    /// Dead-letters, with `UnknownTaskError`, ready jobs enqueued more than
    /// `grace` ago whose task no worker has ever registered (none without a
    /// grace period), and those whose task name cannot be read at all.
    fn fail_unknown_tasks(&self, grace: Option<Duration>) -> Result<Vec<UnknownTaskJob>>;

    // Schedule half of scheduling and workflows

    /// Records a worker's periodic schedules, or updates them. A new
    /// schedule's next tick is the first after now; a stored one keeps its
    /// next tick (ticks missed meanwhile are caught up by the next firing),
    /// unless its cron pattern or time zone changed.
    fn register_periodic(&self, schedules: &[PeriodicSchedule]) -> Result<()>;

    /// Stores, as jobs due at their tick, the ticks of the schedules `names`
    /// that fall due by `PERIODIC_LOOKAHEAD` from now (missed ones as their
    /// `catch_up` says). Each schedule's next tick is moved on by a
    /// compare-and-set in the transaction that stores its jobs, so however
    /// many processes fire at once, each tick is stored once.
    fn fire_periodic(&self, names: &[String]) -> Result<FiredTicks>;

    /// Every stored schedule, by name.
    fn periodic(&self) -> Result<Vec<PeriodicRecord>>;

    /// Records a worker's rate limits: a bucket (full) for each new one; a
    /// stored one takes the new rate and keeps its tokens (up to the burst).
    fn configure_rate_limits(&self, limits: &[RateLimit]) -> Result<()>;

    /// Takes up to `request.start` ready jobs that `limits` limit, in claim
    /// order, each only with a token from every bucket that applies to it
    /// (refilled by the time elapsed), debited in the same transaction, and
    /// marks them running. The rest wait; `retry_at` says when a token for
    /// them comes. `request`'s filters apply; its `hold` does not (limited
    /// jobs are never held).
    fn claim_limited(&self, request: &ClaimRequest, limits: &RateLimits) -> Result<LimitedClaim>;

    /// A job's serialized arguments, if it exists.
    fn payload(&self, id: i64) -> Result<Option<Vec<u8>>>;

    // Jobs half of scheduling and workflows

    /// Stores a graph of jobs in one transaction and returns their ids in
    /// node order. A node waits (state `Waiting`, never claimable) until
    /// every dependency settles: stored ones by id (`JobNotFound` for an
    /// unknown one, and nothing is stored), earlier nodes by index. A node
    /// whose unique key a live job holds is that job (its id is returned,
    /// nothing is stored for it). A dependency already complete counts as
    /// settled; one already dead, cancelled or expired cancels the node at
    /// once (`DependencyMode::Success`) or counts as settled (`Finish`).
    ///
    /// Whenever a job reaches a final state, by any path, its dependents
    /// are settled in the same transaction: one fewer pending dependency,
    /// ready at none; or, when it failed them (mode success), cancelled
    /// with a `DependencyFailed` error naming the step that failed, and
    /// their own dependents after them.
    fn enqueue_graph(&self, nodes: &[GraphNode]) -> Result<Vec<i64>>;

    /// The stored results of a job's dependencies, in dependency order:
    /// what a fed job (`Feed::One`, `Feed::All`) is passed. `None` for one
    /// that did not complete.
    fn dependency_results(&self, id: i64) -> Result<Vec<Option<Vec<u8>>>>;

    /// The jobs a job depends on (in dependency order), and the jobs that
    /// depend on it (in enqueue order).
    fn links(&self, id: i64) -> Result<(Vec<i64>, Vec<i64>)>;

    /// Records the progress running tasks reported, by job id: the worker
    /// keeps the latest per job and writes them in batches.
    fn record_progress(&self, progress: &[(i64, u8)]) -> Result<()>;
}
