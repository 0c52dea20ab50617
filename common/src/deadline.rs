//! The deadline of the invocation being handled, for work that must stop
//! in time (the ingest worker, the schedules). Set by [`crate::lambda`]
//! from Lambda's context, and by the local gateway.

use std::time::{Duration, Instant};

tokio::task_local! {
    /// When the invocation being handled is cut off.
    static DEADLINE: Instant;
}

/// Time left before the invocation being handled is cut off: Lambda's
/// deadline for the function's timeout, or what [`with_deadline`] set
/// (the local gateway does so for queue consumers and schedules). `None`
/// outside both.
pub fn remaining_time() -> Option<Duration> {
    DEADLINE
        .try_with(|deadline| deadline.saturating_duration_since(Instant::now()))
        .ok()
}

/// Runs `work` as an invocation cut off at `deadline` ([`remaining_time`]).
pub async fn with_deadline<F: Future>(deadline: Instant, work: F) -> F::Output {
    DEADLINE.scope(deadline, work).await
}
