//! What the Python `execute` callback returns for one attempt, and how that
//! becomes an engine [`OutcomeKind`]. It returns a `(tag, data)` pair whose
//! tag names the variant, exported to Python as `taskito._native.OUTCOME_*`:
//!
//! - `(OUTCOME_SUCCESS, result_bytes)`;
//! - `(OUTCOME_FAILURE, (error_type, message, traceback, retryable))`;
//! - `(OUTCOME_CANCELLED, message)`: the task stopped because its
//!   cancellation was requested. The message is not kept.
//!
//! From `execute` (not from a handle's `finish`), also:
//!
//! - `(OUTCOME_DEFERRED, attempt)`: the task is a coroutine, handed to the
//!   worker's event loop. `attempt.thread` is the loop thread's identifier,
//!   `attempt.start(handle)` schedules it (its outcome comes back through
//!   the handle's `finish`, see `deferred`), `attempt.cancel(reason)` stops
//!   it (`"interrupt"` or `"cancel"`).
//!
//! Anything else is a bug in the caller of `start_worker`, not in the task:
//! the attempt fails for good, with an `InvalidArgumentError` that says what
//! was wrong, rather than being read as some other outcome.

use pyo3::prelude::*;
use pyo3::types::{PyBool, PyBytes};

use crate::job::{Failure, OutcomeKind};

const OUTCOME_SUCCESS: u8 = 0;
const OUTCOME_FAILURE: u8 = 1;
const OUTCOME_CANCELLED: u8 = 2;
const OUTCOME_DEFERRED: u8 = 3;

/// Longest piece of a returned value quoted in an error message.
const QUOTE_CHARS: usize = 100;

/// Adds the tags to the module, under the same names as here.
pub(super) fn register(module: &Bound<'_, PyModule>) -> PyResult<()> {
    module.add("OUTCOME_SUCCESS", OUTCOME_SUCCESS)?;
    module.add("OUTCOME_FAILURE", OUTCOME_FAILURE)?;
    module.add("OUTCOME_CANCELLED", OUTCOME_CANCELLED)?;
    module.add("OUTCOME_DEFERRED", OUTCOME_DEFERRED)?;
    Ok(())
}

/// What `execute` returned: an outcome now, or a coroutine's attempt whose
/// outcome comes later.
pub(super) enum Returned<'py> {
    Now(OutcomeKind),
    Later(Bound<'py, PyAny>),
}

/// Reads what `execute` returned.
pub(super) fn parse_returned<'py>(returned: &Bound<'py, PyAny>) -> Returned<'py> {
    if let Ok((tag, data)) = returned.extract::<(Bound<'py, PyAny>, Bound<'py, PyAny>)>() {
        if !tag.is_instance_of::<PyBool>() && tag.extract::<u8>().ok() == Some(OUTCOME_DEFERRED) {
            return Returned::Later(data);
        }
    }
    Returned::Now(parse_outcome(returned))
}

/// The outcome `execute` (or a deferred attempt) reported, or a failure
/// saying how what it returned breaks the protocol.
pub(super) fn parse_outcome(returned: &Bound<'_, PyAny>) -> OutcomeKind {
    parse(returned).unwrap_or_else(|message| {
        OutcomeKind::Failure(Failure {
            error_type: "InvalidArgumentError".into(),
            message,
            traceback: String::new(),
            retryable: false,
        })
    })
}

fn parse(returned: &Bound<'_, PyAny>) -> Result<OutcomeKind, String> {
    let Ok((tag, data)) = returned.extract::<(Bound<'_, PyAny>, Bound<'_, PyAny>)>() else {
        return Err(format!(
            "execute returned {}; it must return a (tag, data) tuple",
            quote(returned)
        ));
    };
    // bool is an int subclass: without this, True would read as
    // OUTCOME_FAILURE.
    let known = if tag.is_instance_of::<PyBool>() {
        None
    } else {
        tag.extract::<u8>().ok()
    };
    match known {
        Some(OUTCOME_SUCCESS) => match data.cast::<PyBytes>() {
            Ok(bytes) => Ok(OutcomeKind::Success(bytes.as_bytes().to_vec())),
            Err(_) => Err(format!(
                "execute returned OUTCOME_SUCCESS with {}; the result must be bytes",
                quote(&data)
            )),
        },
        Some(OUTCOME_FAILURE) => match data.extract::<(String, String, String, bool)>() {
            Ok((error_type, message, traceback, retryable)) => Ok(OutcomeKind::Failure(Failure {
                error_type,
                message,
                traceback,
                retryable,
            })),
            Err(_) => Err(format!(
                "execute returned OUTCOME_FAILURE with {}; the error must be a \
                 (type, message, traceback, retryable) tuple of three str and a bool",
                quote(&data)
            )),
        },
        Some(OUTCOME_CANCELLED) => Ok(OutcomeKind::Cancelled),
        _ => Err(format!(
            "execute returned an outcome with the unknown tag {}; the tags are \
             OUTCOME_SUCCESS ({OUTCOME_SUCCESS}), OUTCOME_FAILURE ({OUTCOME_FAILURE}), \
             OUTCOME_CANCELLED ({OUTCOME_CANCELLED}) and, from execute only, \
             OUTCOME_DEFERRED ({OUTCOME_DEFERRED})",
            quote(&tag)
        )),
    }
}

/// `repr(value)`, cut short, or its type's name if `repr` fails.
fn quote(value: &Bound<'_, PyAny>) -> String {
    let shown = match value.repr() {
        Ok(repr) => repr.to_string(),
        Err(_) => format!(
            "a {}",
            value
                .get_type()
                .name()
                .map(|n| n.to_string())
                .unwrap_or_default()
        ),
    };
    match shown.char_indices().nth(QUOTE_CHARS) {
        Some((cut, _)) => format!("{}...", &shown[..cut]),
        None => shown,
    }
}
