//! Dependency checks behind `GET /health`.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde::Serialize;
use sqlx::PgPool;

use crate::queue::Queue;
use crate::storage::Bucket;

#[derive(Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ComponentHealth {
    pub status: &'static str,
    pub latency_ms: u64,
    /// Kept out of the public response (it may name hosts); logged instead.
    #[serde(skip)]
    pub error: Option<String>,
}

#[derive(Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Health {
    /// `healthy` when every component answered, `degraded` otherwise.
    pub status: &'static str,
    pub components: BTreeMap<&'static str, ComponentHealth>,
}

impl Health {
    pub fn is_healthy(&self) -> bool {
        self.status == "healthy"
    }
}

const CHECK_TIMEOUT: Duration = Duration::from_secs(3);

async fn timed<F, E>(check: F) -> ComponentHealth
where
    F: std::future::Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    let started = Instant::now();
    let outcome = tokio::time::timeout(CHECK_TIMEOUT, check).await;
    let latency_ms = started.elapsed().as_millis() as u64;
    let error = match outcome {
        Ok(Ok(())) => None,
        Ok(Err(e)) => Some(e.to_string()),
        Err(_) => Some(format!("no answer within {}s", CHECK_TIMEOUT.as_secs())),
    };
    ComponentHealth {
        status: if error.is_none() { "up" } else { "down" },
        latency_ms,
        error,
    }
}

/// Checks Postgres, the bucket and the ingest queue concurrently (a
/// component that is not configured is down, with the reason).
pub async fn check(
    db: &PgPool,
    bucket: anyhow::Result<Bucket<'_>>,
    queue: anyhow::Result<Queue<'_>>,
) -> Health {
    let database = timed(async { sqlx::query("SELECT 1").execute(db).await.map(|_| ()) });
    let storage = timed(async { bucket?.probe().await });
    let queue = timed(async { queue?.probe().await });
    let (database, storage, queue) = tokio::join!(database, storage, queue);
    for (name, component) in [
        ("database", &database),
        ("storage", &storage),
        ("queue", &queue),
    ] {
        if let Some(error) = &component.error {
            tracing::warn!(component = name, %error, "health check failed");
        }
    }
    let healthy = [&database, &storage, &queue]
        .iter()
        .all(|c| c.error.is_none());
    Health {
        status: if healthy { "healthy" } else { "degraded" },
        components: BTreeMap::from([
            ("database", database),
            ("storage", storage),
            ("queue", queue),
        ]),
    }
}
