//! Plain data types shared by storage, engine and bindings.

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

pub use crate::clock::now_micros;
use crate::error::{Error, Result};

/// Microseconds since the Unix epoch: the unit of every stored timestamp.
pub type Micros = i64;

pub fn micros(d: Duration) -> Micros {
    d.as_micros().min(i64::MAX as u128) as Micros
}

/// Where a job is in its life. The stored value is the discriminant.
///
/// Users see eight statuses (`Status::name`); the engine splits "pending" in
/// three so that the claim index only ever holds jobs that can run now: `Ready`
/// jobs are due, `Scheduled` ones wait for their `scheduled_at`, `Waiting`
/// ones for their dependencies.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(i64)]
pub enum State {
    Ready = 0,
    Scheduled = 1,
    Running = 2,
    Complete = 3,
    /// The last attempt failed and a retry is scheduled (public status "failed").
    Retrying = 4,
    Dead = 5,
    Cancelled = 6,
    /// Held by a worker that has not started it (its prefetch): leased, not
    /// started, still cancellable, handed back to a higher-priority job.
    Claimed = 7,
    /// Some dependency has not finished yet (`depends_on`): out of the claim
    /// index until the last one settles (public status "pending").
    Waiting = 8,
    /// It was not started before its `expires_at`: it never runs.
    Expired = 9,
}

/// The stored value of a [`State`] as a string literal, for query text built
/// with `concat!`: `state_sql!(Ready)` is `"0"`, and `state_sql!(Scheduled,
/// Retrying)` is `"1, 4"`, for `IN (...)`. Queries spell states out rather
/// than bind them: SQLite uses a partial index only when the query's WHERE
/// clause visibly implies the index's, which a bound parameter cannot show.
/// A test pins every literal to its discriminant.
macro_rules! state_sql {
    (Ready) => {
        "0"
    };
    (Scheduled) => {
        "1"
    };
    (Running) => {
        "2"
    };
    (Complete) => {
        "3"
    };
    (Retrying) => {
        "4"
    };
    (Dead) => {
        "5"
    };
    (Cancelled) => {
        "6"
    };
    (Claimed) => {
        "7"
    };
    (Waiting) => {
        "8"
    };
    (Expired) => {
        "9"
    };
    ($first:ident $(, $rest:ident)+) => {
        concat!(
            $crate::job::state_sql!($first)
            $(, ", ", $crate::job::state_sql!($rest))+
        )
    };
}
pub(crate) use state_sql;

impl State {
    pub const ALL: [State; 10] = [
        State::Ready,
        State::Scheduled,
        State::Running,
        State::Complete,
        State::Retrying,
        State::Dead,
        State::Cancelled,
        State::Claimed,
        State::Waiting,
        State::Expired,
    ];

    pub fn from_i64(v: i64) -> Option<State> {
        State::ALL.into_iter().find(|s| *s as i64 == v)
    }

    pub fn status(self) -> Status {
        match self {
            State::Ready | State::Scheduled | State::Waiting => Status::Pending,
            State::Claimed => Status::Claimed,
            State::Running => Status::Running,
            State::Complete => Status::Complete,
            State::Retrying => Status::Failed,
            State::Dead => Status::Dead,
            State::Cancelled => Status::Cancelled,
            State::Expired => Status::Expired,
        }
    }

    /// A final state: the job will not run again unless someone revives it.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            State::Complete | State::Dead | State::Cancelled | State::Expired
        )
    }
}

/// The status users see (`JobResult.status`, `queue.stats()`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Status {
    Pending,
    Claimed,
    Running,
    Complete,
    Failed,
    Dead,
    Cancelled,
    Expired,
}

impl Status {
    pub const ALL: [Status; 8] = [
        Status::Pending,
        Status::Claimed,
        Status::Running,
        Status::Complete,
        Status::Failed,
        Status::Dead,
        Status::Cancelled,
        Status::Expired,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::Claimed => "claimed",
            Status::Running => "running",
            Status::Complete => "complete",
            Status::Failed => "failed",
            Status::Dead => "dead",
            Status::Cancelled => "cancelled",
            Status::Expired => "expired",
        }
    }

    pub fn parse(name: &str) -> Result<Status> {
        Status::ALL
            .into_iter()
            .find(|s| s.name() == name)
            .ok_or_else(|| {
                let names: Vec<&str> = Status::ALL.iter().map(|s| s.name()).collect();
                Error::invalid(format!(
                    "unknown job status {name:?}; expected one of {}",
                    names.join(", ")
                ))
            })
    }

    /// The stored states that make up this status.
    pub fn states(self) -> &'static [State] {
        match self {
            Status::Pending => &[State::Ready, State::Scheduled, State::Waiting],
            Status::Claimed => &[State::Claimed],
            Status::Running => &[State::Running],
            Status::Complete => &[State::Complete],
            Status::Failed => &[State::Retrying],
            Status::Dead => &[State::Dead],
            Status::Cancelled => &[State::Cancelled],
            Status::Expired => &[State::Expired],
        }
    }
}

/// Job ids are 64-bit and time-ordered: milliseconds since the epoch in the
/// high bits, a per-process counter in the low 20 bits. They double as the
/// table's integer primary key, so the enqueue order costs no extra index.
/// The counter starts at a random point each millisecond, so two processes
/// enqueueing in the same millisecond rarely collide; storage retries the
/// rare collision with a fresh id.
pub struct IdGenerator {
    last: AtomicI64,
}

const COUNTER_BITS: u32 = 20;

impl IdGenerator {
    pub const fn new() -> Self {
        IdGenerator {
            last: AtomicI64::new(0),
        }
    }

    pub fn next(&self) -> i64 {
        let now_ms = now_micros() / 1000;
        let floor = now_ms << COUNTER_BITS;
        let mut prev = self.last.load(Ordering::Relaxed);
        loop {
            let candidate = if prev >= floor {
                prev + 1
            } else {
                // First id of a new millisecond: start somewhere in the lower
                // half of the counter space so it cannot overflow into the next.
                floor + fastrand::i64(0..(1 << (COUNTER_BITS - 1)))
            };
            match self.last.compare_exchange_weak(
                prev,
                candidate,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return candidate,
                Err(actual) => prev = actual,
            }
        }
    }

    /// Moves the generator past `id`, so a retry after a collision cannot
    /// produce the same id again.
    pub fn skip_past(&self, id: i64) {
        self.last
            .fetch_max(id + fastrand::i64(1..1024), Ordering::Relaxed);
    }
}

impl Default for IdGenerator {
    fn default() -> Self {
        Self::new()
    }
}

pub static IDS: IdGenerator = IdGenerator::new();

/// The public form of a job id: 16 lowercase hex digits, so that string order
/// is time order.
pub fn format_id(id: i64) -> String {
    format!("{id:016x}")
}

pub fn parse_id(text: &str) -> Result<i64> {
    if text.len() == 16 {
        if let Ok(v) = i64::from_str_radix(text, 16) {
            if v >= 0 {
                return Ok(v);
            }
        }
    }
    Err(Error::JobNotFound(text.to_string()))
}

/// Options shared by every job of one enqueue call.
#[derive(Clone, Debug)]
pub struct JobOptions {
    pub task_name: String,
    pub queue: String,
    pub priority: i64,
    /// Hold the jobs back until this long after enqueue.
    pub delay: Option<Duration>,
    pub max_retries: u32,
    /// Base of the exponential retry backoff, in seconds.
    pub retry_backoff: f64,
    pub timeout: Option<Duration>,
}

impl JobOptions {
    pub fn new(task_name: &str) -> Self {
        JobOptions {
            task_name: task_name.to_string(),
            queue: "default".to_string(),
            priority: 0,
            delay: None,
            max_retries: 3,
            retry_backoff: 1.0,
            timeout: None,
        }
    }

    pub fn validate(&self) -> Result<()> {
        if self.task_name.is_empty() {
            return Err(Error::invalid("task name must not be empty"));
        }
        if self.queue.is_empty() {
            return Err(Error::invalid("queue name must not be empty"));
        }
        if !self.retry_backoff.is_finite() || self.retry_backoff < 0.0 {
            return Err(Error::invalid(format!(
                "retry_backoff must be a finite number >= 0, got {}",
                self.retry_backoff
            )));
        }
        if matches!(self.timeout, Some(t) if t.is_zero()) {
            return Err(Error::invalid("timeout must be greater than 0"));
        }
        Ok(())
    }
}

/// What a job's dependencies must do before it may run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[repr(i64)]
pub enum DependencyMode {
    /// Complete: if the dependency dies, is cancelled or expires, the job is
    /// cancelled (and its own dependents after it).
    #[default]
    Success = 0,
    /// Reach any final state (a group's lanes: the next one starts whatever
    /// became of the one before).
    Finish = 1,
}

impl DependencyMode {
    pub fn parse(text: &str) -> Result<DependencyMode> {
        match text {
            "success" => Ok(DependencyMode::Success),
            "finish" => Ok(DependencyMode::Finish),
            other => Err(Error::invalid(format!(
                "dependency mode must be \"success\" or \"finish\", got {other:?}"
            ))),
        }
    }
}

/// Whether a job's dependencies' results are passed to it when it runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[repr(i64)]
pub enum Feed {
    #[default]
    None = 0,
    /// The one dependency's result is prepended to its positional arguments
    /// (a chain's next step).
    One = 1,
    /// A list of every dependency's result, in dependency order, is
    /// prepended as one positional argument (a chord's callback).
    All = 2,
}

impl Feed {
    pub fn parse(text: &str) -> Result<Feed> {
        match text {
            "none" => Ok(Feed::None),
            "one" => Ok(Feed::One),
            "all" => Ok(Feed::All),
            other => Err(Error::invalid(format!(
                "feed must be \"none\", \"one\" or \"all\", got {other:?}"
            ))),
        }
    }

    pub fn from_i64(v: i64) -> Feed {
        match v {
            1 => Feed::One,
            2 => Feed::All,
            _ => Feed::None,
        }
    }
}

/// One job of a graph enqueue (`Storage::enqueue_graph`): its options, and
/// the jobs it waits for, stored ones by id and earlier nodes of the same
/// call by index. Dependency order (what `Feed::All` passes) is `depends_on`
/// then `after`.
#[derive(Clone, Debug)]
pub struct GraphNode {
    pub options: JobOptions,
    pub payload: Vec<u8>,
    /// While a job with this key is live (not final), enqueueing another
    /// with it returns that job instead.
    pub unique_key: Option<String>,
    /// Not started within this long after enqueue, it ends expired.
    pub expires: Option<Duration>,
    /// JSON text stored with the job.
    pub metadata: Option<String>,
    pub depends_on: Vec<i64>,
    pub after: Vec<usize>,
    pub mode: DependencyMode,
    pub feed: Feed,
}

impl GraphNode {
    pub fn new(options: JobOptions, payload: Vec<u8>) -> Self {
        GraphNode {
            options,
            payload,
            unique_key: None,
            expires: None,
            metadata: None,
            depends_on: Vec::new(),
            after: Vec::new(),
            mode: DependencyMode::Success,
            feed: Feed::None,
        }
    }

    /// Checks what can be checked without the database: the options, that
    /// `after` names earlier nodes only, and that a fed job has something to
    /// be fed.
    pub fn validate(&self, index: usize) -> Result<()> {
        self.options.validate()?;
        if let Some(&bad) = self.after.iter().find(|&&i| i >= index) {
            return Err(Error::invalid(format!(
                "node {index} of the graph depends on node {bad}: a node may depend only on \
                 earlier nodes"
            )));
        }
        let parents = self.depends_on.len() + self.after.len();
        if self.feed == Feed::One && parents != 1 {
            return Err(Error::invalid(format!(
                "node {index} of the graph is fed one result but has {parents} dependencies"
            )));
        }
        if matches!(&self.unique_key, Some(k) if k.is_empty()) {
            return Err(Error::invalid("unique_key must not be empty"));
        }
        if matches!(self.expires, Some(e) if e.is_zero()) {
            return Err(Error::invalid("expires must be in the future"));
        }
        Ok(())
    }
}

/// A job handed to a worker by a claim.
#[derive(Clone, Debug)]
pub struct ClaimedJob {
    pub id: i64,
    pub queue: String,
    pub task_name: String,
    pub payload: Vec<u8>,
    pub priority: i64,
    pub scheduled_at: Micros,
    /// Which run this is, counting from 1.
    pub attempt: u32,
    /// Goes up with every claim and is never handed back: a completion only
    /// applies while the job is still running under the same token.
    pub token: i64,
    pub max_retries: u32,
    pub retry_backoff: f64,
    pub timeout: Option<Duration>,
    /// False for a job the claim only holds (state `Claimed`): the worker
    /// must start it (`Storage::start_claimed`) before running it.
    pub running: bool,
    /// Whether its dependencies' results go into its arguments.
    pub feed: Feed,
}

impl ClaimedJob {
    pub fn attempt_ref(&self) -> AttemptRef {
        AttemptRef {
            id: self.id,
            attempt: self.attempt,
            token: self.token,
            max_retries: self.max_retries,
            retry_backoff: self.retry_backoff,
        }
    }
}

/// What a completion needs to know about the attempt it reports on.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AttemptRef {
    pub id: i64,
    pub attempt: u32,
    pub token: i64,
    pub max_retries: u32,
    pub retry_backoff: f64,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Failure {
    pub error_type: String,
    pub message: String,
    pub traceback: String,
    /// False when the error says retrying is pointless (unknown task, a
    /// `dont_retry_on` match, an undecodable payload).
    pub retryable: bool,
}

#[derive(Clone, Debug, PartialEq)]
pub enum OutcomeKind {
    Success(Vec<u8>),
    Failure(Failure),
    /// The task stopped because its cancellation was requested.
    Cancelled,
}

/// The result of one attempt, on its way to storage.
#[derive(Clone, Debug, PartialEq)]
pub struct Outcome {
    pub job: AttemptRef,
    /// When the task really started, if the reporter knows (a job can be
    /// marked running a few milliseconds before an executor reaches it).
    pub started_at: Option<Micros>,
    pub finished_at: Micros,
    pub kind: OutcomeKind,
}

/// What storage did with an outcome.
#[derive(Clone, Debug, PartialEq)]
pub enum Applied {
    Complete,
    /// Scheduled to run again at this time.
    Retry(Micros),
    Dead,
    Cancelled,
    /// The attempt no longer held the job (lease lost, timed out, cancelled):
    /// the outcome was discarded.
    Stale,
}

/// A final state reached by a job, as `result()` needs it.
#[derive(Clone, Debug, PartialEq)]
pub struct Finished {
    pub state: State,
    pub result: Option<Vec<u8>>,
    pub error: Option<ErrorRecord>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ErrorRecord {
    pub attempt: u32,
    pub error_type: String,
    pub message: String,
    pub traceback: String,
    pub failed_at: Micros,
}

/// A job as listed by `get_job` / `list_jobs` (no payload, no result).
#[derive(Clone, Debug, PartialEq)]
pub struct JobRecord {
    pub id: i64,
    pub queue: String,
    pub task_name: String,
    pub state: State,
    pub priority: i64,
    pub attempt: u32,
    pub max_retries: u32,
    pub retry_backoff: f64,
    pub timeout: Option<Duration>,
    pub created_at: Micros,
    pub scheduled_at: Micros,
    pub started_at: Option<Micros>,
    pub finished_at: Option<Micros>,
    pub worker_id: Option<String>,
    pub lease_expires_at: Option<Micros>,
    /// The last failed attempt's error message, if any attempt failed.
    pub error: Option<String>,
    pub unique_key: Option<String>,
    /// JSON text given at enqueue.
    pub metadata: Option<String>,
    /// The last progress the task reported (0 to 100).
    pub progress: Option<u8>,
    pub expires_at: Option<Micros>,
}

#[derive(Clone, Debug, Default)]
pub struct JobFilter {
    pub status: Option<Status>,
    pub queue: Option<String>,
    pub task_name: Option<String>,
    pub limit: u32,
    pub offset: u32,
}

/// A worker as its registry row records it.
#[derive(Clone, Debug, PartialEq)]
pub struct WorkerRecord {
    pub id: String,
    pub host: String,
    pub pid: u32,
    /// Executor threads.
    pub threads: u32,
    /// The queues it serves; `None`: every queue.
    pub queues: Option<Vec<String>>,
    /// The task names it can run.
    pub tasks: Vec<String>,
    pub started_at: Micros,
    pub heartbeat_at: Micros,
    /// Counted as gone once this passes without a heartbeat.
    pub expires_at: Micros,
}

/// Job counts per public status.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub counts: [u64; Status::ALL.len()],
}

impl Stats {
    pub fn get(&self, status: Status) -> u64 {
        self.counts[status as usize]
    }

    pub fn add(&mut self, state: State, n: u64) {
        self.counts[state.status() as usize] += n;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_strictly_increasing_and_round_trip() {
        let gen = IdGenerator::new();
        let mut prev = 0;
        for _ in 0..10_000 {
            let id = gen.next();
            assert!(id > prev);
            prev = id;
            assert_eq!(parse_id(&format_id(id)).unwrap(), id);
        }
        let a = format_id(gen.next());
        let b = format_id(gen.next());
        assert!(a < b, "string order must follow id order");
    }

    #[test]
    fn ids_carry_the_time() {
        let before = now_micros() / 1000;
        let id = IdGenerator::new().next();
        let after = now_micros() / 1000;
        let ms = id >> COUNTER_BITS;
        assert!(before <= ms && ms <= after);
    }

    #[test]
    fn malformed_ids_are_not_found() {
        for bad in ["", "xyz", "0123456789abcdeg", "ffffffffffffffff", "1"] {
            assert!(matches!(parse_id(bad), Err(Error::JobNotFound(_))), "{bad}");
        }
    }

    #[test]
    fn state_sql_spells_each_stored_value() {
        // Exhaustive: a new state does not compile until it has a literal.
        fn literal(state: State) -> &'static str {
            match state {
                State::Ready => state_sql!(Ready),
                State::Scheduled => state_sql!(Scheduled),
                State::Running => state_sql!(Running),
                State::Complete => state_sql!(Complete),
                State::Retrying => state_sql!(Retrying),
                State::Dead => state_sql!(Dead),
                State::Cancelled => state_sql!(Cancelled),
                State::Claimed => state_sql!(Claimed),
                State::Waiting => state_sql!(Waiting),
                State::Expired => state_sql!(Expired),
            }
        }
        for state in State::ALL {
            assert_eq!(literal(state), (state as i64).to_string(), "{state:?}");
        }
        assert_eq!(state_sql!(Scheduled, Retrying), "1, 4");
        assert_eq!(state_sql!(Ready, Scheduled, Retrying), "0, 1, 4");
    }

    #[test]
    fn every_state_maps_to_a_status() {
        for s in State::ALL {
            assert_eq!(State::from_i64(s as i64), Some(s));
            assert!(Status::parse(s.status().name())
                .unwrap()
                .states()
                .contains(&s));
        }
        assert!(Status::parse("done").is_err());
    }
}
