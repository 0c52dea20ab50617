//! The database's migrations as a function (`database-migrate`):
//! CloudFormation runs it on every deploy through a custom resource, and
//! anyone may run it by hand (`aws lambda invoke`, any event without a
//! `ResponseURL`). The work is `common::migrate`'s, the same as the
//! `ragway-migrate` tool's; this crate reads the settings (the database
//! variables alone, not the app's whole configuration) and answers.
//!
//! CloudFormation is always answered, before the invocation's deadline:
//! the migration gets the invocation's time less [`REPLY_RESERVE`], and
//! an error, a panic or running out of that time is a `FAILED` whose
//! reason says what failed (or what was under way), so a failed migration
//! fails the deploy at once instead of leaving it waiting for an hour.
//! `Delete` touches nothing: the data outlives the stack's resource.

use std::any::Any;
use std::collections::{BTreeMap, HashMap};
use std::panic::AssertUnwindSafe;
use std::time::{Duration, Instant};

use aws_lambda_events::event::cloudformation::{
    CloudFormationCustomResourceRequest as Request, CloudFormationCustomResourceResponse,
    CloudFormationCustomResourceResponseStatus as Status,
};
use common::lambda::Function;
use common::migrate::{Progress, RoleChange, Settings, Summary};
use futures::FutureExt;
use serde_json::Value;

pub const FUNCTIONS: &[Function] = &[common::raw_function!("database-migrate", migrate)];

/// Time kept from the migration to answer CloudFormation (a few tries of
/// the PUT).
pub const REPLY_RESERVE: Duration = Duration::from_secs(15);

/// The migration's bound when the invocation has no deadline (a direct
/// call, not through Lambda): Lambda's longest timeout.
const UNBOUNDED: Duration = Duration::from_secs(15 * 60);

/// The resource's PhysicalResourceId. Stable: were an Update to answer
/// another, CloudFormation would then delete the "old" resource.
pub const PHYSICAL_RESOURCE_ID: &str = "ragway-database-migrations";

/// CloudFormation's limit on a response document.
const MAX_RESPONSE_BYTES: usize = 4096;

/// Tries of the response PUT, and the longest wait for one.
const PUT_ATTEMPTS: u32 = 4;
const PUT_TIMEOUT: Duration = Duration::from_secs(10);

/// `database-migrate`, with the process environment.
pub async fn migrate(event: Value) -> anyhow::Result<Value> {
    handle(event, std::env::vars().collect()).await
}

/// Answers `event` with the settings of `env` (the environment the
/// template gives: `DATABASE_URL` or `DATABASE_URL_SECRET_ARN`,
/// optionally `DATABASE_ADMIN_URL` or its `_SECRET_ARN`, `DATABASE_HOST`,
/// `DATABASE_PORT`, `DATABASE_NAME`, `DATABASE_SSLMODE`,
/// `EMBEDDING_DIMENSIONS`, `HNSW_EF_CONSTRUCTION`, `AWS_ENDPOINT_URL`).
/// A custom-resource request (it has a `ResponseURL`) is answered there,
/// and its response document returned; any other event runs the migration
/// and returns its [`Summary`], or fails with the cause chain.
pub async fn handle(event: Value, env: HashMap<String, String>) -> anyhow::Result<Value> {
    if event.get("ResponseURL").is_some() {
        return custom_resource(event, env).await;
    }
    let summary = run(env).await.map_err(anyhow::Error::msg)?;
    Ok(serde_json::to_value(summary)?)
}

/// Runs the migration within the invocation's time less
/// [`REPLY_RESERVE`]; the error is the readable reason, passwords removed.
async fn run(env: HashMap<String, String>) -> Result<Summary, String> {
    let budget = common::lambda::remaining_time()
        .map_or(UNBOUNDED, |left| left.saturating_sub(REPLY_RESERVE));
    let deadline = Instant::now() + budget;
    let progress = Progress::default();
    let settings = bounded(deadline, budget, &progress, async {
        progress.step("reading the database settings and secrets");
        Settings::load(env).await
    })
    .await;
    let outcome = match settings {
        Ok(settings) => bounded(
            deadline,
            budget,
            &progress,
            common::migrate::run(&settings, &progress),
        )
        .await
        .map_err(|reason| settings.redact(&reason)),
        Err(reason) => Err(reason),
    };
    match &outcome {
        Ok(summary) => tracing::info!(summary = %summary.describe(), "migrated"),
        Err(reason) => tracing::error!(reason = %reason, "migration failed"),
    }
    outcome
}

/// `work`, unless it fails, panics or outlives `deadline`: then why.
async fn bounded<T>(
    deadline: Instant,
    budget: Duration,
    progress: &Progress,
    work: impl Future<Output = anyhow::Result<T>>,
) -> Result<T, String> {
    let deadline = tokio::time::Instant::from_std(deadline);
    match tokio::time::timeout_at(deadline, AssertUnwindSafe(work).catch_unwind()).await {
        Ok(Ok(Ok(value))) => Ok(value),
        Ok(Ok(Err(e))) => Err(common::migrate::cause_chain(&e)),
        Ok(Err(panic)) => Err(format!(
            "panicked while {}: {}",
            progress.current(),
            panic_message(&*panic)
        )),
        Err(_) => Err(format!(
            "out of time after {} s (the invocation's time less {} s to answer) while {}",
            budget.as_secs(),
            REPLY_RESERVE.as_secs(),
            progress.current()
        )),
    }
}

fn panic_message(panic: &(dyn Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".to_owned())
}

/// Who the response is for: the request's identifiers.
struct Addressee {
    response_url: String,
    stack_id: String,
    request_id: String,
    logical_resource_id: String,
    physical_resource_id: String,
}

impl Addressee {
    fn of(request: &Request) -> Option<Self> {
        let (response_url, stack_id, request_id, logical_resource_id, physical_resource_id) =
            match request {
                Request::Create(r) => (
                    &r.response_url,
                    &r.stack_id,
                    &r.request_id,
                    &r.logical_resource_id,
                    PHYSICAL_RESOURCE_ID,
                ),
                Request::Update(r) => (
                    &r.response_url,
                    &r.stack_id,
                    &r.request_id,
                    &r.logical_resource_id,
                    r.physical_resource_id.as_str(),
                ),
                Request::Delete(r) => (
                    &r.response_url,
                    &r.stack_id,
                    &r.request_id,
                    &r.logical_resource_id,
                    r.physical_resource_id.as_str(),
                ),
                _ => return None,
            };
        Some(Self {
            response_url: response_url.clone(),
            stack_id: stack_id.clone(),
            request_id: request_id.clone(),
            logical_resource_id: logical_resource_id.clone(),
            physical_resource_id: physical_resource_id.to_owned(),
        })
    }

    /// From a request that did not parse: whatever identifiers it has.
    fn of_raw(event: &Value) -> Self {
        let field = |name: &str| event[name].as_str().unwrap_or_default().to_owned();
        let physical = field("PhysicalResourceId");
        Self {
            response_url: field("ResponseURL"),
            stack_id: field("StackId"),
            request_id: field("RequestId"),
            logical_resource_id: field("LogicalResourceId"),
            physical_resource_id: if physical.is_empty() {
                PHYSICAL_RESOURCE_ID.to_owned()
            } else {
                physical
            },
        }
    }
}

async fn custom_resource(event: Value, env: HashMap<String, String>) -> anyhow::Result<Value> {
    // Lambda's own deadline: the answer's tries stop before it.
    let cut_off = common::lambda::remaining_time().map(|left| Instant::now() + left);
    let log_stream = env.get("AWS_LAMBDA_LOG_STREAM_NAME").cloned();
    let request = serde_json::from_value::<Request>(event.clone());
    let addressee = request.as_ref().ok().and_then(Addressee::of);
    let (addressee, outcome) = match (request, addressee) {
        (Ok(Request::Create(_) | Request::Update(_)), Some(addressee)) => {
            (addressee, run(env).await.map(Some))
        }
        (Ok(Request::Delete(_)), Some(addressee)) => {
            tracing::info!("Delete: nothing to do, the database and its data stay");
            (addressee, Ok(None))
        }
        (Ok(_), _) => (
            Addressee::of_raw(&event),
            Err(format!("unknown RequestType {}", event["RequestType"])),
        ),
        (Err(e), _) => (
            Addressee::of_raw(&event),
            Err(format!("not a custom-resource request: {e}")),
        ),
    };
    let response = response(&addressee, outcome, log_stream.as_deref());
    let body = serde_json::to_string(&response)?;
    put(&addressee.response_url, body, cut_off).await?;
    Ok(serde_json::to_value(&response)?)
}

/// The response document, within [`MAX_RESPONSE_BYTES`].
fn response(
    to: &Addressee,
    outcome: Result<Option<Summary>, String>,
    log_stream: Option<&str>,
) -> CloudFormationCustomResourceResponse {
    let mut response = CloudFormationCustomResourceResponse::default();
    response.physical_resource_id = to.physical_resource_id.clone();
    response.stack_id = to.stack_id.clone();
    response.request_id = to.request_id.clone();
    response.logical_resource_id = to.logical_resource_id.clone();
    let reason = match outcome {
        Ok(Some(summary)) => {
            response.status = Status::Success;
            response.data = data(&summary);
            summary.describe()
        }
        Ok(None) => {
            response.status = Status::Success;
            "nothing to do: the database and its data outlive this resource".to_owned()
        }
        Err(reason) => {
            response.status = Status::Failed;
            match log_stream {
                Some(stream) => format!("migration failed: {reason} (log stream {stream})"),
                None => format!("migration failed: {reason}"),
            }
        }
    };
    response.reason = Some(reason);
    fit(&mut response);
    response
}

/// `Fn::GetAtt`-able values: strings.
fn data(summary: &Summary) -> HashMap<String, String> {
    let mut data = BTreeMap::from([
        ("MigrationsApplied", summary.migrations_applied.to_string()),
        ("MigrationsTotal", summary.migrations_total.to_string()),
        ("VectorIndex", summary.vector_index.clone()),
    ]);
    if let Some(latest) = summary.latest_migration {
        data.insert("LatestMigration", latest.to_string());
    }
    if let Some(admin) = &summary.admin {
        data.insert("AppRole", admin.app_role.clone());
        data.insert(
            "AppRoleChange",
            match admin.role {
                RoleChange::Created => "created",
                RoleChange::Updated => "updated",
            }
            .to_owned(),
        );
    }
    data.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
}

/// Shortens the reason until the document fits CloudFormation's limit.
fn fit(response: &mut CloudFormationCustomResourceResponse) {
    const MARK: &str = " [...]";
    loop {
        let size = serde_json::to_string(&*response).map_or(0, |s| s.len());
        let Some(reason) = response.reason.as_mut() else {
            return;
        };
        if size <= MAX_RESPONSE_BYTES || reason.is_empty() {
            return;
        }
        let mut keep = reason
            .len()
            .saturating_sub(size - MAX_RESPONSE_BYTES + MARK.len());
        while !reason.is_char_boundary(keep) {
            keep -= 1;
        }
        reason.truncate(keep);
        reason.push_str(MARK);
        if keep == 0 {
            return;
        }
    }
}

/// PUTs the response to the presigned S3 URL (no content type: it is
/// signed without one), a few times if need be, until `cut_off`.
async fn put(url: &str, body: String, cut_off: Option<Instant>) -> anyhow::Result<()> {
    let client = reqwest::Client::new();
    let mut last = String::new();
    for attempt in 1..=PUT_ATTEMPTS {
        let left = cut_off.map_or(PUT_TIMEOUT, |c| {
            c.saturating_duration_since(Instant::now())
                .saturating_sub(Duration::from_millis(500))
        });
        if left.is_zero() {
            break;
        }
        let sent = client
            .put(url)
            .header(reqwest::header::CONTENT_TYPE, "")
            .body(body.clone())
            .timeout(left.min(PUT_TIMEOUT))
            .send()
            .await;
        match sent {
            Ok(reply) if reply.status().is_success() => {
                tracing::info!(attempt, "answered CloudFormation");
                return Ok(());
            }
            Ok(reply) => last = format!("status {}", reply.status()),
            // Without the URL: its signature lets anyone answer.
            Err(e) => last = format!("{:#}", anyhow::Error::from(e.without_url())),
        }
        tracing::warn!(attempt, error = %last, "answering CloudFormation failed");
        if attempt < PUT_ATTEMPTS {
            tokio::time::sleep(Duration::from_millis(500 << (attempt - 1))).await;
        }
    }
    anyhow::bail!("could not answer CloudFormation: {last}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addressee() -> Addressee {
        Addressee {
            response_url: "http://127.0.0.1:9/".into(),
            stack_id: "arn:aws:cloudformation:us-east-1:123456789012:stack/s/1".into(),
            request_id: "r".into(),
            logical_resource_id: "DatabaseMigrations".into(),
            physical_resource_id: PHYSICAL_RESOURCE_ID.into(),
        }
    }

    #[test]
    fn a_long_reason_is_cut_to_cloudformations_limit() {
        let reason = "é".repeat(5000);
        let response = response(&addressee(), Err(reason), Some("2026/11/23/[$LATEST]abc"));
        let text = serde_json::to_string(&response).unwrap();
        assert!(text.len() <= MAX_RESPONSE_BYTES, "{}", text.len());
        assert!(text.len() > MAX_RESPONSE_BYTES - 100, "{}", text.len());
        let value: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(value["Status"], "FAILED");
        assert!(
            value["Reason"]
                .as_str()
                .unwrap()
                .starts_with("migration failed: éé")
        );
    }

    #[tokio::test]
    async fn a_panic_or_the_deadline_is_a_reason_naming_the_step() {
        let progress = Progress::default();
        progress.step("applying migration 7 (requeue)");
        let soon = Instant::now() + Duration::from_secs(5);
        let panicked: Result<(), String> =
            bounded(soon, Duration::from_secs(5), &progress, async {
                panic!("index out of bounds")
            })
            .await;
        assert_eq!(
            panicked.unwrap_err(),
            "panicked while applying migration 7 (requeue): index out of bounds"
        );
        let now = Instant::now();
        let hung: Result<(), String> = bounded(now, Duration::ZERO, &progress, async {
            futures::future::pending::<()>().await;
            Ok(())
        })
        .await;
        assert!(
            hung.unwrap_err().starts_with("out of time after 0 s")
                && now.elapsed() < Duration::from_secs(1)
        );
    }

    #[test]
    fn delete_succeeds_with_the_same_physical_id() {
        let response = response(&addressee(), Ok(None), None);
        let value = serde_json::to_value(&response).unwrap();
        assert_eq!(value["Status"], "SUCCESS");
        assert_eq!(value["PhysicalResourceId"], PHYSICAL_RESOURCE_ID);
        assert_eq!(value["LogicalResourceId"], "DatabaseMigrations");
    }
}
