//! Migrating a database: the one procedure behind the `ragway-migrate`
//! tool and the `database-migrate` function (which CloudFormation runs on
//! every deploy). Idempotent; two runs against one database take turns
//! (an advisory lock), so the second finds the work done.
//!
//! 1. **Admin step**, only when `DATABASE_ADMIN_URL` is given: the
//!    cluster's master user (in AWS from RDS's own secret; on RDS and
//!    Aurora a member of `rds_superuser`, not a superuser), connected to
//!    the app's database (`DATABASE_URL`'s, created if missing). In one
//!    transaction under the lock it makes sure of what the app role cannot
//!    do for itself:
//!    - the app's login role, named by `DATABASE_URL`'s user: created if
//!      missing, else its password set again (every run, so a rotated app
//!      secret takes effect), with `LOGIN CREATEROLE`; never a superuser
//!      or a role that bypasses row-level security (refused);
//!    - the `vector` extension (not trusted: the app role may not create
//!      it; the trusted ones the migrations create, it may);
//!    - the `ragway_search` role the keyword-search functions belong to,
//!      granted to the app role `WITH ADMIN OPTION, INHERIT FALSE, SET
//!      TRUE` (it exists once per cluster; whoever created it first, the
//!      app role may then hand functions to it, and never acts as it);
//!    - the app role as the owner of the database, and so (through
//!      `pg_database_owner`, since Postgres 15) of schema `public`, as in
//!      the local stack: the migrations create trusted extensions, grant
//!      `CREATE` on the schema to `ragway_search` for a moment, and drop
//!      and replace functions `ragway_search` owns (only their owner or the
//!      schema's may). Owning them exempts it from no row-level security.
//!
//!    The password goes to the server as a SCRAM-SHA-256 verifier
//!    computed here (postgres-protocol, as psql's `\password` does): the plain password
//!    never appears in a statement that the server log or
//!    `pg_stat_statements` could keep.
//! 2. **App step**, connected as the app role: the pending migrations, one
//!    at a time (so a failure names the one that failed), then the shared
//!    HNSW index for `EMBEDDING_DIMENSIONS` ([`crate::db::ensure_vector_index`]).
//!    The app role owns everything the migrations create, so the tables'
//!    `FORCE ROW LEVEL SECURITY` binds it.
//!
//! Nothing here ever drops or rewrites data beyond what a migration says.

use std::collections::{HashMap, HashSet};
use std::str::FromStr;
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{Context, bail};
use serde::Serialize;
use sqlx::migrate::Migrate;
use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection, PgConnection};

use crate::config::{ConfigError, DEFAULT_HNSW_EF_CONSTRUCTION, Secret};
use crate::db::MIGRATOR;

/// Advisory lock class taken by a migration run, `(MIGRATE_LOCK, 0)`:
/// transaction-level by the admin step, session-level by the app step.
pub const MIGRATE_LOCK: i32 = 1_919_383_146;

/// The role that owns the keyword-search functions (created by the
/// keyword-search migration when missing).
pub const SEARCH_ROLE: &str = "ragway_search";

/// Extensions only the admin may create (not marked trusted).
const ADMIN_EXTENSIONS: &[&str] = &["vector"];

/// Longest wait for one connection attempt (an Aurora Serverless
/// cluster resuming from zero capacity takes about 15 s).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// How long failed connections are tried again when the failure may pass
/// (a proxy whose target is still registering, a database starting up),
/// within the caller's deadline.
const CONNECT_RETRY_WINDOW: Duration = Duration::from_secs(180);

/// The variables a run reads that may come from secrets (`NAME_SECRET_ARN`).
pub const SECRET_VARS: &[&str] = &["DATABASE_URL", "DATABASE_ADMIN_URL"];

/// What a run needs, and nothing else of the app's configuration.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The app role's login (`DATABASE_URL`).
    pub database_url: Secret,
    /// The master user's login (`DATABASE_ADMIN_URL`); no admin step without it.
    pub admin_url: Option<Secret>,
    /// `EMBEDDING_DIMENSIONS` (384).
    pub embedding_dimensions: usize,
    /// `HNSW_EF_CONSTRUCTION` ([`DEFAULT_HNSW_EF_CONSTRUCTION`]).
    pub hnsw_ef_construction: u32,
}

impl Settings {
    /// From an environment: its database secrets fetched (and only those,
    /// see [`crate::secrets::resolve_only`]), then [`Settings::from_map`].
    pub async fn load(mut vars: HashMap<String, String>) -> anyhow::Result<Self> {
        crate::secrets::resolve_only(&mut vars, SECRET_VARS).await?;
        Ok(Self::from_map(&vars)?)
    }

    /// From variables already resolved; the same ranges as [`crate::config::Config`].
    pub fn from_map(vars: &HashMap<String, String>) -> Result<Self, ConfigError> {
        let get = |name: &str| vars.get(name).map(|v| v.trim()).filter(|v| !v.is_empty());
        let database_url = get("DATABASE_URL").ok_or_else(|| ConfigError {
            var: "DATABASE_URL",
            reason: "is required but not set".into(),
        })?;
        let number = |var: &'static str, default: u64, range: std::ops::RangeInclusive<u64>| {
            let value = match get(var) {
                None => default,
                Some(raw) => raw.parse().map_err(|e| ConfigError {
                    var,
                    reason: format!("cannot parse {raw:?}: {e}"),
                })?,
            };
            if !range.contains(&value) {
                return Err(ConfigError {
                    var,
                    reason: format!("must be between {} and {}", range.start(), range.end()),
                });
            }
            Ok(value)
        };
        Ok(Self {
            database_url: Secret::new(database_url),
            admin_url: get("DATABASE_ADMIN_URL").map(Secret::new),
            // pgvector's HNSW index takes at most 2,000 dimensions.
            embedding_dimensions: number("EMBEDDING_DIMENSIONS", 384, 1..=2000)? as usize,
            hnsw_ef_construction: number(
                "HNSW_EF_CONSTRUCTION",
                DEFAULT_HNSW_EF_CONSTRUCTION.into(),
                32..=1000,
            )? as u32,
        })
    }

    /// `text` with the passwords of both logins (as given and URL-encoded)
    /// replaced: for messages that leave the function. The messages
    /// this module writes never hold one; this is the second wall.
    pub fn redact(&self, text: &str) -> String {
        let mut text = text.to_owned();
        for url in std::iter::once(&self.database_url).chain(&self.admin_url) {
            let Ok(url) = reqwest::Url::parse(url.expose()) else {
                continue;
            };
            let Some(encoded) = url.password() else {
                continue;
            };
            let decoded = percent_encoding::percent_decode_str(encoded).decode_utf8_lossy();
            for password in [encoded, decoded.as_ref()] {
                // A password this short would blank out half the message.
                if password.len() >= 4 {
                    text = text.replace(password, "[redacted]");
                }
            }
        }
        text
    }
}

/// What the run is doing now: the reason given when it is cut off.
#[derive(Debug, Default)]
pub struct Progress(Mutex<String>);

impl Progress {
    /// Records (and logs) the step now under way.
    pub fn step(&self, what: impl Into<String>) {
        let what = what.into();
        tracing::info!(step = %what, "migrate");
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = what;
    }

    /// The step under way, e.g. `applying migration 20261123000005 (keyword search)`.
    pub fn current(&self) -> String {
        let step = self.0.lock().unwrap_or_else(|e| e.into_inner()).clone();
        if step.is_empty() {
            "starting".to_owned()
        } else {
            step
        }
    }
}

/// What a run did.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Summary {
    /// The admin step's part; `None` without `DATABASE_ADMIN_URL`.
    pub admin: Option<AdminSummary>,
    /// Migrations this run applied (0 when another run it waited for did).
    pub migrations_applied: usize,
    /// Migrations this build knows, all applied now.
    pub migrations_total: usize,
    /// The newest migration's version.
    pub latest_migration: Option<i64>,
    /// The shared HNSW index made sure of.
    pub vector_index: String,
}

/// What the admin step did.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct AdminSummary {
    /// The app role (`DATABASE_URL`'s user).
    pub app_role: String,
    /// `created`, or `updated` (password and attributes set again).
    pub role: RoleChange,
    pub database_created: bool,
    pub extensions_created: Vec<String>,
    /// Privileges and memberships the app role lacked and was given.
    pub granted: Vec<String>,
}

#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum RoleChange {
    Created,
    Updated,
}

impl Summary {
    /// One line for logs and the command line.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(admin) = &self.admin {
            if admin.database_created {
                parts.push("database created".to_owned());
            }
            parts.push(format!(
                "app role {} {}",
                admin.app_role,
                match admin.role {
                    RoleChange::Created => "created",
                    RoleChange::Updated => "updated",
                }
            ));
            if !admin.extensions_created.is_empty() {
                parts.push(format!(
                    "extensions created: {}",
                    admin.extensions_created.join(", ")
                ));
            }
            if !admin.granted.is_empty() {
                parts.push(format!("granted: {}", admin.granted.join("; ")));
            }
        }
        parts.push(format!(
            "{} migrations applied, {} in all (latest {})",
            self.migrations_applied,
            self.migrations_total,
            self.latest_migration
                .map_or_else(|| "none".to_owned(), |v| v.to_string())
        ));
        parts.push(format!("vector index {} ensured", self.vector_index));
        parts.join("; ")
    }
}

/// Runs both steps (module docs). The error's cause chain says what
/// failed; it never holds a password or a URL.
pub async fn run(settings: &Settings, progress: &Progress) -> anyhow::Result<Summary> {
    let app = Login::parse("DATABASE_URL", settings.database_url.expose())?;
    let admin = match &settings.admin_url {
        Some(url) => {
            let admin = Login::parse("DATABASE_ADMIN_URL", url.expose())?;
            Some(
                admin_step(&admin, &app, progress)
                    .await
                    .context("admin step (DATABASE_ADMIN_URL)")?,
            )
        }
        None => None,
    };
    let mut summary = app_step(&app, settings, progress)
        .await
        .context("migrating as the app role (DATABASE_URL)")?;
    summary.admin = admin;
    Ok(summary)
}

/// A login taken apart: the options to connect with, and the names.
struct Login {
    options: PgConnectOptions,
    user: String,
    password: Option<String>,
    database: String,
}

impl Login {
    fn parse(var: &str, url: &str) -> anyhow::Result<Self> {
        // Neither parser's message is repeated: it could quote the URL.
        let options = PgConnectOptions::from_str(url)
            .map_err(|_| anyhow::anyhow!("{var} is not a valid postgres:// URL"))?
            .application_name("ragway-migrate")
            // sqlx logs slow statements at WARN, whole: ALTER ROLE among them.
            .disable_statement_logging();
        let parsed = reqwest::Url::parse(url)
            .map_err(|_| anyhow::anyhow!("{var} is not a valid postgres:// URL"))?;
        let password = parsed
            .password()
            .map(|p| {
                percent_encoding::percent_decode_str(p)
                    .decode_utf8()
                    .map(|p| p.into_owned())
                    .map_err(|_| anyhow::anyhow!("{var}: the password is not UTF-8"))
            })
            .transpose()?
            .filter(|p| !p.is_empty());
        let user = options.get_username().to_owned();
        let database = options.get_database().unwrap_or(&user).to_owned();
        Ok(Self {
            options,
            user,
            password,
            database,
        })
    }
}

/// `database D on H:P as U`, for messages (no password).
fn describe(options: &PgConnectOptions) -> String {
    format!(
        "database {} on {}:{} as {}",
        options.get_database().unwrap_or(options.get_username()),
        options.get_host(),
        options.get_port(),
        options.get_username()
    )
}

/// Connects (each attempt within [`CONNECT_TIMEOUT`], failures that may
/// pass tried again for [`CONNECT_RETRY_WINDOW`]) and prepares the session.
async fn connect(
    options: &PgConnectOptions,
    progress: &Progress,
) -> Result<PgConnection, sqlx::Error> {
    let started = std::time::Instant::now();
    let mut attempt = 1;
    progress.step(format!("connecting to {}", describe(options)));
    let mut conn = loop {
        let connected = tokio::time::timeout(CONNECT_TIMEOUT, PgConnection::connect_with(options))
            .await
            .unwrap_or_else(|_| {
                Err(sqlx::Error::Io(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("no answer within {} s", CONNECT_TIMEOUT.as_secs()),
                )))
            });
        match connected {
            Ok(conn) => break conn,
            Err(e) if may_pass(&e) && started.elapsed() < CONNECT_RETRY_WINDOW => {
                let pause = Duration::from_secs(1 << attempt.min(4));
                progress.step(format!(
                    "connecting to {} (attempt {} failed: {e}; again in {} s)",
                    describe(options),
                    attempt,
                    pause.as_secs()
                ));
                tokio::time::sleep(pause).await;
                attempt += 1;
            }
            Err(e) => return Err(e),
        }
    };
    // Statements run as long as they need (a role's own timeouts are for
    // the app's requests); the caller's deadline bounds the run instead.
    // A run cut off drops its connection: the server then notices within
    // seconds and stops, rather than finish an index build for nobody
    // while it holds the lock. Plain SET statements: RDS Proxy pins the
    // session to one server connection on them, as the session's
    // advisory lock needs. No NOTICEs ("already exists, skipping") in
    // the logs.
    sqlx::raw_sql(
        "SET statement_timeout = 0; SET lock_timeout = 0; \
         SET client_connection_check_interval = '5s'; SET client_min_messages = warning",
    )
    .execute(&mut conn)
    .await?;
    Ok(conn)
}

/// A connection failure that may pass by itself: no answer or a refused
/// connection, a connection exception (class 08), a server starting up
/// (57P03) or full (53300). A login refused, a database missing are not.
fn may_pass(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Io(_) => true,
        sqlx::Error::Database(_) => sql_state(error)
            .is_some_and(|code| code.starts_with("08") || code == "57P03" || code == "53300"),
        _ => false,
    }
}

fn sql_state(error: &sqlx::Error) -> Option<String> {
    error
        .as_database_error()
        .and_then(|e| e.code())
        .map(|c| c.into_owned())
}

async fn admin_step(
    admin: &Login,
    app: &Login,
    progress: &Progress,
) -> anyhow::Result<AdminSummary> {
    if admin.user == app.user {
        bail!(
            "DATABASE_URL and DATABASE_ADMIN_URL name the same user {}: the app needs a role of its own, \
             which row-level security binds",
            app.user
        );
    }
    check_name("DATABASE_URL's user", &app.user)?;
    check_name("DATABASE_URL's database", &app.database)?;

    let target = admin.options.clone().database(&app.database);
    let mut database_created = false;
    let mut conn = match connect(&target, progress).await {
        // 3D000: no such database.
        Err(e) if sql_state(&e).as_deref() == Some("3D000") => {
            database_created = create_database(admin, &app.database, progress).await?;
            connect(&target, progress).await
        }
        other => other,
    }
    .with_context(|| format!("connecting to {}", describe(&target)))?;

    let mut tx = conn.begin().await?;
    progress.step(format!(
        "waiting for the migration lock of database {} (another run?)",
        app.database
    ));
    sqlx::query("SELECT pg_advisory_xact_lock($1, 0)")
        .bind(MIGRATE_LOCK)
        .execute(&mut *tx)
        .await
        .context("taking the migration lock")?;

    let role = ensure_app_role(&mut tx, app, progress).await?;
    let mut granted = ensure_search_role(&mut tx, app, progress).await?;

    let mut extensions_created = Vec::new();
    for extension in ADMIN_EXTENSIONS {
        progress.step(format!("creating extension {extension}"));
        let exists: bool =
            sqlx::query_scalar("SELECT EXISTS (SELECT FROM pg_extension WHERE extname = $1)")
                .bind(extension)
                .fetch_one(&mut *tx)
                .await?;
        if !exists {
            execute(
                &mut tx,
                format!(
                    "CREATE EXTENSION IF NOT EXISTS {} SCHEMA public",
                    quote_ident(extension)
                ),
            )
            .await
            .with_context(|| format!("creating extension {extension}"))?;
            extensions_created.push((*extension).to_owned());
        }
    }

    granted.extend(ensure_ownership(&mut tx, app, progress).await?);
    progress.step("committing the admin step");
    tx.commit().await.context("committing the admin step")?;
    let _ = conn.close().await;
    Ok(AdminSummary {
        app_role: app.user.clone(),
        role,
        database_created,
        extensions_created,
        granted,
    })
}

/// Creates the app's database, owned by the admin (as RDS creates the
/// cluster's `DatabaseName`); `false` when a concurrent run was first.
async fn create_database(admin: &Login, name: &str, progress: &Progress) -> anyhow::Result<bool> {
    let maintenance = match admin.options.get_database() {
        Some(own) if own != name => own,
        _ => "postgres",
    };
    let options = admin.options.clone().database(maintenance);
    let mut conn = connect(&options, progress)
        .await
        .with_context(|| format!("connecting to {} to create {name}", describe(&options)))?;
    progress.step(format!("creating database {name}"));
    let created = sqlx::query(sqlx::AssertSqlSafe(format!(
        "CREATE DATABASE {}",
        quote_ident(name)
    )))
    .execute(&mut conn)
    .await;
    let _ = conn.close().await;
    match created {
        Ok(_) => Ok(true),
        // 42P04 duplicate_database; 23505 when the catalogue insert races.
        Err(e) if matches!(sql_state(&e).as_deref(), Some("42P04" | "23505")) => Ok(false),
        Err(e) => Err(e).with_context(|| format!("creating database {name}")),
    }
}

async fn ensure_app_role(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    app: &Login,
    progress: &Progress,
) -> anyhow::Result<RoleChange> {
    progress.step(format!("creating or updating the app role {}", app.user));
    let existing: Option<(bool, bool)> =
        sqlx::query_as("SELECT rolsuper, rolbypassrls FROM pg_roles WHERE rolname = $1")
            .bind(&app.user)
            .fetch_optional(&mut **tx)
            .await?;
    if let Some((superuser, bypass)) = existing
        && (superuser || bypass)
    {
        bail!(
            "the app role {} is a superuser or bypasses row-level security; \
             the app must connect as a role that row-level security binds",
            app.user
        );
    }
    let password = match &app.password {
        Some(password) => format!(
            " PASSWORD {}",
            quote_literal(&postgres_protocol::password::scram_sha_256(
                password.as_bytes()
            ))
        ),
        None => String::new(),
    };
    let (verb, change) = match existing {
        Some(_) => ("ALTER", RoleChange::Updated),
        None => ("CREATE", RoleChange::Created),
    };
    // CREATEROLE: the keyword-search migration may create ragway_search.
    execute(
        tx,
        format!(
            "{verb} ROLE {} WITH LOGIN CREATEROLE{password}",
            quote_ident(&app.user)
        ),
    )
    .await
    .with_context(|| {
        format!(
            "{} the app role {}",
            if change == RoleChange::Created {
                "creating"
            } else {
                "updating"
            },
            app.user
        )
    })?;
    Ok(change)
}

/// Creates [`SEARCH_ROLE`] if missing and lets the app role administer it.
async fn ensure_search_role(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    app: &Login,
    progress: &Progress,
) -> anyhow::Result<Vec<String>> {
    progress.step(format!("granting {SEARCH_ROLE} to {}", app.user));
    let mut granted = Vec::new();
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT FROM pg_roles WHERE rolname = $1)")
            .bind(SEARCH_ROLE)
            .fetch_one(&mut **tx)
            .await?;
    if !exists {
        execute(
            tx,
            format!("CREATE ROLE {} NOLOGIN", quote_ident(SEARCH_ROLE)),
        )
        .await
        .with_context(|| format!("creating role {SEARCH_ROLE}"))?;
    }
    let administers: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT FROM pg_auth_members m \
                          JOIN pg_roles r ON r.oid = m.roleid \
                          JOIN pg_roles u ON u.oid = m.member \
                         WHERE r.rolname = $1 AND u.rolname = $2 AND m.admin_option)",
    )
    .bind(SEARCH_ROLE)
    .bind(&app.user)
    .fetch_one(&mut **tx)
    .await?;
    if !administers {
        execute(
            tx,
            format!(
                "GRANT {} TO {} WITH ADMIN OPTION, INHERIT FALSE, SET TRUE",
                quote_ident(SEARCH_ROLE),
                quote_ident(&app.user)
            ),
        )
        .await
        .with_context(|| format!("granting {SEARCH_ROLE} to {}", app.user))?;
        granted.push(format!(
            "{SEARCH_ROLE} WITH ADMIN OPTION, INHERIT FALSE, SET TRUE"
        ));
    }
    Ok(granted)
}

/// Makes the app role the owner of its database and, through that (the
/// `pg_database_owner` role), of schema `public`, as the local stack's
/// app role is: the migrations replace functions that `ragway_search`
/// owns, which only their owner or the schema's may drop, and grant
/// `CREATE` on the schema for a moment. Owning the database does not
/// exempt it from row-level security.
async fn ensure_ownership(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    app: &Login,
    progress: &Progress,
) -> anyhow::Result<Vec<String>> {
    progress.step(format!(
        "making {} the owner of database {}",
        app.user, app.database
    ));
    let mut granted = Vec::new();
    let app_role = quote_ident(&app.user);
    let (owns_database, admin_may_set): (bool, bool) = sqlx::query_as(
        "SELECT datdba = (SELECT oid FROM pg_roles WHERE rolname = $1),                 pg_has_role(current_user, $1::name, 'SET')            FROM pg_database WHERE datname = current_database()",
    )
    .bind(&app.user)
    .fetch_one(&mut **tx)
    .await?;
    if !owns_database {
        // Giving an object to a role takes the right to act as it
        // (Postgres 16); the master user created the role, so it may
        // grant itself that (not its privileges: no INHERIT).
        if !admin_may_set {
            execute(
                tx,
                format!("GRANT {app_role} TO CURRENT_USER WITH INHERIT FALSE, SET TRUE"),
            )
            .await
            .with_context(|| format!("granting {} to the admin user", app.user))?;
        }
        execute(
            tx,
            format!(
                "ALTER DATABASE {} OWNER TO {app_role}",
                quote_ident(&app.database)
            ),
        )
        .await
        .with_context(|| format!("making {} the owner of database {}", app.user, app.database))?;
        granted.push(format!("ownership of database {}", app.database));
    }
    // Owned by pg_database_owner since Postgres 15; by whoever made it in
    // a database upgraded from an older version.
    let owns_schema: bool = sqlx::query_scalar(
        "SELECT pg_has_role($1::name, nspowner, 'USAGE') FROM pg_namespace WHERE nspname = 'public'",
    )
    .bind(&app.user)
    .fetch_one(&mut **tx)
    .await?;
    if !owns_schema {
        execute(tx, format!("ALTER SCHEMA public OWNER TO {app_role}"))
            .await
            .with_context(|| format!("making {} the owner of schema public", app.user))?;
        granted.push("ownership of schema public".to_owned());
    }
    Ok(granted)
}

/// `error`'s causes, `: `-separated, leaving out those a message before
/// already quotes (sqlx's errors repeat their source in their own).
pub fn cause_chain(error: &anyhow::Error) -> String {
    let mut chain = String::new();
    for cause in error.chain() {
        let text = cause.to_string();
        if chain.contains(&text) {
            continue;
        }
        if !chain.is_empty() {
            chain.push_str(": ");
        }
        chain.push_str(&text);
    }
    chain
}

/// Runs a statement built with [`quote_ident`] / [`quote_literal`].
async fn execute(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    sql: String,
) -> Result<(), sqlx::Error> {
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .execute(&mut **tx)
        .await?;
    Ok(())
}

async fn app_step(
    app: &Login,
    settings: &Settings,
    progress: &Progress,
) -> anyhow::Result<Summary> {
    let mut conn = connect(&app.options, progress)
        .await
        .with_context(|| format!("connecting to {}", describe(&app.options)))?;
    progress.step(format!(
        "waiting for the migration lock of database {} (another run?)",
        app.database
    ));
    sqlx::query("SELECT pg_advisory_lock($1, 0)")
        .bind(MIGRATE_LOCK)
        .execute(&mut conn)
        .await
        .context("taking the migration lock")?;

    progress.step("reading the applied migrations");
    conn.ensure_migrations_table(&MIGRATOR.table_name)
        .await
        .context("creating the migrations table")?;
    let applied: HashSet<i64> = conn
        .list_applied_migrations(&MIGRATOR.table_name)
        .await
        .context("reading the applied migrations")?
        .into_iter()
        .map(|m| m.version)
        .collect();
    let migrations: Vec<_> = MIGRATOR
        .iter()
        .filter(|m| !m.migration_type.is_down_migration())
        .collect();
    let mut migrations_applied = 0;
    for migration in migrations.iter().filter(|m| !applied.contains(&m.version)) {
        let name = format!(
            "migration {} ({})",
            migration.version, migration.description
        );
        progress.step(format!("applying {name}"));
        migrate_to(&mut conn, Some(migration.version))
            .await
            .with_context(|| format!("applying {name}"))?;
        migrations_applied += 1;
    }
    // Checks what was applied before against this build (checksums).
    progress.step("checking the applied migrations");
    migrate_to(&mut conn, None)
        .await
        .context("checking the applied migrations")?;

    let vector_index = crate::db::shared_vector_index(settings.embedding_dimensions);
    progress.step(format!(
        "building the vector index {vector_index} if missing"
    ));
    crate::db::ensure_vector_index(
        &mut conn,
        settings.embedding_dimensions,
        settings.hnsw_ef_construction,
    )
    .await
    .with_context(|| format!("building the vector index {vector_index}"))?;

    sqlx::query("SELECT pg_advisory_unlock($1, 0)")
        .bind(MIGRATE_LOCK)
        .execute(&mut conn)
        .await?;
    let _ = conn.close().await;
    Ok(Summary {
        admin: None,
        migrations_applied,
        migrations_total: migrations.len(),
        latest_migration: migrations.iter().map(|m| m.version).max(),
        vector_index,
    })
}

/// [`MIGRATOR`] up to `target` (all without one). `run_direct` is what
/// `run` and `run_to` call: their `Acquire` bound is "not general
/// enough" for the futures of the functions that await [`run`] to be
/// `Send`, and sqlx keeps `run_direct` public for just that.
async fn migrate_to(
    conn: &mut PgConnection,
    target: Option<i64>,
) -> Result<(), sqlx::migrate::MigrateError> {
    MIGRATOR.run_direct(target, conn, false).await
}

/// A role or database name as Postgres keeps it: not empty, no NUL, at
/// most 63 bytes (longer ones would be cut short, silently).
fn check_name(what: &str, name: &str) -> anyhow::Result<()> {
    if name.is_empty() || name.contains('\0') || name.len() > 63 {
        bail!("{what} must be 1 to 63 bytes without NUL");
    }
    Ok(())
}

/// `name` as a quoted SQL identifier.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// `value` as an SQL string literal, right whatever
/// `standard_conforming_strings` says (as libpq's `PQescapeLiteral`).
pub fn quote_literal(value: &str) -> String {
    let quoted = value.replace('\'', "''");
    if value.contains('\\') {
        format!("E'{}'", quoted.replace('\\', "\\\\"))
    } else {
        format!("'{quoted}'")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn quoting_keeps_names_and_values_whole() {
        assert_eq!(quote_ident("app"), "\"app\"");
        assert_eq!(
            quote_ident("x\"; DROP TABLE users; --"),
            "\"x\"\"; DROP TABLE users; --\""
        );
        assert_eq!(quote_literal("it's"), "'it''s'");
        assert_eq!(quote_literal("a\\'b"), "E'a\\\\''b'");
    }

    #[test]
    fn settings_take_the_defaults_and_refuse_what_pgvector_cannot_index() {
        let settings =
            Settings::from_map(&vars(&[("DATABASE_URL", "postgres://a:b@h/db")])).unwrap();
        assert_eq!(settings.embedding_dimensions, 384);
        assert_eq!(settings.hnsw_ef_construction, DEFAULT_HNSW_EF_CONSTRUCTION);
        assert!(settings.admin_url.is_none());
        let err = Settings::from_map(&vars(&[
            ("DATABASE_URL", "postgres://a:b@h/db"),
            ("EMBEDDING_DIMENSIONS", "4096"),
        ]))
        .unwrap_err();
        assert_eq!(err.var, "EMBEDDING_DIMENSIONS");
        let err = Settings::from_map(&vars(&[("DATABASE_ADMIN_URL", "postgres://a:b@h/db")]))
            .unwrap_err();
        assert_eq!(err.var, "DATABASE_URL");
    }

    #[test]
    fn redaction_removes_both_spellings_of_both_passwords() {
        let settings = Settings::from_map(&vars(&[
            ("DATABASE_URL", "postgres://app:p%40ss%2Fword@h/db"),
            ("DATABASE_ADMIN_URL", "postgres://admin:master-secret@h/db"),
        ]))
        .unwrap();
        let text = settings.redact("a p@ss/word b p%40ss%2Fword c master-secret d");
        assert_eq!(text, "a [redacted] b [redacted] c [redacted] d");
    }

    #[test]
    fn logins_decode_their_user_and_password() {
        let login = Login::parse(
            "DATABASE_URL",
            "postgres://we%20ird:p%40ss@host:6432/the_db",
        )
        .unwrap();
        assert_eq!(login.user, "we ird");
        assert_eq!(login.password.as_deref(), Some("p@ss"));
        assert_eq!(login.database, "the_db");
        let err = Login::parse("DATABASE_URL", "postgres://u:nope@[broken")
            .err()
            .unwrap();
        assert!(!err.to_string().contains("nope"), "{err}");
    }
}
