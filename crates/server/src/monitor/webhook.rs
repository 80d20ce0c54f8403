//! The alert webhook: a scheduled drift check that ends in ALERT is POSTed as JSON to the URL
//! the operator configured (`--alert-webhook`), from a blocking task with retries, so a slow
//! or absent receiver never holds up the checks, let alone a request.

use std::time::Duration;

use quiver_core::monitoring::DriftStatus;
use quiver_core::types::{Micros, format_rfc3339};
use quiver_monitor::{DriftReport, RowStatus};

use super::SubjectRef;

/// Attempts per notification, and the first pause between them (doubled each time).
const ATTEMPTS: u32 = 4;
const FIRST_PAUSE: Duration = Duration::from_millis(500);
const TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone)]
pub(crate) struct Webhook {
    url: String,
}

impl Webhook {
    pub(crate) fn new(url: String) -> Webhook {
        Webhook { url }
    }

    /// POSTs the alert in the background (at most [`ATTEMPTS`] tries; failures are logged).
    pub(crate) fn notify(
        &self,
        subject: &SubjectRef,
        reference: u64,
        current: u64,
        report: &DriftReport,
        at: Micros,
    ) {
        let alerts: Vec<serde_json::Value> = report
            .rows
            .iter()
            .filter(|r| r.status == RowStatus::Scored(DriftStatus::Alert))
            .map(|r| {
                serde_json::json!({
                    "feature": r.feature,
                    "view": r.view,
                    "metric": r.metric.name(),
                    "score": r.score,
                    "threshold": r.alert,
                })
            })
            .collect();
        let body = serde_json::json!({
            "status": "ALERT",
            "kind": subject.kind(),
            "name": subject.name(),
            "checked_at": format_rfc3339(at),
            "reference_profile_id": reference,
            "current_profile_id": current,
            "alerts": alerts,
        })
        .to_string();
        let url = self.url.clone();
        tokio::task::spawn_blocking(move || post(&url, &body));
    }
}

fn post(url: &str, body: &str) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(TIMEOUT))
        .max_redirects(0)
        .build()
        .into();
    let mut pause = FIRST_PAUSE;
    for attempt in 1..=ATTEMPTS {
        let sent = agent
            .post(url)
            .header("content-type", "application/json")
            .send(body);
        match sent {
            Ok(_) => return,
            Err(error) if attempt == ATTEMPTS => {
                tracing::warn!(%error, attempts = ATTEMPTS, "alert webhook not delivered");
            }
            Err(_) => {
                std::thread::sleep(pause);
                pause *= 2;
            }
        }
    }
}
