//! Shared test setup: config with test keys, state over a per-test
//! database, a gateway on an ephemeral port, and a small API client.
#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::Arc;

use common::config::Config;
use common::state::State;
use ragway_gateway::{Gateway, registry, template};
use serde_json::{Value, json};
use sqlx::PgPool;

pub mod uploads;

pub const ISSUER: &str = "http://ragway.test";
pub const KID: &str = "test-key-1";
pub const PREVIOUS_KID: &str = "test-key-0";
pub const MAIL_FROM: &str = "invitations@ragway.test";

pub fn fixture(name: &str) -> String {
    std::fs::read_to_string(format!(
        "{}/tests/fixtures/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

/// A real local server's setting that `infra/test.sh` exports (e.g.
/// `RAGWAY_TEST_CHAT_BASE_URL`); unset or empty, `test` says on stderr,
/// past the harness's capture, that it skips and (`start`) how to run it.
pub fn real_server(name: &str, test: &str, start: &str) -> Option<String> {
    use std::io::Write as _;
    let value = std::env::var(name).ok().filter(|v| !v.trim().is_empty());
    if value.is_none() {
        let _ = writeln!(
            std::io::stderr().lock(),
            "{test}: SKIPPED: {name} is not set, so no local server runs ({start})"
        );
    }
    value
}

/// The real local chat model `infra/test.sh` starts (llama.cpp with
/// SmolLM2): its base URL and model name; `None` after `test` says it
/// skips.
pub fn real_chat_model(test: &str) -> Option<(String, String)> {
    let url = real_server(
        "RAGWAY_TEST_CHAT_BASE_URL",
        test,
        "`infra/stack/llm.sh up` and load its env file",
    )?;
    let model = std::env::var("RAGWAY_TEST_CHAT_MODEL")
        .ok()
        .filter(|v| !v.trim().is_empty())
        .unwrap_or_else(|| "smollm2-135m-instruct".into());
    Some((url, model))
}

pub fn repo_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Test configuration: fixture keys, generous rate limits unless overridden,
/// AWS settings from the test stack's environment.
pub fn config(overrides: &[(&str, &str)]) -> Config {
    let mut vars: HashMap<String, String> = HashMap::new();
    for key in [
        "AWS_ENDPOINT_URL",
        "AWS_REGION",
        "BUCKET_NAME",
        "INGEST_QUEUE_URL",
    ] {
        if let Ok(v) = std::env::var(key) {
            vars.insert(key.into(), v);
        }
    }
    vars.insert(
        "DATABASE_URL".into(),
        "postgres://unused@localhost/unused".into(),
    );
    vars.insert("JWT_ISSUER".into(), ISSUER.into());
    vars.insert("JWT_KEY_ID".into(), KID.into());
    vars.insert("JWT_SIGNING_KEY".into(), fixture("test-ed25519.pem"));
    vars.insert(
        "JWT_PREVIOUS_KEYS".into(),
        json!([{ "kid": PREVIOUS_KID, "public_key": fixture("test-ed25519-previous.pub.pem") }])
            .to_string(),
    );
    vars.insert("AUTH_RATE_LIMIT_PER_IP".into(), "1000".into());
    vars.insert("AUTH_RATE_LIMIT_PAIR_FAILURES".into(), "1000".into());
    vars.insert("AUTH_RATE_LIMIT_SOURCE_FAILURES".into(), "1000".into());
    vars.insert("AUTH_RATE_LIMIT_ACCOUNT_FAILURES".into(), "1000".into());
    vars.insert("MAX_REQUEST_BYTES".into(), "65536".into());
    vars.insert(
        "API_KEY_PEPPER".into(),
        "test-api-key-pepper-of-at-least-32-chars".into(),
    );
    // Invitations go through the test stack's SES (moto), where
    // `mailed_token` reads them back; `gateway` verifies the sender.
    vars.insert("MAIL_PROVIDER".into(), "ses".into());
    vars.insert("MAIL_FROM".into(), MAIL_FROM.into());
    // The worker runs in the test binary, which cannot serve as the
    // extraction child: the gateway binary does.
    vars.insert(
        "EXTRACTOR_PATH".into(),
        env!("CARGO_BIN_EXE_ragway-gateway").into(),
    );
    for (k, v) in overrides {
        vars.insert((*k).into(), (*v).into());
    }
    Config::from_map(&vars).expect("test config is valid")
}

/// State over the test's own database. Not leaked: sqlx::test's per-test
/// pool borrows connection slots from a shared parent pool until dropped.
pub fn state(pool: PgPool, config: Config) -> Arc<State> {
    Arc::new(State::with_pool(config, pool).expect("state"))
}

/// A fresh queue `t-{name}-{suffix}` (redelivery at once: visibility 0)
/// for one test; returns its URL.
pub async fn test_queue(state: &State, name: &str, suffix: &str) -> String {
    state
        .sqs()
        .await
        .create_queue()
        .queue_name(format!("t-{name}-{suffix}"))
        .attributes(
            aws_sdk_sqs::types::QueueAttributeName::VisibilityTimeout,
            "0",
        )
        .send()
        .await
        .unwrap()
        .queue_url()
        .unwrap()
        .to_owned()
}

/// Runs the ingest worker over whatever `queue` holds until it is empty
/// (at most 50 polls); the totals of every poll.
pub async fn drain(state: &State, queue: &str) -> ragway_gateway::sqs::PollOutcome {
    let mut total = ragway_gateway::sqs::PollOutcome::default();
    for _ in 0..50 {
        let outcome = ragway_gateway::sqs::poll_once(
            state,
            queue,
            ingest_worker(),
            10,
            std::time::Duration::from_millis(300),
        )
        .await
        .unwrap();
        if outcome.received == 0 {
            break;
        }
        total.received += outcome.received;
        total.deleted += outcome.deleted;
        total.failed += outcome.failed;
    }
    total
}

/// The ingest worker's SQS handler, as the registry holds it.
pub fn ingest_worker() -> common::lambda::SqsHandler {
    let function = registry()
        .into_iter()
        .find(|f| f.name == "ingest-worker")
        .unwrap();
    match function.handler {
        common::lambda::Handler::Sqs(handler) => handler,
        _ => panic!("ingest-worker is not an SQS function"),
    }
}

/// Starts the gateway on 127.0.0.1 (ephemeral port) serving template.yaml's routes.
pub async fn gateway(state: Arc<State>) -> Api {
    verify_sender().await;
    let functions = template::load(&repo_root().join("template.yaml")).unwrap();
    let mut gateway = Gateway::from_template(&functions, &registry()).unwrap();
    gateway.cors = template::load_cors(&repo_root().join("template.yaml")).unwrap();
    let gateway = Arc::new(gateway);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(gateway.serve(state, listener));
    Api {
        base,
        http: reqwest::Client::new(),
    }
}

pub struct Api {
    pub base: String,
    pub http: reqwest::Client,
}

/// A response, read whole.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
}

impl Reply {
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    }

    pub fn content_type(&self) -> &str {
        self.headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    }

    /// Asserts a problem+json answer with this status and returns its body.
    pub fn problem(&self, status: u16) -> &Value {
        assert_eq!(self.status, status, "unexpected status, body {}", self.body);
        assert_eq!(
            self.content_type(),
            "application/problem+json",
            "body {}",
            self.body
        );
        assert_eq!(self.body["status"], status);
        assert!(
            self.body["type"].is_string()
                && self.body["title"].is_string()
                && self.body["detail"].is_string()
        );
        &self.body
    }
}

impl Api {
    pub async fn send(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Reply {
        self.send_with(method, path, token, body, &[]).await
    }

    /// `send` with extra request headers (conditional requests).
    pub async fn send_with(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
        headers: &[(&str, &str)],
    ) -> Reply {
        let mut request = self
            .http
            .request(method.parse().unwrap(), format!("{}{}", self.base, path));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        read(request.send().await.unwrap()).await
    }

    pub async fn raw(&self, method: &str, path: &str, content_type: &str, body: Vec<u8>) -> Reply {
        let response = self
            .http
            .request(method.parse().unwrap(), format!("{}{}", self.base, path))
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .unwrap();
        read(response).await
    }

    /// Signs up `email` and returns (access token, refresh token, user id).
    pub async fn signup(&self, email: &str) -> (String, String, String) {
        let reply = self
            .send(
                "POST",
                "/auth/signup",
                None,
                Some(json!({ "email": email, "password": "correct horse battery" })),
            )
            .await;
        assert_eq!(reply.status, 201, "{}", reply.body);
        let access = reply.body["access_token"].as_str().unwrap().to_owned();
        let refresh = reply.body["refresh_token"].as_str().unwrap().to_owned();
        let me = self.send("GET", "/auth/me", Some(&access), None).await;
        assert_eq!(me.status, 200, "{}", me.body);
        (access, refresh, me.body["id"].as_str().unwrap().to_owned())
    }

    pub async fn create_workspace(&self, token: &str, name: &str) -> String {
        let reply = self
            .send(
                "POST",
                "/workspaces",
                Some(token),
                Some(json!({ "name": name })),
            )
            .await;
        assert_eq!(reply.status, 201, "{}", reply.body);
        reply.body["id"].as_str().unwrap().to_owned()
    }
}

async fn read(response: reqwest::Response) -> Reply {
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let bytes = response.bytes().await.unwrap();
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()))
    };
    Reply {
        status,
        headers,
        body,
    }
}

/// Stores `value` as a new secret `t-{name}-{uuid}` in the test stack's
/// Secrets Manager (moto); returns its ARN.
pub async fn put_secret(name: &str, value: &str) -> String {
    aws_sdk_secretsmanager::Client::new(&test_aws().await)
        .create_secret()
        .name(format!("t-{name}-{}", uuid::Uuid::new_v4()))
        .secret_string(value)
        .send()
        .await
        .unwrap()
        .arn()
        .unwrap()
        .to_owned()
}

async fn test_aws() -> aws_config::SdkConfig {
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(std::env::var("AWS_ENDPOINT_URL").expect("load the test stack's env"))
        .load()
        .await
}

/// Makes `MAIL_FROM` a verified SES identity in the test stack (SES
/// refuses mail from any other); once per test process.
pub async fn verify_sender() {
    static VERIFIED: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();
    VERIFIED
        .get_or_init(|| async {
            let ses = aws_sdk_sesv2::Client::new(&test_aws().await);
            // Already there from another test process: fine.
            let _ = ses
                .create_email_identity()
                .email_identity(MAIL_FROM)
                .send()
                .await;
        })
        .await;
}

/// The emails the test stack's SES accepted (moto keeps them), as
/// (recipient, subject, text).
pub async fn sent_emails() -> Vec<(String, String, String)> {
    let url = format!(
        "{}/moto-api/data.json",
        std::env::var("AWS_ENDPOINT_URL").expect("load the test stack's env")
    );
    let data: Value = reqwest::get(url).await.unwrap().json().await.unwrap();
    let mut sent = Vec::new();
    for message in data["ses"]["Message"].as_array().into_iter().flatten() {
        let text = message["body"].as_str().unwrap_or_default().to_owned();
        let subject = message["subject"].as_str().unwrap_or_default().to_owned();
        for to in message["destinations"]["ToAddresses"]
            .as_array()
            .into_iter()
            .flatten()
        {
            sent.push((
                to.as_str().unwrap().to_owned(),
                subject.clone(),
                text.clone(),
            ));
        }
    }
    sent
}

/// The token of invitation `id`, from the email SES was given for it
/// (the last one: renewing an invitation mails a new token).
pub async fn mailed_token(id: &str) -> String {
    sent_emails()
        .await
        .into_iter()
        .rev()
        .find(|(_, _, text)| text.contains(id))
        .and_then(|(_, _, text)| {
            let start = text.find("rwi_")?;
            let token: String = text[start..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '-')
                .collect();
            Some(token)
        })
        .unwrap_or_else(|| panic!("no invitation email for {id}"))
}

impl Api {
    /// `owner` invites `email` into `ws` as `role`; the invitee (signed in
    /// as `invitee`) accepts with the mailed token. Returns the accepted
    /// workspace.
    pub async fn join(
        &self,
        owner: &str,
        ws: &str,
        invitee: &str,
        email: &str,
        role: &str,
    ) -> Value {
        let invited = self
            .send(
                "POST",
                &format!("/workspaces/{ws}/invitations"),
                Some(owner),
                Some(json!({ "email": email, "role": role })),
            )
            .await;
        assert_eq!(invited.status, 201, "{}", invited.body);
        let id = invited.body["id"].as_str().unwrap();
        let token = mailed_token(id).await;
        let accepted = self
            .send(
                "POST",
                &format!("/invitations/{id}/accept"),
                Some(invitee),
                Some(json!({ "token": token })),
            )
            .await;
        assert_eq!(accepted.status, 200, "{}", accepted.body);
        accepted.body
    }
}
