//! Polls a queue like Lambda's SQS event source mapping: receive a batch,
//! invoke the consumer with a real SQS event, delete every record not listed
//! in `batchItemFailures` (those become visible again and, after
//! maxReceiveCount receives, move to the dead-letter queue).

use std::collections::HashSet;
use std::panic::AssertUnwindSafe;
use std::time::Duration;

use aws_sdk_sqs::types::{DeleteMessageBatchRequestEntry, Message, MessageSystemAttributeName};
use common::aws_lambda_events::sqs::SqsEvent;
use common::lambda::SqsHandler;
use common::state::State;
use futures::FutureExt;
use serde_json::{Map, Value, json};

/// What one poll did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct PollOutcome {
    pub received: usize,
    pub deleted: usize,
    pub failed: usize,
}

/// Receives up to `batch_size` messages and hands them to `handler`. The
/// first receive long-polls `wait`; as a receive returns at most 10, more
/// are received while the batch has room and each receive got all it
/// asked for.
/// (Lambda would wait out the batching window for them; locally a batch
/// goes as soon as the queue has no more.)
pub async fn poll_once(
    state: &State,
    queue_url: &str,
    handler: SqsHandler,
    batch_size: usize,
    wait: Duration,
) -> anyhow::Result<PollOutcome> {
    poll_once_within(state, queue_url, handler, batch_size, wait, None).await
}

/// [`poll_once`], the handler's invocation cut off after `timeout` (the
/// function's `Timeout`) as Lambda's would be: the handler sees its
/// deadline through `common::lambda::remaining_time`.
pub async fn poll_once_within(
    state: &State,
    queue_url: &str,
    handler: SqsHandler,
    batch_size: usize,
    wait: Duration,
    timeout: Option<Duration>,
) -> anyhow::Result<PollOutcome> {
    let sqs = state.sqs().await;
    let batch_size = batch_size.max(1);
    let mut messages: Vec<Message> = Vec::new();
    loop {
        let wait = if messages.is_empty() {
            wait
        } else {
            Duration::ZERO
        };
        let asked = (batch_size - messages.len()).min(10);
        let received = sqs
            .receive_message()
            .queue_url(queue_url)
            .max_number_of_messages(asked as i32)
            .wait_time_seconds(wait.as_secs() as i32)
            .message_system_attribute_names(MessageSystemAttributeName::All)
            .send()
            .await?
            .messages
            .unwrap_or_default();
        // Fewer than asked: the queue has no more at once.
        let drained = received.len() < asked;
        // A queue with no visibility timeout (the tests') hands out the
        // same messages again: only new ones count.
        let before = messages.len();
        for message in received {
            if !messages
                .iter()
                .any(|m| m.message_id() == message.message_id())
            {
                messages.push(message);
            }
        }
        if drained || messages.len() == before || messages.len() >= batch_size {
            break;
        }
    }
    if messages.is_empty() {
        return Ok(PollOutcome::default());
    }
    let region = state.config.aws_region.clone();
    let event_json = json!({ "Records": messages.iter().map(|m| record(m, queue_url, &region)).collect::<Vec<_>>() });
    let event: SqsEvent = serde_json::from_value(event_json)?;
    // As in Lambda, an invocation that panics or outlives its timeout ends
    // without a response: nothing is deleted, and every record comes back
    // after its visibility timeout; the poller and the API live on.
    let invocation = AssertUnwindSafe(handler(state, event)).catch_unwind();
    let ended = match timeout {
        Some(timeout) => {
            let deadline = std::time::Instant::now() + timeout;
            tokio::time::timeout(timeout, common::lambda::with_deadline(deadline, invocation))
                .await
                .map_err(|_| format!("timed out after {} s", timeout.as_secs()))
        }
        None => Ok(invocation.await),
    };
    let response = match ended {
        Ok(Ok(response)) => response,
        Ok(Err(panic)) => return Ok(crashed(messages.len(), &panic_message(&*panic))),
        Err(timed_out) => return Ok(crashed(messages.len(), &timed_out)),
    };
    let failed: HashSet<String> = response
        .batch_item_failures
        .into_iter()
        .map(|f| f.item_identifier)
        .collect();
    let entries: Vec<DeleteMessageBatchRequestEntry> = messages
        .iter()
        .filter(|m| !failed.contains(m.message_id().unwrap_or_default()))
        .enumerate()
        .filter_map(|(i, m)| {
            DeleteMessageBatchRequestEntry::builder()
                .id(format!("m{i}"))
                .receipt_handle(m.receipt_handle().unwrap_or_default())
                .build()
                .ok()
        })
        .collect();
    let deleted = entries.len();
    // DeleteMessageBatch takes at most 10 entries.
    for entries in entries.chunks(10) {
        sqs.delete_message_batch()
            .queue_url(queue_url)
            .set_entries(Some(entries.to_vec()))
            .send()
            .await?;
    }
    Ok(PollOutcome {
        received: messages.len(),
        deleted,
        failed: failed.len(),
    })
}

/// What an invocation that ended without a response came to.
fn crashed(received: usize, why: &str) -> PollOutcome {
    tracing::error!(
        received,
        why,
        "the queue consumer's invocation crashed; its records come back"
    );
    PollOutcome {
        received,
        deleted: 0,
        failed: received,
    }
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic".to_owned())
}

/// Polls forever, logging and backing off on errors.
pub async fn run(
    state: std::sync::Arc<State>,
    queue_url: String,
    handler: SqsHandler,
    batch_size: usize,
    timeout: Option<Duration>,
) {
    loop {
        match poll_once_within(
            &state,
            &queue_url,
            handler,
            batch_size,
            Duration::from_secs(2),
            timeout,
        )
        .await
        {
            Ok(outcome) if outcome.received > 0 => {
                tracing::info!(?outcome, queue = %queue_url, "sqs batch")
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = %e, queue = %queue_url, "sqs poll failed");
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        }
    }
}

/// One record of a Lambda SQS event, in the wire format Lambda uses.
fn record(message: &Message, queue_url: &str, region: &str) -> Value {
    let attributes: Map<String, Value> = message
        .attributes()
        .map(|attrs| {
            attrs
                .iter()
                .map(|(k, v)| (k.as_str().to_owned(), Value::String(v.clone())))
                .collect()
        })
        .unwrap_or_default();
    let queue_name = queue_url.rsplit('/').next().unwrap_or_default();
    let account = queue_url.rsplit('/').nth(1).unwrap_or("000000000000");
    json!({
        "messageId": message.message_id(),
        "receiptHandle": message.receipt_handle(),
        "body": message.body(),
        "attributes": attributes,
        "messageAttributes": {},
        "md5OfBody": message.md5_of_body(),
        "eventSource": "aws:sqs",
        "eventSourceARN": format!("arn:aws:sqs:{region}:{account}:{queue_name}"),
        "awsRegion": region,
    })
}
