//! The Postgres pool and tenant-scoped transactions.

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgPool, Postgres, Transaction};

use crate::config::Config;
use crate::ids::{UserId, WorkspaceId};

/// Migrations embedded in every binary that needs them (the migrate tool, tests).
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations");

/// A pool that connects on first use, so a cold start never waits for the
/// database and a function that does not touch it never opens a connection.
pub fn lazy_pool(config: &Config) -> anyhow::Result<PgPool> {
    let options = PgConnectOptions::from_str(config.database_url.expose())
        .map_err(|e| anyhow::anyhow!("DATABASE_URL is not a valid connection string: {e}"))?
        .application_name("ragway");
    Ok(PgPoolOptions::new()
        .max_connections(config.database_max_connections)
        .min_connections(0)
        .acquire_timeout(Duration::from_secs(5))
        // Lambda freezes containers; drop idle connections before RDS Proxy does.
        .idle_timeout(Duration::from_secs(60))
        .connect_lazy_with(options))
}

/// Opens a transaction with the row-level-security context set: policies on
/// tenant tables see `app.user_id` and `app.workspace_id` for this transaction
/// only (`set_config(..., true)`), so a pooled connection never leaks them.
pub async fn tenant_tx(
    pool: &PgPool,
    user: Option<UserId>,
    workspace: Option<WorkspaceId>,
) -> Result<Transaction<'static, Postgres>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::query(
        "SELECT set_config('app.user_id', $1, true), set_config('app.workspace_id', $2, true)",
    )
    .bind(user.map(|u| u.to_string()).unwrap_or_default())
    .bind(workspace.map(|w| w.to_string()).unwrap_or_default())
    .execute(&mut *tx)
    .await?;
    Ok(tx)
}
