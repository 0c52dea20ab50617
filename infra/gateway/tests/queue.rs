//! The gateway's queue poller against the S3/SQS emulator through the real
//! AWS SDK: an upload's notification is consumed and deleted; a poison
//! message is reported, stays, and after maxReceiveCount lands in the DLQ.

use std::time::Duration;

use aws_sdk_s3::primitives::ByteStream;
use ragway_gateway::sqs;
use sqlx::PgPool;

mod support;
use support::{config, state};

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn uploads_flow_to_the_worker_and_poison_goes_to_the_dlq(pool: PgPool) {
    let state = state(pool, config(&[]));
    let sqs_client = state.sqs().await;
    let s3 = state.s3().await;
    let suffix = uuid::Uuid::new_v4().simple().to_string()[..12].to_owned();

    // A bucket and queues of this test's own, wired like the stack's.
    let dlq = sqs_client
        .create_queue()
        .queue_name(format!("t-dlq-{suffix}"))
        .send()
        .await
        .unwrap();
    let dlq_url = dlq.queue_url().unwrap().to_owned();
    let dlq_arn = sqs_client
        .get_queue_attributes()
        .queue_url(&dlq_url)
        .attribute_names(aws_sdk_sqs::types::QueueAttributeName::QueueArn)
        .send()
        .await
        .unwrap()
        .attributes()
        .unwrap()[&aws_sdk_sqs::types::QueueAttributeName::QueueArn]
        .clone();
    let queue = sqs_client
        .create_queue()
        .queue_name(format!("t-ingest-{suffix}"))
        .attributes(
            aws_sdk_sqs::types::QueueAttributeName::VisibilityTimeout,
            "0",
        )
        .attributes(
            aws_sdk_sqs::types::QueueAttributeName::RedrivePolicy,
            serde_json::json!({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": "2"}).to_string(),
        )
        .send()
        .await
        .unwrap();
    let queue_url = queue.queue_url().unwrap().to_owned();
    let queue_arn = format!("arn:aws:sqs:us-east-1:123456789012:t-ingest-{suffix}");
    let bucket = format!("t-uploads-{suffix}");
    s3.create_bucket().bucket(&bucket).send().await.unwrap();
    s3.put_bucket_notification_configuration()
        .bucket(&bucket)
        .notification_configuration(
            aws_sdk_s3::types::NotificationConfiguration::builder()
                .queue_configurations(
                    aws_sdk_s3::types::QueueConfiguration::builder()
                        .queue_arn(&queue_arn)
                        .events(aws_sdk_s3::types::Event::S3ObjectCreated)
                        .build()
                        .unwrap(),
                )
                .build(),
        )
        .send()
        .await
        .unwrap();

    let handler = support::ingest_worker();
    let wait = Duration::from_secs(1);

    // The notification's test event, then an upload: both consumed and deleted.
    let key = "workspaces/0b4d3c2a-1111-4e5f-8a9b-0c1d2e3f4a5b/documents/5a6b7c8d-3333-4e4f-8a0b-1c2d3e4f5a6b/a report.txt";
    s3.put_object()
        .bucket(&bucket)
        .key(key)
        .body(ByteStream::from_static(b"hello"))
        .send()
        .await
        .unwrap();
    let mut consumed = 0;
    for _ in 0..10 {
        let outcome = sqs::poll_once(&state, &queue_url, handler, 10, wait)
            .await
            .unwrap();
        assert_eq!(outcome.failed, 0);
        assert_eq!(outcome.deleted, outcome.received);
        consumed += outcome.received;
        if consumed >= 2 {
            break;
        }
    }
    assert_eq!(consumed, 2, "test event + object created");

    // A poison message is reported failed, not deleted, and is redriven to the DLQ.
    sqs_client
        .send_message()
        .queue_url(&queue_url)
        .message_body("garbage")
        .send()
        .await
        .unwrap();
    let mut failures = 0;
    for _ in 0..10 {
        let outcome = sqs::poll_once(&state, &queue_url, handler, 10, wait)
            .await
            .unwrap();
        failures += outcome.failed;
        assert_eq!(outcome.deleted, 0);
        if outcome.received == 0 && failures >= 2 {
            break;
        }
    }
    assert_eq!(failures, 2, "received maxReceiveCount times");
    let dead = sqs_client
        .receive_message()
        .queue_url(&dlq_url)
        .wait_time_seconds(1)
        .send()
        .await
        .unwrap();
    let bodies: Vec<_> = dead.messages().iter().filter_map(|m| m.body()).collect();
    assert_eq!(bodies, vec!["garbage"]);
}

/// A consumer that panics or outlives its timeout ends its invocation as
/// in Lambda: nothing is deleted, the records come back, and the poller
/// goes on (the local gateway keeps serving).
#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn a_crashed_or_timed_out_invocation_gives_its_records_back(pool: PgPool) {
    use common::aws_lambda_events::sqs::{SqsBatchResponse, SqsEvent};
    use common::futures::future::BoxFuture;

    fn panics(_: &common::state::State, _: SqsEvent) -> BoxFuture<'_, SqsBatchResponse> {
        Box::pin(async { panic!("the consumer crashed") })
    }
    fn hangs(_: &common::state::State, _: SqsEvent) -> BoxFuture<'_, SqsBatchResponse> {
        Box::pin(async {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            SqsBatchResponse::default()
        })
    }
    fn succeeds(_: &common::state::State, _: SqsEvent) -> BoxFuture<'_, SqsBatchResponse> {
        Box::pin(async { SqsBatchResponse::default() })
    }

    let state = state(pool, config(&[]));
    let suffix = uuid::Uuid::new_v4().simple().to_string()[..12].to_owned();
    let queue = support::test_queue(&state, "crash", &suffix).await;
    let sqs_client = state.sqs().await;
    for body in ["one", "two"] {
        sqs_client
            .send_message()
            .queue_url(&queue)
            .message_body(body)
            .send()
            .await
            .unwrap();
    }
    let poll = |handler: common::lambda::SqsHandler, timeout| {
        let (state, queue) = (state.clone(), queue.clone());
        async move {
            sqs::poll_once_within(
                &state,
                &queue,
                handler,
                10,
                Duration::from_millis(500),
                timeout,
            )
            .await
            .unwrap()
        }
    };
    let crashed = poll(panics, None).await;
    assert_eq!(
        (crashed.received, crashed.deleted, crashed.failed),
        (2, 0, 2)
    );
    let timed_out = poll(hangs, Some(Duration::from_millis(200))).await;
    assert_eq!(
        (timed_out.received, timed_out.deleted),
        (2, 0),
        "{timed_out:?}"
    );
    let handled = poll(succeeds, None).await;
    assert_eq!(
        (handled.received, handled.deleted),
        (2, 2),
        "the records came back"
    );
}
