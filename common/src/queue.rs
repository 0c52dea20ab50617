//! The ingest queue, through one SQS client: what the functions that
//! store documents or run jobs send their work with. The messages
//! themselves are [`crate::ingest::events`].

use aws_sdk_sqs::types::SendMessageBatchRequestEntry;

/// Most messages one SendMessageBatch carries (an SQS limit).
const SQS_BATCH: usize = 10;

/// The ingest queue, through one SQS client. Built by
/// [`State::ingest_queue`](crate::state::State::ingest_queue).
#[derive(Clone, Copy)]
pub struct Queue<'a> {
    sqs: &'a aws_sdk_sqs::Client,
    url: &'a str,
}

fn sqs_error<E: std::error::Error + Send + Sync + 'static>(
    e: aws_sdk_sqs::error::SdkError<E, aws_sdk_sqs::config::http::HttpResponse>,
) -> anyhow::Error {
    anyhow::anyhow!(aws_sdk_sqs::error::DisplayErrorContext(e))
}

impl<'a> Queue<'a> {
    pub fn new(sqs: &'a aws_sdk_sqs::Client, url: &'a str) -> Self {
        Self { sqs, url }
    }

    /// Sends one message (e.g. a document to ingest; it is already stored,
    /// and the caller decides whether a failure fails the request).
    pub async fn send(&self, body: String) -> anyhow::Result<()> {
        self.sqs
            .send_message()
            .queue_url(self.url)
            .message_body(body)
            .send()
            .await
            .map_err(sqs_error)?;
        Ok(())
    }

    /// Whether the queue answers (the health check).
    pub async fn probe(&self) -> anyhow::Result<()> {
        self.sqs
            .get_queue_attributes()
            .queue_url(self.url)
            .attribute_names(aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessages)
            .send()
            .await
            .map(|_| ())
            .map_err(sqs_error)
    }

    /// Sends `bodies` to the ingest queue, ten per SQS call; per body,
    /// whether SQS took it (one it refused is logged). Stops at the first
    /// call that fails.
    pub async fn send_all(&self, bodies: &[String]) -> anyhow::Result<Vec<bool>> {
        let (queue_url, sqs) = (self.url, self.sqs);
        let mut sent = vec![false; bodies.len()];
        for (n, batch) in bodies.chunks(SQS_BATCH).enumerate() {
            let entries = batch
                .iter()
                .enumerate()
                .map(|(i, body)| {
                    SendMessageBatchRequestEntry::builder()
                        .id(i.to_string())
                        .message_body(body)
                        .build()
                })
                .collect::<Result<Vec<_>, _>>()?;
            let answer = sqs
                .send_message_batch()
                .queue_url(queue_url)
                .set_entries(Some(entries))
                .send()
                .await
                .map_err(sqs_error)?;
            for taken in answer.successful() {
                if let Some(slot) = taken
                    .id()
                    .parse::<usize>()
                    .ok()
                    .and_then(|i| sent.get_mut(n * SQS_BATCH + i))
                {
                    *slot = true;
                }
            }
            for refused in answer.failed() {
                tracing::warn!(code = refused.code(), message = ?refused.message(),
                "SQS refused a message for the ingest queue");
            }
        }
        Ok(sent)
    }
}
