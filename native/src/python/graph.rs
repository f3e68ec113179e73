//! `NativeQueue`'s jobs with more than options: graphs of jobs (a job with
//! `depends_on`, a unique key, an expiry or metadata is a graph of one; the
//! canvas builds bigger ones), a job's links, and progress reports.

use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList};

use super::convert::optional_seconds;
use super::errors;
use super::native_queue::NativeQueue;
use crate::error::{Error, Result};
use crate::job::{format_id, parse_id, DependencyMode, Feed, GraphNode, JobOptions};

/// The keys every node dict has (`enqueue_graph`'s contract with Python).
const NODE_KEYS: [&str; 15] = [
    "task_name",
    "queue",
    "payload",
    "priority",
    "delay",
    "max_retries",
    "retry_backoff",
    "timeout",
    "unique_key",
    "expires",
    "metadata",
    "depends_on",
    "after",
    "mode",
    "feed",
];

/// One node dict as a `GraphNode`; `index` names it in messages.
fn node(index: usize, dict: &Bound<'_, PyDict>, max_payload: usize) -> PyResult<GraphNode> {
    let get = |key: &str| -> PyResult<Bound<'_, PyAny>> {
        dict.get_item(key)?.ok_or_else(|| {
            Error::invalid(format!("node {index} of the graph has no {key:?}")).into()
        })
    };
    for key in dict.keys() {
        let key: String = key.extract()?;
        if !NODE_KEYS.contains(&key.as_str()) {
            return Err(Error::invalid(format!(
                "node {index} of the graph has an unknown key {key:?}"
            ))
            .into());
        }
    }
    let payload = get("payload")?;
    let payload = payload.cast::<PyBytes>().map_err(|_| {
        errors::new_err(
            &errors::SERIALIZATION,
            format!("node {index} of the graph: the payload must be bytes"),
        )
    })?;
    let payload = payload.as_bytes();
    if payload.len() > max_payload {
        return Err(Error::invalid(format!(
            "the arguments of node {index} of the graph serialize to {} bytes, over \
             max_payload_size ({max_payload} bytes)",
            payload.len()
        ))
        .into());
    }
    let depends_on = get("depends_on")?
        .extract::<Vec<String>>()?
        .iter()
        .map(|id| parse_id(id))
        .collect::<Result<Vec<i64>>>()?;
    let expires = optional_seconds(get("expires")?.extract()?, "expires")?;
    Ok(GraphNode {
        options: JobOptions {
            task_name: get("task_name")?.extract()?,
            queue: get("queue")?.extract()?,
            priority: get("priority")?.extract()?,
            delay: optional_seconds(get("delay")?.extract()?, "delay")?,
            max_retries: get("max_retries")?.extract()?,
            retry_backoff: get("retry_backoff")?.extract()?,
            timeout: optional_seconds(get("timeout")?.extract()?, "timeout")?,
        },
        payload: payload.to_vec(),
        unique_key: get("unique_key")?.extract()?,
        expires,
        metadata: get("metadata")?.extract()?,
        depends_on,
        after: get("after")?.extract()?,
        mode: DependencyMode::parse(&get("mode")?.extract::<String>()?)?,
        feed: Feed::parse(&get("feed")?.extract::<String>()?)?,
    })
}

#[pymethods]
impl NativeQueue {
    /// Stores a graph of jobs in one transaction; returns their ids in node
    /// order (a node whose unique key a live job holds gets that job's id).
    /// Each node is a dict with the keys task_name, queue, payload, priority,
    /// delay, max_retries, retry_backoff, timeout, unique_key, expires
    /// (seconds from now), metadata (JSON text), depends_on (stored ids),
    /// after (indexes of earlier nodes), mode ("success" | "finish") and
    /// feed ("none" | "one" | "all").
    fn enqueue_graph(&self, py: Python<'_>, nodes: &Bound<'_, PyList>) -> PyResult<Vec<String>> {
        let mut graph = Vec::with_capacity(nodes.len());
        for (i, item) in nodes.iter().enumerate() {
            let dict = item.cast::<PyDict>().map_err(|_| {
                PyErr::from(Error::invalid(format!(
                    "node {i} of the graph is not a dict"
                )))
            })?;
            graph.push(node(i, dict, self.max_payload_size)?);
        }
        let engine = self.engine(py)?;
        let ids = py.detach(|| engine.enqueue_graph(&graph))?;
        Ok(ids.into_iter().map(format_id).collect())
    }

    /// The ids job `job_id` depends on (in dependency order), and the ids
    /// of the jobs that depend on it.
    fn links(&self, py: Python<'_>, job_id: &str) -> PyResult<(Vec<String>, Vec<String>)> {
        let id = parse_id(job_id)?;
        let engine = self.engine(py)?;
        let (dependencies, dependents) = py.detach(|| engine.storage.links(id))?;
        Ok((
            dependencies.into_iter().map(format_id).collect(),
            dependents.into_iter().map(format_id).collect(),
        ))
    }

    /// A running task's progress (0 to 100), kept in memory until the
    /// worker writes it (with the outcome, or at its next heartbeat).
    fn report_progress(&self, py: Python<'_>, job_id: &str, value: i64) -> PyResult<()> {
        let id = parse_id(job_id)?;
        let value = u8::try_from(value)
            .ok()
            .filter(|v| *v <= 100)
            .ok_or_else(|| Error::invalid(format!("progress must be 0 to 100, got {value}")))?;
        self.engine(py)?.report_progress(id, value);
        Ok(())
    }
}
