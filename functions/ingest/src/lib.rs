//! The ingest queue consumer (S3 ObjectCreated → SQS → this function).

use common::State;
use common::aws_lambda_events::sqs::{SqsBatchResponse, SqsEvent};
use common::lambda::Function;

pub const FUNCTIONS: &[Function] = &[common::sqs_function!("ingest-worker", worker)];

/// Handles one SQS batch; failed records are listed in `batchItemFailures`.
pub async fn worker(state: &State, event: SqsEvent) -> SqsBatchResponse {
    common::ingest::handle_batch(state, event).await
}
