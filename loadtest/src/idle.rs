//! `idle`: open N authenticated sessions, hold them, and measure what they cost
//! the gateway processes (RSS before and after, given their PIDs).

use crate::client;
use crate::error::Result;
use crate::rss;
use crate::stats::Errors;
use crate::target::Target;
use chat_shared::domain::Role;
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{watch, Semaphore};

/// What to run.
#[derive(Debug, Clone)]
pub struct IdleOptions {
    /// Sessions to open (one user each, alternately patient and doctor).
    pub connections: usize,
    /// Gateway process ids whose RSS is summed (none: no RSS figures).
    pub pids: Vec<u32>,
    /// Connection attempts in flight at once.
    pub concurrency: usize,
    /// Wait this long after the last connection before reading RSS again.
    pub settle: Duration,
    /// Then keep the sessions open this much longer (counting disconnects).
    pub hold: Duration,
    /// Prefix of the user ids.
    pub prefix: String,
}

/// What was measured.
#[derive(Debug, Clone, Serialize)]
pub struct IdleReport {
    /// Sessions asked for.
    pub requested: usize,
    /// Sessions opened (`hello` received).
    pub opened: u64,
    /// Attempts that failed.
    pub failed: u64,
    /// Sessions that ended while they should have been held.
    pub disconnects: u64,
    /// Seconds from the first attempt to the last one finishing.
    pub connect_seconds: f64,
    /// Sessions opened per second.
    pub connects_per_second: f64,
    /// Summed RSS of the PIDs before connecting, bytes.
    pub rss_before_bytes: Option<u64>,
    /// Summed RSS after all sessions were open and settled, bytes.
    pub rss_after_bytes: Option<u64>,
    /// `(after − before) / opened`.
    pub bytes_per_connection: Option<f64>,
    /// Errors by kind.
    pub errors: BTreeMap<String, u64>,
}

/// Runs the scenario; nothing outlives `deadline`.
pub async fn run(target: &Target, opts: &IdleOptions, deadline: Instant) -> Result<IdleReport> {
    let users: Vec<(String, Role)> = (0..opts.connections)
        .map(|i| {
            let role = if i % 2 == 0 {
                Role::Patient
            } else {
                Role::Doctor
            };
            (format!("{}-idle-{i}", opts.prefix), role)
        })
        .collect();
    let tokens = target.tokens(&users).await?;

    let rss_before = if opts.pids.is_empty() {
        None
    } else {
        Some(rss::total_rss_bytes(&opts.pids)?)
    };

    let opened = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let disconnects = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(Errors::new());
    let permits = Arc::new(Semaphore::new(opts.concurrency.max(1)));
    let (stop_tx, stop_rx) = watch::channel(false);
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(tokens.len());
    for (i, token) in tokens.into_iter().enumerate() {
        let target = target.clone();
        let (opened, failed, disconnects, errors, permits) = (
            opened.clone(),
            failed.clone(),
            disconnects.clone(),
            errors.clone(),
            permits.clone(),
        );
        let mut stop = stop_rx.clone();
        tasks.push(tokio::spawn(async move {
            let ws = {
                let Ok(_permit) = permits.acquire().await else {
                    return;
                };
                target.connect(i, i, &token).await
            };
            let mut ws = match ws {
                Ok(ws) => ws,
                Err(e) => {
                    failed.fetch_add(1, Ordering::Relaxed);
                    errors.add(e.to_string());
                    return;
                }
            };
            opened.fetch_add(1, Ordering::Relaxed);
            loop {
                tokio::select! {
                    _ = stopped(&mut stop) => {
                        let _ = tokio::time::timeout(Duration::from_secs(2), ws.close(None)).await;
                        return;
                    }
                    r = client::next_frame(&mut ws) => if let Err(e) = r {
                        disconnects.fetch_add(1, Ordering::Relaxed);
                        errors.add(e.to_string());
                        return;
                    }
                }
            }
        }));
    }

    let total = opts.connections as u64;
    while opened.load(Ordering::Relaxed) + failed.load(Ordering::Relaxed) < total
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let connect_seconds = started.elapsed().as_secs_f64();
    sleep_capped(opts.settle, deadline).await;
    let rss_after = if opts.pids.is_empty() {
        None
    } else {
        Some(rss::total_rss_bytes(&opts.pids)?)
    };
    sleep_capped(opts.hold, deadline).await;
    let _ = stop_tx.send(true);
    for t in tasks {
        let left = deadline.saturating_duration_since(Instant::now()) + Duration::from_secs(3);
        let _ = tokio::time::timeout(left, t).await;
    }

    let opened = opened.load(Ordering::Relaxed);
    let bytes_per_connection = match (rss_before, rss_after) {
        (Some(b), Some(a)) if opened > 0 => Some((a as f64 - b as f64) / opened as f64),
        _ => None,
    };
    Ok(IdleReport {
        requested: opts.connections,
        opened,
        failed: failed.load(Ordering::Relaxed),
        disconnects: disconnects.load(Ordering::Relaxed),
        connect_seconds,
        connects_per_second: opened as f64 / connect_seconds.max(1e-9),
        rss_before_bytes: rss_before,
        rss_after_bytes: rss_after,
        bytes_per_connection,
        errors: errors.snapshot(),
    })
}

/// Resolves once the stop flag is set (or its sender is gone).
pub(crate) async fn stopped(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}

/// Sleeps `d`, but not past `deadline`.
pub(crate) async fn sleep_capped(d: Duration, deadline: Instant) {
    let until = (Instant::now() + d).min(deadline);
    tokio::time::sleep_until(until.into()).await;
}
