//! `common`: everything the ragway functions share. A handler parses its
//! request, calls into these modules, and renders the outcome.

pub mod access_log;
pub mod answer;
pub mod api_keys;
pub mod auth;
pub mod budget;
pub mod caller;
pub mod chat;
pub mod conditional;
pub mod config;
pub mod conversations;
pub mod db;
pub mod deadline;
pub mod documents;
pub mod embed;
pub mod error;
#[cfg(test)]
mod fuzz;
pub mod health;
pub mod http;
pub mod identify;
pub mod ids;
pub mod ingest;
pub mod invitations;
pub mod jobs;
pub mod lambda;
pub mod mail;
pub mod metrics;
pub mod migrate;
pub mod pagination;
pub mod purge;
pub mod queue;
pub mod rate_limit;
pub mod rerank;
pub mod retrieval;
pub mod schedules;
pub mod secrets;
pub mod sentences;
pub mod shares;
pub mod sse;
pub mod state;
pub mod storage;
pub mod study;
pub mod telemetry;
#[cfg(any(test, feature = "test-server"))]
pub mod test_server;
pub mod text;
pub mod token_count;
mod transport;
pub mod uploads;
pub mod widgets;
pub mod workspaces;

pub use error::{ApiError, Result};

// Re-exported for the function-table macros and the function packages.
pub use anyhow;
pub use aws_lambda_events;
pub use futures;
pub use lambda_http;
pub use serde_json;
