//! The telemetry part of the contract: one record per request through a sidecar,
//! buffered (bounded, the dropped ones counted) until the control plane takes them.
//!
//! The control stream sends them as `{"type": "telemetry", "records": [...],
//! "dropped": n}`; each record's wire form is [`Record::to_wire`], every field
//! present (`null` where there is nothing), as the Python sidecar sends them.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Which side of a request a record is: made by the caller's sidecar or by the
/// destination's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// The caller's sidecar: the edge source -> destination, with the endpoint it chose.
    Outbound,
    /// The destination's sidecar: the instance's own view.
    Inbound,
}

/// What one sidecar saw of one request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// Wall-clock time the request finished (seconds since the epoch).
    pub ts: f64,
    pub direction: Direction,
    pub source: String,
    pub destination: String,
    pub version: String,
    pub instance: String,
    /// HTTP status sent downstream; 0 if the downstream went away before a status was sent.
    pub status: u16,
    pub latency_ms: f64,
    pub method: String,
    /// The request's path (at most [`MAX_PATH_IN_RECORD`] characters: see [`record_path`]).
    pub path: String,
    /// What the mesh saw go wrong (`connect-failure`, `no-healthy-upstream`, `reset`).
    pub error: Option<String>,
    /// Ids of the injected faults that shaped the answer: an injected failure, not a real one.
    pub fault: Option<String>,
    /// Attempts beyond the first.
    pub retries: u32,
    /// The W3C trace the request belongs to.
    pub trace_id: Option<String>,
    /// This sidecar's span of it: a client span outbound, a server span inbound.
    pub span_id: Option<String>,
    /// The span this one is a child of (`None`: the request started the trace).
    pub parent_id: Option<String>,
    /// The hop was mTLS: outbound, the call to the endpoint; inbound, the caller's.
    pub mtls: bool,
    /// `deny:<policy>`: an authorization policy denied it (403); `audit:<policy>`: an
    /// audit-mode policy would have, and it was let through.
    pub authz: Option<String>,
}

impl Record {
    /// The wire form: a JSON object of every field, `null` for what is absent.
    pub fn to_wire(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }
}

/// The longest path a record carries, in characters.
pub const MAX_PATH_IN_RECORD: usize = 256;

/// `path` cut to [`MAX_PATH_IN_RECORD`] characters, as a record carries it.
pub fn record_path(path: &str) -> &str {
    match path.char_indices().nth(MAX_PATH_IN_RECORD) {
        Some((end, _)) => &path[..end],
        None => path,
    }
}

/// Records a sidecar keeps while the control plane does not take them (about 3 MB):
/// a second of 10,000 req/s, or ten of a busy laptop mesh. Older ones are dropped,
/// and counted.
pub const CAPACITY: usize = 10_000;

/// A bounded queue of records; when full, the oldest are dropped and counted.
#[derive(Debug, Clone)]
pub struct TelemetryBuffer {
    records: VecDeque<Record>,
    capacity: usize,
    /// Records lost to the bound since the count was last taken (the control link
    /// sends it with the next batch and resets it).
    pub dropped: u64,
}

impl Default for TelemetryBuffer {
    fn default() -> Self {
        TelemetryBuffer::new(CAPACITY)
    }
}

impl TelemetryBuffer {
    /// An empty buffer holding at most `capacity` records.
    pub fn new(capacity: usize) -> Self {
        TelemetryBuffer {
            records: VecDeque::with_capacity(capacity.min(1024)),
            capacity,
            dropped: 0,
        }
    }

    /// Add the newest record; when full, the oldest is dropped and counted.
    pub fn add(&mut self, record: Record) {
        if self.records.len() == self.capacity {
            self.dropped += 1;
            if self.records.pop_front().is_none() {
                return; // a capacity of 0 holds nothing
            }
        }
        self.records.push_back(record);
    }

    /// How many records wait.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Whether none wait.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Remove and return up to `limit` of the oldest records, oldest first.
    pub fn take(&mut self, limit: usize) -> Vec<Record> {
        let count = limit.min(self.records.len());
        self.records.drain(..count).collect()
    }

    /// Return records that could not be sent to the front of the queue, in their
    /// order. What does not fit (the oldest of them) is dropped and counted.
    pub fn put_back(&mut self, records: Vec<Record>) {
        let total = records.len();
        for (returned, record) in records.into_iter().rev().enumerate() {
            if self.records.len() == self.capacity {
                self.dropped += (total - returned) as u64; // this one and every older one
                break;
            }
            self.records.push_front(record);
        }
    }
}

#[cfg(test)]
mod tests;
