//! A small pool of connections, each with its own cache of prepared
//! statements, and the one place that replaces a connection the server
//! closed (`pg_terminate_backend`, a restart): the operation is run once
//! more on a fresh connection, and every idle connection is dropped with
//! it, since whatever killed one usually killed them all.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};
use postgres::error::SqlState;
use postgres::types::ToSql;
use postgres::{Client, Row, Statement};

use super::connect::Target;
use crate::error::{Error, Result};

/// One connection and the statements prepared on it.
pub(crate) struct Conn {
    pub client: Client,
    statements: HashMap<String, Statement>,
}

impl Conn {
    fn new(client: Client) -> Conn {
        Conn {
            client,
            statements: HashMap::new(),
        }
    }

    /// `sql` prepared on this connection, once.
    pub fn prepare(&mut self, sql: &str) -> Result<Statement> {
        if let Some(statement) = self.statements.get(sql) {
            return Ok(statement.clone());
        }
        let statement = self.client.prepare(sql)?;
        self.statements.insert(sql.to_string(), statement.clone());
        Ok(statement)
    }

    /// Runs `sql` (prepared once) and returns its rows.
    pub fn query(&mut self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<Vec<Row>> {
        let statement = self.prepare(sql)?;
        Ok(self.client.query(&statement, params)?)
    }

    /// Runs `sql` (prepared once) and returns how many rows it changed.
    pub fn execute(&mut self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<u64> {
        let statement = self.prepare(sql)?;
        Ok(self.client.execute(&statement, params)?)
    }
}

struct Slots {
    idle: Vec<Conn>,
    /// Connections open, idle or lent out.
    open: usize,
}

pub(crate) struct Pool {
    pub target: Target,
    slots: Mutex<Slots>,
    freed: Condvar,
    max: usize,
    /// How long a caller waits for a connection when all are lent out.
    wait: Duration,
}

impl Pool {
    pub fn new(target: Target, max: usize, wait: Duration) -> Pool {
        Pool {
            target,
            slots: Mutex::new(Slots {
                idle: Vec::new(),
                open: 0,
            }),
            freed: Condvar::new(),
            max: max.max(1),
            wait,
        }
    }

    /// Runs `op` on a pooled connection. If the server closed that
    /// connection, `op` runs once more on a new one; a second loss is the
    /// caller's error (`Error::Connection`, naming the server).
    ///
    /// `op` must be safe to run twice: the first run may have committed
    /// before the connection died. Every operation of this backend is
    /// (fenced by lease tokens, or checked as in `enqueue`).
    pub fn run<T>(&self, mut op: impl FnMut(&mut Conn) -> Result<T>) -> Result<T> {
        let mut conn = self.checkout()?;
        let first = op(&mut conn);
        match first {
            Err(Error::Postgres(e)) if connection_lost(&e) => {
                self.discard(conn);
                self.discard_idle();
                let mut fresh = self.open_new()?;
                let second = op(&mut fresh);
                match second {
                    Err(Error::Postgres(e)) if connection_lost(&e) => {
                        self.discard(fresh);
                        Err(self.target.unreachable(&e))
                    }
                    other => {
                        self.checkin(fresh);
                        other
                    }
                }
            }
            other => {
                self.checkin(conn);
                other
            }
        }
    }

    fn checkout(&self) -> Result<Conn> {
        let deadline = Instant::now() + self.wait;
        let mut slots = self.slots.lock();
        loop {
            if let Some(conn) = slots.idle.pop() {
                return Ok(conn);
            }
            if slots.open < self.max {
                slots.open += 1;
                drop(slots);
                return self.connect_counted();
            }
            if self.freed.wait_until(&mut slots, deadline).timed_out() {
                return Err(Error::Connection(format!(
                    "all {} connections to PostgreSQL at {} stayed busy for {:?}",
                    self.max, self.target.server, self.wait
                )));
            }
        }
    }

    /// A new connection beside the pooled ones (counted, as if checked out).
    fn open_new(&self) -> Result<Conn> {
        self.slots.lock().open += 1;
        self.connect_counted()
    }

    /// Connects for a slot already counted as open; gives the slot back if
    /// the connection cannot be made.
    fn connect_counted(&self) -> Result<Conn> {
        match self.target.connect() {
            Ok(client) => Ok(Conn::new(client)),
            Err(e) => {
                self.slots.lock().open -= 1;
                self.freed.notify_one();
                Err(e)
            }
        }
    }

    fn checkin(&self, conn: Conn) {
        if conn.client.is_closed() {
            return self.discard(conn);
        }
        let mut slots = self.slots.lock();
        if slots.open > self.max {
            // Opened beside a full pool to replace a lost connection.
            slots.open -= 1;
        } else {
            slots.idle.push(conn);
        }
        drop(slots);
        self.freed.notify_one();
    }

    fn discard(&self, conn: Conn) {
        drop(conn);
        self.slots.lock().open -= 1;
        self.freed.notify_one();
    }

    fn discard_idle(&self) {
        let idle = {
            let mut slots = self.slots.lock();
            let idle = std::mem::take(&mut slots.idle);
            slots.open -= idle.len();
            idle
        };
        drop(idle);
        self.freed.notify_all();
    }
}

/// Whether `error` means the connection is gone (closed by the server, a
/// shutdown, a broken socket) rather than that the statement failed.
pub(crate) fn connection_lost(error: &postgres::Error) -> bool {
    if error.is_closed() {
        return true;
    }
    if let Some(code) = error.code() {
        return *code == SqlState::ADMIN_SHUTDOWN
            || *code == SqlState::CRASH_SHUTDOWN
            || *code == SqlState::CANNOT_CONNECT_NOW
            || code.code().starts_with("08");
    }
    std::error::Error::source(error).is_some_and(|cause| cause.is::<std::io::Error>())
}
