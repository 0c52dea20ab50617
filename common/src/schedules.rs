//! Recurring tasks: a workspace schedules a job every so many minutes
//! (at least an hour) or by a cron expression (five fields, UTC): a
//! classification scheme over the documents added since its last run
//! (or all of them), or an export. Members pause, resume and change
//! them, and see their last and next runs.
//!
//! One scheduled function ([`dispatch`], every minute) starts the due
//! ones as the member who made them, each due time once (a schedule is
//! claimed by moving its `next_run_at` on condition that it is still
//! the one seen), and records every run with its job or the reason it
//! could not start; a failed run does not stop the schedule. The same
//! function resumes jobs whose steps stopped moving (a step lost between
//! committing and queueing its successor).
//!
//! What reads cron expressions (creating, changing, dispatching) needs
//! the `schedules` feature; the types and reads do not (the API document
//! uses them without it).

#[cfg(feature = "schedules")]
use std::str::FromStr;

use chrono::{DateTime, Utc};
#[cfg(feature = "schedules")]
use chrono::{Duration as Span, Timelike};
#[cfg(feature = "schedules")]
use croner::Cron;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::types::Json;

#[cfg(feature = "schedules")]
use crate::caller::Caller;
use crate::error::{ApiError, Result};
use crate::ids::{JobId, SchemeId, UserId, WorkspaceId};
#[cfg(feature = "schedules")]
use crate::state::State;
use crate::workspaces::Access;

/// Shortest interval between runs.
pub const MIN_EVERY_MINUTES: i32 = 60;
/// Longest interval: a year.
pub const MAX_EVERY_MINUTES: i32 = 525_600;
/// Runs a schedule's view lists.
const RUNS_SHOWN: i64 = 20;
/// Due schedules and stalled jobs one dispatch takes.
#[cfg(feature = "schedules")]
const DISPATCH_BATCH: i32 = 100;
/// A job whose progress has not moved for this long while it is queued
/// or running is resumed: well past a worker's 120 s timeout and its
/// redeliveries.
pub const STALLED_AFTER: std::time::Duration = std::time::Duration::from_secs(600);

/// What a schedule starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, sqlx::Type)]
#[serde(rename_all = "snake_case")]
#[sqlx(type_name = "text", rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum Action {
    /// A classify job of `scheme_id`.
    Classify,
    /// An export of the workspace.
    Export,
}

/// `POST /workspaces/{id}/schedules`: exactly one of `every_minutes` and
/// `cron`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct NewSchedule {
    pub name: String,
    pub action: Action,
    /// Classify: the scheme to run.
    #[serde(default)]
    pub scheme_id: Option<SchemeId>,
    /// Classify: only documents created since the last run (the first
    /// run takes all). Default true.
    #[serde(default)]
    pub only_new: Option<bool>,
    /// Export: also the chunks with their embeddings.
    #[serde(default)]
    pub include_chunks: Option<bool>,
    /// Minutes between runs, 60 to 525600.
    #[serde(default)]
    pub every_minutes: Option<i32>,
    /// Five fields (minute hour day-of-month month day-of-week), UTC;
    /// runs at least an hour apart.
    #[serde(default)]
    pub cron: Option<String>,
    /// Whether it starts paused.
    #[serde(default)]
    pub paused: bool,
}

/// `PATCH /workspaces/{id}/schedules/{schedule_id}`: what changes. A new
/// interval or cron replaces the other and sets the next run from now.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ScheduleChanges {
    #[serde(default)]
    pub name: Option<String>,
    /// `true` pauses, `false` resumes (the next run is then computed
    /// from now: runs missed while paused are not made up).
    #[serde(default)]
    pub paused: Option<bool>,
    #[serde(default)]
    pub every_minutes: Option<i32>,
    #[serde(default)]
    pub cron: Option<String>,
}

/// One run of a schedule.
#[derive(Debug, Serialize, sqlx::FromRow)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Run {
    pub id: uuid::Uuid,
    pub due_at: DateTime<Utc>,
    pub started_at: DateTime<Utc>,
    /// `pending` (being started), `started` (its job is `job_id`) or
    /// `failed` (`error` says why).
    pub status: String,
    pub job_id: Option<JobId>,
    pub error: Option<String>,
}

/// A schedule as the API shows it.
#[derive(Debug, Serialize, sqlx::FromRow)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Schedule {
    pub id: uuid::Uuid,
    pub workspace_id: WorkspaceId,
    pub name: String,
    pub action: Action,
    /// Classify: `{scheme_id, only_new}`; export: `{include_chunks}`.
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub options: Json<Value>,
    pub every_minutes: Option<i32>,
    pub cron: Option<String>,
    pub paused: bool,
    /// When it runs next (while paused: when it would have).
    pub next_run_at: DateTime<Utc>,
    pub last_run_at: Option<DateTime<Utc>>,
    pub created_by: Option<UserId>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// The latest runs, newest first (in a schedule's own view).
    #[sqlx(skip)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub runs: Option<Vec<Run>>,
}

macro_rules! schedule_columns {
    () => {
        "id, workspace_id, name, action, options, every_minutes, cron, paused, next_run_at, \
         last_run_at, created_by, created_at, updated_at"
    };
}

#[cfg(feature = "schedules")]
/// When a schedule runs: an interval or a cron expression.
enum Every {
    Minutes(i32),
    Cron(Box<Cron>),
}

#[cfg(feature = "schedules")]
impl Every {
    fn parse(every_minutes: Option<i32>, cron: Option<&str>) -> Result<Self> {
        match (every_minutes, cron) {
            (Some(minutes), None) => {
                if !(MIN_EVERY_MINUTES..=MAX_EVERY_MINUTES).contains(&minutes) {
                    return Err(ApiError::unprocessable(
                        "every_minutes",
                        format!(
                            "every_minutes is {MIN_EVERY_MINUTES} (an hour) to {MAX_EVERY_MINUTES}"
                        ),
                    ));
                }
                Ok(Every::Minutes(minutes))
            }
            (None, Some(expression)) => {
                let expression = expression.trim();
                // The column holds 200 characters: longer is a 422, not a 500.
                if expression.chars().count() > 200 {
                    return Err(ApiError::unprocessable(
                        "cron",
                        "cron is at most 200 characters",
                    ));
                }
                if expression.split_whitespace().count() != 5 {
                    return Err(ApiError::unprocessable(
                        "cron",
                        "cron has five fields: minute hour day-of-month month day-of-week",
                    ));
                }
                let cron = Cron::from_str(expression).map_err(|e| {
                    ApiError::unprocessable("cron", format!("not a cron expression: {e}"))
                })?;
                let every = Every::Cron(Box::new(cron));
                every.check_spacing()?;
                Ok(every)
            }
            _ => Err(ApiError::unprocessable(
                "every_minutes",
                "give exactly one of every_minutes and cron",
            )),
        }
    }

    /// A cron expression must not run more often than hourly: its next
    /// runs over the coming weeks are at least an hour apart.
    fn check_spacing(&self) -> Result<()> {
        let Every::Cron(cron) = self else {
            return Ok(());
        };
        let mut at = Utc::now();
        let mut previous: Option<DateTime<Utc>> = None;
        for _ in 0..200 {
            let Ok(next) = cron.find_next_occurrence(&at, false) else {
                break;
            };
            if let Some(previous) = previous
                && next - previous < Span::minutes(i64::from(MIN_EVERY_MINUTES))
            {
                return Err(ApiError::unprocessable(
                    "cron",
                    "cron runs more often than hourly; the least interval is an hour",
                ));
            }
            previous = Some(next);
            at = next;
        }
        if previous.is_none() {
            return Err(ApiError::unprocessable("cron", "cron never runs"));
        }
        Ok(())
    }

    /// The first run time after `now`; for an interval, counted in whole
    /// intervals from `from` (runs missed are skipped, not made up).
    fn next_after(&self, from: DateTime<Utc>, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match self {
            Every::Minutes(minutes) => {
                let step = Span::minutes(i64::from(*minutes));
                if from > now {
                    return Some(from);
                }
                let behind = (now - from).num_seconds() / step.num_seconds() + 1;
                Some(from + step * behind as i32)
            }
            // From the whole second: a cron time has no fraction.
            Every::Cron(cron) => cron
                .find_next_occurrence(&now.with_nanosecond(0).unwrap_or(now), false)
                .ok(),
        }
    }
}

#[cfg(feature = "schedules")]
fn check_name(name: &str) -> Result<String> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 200 {
        return Err(ApiError::unprocessable(
            "name",
            "name must be 1 to 200 characters",
        ));
    }
    Ok(name.to_owned())
}

#[cfg(feature = "schedules")]
/// Creates a schedule; any member may (keys need `documents:write`).
pub async fn create(mut access: Access, new: NewSchedule) -> Result<Schedule> {
    let name = check_name(&new.name)?;
    let every = Every::parse(new.every_minutes, new.cron.as_deref())?;
    let options = match new.action {
        Action::Classify => {
            let scheme = new.scheme_id.ok_or_else(|| {
                ApiError::unprocessable("scheme_id", "a classify schedule names its scheme_id")
            })?;
            crate::jobs::classify::load(&mut access, scheme, false).await?;
            if new.include_chunks.is_some() {
                return Err(ApiError::unprocessable(
                    "include_chunks",
                    "include_chunks is for exports",
                ));
            }
            serde_json::json!({ "scheme_id": scheme, "only_new": new.only_new.unwrap_or(true) })
        }
        Action::Export => {
            if new.scheme_id.is_some() || new.only_new.is_some() {
                return Err(ApiError::unprocessable(
                    "scheme_id",
                    "scheme_id and only_new are for classify schedules",
                ));
            }
            serde_json::json!({ "include_chunks": new.include_chunks.unwrap_or(false) })
        }
    };
    let now = Utc::now();
    let next = every
        .next_after(now + every_step(&every), now)
        .ok_or_else(|| ApiError::unprocessable("cron", "cron never runs"))?;
    let schedule: Schedule = sqlx::query_as(concat!(
        "INSERT INTO schedules (workspace_id, id, name, action, options, every_minutes, cron,
                                paused, next_run_at, created_by)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) RETURNING ",
        schedule_columns!()
    ))
    .bind(access.workspace)
    .bind(uuid::Uuid::now_v7())
    .bind(&name)
    .bind(new.action)
    .bind(Json(&options))
    .bind(new.every_minutes)
    .bind(new.cron.as_deref().map(str::trim))
    .bind(new.paused)
    .bind(next)
    .bind(access.caller)
    .fetch_one(&mut *access.tx)
    .await?;
    crate::workspaces::audit(
        &mut access.tx,
        access.workspace,
        access.caller,
        "schedule.created",
        None,
        serde_json::json!({ "schedule_id": schedule.id, "action": new.action }),
    )
    .await?;
    access.commit().await?;
    Ok(schedule)
}

#[cfg(feature = "schedules")]
/// An interval's first run is one interval away; a cron's, its next time.
fn every_step(every: &Every) -> Span {
    match every {
        Every::Minutes(minutes) => Span::minutes(i64::from(*minutes)),
        Every::Cron(_) => Span::zero(),
    }
}

pub async fn list(mut access: Access) -> Result<Vec<Schedule>> {
    let schedules = sqlx::query_as(concat!(
        "SELECT ",
        schedule_columns!(),
        " FROM schedules WHERE workspace_id = $1 ORDER BY created_at, id LIMIT 1000"
    ))
    .bind(access.workspace)
    .fetch_all(&mut *access.tx)
    .await?;
    access.commit().await?;
    Ok(schedules)
}

async fn load(access: &mut Access, id: uuid::Uuid) -> Result<Schedule> {
    let mut schedule: Schedule = sqlx::query_as(concat!(
        "SELECT ",
        schedule_columns!(),
        " FROM schedules WHERE workspace_id = $1 AND id = $2"
    ))
    .bind(access.workspace)
    .bind(id)
    .fetch_optional(&mut *access.tx)
    .await?
    .ok_or_else(|| ApiError::not_found("schedule"))?;
    schedule.runs = Some(
        sqlx::query_as(
            "SELECT id, due_at, started_at, status, job_id, error FROM schedule_runs
             WHERE workspace_id = $1 AND schedule_id = $2 ORDER BY due_at DESC LIMIT $3",
        )
        .bind(access.workspace)
        .bind(id)
        .bind(RUNS_SHOWN)
        .fetch_all(&mut *access.tx)
        .await?,
    );
    Ok(schedule)
}

/// A schedule with its latest runs.
pub async fn get(mut access: Access, id: uuid::Uuid) -> Result<Schedule> {
    let schedule = load(&mut access, id).await?;
    access.commit().await?;
    Ok(schedule)
}

#[cfg(feature = "schedules")]
/// Changes a schedule (its creator or an owner/admin).
pub async fn update(
    mut access: Access,
    id: uuid::Uuid,
    changes: ScheduleChanges,
) -> Result<Schedule> {
    let current = load(&mut access, id).await?;
    access.require(
        current.created_by == Some(access.caller) || access.role.manages_members(),
        "change another member's schedule",
    )?;
    let name = changes.name.as_deref().map(check_name).transpose()?;
    let timing = changes.every_minutes.is_some() || changes.cron.is_some();
    let (every_minutes, cron) = if timing {
        (
            changes.every_minutes,
            changes.cron.map(|c| c.trim().to_owned()),
        )
    } else {
        (current.every_minutes, current.cron.clone())
    };
    let every = Every::parse(every_minutes, cron.as_deref())?;
    let now = Utc::now();
    let resumed = changes.paused == Some(false) && current.paused;
    let next = if timing || resumed {
        every
            .next_after(now + every_step(&every), now)
            .ok_or_else(|| ApiError::unprocessable("cron", "cron never runs"))?
    } else {
        current.next_run_at
    };
    sqlx::query(
        "UPDATE schedules SET name = coalesce($3, name), paused = coalesce($4, paused),
                every_minutes = $5, cron = $6, next_run_at = $7, updated_at = now()
         WHERE workspace_id = $1 AND id = $2",
    )
    .bind(access.workspace)
    .bind(id)
    .bind(name)
    .bind(changes.paused)
    .bind(every_minutes)
    .bind(&cron)
    .bind(next)
    .execute(&mut *access.tx)
    .await?;
    crate::workspaces::audit(
        &mut access.tx,
        access.workspace,
        access.caller,
        "schedule.updated",
        None,
        serde_json::json!({ "schedule_id": id, "paused": changes.paused }),
    )
    .await?;
    let schedule = load(&mut access, id).await?;
    access.commit().await?;
    Ok(schedule)
}

/// Deletes a schedule and its runs (its creator or an owner/admin); the
/// jobs it started stay.
pub async fn delete(mut access: Access, id: uuid::Uuid) -> Result<()> {
    let current = load(&mut access, id).await?;
    access.require(
        current.created_by == Some(access.caller) || access.role.manages_members(),
        "delete another member's schedule",
    )?;
    sqlx::query("DELETE FROM schedules WHERE workspace_id = $1 AND id = $2")
        .bind(access.workspace)
        .bind(id)
        .execute(&mut *access.tx)
        .await?;
    crate::workspaces::audit(
        &mut access.tx,
        access.workspace,
        access.caller,
        "schedule.deleted",
        None,
        serde_json::json!({ "schedule_id": id }),
    )
    .await?;
    access.commit().await
}

/// What one dispatch did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Dispatched {
    /// Runs that started their job.
    pub started: usize,
    /// Runs recorded as failed.
    pub failed: usize,
    /// Stalled jobs whose next step was queued again.
    pub resumed: usize,
}

#[cfg(feature = "schedules")]
/// Starts the due schedules' runs and resumes stalled jobs.
pub async fn dispatch(state: &State) -> Result<Dispatched> {
    let mut done = Dispatched::default();
    let due: Vec<(WorkspaceId, uuid::Uuid, DateTime<Utc>)> =
        sqlx::query_as("SELECT workspace_id, schedule_id, next_run_at FROM due_schedules($1)")
            .bind(DISPATCH_BATCH)
            .fetch_all(&state.db)
            .await?;
    for (workspace, id, due_at) in due {
        match run_due(state, workspace, id, due_at).await {
            Ok(Some(true)) => done.started += 1,
            Ok(Some(false)) => done.failed += 1,
            Ok(None) => {}
            Err(error) => {
                tracing::warn!(schedule = %id, error = format!("{error:#}"), "schedule run failed")
            }
        }
    }
    let stalled: Vec<(WorkspaceId, JobId, i64)> =
        sqlx::query_as("SELECT workspace_id, job_id, next_offset FROM stalled_jobs($1, $2)")
            .bind(STALLED_AFTER)
            .bind(DISPATCH_BATCH)
            .fetch_all(&state.db)
            .await?;
    if !stalled.is_empty() {
        let messages: Vec<String> = stalled
            .iter()
            .map(|(workspace_id, job_id, offset)| {
                crate::ingest::events::JobStep {
                    workspace_id: *workspace_id,
                    job_id: *job_id,
                    offset: *offset,
                }
                .to_message()
            })
            .collect();
        let sent = state.ingest_queue().await?.send_all(&messages).await?;
        done.resumed = sent.iter().filter(|s| **s).count();
        tracing::warn!(jobs = done.resumed, "stalled jobs resumed");
    }
    Ok(done)
}

#[cfg(feature = "schedules")]
/// Claims one due run and starts it. `None`: another dispatch claimed it
/// first (or it was paused or changed meanwhile); `Some(started)`.
async fn run_due(
    state: &State,
    workspace: WorkspaceId,
    id: uuid::Uuid,
    due_at: DateTime<Utc>,
) -> anyhow::Result<Option<bool>> {
    let mut tx = crate::db::tenant_tx(&state.db, None, Some(workspace)).await?;
    type Row = (
        Action,
        Json<Value>,
        Option<i32>,
        Option<String>,
        Option<DateTime<Utc>>,
        Option<UserId>,
    );
    let row: Option<Row> = sqlx::query_as(
        "SELECT action, options, every_minutes, cron, last_run_at, created_by FROM schedules
         WHERE workspace_id = $1 AND id = $2 AND next_run_at = $3 AND NOT paused
         FOR UPDATE SKIP LOCKED",
    )
    .bind(workspace)
    .bind(id)
    .bind(due_at)
    .fetch_optional(&mut *tx)
    .await?;
    let Some((action, options, every_minutes, cron, last_run_at, creator)) = row else {
        return Ok(None);
    };
    let now = Utc::now();
    let next = Every::parse(every_minutes, cron.as_deref())
        .ok()
        .and_then(|every| every.next_after(due_at, now))
        // A schedule whose cron never runs again waits a year.
        .unwrap_or(now + Span::days(365));
    sqlx::query(
        "UPDATE schedules SET next_run_at = $3, last_run_at = $4, updated_at = now()
         WHERE workspace_id = $1 AND id = $2",
    )
    .bind(workspace)
    .bind(id)
    .bind(next)
    .bind(now)
    .execute(&mut *tx)
    .await?;
    let run_id = uuid::Uuid::now_v7();
    sqlx::query(
        "INSERT INTO schedule_runs (workspace_id, schedule_id, id, due_at, status)
         VALUES ($1, $2, $3, $4, 'pending')",
    )
    .bind(workspace)
    .bind(id)
    .bind(run_id)
    .bind(due_at)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;

    let started = start(state, workspace, action, &options.0, last_run_at, creator).await;
    let (status, job, error) = match &started {
        Ok(job) => ("started", Some(*job), None),
        Err(error) => ("failed", None, Some(error.to_string())),
    };
    let mut tx = crate::db::tenant_tx(&state.db, None, Some(workspace)).await?;
    sqlx::query(
        "UPDATE schedule_runs SET status = $4, job_id = $5, error = $6
         WHERE workspace_id = $1 AND schedule_id = $2 AND id = $3",
    )
    .bind(workspace)
    .bind(id)
    .bind(run_id)
    .bind(status)
    .bind(job)
    .bind(error)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Some(started.is_ok()))
}

#[cfg(feature = "schedules")]
/// Starts a run's job as the schedule's creator, who must still be a
/// member.
async fn start(
    state: &State,
    workspace: WorkspaceId,
    action: Action,
    options: &Value,
    last_run_at: Option<DateTime<Utc>>,
    creator: Option<UserId>,
) -> Result<JobId> {
    let gone =
        || ApiError::Conflict("the member who made the schedule has left the workspace".into());
    let creator = creator.ok_or_else(gone)?;
    let access = match Access::open(&state.db, Caller::member(creator), workspace).await {
        Ok(access) => access,
        Err(ApiError::NotFound(_)) => return Err(gone()),
        Err(other) => return Err(other),
    };
    let job = match action {
        Action::Classify => {
            let scheme: SchemeId = serde_json::from_value(options["scheme_id"].clone())
                .map_err(|e| anyhow::anyhow!("a classify schedule's scheme_id: {e}"))?;
            let only_new = options["only_new"].as_bool().unwrap_or(true);
            let run = crate::jobs::classify::NewRun {
                created_after: if only_new { last_run_at } else { None },
                ..Default::default()
            };
            crate::jobs::classify::start(state, access, scheme, run).await?
        }
        Action::Export => {
            let new = crate::jobs::NewExport {
                include_chunks: options["include_chunks"].as_bool().unwrap_or(false),
            };
            crate::jobs::start_export(state, access, new).await?
        }
    };
    Ok(job.id)
}

#[cfg(feature = "schedules")]
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals_skip_missed_runs_and_crons_must_be_hourly_at_most() {
        let from = Utc::now() - Span::minutes(150);
        let every = Every::parse(Some(60), None).unwrap();
        let now = Utc::now();
        let next = every.next_after(from, now).unwrap();
        assert_eq!(
            next,
            from + Span::minutes(180),
            "the next whole hour from `from`"
        );
        assert!(Every::parse(Some(59), None).is_err());
        assert!(Every::parse(Some(60), Some("0 * * * *")).is_err());
        assert!(Every::parse(None, None).is_err());
        assert!(Every::parse(None, Some("0 * * * *")).is_ok(), "hourly");
        assert!(Every::parse(None, Some("30 9 * * MON-FRI")).is_ok());
        assert!(
            Every::parse(None, Some("*/30 * * * *")).is_err(),
            "twice an hour"
        );
        assert!(Every::parse(None, Some("0 9 * *")).is_err(), "four fields");
        assert!(
            Every::parse(None, Some("0 25 * * *")).is_err(),
            "no hour 25"
        );
        let long = format!("0 {} * * *", vec!["1"; 120].join(","));
        assert!(
            Every::parse(None, Some(&long)).is_err(),
            "longer than the column"
        );
        let cron = Every::parse(None, Some("0 6 * * *")).unwrap();
        let next = cron.next_after(from, now).unwrap();
        assert!(next > now && next - now <= Span::days(1));
        assert_eq!(next.format("%H:%M:%S%.f").to_string(), "06:00:00");
    }
}
