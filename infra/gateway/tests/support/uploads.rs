//! A bucket and an ingest queue of one test's own, wired like the
//! stack's (ObjectCreated under workspaces/ → the queue), a gateway over
//! them, and what the tests of uploads ask of the bucket.

use std::sync::Arc;

use common::state::State;
use serde_json::{Value, json};
use sqlx::PgPool;

use super::{Api, config, gateway, state};

pub struct Uploads {
    pub state: Arc<State>,
    pub api: Api,
    pub queue: String,
    pub bucket: String,
}

/// The bucket, queue and gateway, with `settings` on top of the test
/// configuration.
pub async fn stack(pool: PgPool, settings: &[(&str, &str)]) -> Uploads {
    let probe = state(pool.clone(), config(&[]));
    let suffix = uuid::Uuid::new_v4().simple().to_string()[..12].to_owned();
    let queue = super::test_queue(&probe, "ingest", &suffix).await;
    let bucket = format!("t-uploads-{suffix}");
    let s3 = probe.s3().await;
    s3.create_bucket().bucket(&bucket).send().await.unwrap();
    s3.put_bucket_notification_configuration()
        .bucket(&bucket)
        .notification_configuration(
            aws_sdk_s3::types::NotificationConfiguration::builder()
                .queue_configurations(
                    aws_sdk_s3::types::QueueConfiguration::builder()
                        .queue_arn(format!(
                            "arn:aws:sqs:us-east-1:123456789012:t-ingest-{suffix}"
                        ))
                        .events(aws_sdk_s3::types::Event::S3ObjectCreated)
                        .build()
                        .unwrap(),
                )
                .build(),
        )
        .send()
        .await
        .unwrap();
    // Configuring the notification queues an s3:TestEvent; start empty.
    probe
        .sqs()
        .await
        .purge_queue()
        .queue_url(&queue)
        .send()
        .await
        .unwrap();
    let mut all = vec![
        ("BUCKET_NAME", bucket.as_str()),
        ("INGEST_QUEUE_URL", queue.as_str()),
    ];
    all.extend_from_slice(settings);
    let state = state(pool, config(&all));
    let api = gateway(state.clone()).await;
    Uploads {
        state,
        api,
        queue,
        bucket,
    }
}

impl Uploads {
    /// Asserts that `question` in `workspace` is answered with citations
    /// (retrieval only): what a live neighbour must still get.
    pub async fn assert_cites(&self, workspace: &str, token: &str, question: &str) {
        let reply = self
            .api
            .send(
                "POST",
                &format!("/workspaces/{workspace}/query"),
                Some(token),
                Some(json!({ "question": question, "answer": false })),
            )
            .await;
        assert_eq!(reply.status, 200, "{}", reply.body);
        assert!(!reply.body["citations"].as_array().unwrap().is_empty());
    }

    /// Runs the ingest worker over whatever is queued until it is empty.
    pub async fn drain(&self) -> ragway_gateway::sqs::PollOutcome {
        super::drain(&self.state, &self.queue).await
    }

    /// Asks for an upload of `bytes` as `filename` (text/plain) in
    /// `workspace`: the document's id and the reply's `upload`.
    pub async fn ask(
        &self,
        token: &str,
        workspace: &str,
        filename: &str,
        bytes: &[u8],
    ) -> (String, Value) {
        let reply = self
            .api
            .send(
                "POST",
                &format!("/workspaces/{workspace}/uploads"),
                Some(token),
                Some(json!({ "filename": filename, "content_type": "text/plain", "size": bytes.len() })),
            )
            .await;
        assert_eq!(reply.status, 201, "{}", reply.body);
        let id = reply.body["document_id"].as_str().unwrap().to_owned();
        (id, reply.body["upload"].clone())
    }

    /// The client's half: PUTs `bytes` to the presigned URL with a plain
    /// HTTP client (S3 must take it).
    pub async fn put(upload: &Value, bytes: &[u8]) {
        let mut put = reqwest::Client::new()
            .put(upload["url"].as_str().unwrap())
            .body(bytes.to_vec());
        for (name, value) in upload["headers"].as_object().unwrap() {
            put = put.header(name, value.as_str().unwrap());
        }
        let response = put.send().await.unwrap();
        assert!(
            response.status().is_success(),
            "{:?}",
            response.text().await
        );
    }

    /// Asks for an upload and PUTs it at once; the document's id.
    pub async fn upload(
        &self,
        token: &str,
        workspace: &str,
        filename: &str,
        bytes: &[u8],
    ) -> String {
        let (id, upload) = self.ask(token, workspace, filename, bytes).await;
        Self::put(&upload, bytes).await;
        id
    }

    /// Puts objects straight into the bucket (no notification is handled
    /// unless the queue is drained), 16 at a time.
    pub async fn put_objects(&self, keys: &[String]) {
        use futures::StreamExt;
        let s3 = self.state.s3().await;
        futures::stream::iter(keys)
            .map(|key| async move {
                s3.put_object()
                    .bucket(&self.bucket)
                    .key(key)
                    .body(aws_sdk_s3::primitives::ByteStream::from_static(b"x"))
                    .send()
                    .await
                    .unwrap();
            })
            .buffer_unordered(16)
            .collect::<Vec<()>>()
            .await;
    }

    /// Every key under `prefix`, sorted.
    pub async fn keys(&self, prefix: &str) -> Vec<String> {
        let mut keys = Vec::new();
        let mut pages = self
            .state
            .s3()
            .await
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(prefix)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            for object in page.unwrap().contents() {
                keys.push(object.key().unwrap().to_owned());
            }
        }
        keys.sort();
        keys
    }
}

/// A document's `(status, error)` and its chunk count, read in its
/// workspace's context (the API answers 404 once the workspace is deleted).
pub async fn document_state(
    pool: &PgPool,
    workspace: &str,
    document: &str,
) -> (String, Option<String>, i64) {
    let mut tx = common::db::tenant_tx(pool, None, Some(workspace.parse().unwrap()))
        .await
        .unwrap();
    let (status, error): (String, Option<String>) =
        sqlx::query_as("SELECT status, error FROM documents WHERE id = $1::uuid")
            .bind(document)
            .fetch_one(&mut *tx)
            .await
            .unwrap();
    let (chunks,): (i64,) =
        sqlx::query_as("SELECT count(*) FROM chunks WHERE document_id = $1::uuid")
            .bind(document)
            .fetch_one(&mut *tx)
            .await
            .unwrap();
    tx.commit().await.unwrap();
    (status, error, chunks)
}

/// How many chunks `workspace` has, read in its context.
pub async fn chunk_count(pool: &PgPool, workspace: &str) -> i64 {
    let mut tx = common::db::tenant_tx(pool, None, Some(workspace.parse().unwrap()))
        .await
        .unwrap();
    let (n,): (i64,) = sqlx::query_as("SELECT count(*) FROM chunks WHERE workspace_id = $1::uuid")
        .bind(workspace)
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    n
}
