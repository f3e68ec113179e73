//! Where the server is and how to open a connection to it: the URL parsed
//! once, its password kept out of every string shown to a person, and
//! failures to connect turned into errors that name the server.

use std::time::Duration;

use postgres::config::Host;
use postgres::{Client, NoTls};

use crate::error::{describe_postgres, Error, Result};

/// How `application_name` starts on every connection this backend opens
/// (then a space and the schema), so an operator can find, and a test can
/// kill, taskito's connections.
pub const APPLICATION_NAME: &str = "taskito";

/// Planner settings of every connection. Each of this backend's statements
/// reads and writes a handful of rows through an index (the claim index, or
/// the primary key), and statements are prepared once per connection: a
/// plan cached while the table was empty (a worker that started before the
/// first enqueue) would otherwise hash-join a sequential scan of the whole
/// table into every completion, or sort every ready job to claim one, from
/// then on (measured: 20,000 noop jobs drained at 700 jobs/s). Nested loops
/// over the given ids, in the order given, are also what makes batches lock
/// their rows in id order (see `outcomes`). JIT compilation, which the
/// disabled plans' costs would trigger, costs far more than these
/// statements run.
const INDEX_PLANS: &str = "-c enable_seqscan=off -c enable_bitmapscan=off \
    -c enable_hashjoin=off -c enable_mergejoin=off -c jit=off";

/// A server and a schema on it, ready to open connections to.
#[derive(Clone)]
pub(crate) struct Target {
    config: postgres::Config,
    /// The whole of opening a connection (the driver's own timeout covers
    /// only the socket's connect, not a server that accepts and never
    /// answers).
    timeout: Duration,
    /// The URL without its password: what errors and `repr` show.
    pub shown: String,
    /// `host:port` (the first of each), for messages.
    pub server: String,
}

impl Target {
    /// Parses `url` (`postgresql://...`, `postgres://...` or `key=value`
    /// pairs). Every connection's `search_path` is `schema`, so that the
    /// statements name tables without it.
    pub fn new(url: &str, schema: &str, connect_timeout: Duration) -> Result<Target> {
        let shown = redact(url);
        let mut config: postgres::Config = url.parse().map_err(|e: postgres::Error| {
            Error::invalid(format!(
                "db_url {shown:?} is not a PostgreSQL URL: {}",
                describe_postgres(&e)
            ))
        })?;
        if connect_timeout.is_zero() {
            return Err(Error::invalid("connect_timeout must be greater than 0"));
        }
        config.connect_timeout(connect_timeout);
        // Notice a server that vanished without closing the socket (a
        // machine that died) instead of waiting on it for ever.
        config.keepalives(true);
        config.keepalives_idle(Duration::from_secs(30));
        if config.get_application_name().is_none() {
            config.application_name(&format!("{APPLICATION_NAME} {schema}"));
        }
        // The schema is checked to be a plain identifier; quoting keeps its
        // case.
        let ours = format!("-c search_path=\"{schema}\" {INDEX_PLANS}");
        let options = match config.get_options() {
            Some(given) => format!("{given} {ours}"),
            None => ours,
        };
        config.options(&options);
        let server = server_of(&config);
        Ok(Target {
            config,
            timeout: connect_timeout,
            shown,
            server,
        })
    }

    /// Opens a connection, or says which server could not be reached and
    /// why, within the connect timeout. The attempt runs in a thread of its
    /// own, left to finish (and drop what it gets) if it runs out of time.
    pub fn connect(&self) -> Result<Client> {
        let (sender, result) = crossbeam_channel::bounded(1);
        let config = self.config.clone();
        std::thread::Builder::new()
            .name("taskito-connect".into())
            .spawn(move || {
                let _ = sender.send(config.connect(NoTls));
            })
            .map_err(|e| Error::io("cannot start a thread to connect to PostgreSQL", e))?;
        match result.recv_timeout(self.timeout) {
            Ok(connected) => connected.map_err(|e| self.unreachable(&e)),
            Err(_) => Err(Error::Connection(format!(
                "cannot reach PostgreSQL at {} ({}): no answer within {:?}",
                self.server, self.shown, self.timeout
            ))),
        }
    }

    /// The error for a connection that could not be opened or was lost.
    pub fn unreachable(&self, error: &postgres::Error) -> Error {
        Error::Connection(format!(
            "cannot reach PostgreSQL at {} ({}): {}",
            self.server,
            self.shown,
            describe_postgres(error)
        ))
    }
}

fn server_of(config: &postgres::Config) -> String {
    let host = match config.get_hosts().first() {
        Some(Host::Tcp(name)) => name.clone(),
        #[cfg(unix)]
        Some(Host::Unix(path)) => path.display().to_string(),
        None => "localhost".to_string(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    format!("{host}:{port}")
}

/// `url` without its password, in either form PostgreSQL accepts: the
/// `user:password@` of a URL (and a `password=` query parameter), or a
/// `password=...` pair of a key/value string.
pub fn redact(url: &str) -> String {
    if let Some(scheme_end) = url.find("://") {
        let (scheme, rest) = url.split_at(scheme_end + 3);
        let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, tail) = rest.split_at(authority_end);
        let authority = match authority.rfind('@') {
            Some(at) => {
                let user_info = &authority[..at];
                let user = user_info.split(':').next().unwrap_or("");
                format!("{user}@{}", &authority[at + 1..])
            }
            None => authority.to_string(),
        };
        return format!("{scheme}{authority}{}", redact_query(tail));
    }
    redact_pairs(url)
}

/// Drops `password=` from the query string of a URL's tail.
fn redact_query(tail: &str) -> String {
    let Some(q) = tail.find('?') else {
        return tail.to_string();
    };
    let (path, query) = tail.split_at(q);
    let kept: Vec<&str> = query[1..]
        .split('&')
        .filter(|pair| !pair.to_ascii_lowercase().starts_with("password="))
        .collect();
    if kept.is_empty() {
        path.to_string()
    } else {
        format!("{path}?{}", kept.join("&"))
    }
}

/// Drops `password=...` (quoted or not) from `key=value` pairs.
fn redact_pairs(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    loop {
        let lower = rest.to_ascii_lowercase();
        let Some(at) = find_key(&lower, "password") else {
            out.push_str(rest);
            return out.trim_end().to_string();
        };
        out.push_str(&rest[..at]);
        // Past the key, the spaces and the `=`, then the value.
        let mut value = rest[at + "password".len()..].trim_start();
        value = value.strip_prefix('=').unwrap_or(value).trim_start();
        rest = skip_value(value).trim_start();
    }
}

/// Where `key` starts as a key (at the start, or after a space, and followed
/// by `=`) in `lower`.
fn find_key(lower: &str, key: &str) -> Option<usize> {
    let mut from = 0;
    while let Some(pos) = lower[from..].find(key) {
        let at = from + pos;
        let starts_word = at == 0 || lower.as_bytes()[at - 1].is_ascii_whitespace();
        let after = lower[at + key.len()..].trim_start();
        if starts_word && after.starts_with('=') {
            return Some(at);
        }
        from = at + key.len();
    }
    None
}

/// What follows a value: a quoted value ends at its closing quote (`\'`
/// escapes one), a bare one at the next space.
fn skip_value(value: &str) -> &str {
    if let Some(quoted) = value.strip_prefix('\'') {
        let mut escaped = false;
        for (i, c) in quoted.char_indices() {
            match c {
                '\\' if !escaped => escaped = true,
                '\'' if !escaped => return &quoted[i + 1..],
                _ => escaped = false,
            }
        }
        return "";
    }
    match value.find(char::is_whitespace) {
        Some(end) => &value[end..],
        None => "",
    }
}

/// Whether `name` can be a schema: a plain identifier that PostgreSQL keeps
/// as it is written once quoted, short enough for names built from it.
pub fn check_schema(name: &str) -> Result<()> {
    let mut chars = name.chars();
    let plain = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
    if plain && name.len() <= 48 {
        return Ok(());
    }
    Err(Error::invalid(format!(
        "schema must be a name of letters, digits and underscores, not starting with a digit, \
         at most 48 characters; got {name:?}"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_show() {
        for (url, shown) in [
            (
                "postgresql://app:s3cret@db.example:6543/jobs",
                "postgresql://app@db.example:6543/jobs",
            ),
            (
                "postgres://app:p%40ss@h/d?sslmode=disable",
                "postgres://app@h/d?sslmode=disable",
            ),
            (
                "postgresql://h/d?password=s3cret&connect_timeout=3",
                "postgresql://h/d?connect_timeout=3",
            ),
            ("postgresql://h/d?password=s3cret", "postgresql://h/d"),
            ("postgresql://app@h", "postgresql://app@h"),
            (
                "host=h user=app password=s3cret dbname=d",
                "host=h user=app dbname=d",
            ),
            (
                "host=h password = 'it is s3cret' dbname=d",
                "host=h dbname=d",
            ),
            ("password='a \\' b' host=h", "host=h"),
            ("host=h mypassword=x", "host=h mypassword=x"),
        ] {
            assert_eq!(redact(url), shown, "{url}");
        }
    }

    #[test]
    fn schemas_are_plain_identifiers() {
        for good in ["taskito", "T_1", "_x"] {
            check_schema(good).unwrap();
        }
        for bad in ["", "1a", "a-b", "a\"b", "a b", &"x".repeat(49)] {
            assert!(check_schema(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn an_unreachable_server_is_named_without_the_password() {
        // Port 1 on the loopback: refused at once.
        let target = Target::new(
            "postgresql://u:hunter2@127.0.0.1:1/d",
            "s",
            Duration::from_secs(2),
        )
        .unwrap();
        let Err(Error::Connection(message)) = target.connect() else {
            panic!("expected a connection error")
        };
        assert!(message.contains("127.0.0.1:1"), "{message}");
        assert!(!message.contains("hunter2"), "{message}");
        let bad = Target::new(
            "postgresql://u:hunter2@h:notaport/d",
            "s",
            Duration::from_secs(1),
        );
        let Err(Error::InvalidArgument(message)) = bad else {
            panic!("expected a bad URL")
        };
        assert!(!message.contains("hunter2"), "{message}");
    }
}
