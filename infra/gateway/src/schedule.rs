//! Runs scheduled functions on a timer, like EventBridge Scheduler would.

use std::sync::Arc;
use std::time::Duration;

use common::lambda::ScheduleHandler;
use common::state::State;
use serde_json::{Value, json};

/// A scheduled function, its period and its function's `Timeout`.
#[derive(Clone)]
pub struct Schedule {
    pub binary: String,
    pub every: Duration,
    pub timeout: Option<Duration>,
    pub handler: ScheduleHandler,
}

/// `rate(5 minutes)` → 300 s. Cron expressions are not run locally.
pub fn parse_rate(expression: &str) -> Option<Duration> {
    let inner = expression.trim().strip_prefix("rate(")?.strip_suffix(')')?;
    let (value, unit) = inner.trim().split_once(' ')?;
    let value: u64 = value.parse().ok().filter(|v| *v > 0)?;
    let seconds = match unit.trim() {
        "minute" | "minutes" => 60,
        "hour" | "hours" => 3600,
        "day" | "days" => 86_400,
        _ => return None,
    };
    Some(Duration::from_secs(value * seconds))
}

/// The event EventBridge sends a scheduled target.
pub fn scheduled_event(binary: &str, region: &str) -> Value {
    json!({
        "version": "0",
        "id": uuid::Uuid::new_v4().to_string(),
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "account": "000000000000",
        "time": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        "region": region,
        "resources": [format!("arn:aws:events:{region}:000000000000:rule/{binary}")],
        "detail": {},
    })
}

/// Invokes the schedule's handler every period (first after one period), forever.
pub async fn run(state: Arc<State>, schedule: Schedule) {
    let mut timer =
        tokio::time::interval_at(tokio::time::Instant::now() + schedule.every, schedule.every);
    timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        timer.tick().await;
        let event = scheduled_event(&schedule.binary, &state.config.aws_region);
        let run = (schedule.handler)(&state, event);
        // As Lambda would: the handler sees its deadline through
        // `common::lambda::remaining_time` (not enforced here).
        let run = match schedule.timeout {
            Some(timeout) => {
                let deadline = std::time::Instant::now() + timeout;
                common::lambda::with_deadline(deadline, run).await
            }
            None => run.await,
        };
        match run {
            Ok(()) => tracing::info!(function = %schedule.binary, "scheduled run"),
            Err(e) => {
                tracing::warn!(function = %schedule.binary, error = %e.chain(), "scheduled run failed")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_parse_and_everything_else_does_not() {
        assert_eq!(parse_rate("rate(1 minute)"), Some(Duration::from_secs(60)));
        assert_eq!(
            parse_rate("rate(5 minutes)"),
            Some(Duration::from_secs(300))
        );
        assert_eq!(parse_rate("rate(2 hours)"), Some(Duration::from_secs(7200)));
        for bad in [
            "rate(0 minutes)",
            "rate(5 fortnights)",
            "cron(0 12 * * ? *)",
            "rate()",
            "5 minutes",
        ] {
            assert_eq!(parse_rate(bad), None, "{bad}");
        }
    }
}
