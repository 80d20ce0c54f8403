//! Files the server re-reads when they change (tokens, JWKS, TLS certificates): a background
//! task checks them every few seconds, off the async workers, until shutdown. A file that no
//! longer parses keeps the last good version in use and is reported in the log.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::error::Result;

/// What identifies one version of a watched file on disk (modified time and length); `None`
/// while it cannot be read.
pub(crate) type Stamp = Option<(std::time::SystemTime, u64)>;

pub(crate) fn file_stamp(path: &std::path::Path) -> Stamp {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

/// How often watched files are checked.
pub(crate) const RELOAD_INTERVAL: Duration = Duration::from_secs(1);

/// Calls `reload` every `interval` in a blocking task; it returns whether it installed a
/// new version.
pub(crate) fn spawn_reloader<F>(
    what: &'static str,
    interval: Duration,
    shutdown: CancellationToken,
    reload: F,
) where
    F: Fn() -> Result<bool> + Send + Sync + 'static,
{
    let reload = Arc::new(reload);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            let reload = Arc::clone(&reload);
            match tokio::task::spawn_blocking(move || reload()).await {
                Ok(Ok(true)) => tracing::info!(what, "reloaded"),
                Ok(Ok(false)) => {}
                Ok(Err(error)) => {
                    tracing::error!(what, %error, "reload failed; keeping the last good version")
                }
                Err(error) => tracing::error!(what, %error, "reload task failed"),
            }
        }
    });
}
