//! Output: a human-readable table per scenario, or one JSON object (`--json`).

use crate::chat::ChatReport;
use crate::idle::IdleReport;
use crate::stats::LatencySummary;
use crate::storm::StormReport;
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write;

/// The result of one scenario.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "scenario", rename_all = "snake_case")]
pub enum Report {
    /// `idle`.
    Idle(IdleReport),
    /// `chat`.
    Chat(ChatReport),
    /// `storm`.
    Storm(StormReport),
}

impl Report {
    /// Whether the run met the scenario's correctness bar (no errors; for chat
    /// every send acked and delivered; for storm nothing missed or duplicated
    /// and everyone resynced — `out_of_order` is reported but not judged: a live
    /// message delivered before the gateway processed the `sync` legitimately
    /// precedes the replayed older ones).
    pub fn passed(&self) -> bool {
        match self {
            Report::Idle(r) => {
                r.failed == 0 && r.disconnects == 0 && r.opened as usize == r.requested
            }
            Report::Chat(r) => {
                r.errors == 0 && r.disconnects == 0 && r.acked == r.sent && r.delivered == r.acked
            }
            Report::Storm(r) => {
                r.errors == 0
                    && r.missed == 0
                    && r.duplicates == 0
                    && r.resynced as usize == r.clients
            }
        }
    }

    /// JSON, one line.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|e| format!(r#"{{"error":"{e}"}}"#))
    }

    /// A two-column table.
    pub fn to_table(&self) -> String {
        let mut rows: Vec<(String, String)> = Vec::new();
        let mut row = |k: &str, v: String| rows.push((k.to_owned(), v));
        let errors: &BTreeMap<String, u64> = match self {
            Report::Idle(r) => {
                row("scenario", "idle".into());
                row("connections requested", r.requested.to_string());
                row("opened", r.opened.to_string());
                row("failed", r.failed.to_string());
                row("disconnects while held", r.disconnects.to_string());
                row("connect time", format!("{:.2} s", r.connect_seconds));
                row("connects/s", format!("{:.0}", r.connects_per_second));
                row("gateway RSS before", opt_mib(r.rss_before_bytes));
                row("gateway RSS after", opt_mib(r.rss_after_bytes));
                row(
                    "bytes per idle connection",
                    r.bytes_per_connection.map_or("n/a (no --pid)".into(), |b| {
                        format!("{b:.0} B ({:.1} KiB)", b / 1024.0)
                    }),
                );
                &r.errors
            }
            Report::Chat(r) => {
                row("scenario", "chat".into());
                row("pairs / nodes", format!("{} / {}", r.pairs, r.nodes));
                row(
                    "target rate × duration",
                    format!("{:.0} msg/s × {:.1} s", r.target_rate, r.duration_seconds),
                );
                row(
                    "sent / acked / delivered",
                    format!("{} / {} / {}", r.sent, r.acked, r.delivered),
                );
                row("acks/s", format!("{:.1}", r.acks_per_second));
                row("delivered/s", format!("{:.1}", r.delivered_per_second));
                row("ack latency (ms)", latency(&r.ack_latency));
                row("delivery latency (ms)", latency(&r.delivery_latency));
                row(
                    "max send lag behind schedule",
                    format!("{:.2} ms", r.max_send_lag_ms),
                );
                row("errors", r.errors.to_string());
                row("disconnects", r.disconnects.to_string());
                &r.error_kinds
            }
            Report::Storm(r) => {
                row("scenario", "storm".into());
                row("clients / chats", format!("{} / {}", r.clients, r.chats));
                for p in &r.phases {
                    row(&format!("set-up: {}", p.phase), format!("{:.0} ms", p.ms));
                }
                row("reconnected", r.reconnected.to_string());
                row("resynced", r.resynced.to_string());
                row(
                    "time to all reconnected",
                    r.time_to_all_reconnected_ms
                        .map_or("not all reconnected".into(), |ms| format!("{ms:.1} ms")),
                );
                row(
                    "time to live messages acked",
                    format!("{:.1} ms", r.time_to_live_acked_ms),
                );
                row(
                    "time to all resynced",
                    r.time_to_all_resynced_ms
                        .map_or("not all resynced".into(), |ms| format!("{ms:.1} ms")),
                );
                row("per-client resync (ms)", latency(&r.resync_latency));
                row(
                    "expected / received",
                    format!("{} / {}", r.expected, r.received),
                );
                row("missed", r.missed.to_string());
                row("duplicates", r.duplicates.to_string());
                row("out of order", r.out_of_order.to_string());
                for ex in &r.missed_examples {
                    row("  missed", ex.clone());
                }
                row("errors", r.errors.to_string());
                &r.error_kinds
            }
        };
        for (kind, n) in errors {
            rows.push((format!("  error: {kind}"), n.to_string()));
        }
        rows.push((
            "result".into(),
            if self.passed() { "PASS" } else { "FAIL" }.into(),
        ));
        let width = rows
            .iter()
            .map(|(k, _)| k.chars().count())
            .max()
            .unwrap_or(0);
        let mut out = String::new();
        for (k, v) in rows {
            let _ = writeln!(out, "{k:<width$}  {v}");
        }
        out
    }
}

fn opt_mib(b: Option<u64>) -> String {
    b.map_or("n/a (no --pid)".into(), |b| {
        format!("{:.1} MiB", b as f64 / 1048576.0)
    })
}

fn latency(l: &LatencySummary) -> String {
    if l.count == 0 {
        return "no samples".into();
    }
    format!(
        "p50 {:.2}  p90 {:.2}  p99 {:.2}  p99.9 {:.2}  max {:.2}  (n={})",
        l.p50_ms, l.p90_ms, l.p99_ms, l.p999_ms, l.max_ms, l.count
    )
}
