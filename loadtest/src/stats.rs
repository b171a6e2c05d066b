//! Measurements: HDR latency histograms and bounded error tallies.

use hdrhistogram::Histogram;
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

/// Highest latency a histogram records (longer ones are clamped to it).
const MAX_MICROS: u64 = 3_600_000_000;

/// A latency histogram in microseconds, 3 significant digits, 1 µs – 1 h.
#[derive(Debug, Clone)]
pub struct Latency(Histogram<u64>);

impl Default for Latency {
    fn default() -> Self {
        Self::new()
    }
}

impl Latency {
    /// An empty histogram.
    pub fn new() -> Self {
        // Constant bounds that `new_with_bounds` accepts (low ≥ 1, high ≥ 2·low, sigfig ≤ 5).
        Self(
            Histogram::new_with_bounds(1, MAX_MICROS, 3)
                .expect("constant histogram bounds are valid"),
        )
    }

    /// Records one latency.
    pub fn record(&mut self, d: Duration) {
        let micros = u64::try_from(d.as_micros()).unwrap_or(MAX_MICROS);
        self.0.saturating_record(micros.clamp(1, MAX_MICROS));
    }

    /// Adds another histogram's samples.
    pub fn merge(&mut self, other: &Latency) {
        // Same bounds on both sides, so this cannot fail; count a failure as lost samples.
        let _ = self.0.add(&other.0);
    }

    /// Number of samples.
    pub fn count(&self) -> u64 {
        self.0.len()
    }

    /// Percentiles in milliseconds.
    pub fn summary(&self) -> LatencySummary {
        let ms = |q: f64| self.0.value_at_quantile(q) as f64 / 1000.0;
        if self.0.is_empty() {
            return LatencySummary::default();
        }
        LatencySummary {
            count: self.0.len(),
            p50_ms: ms(0.50),
            p90_ms: ms(0.90),
            p99_ms: ms(0.99),
            p999_ms: ms(0.999),
            max_ms: self.0.max() as f64 / 1000.0,
        }
    }
}

/// Latency percentiles, in milliseconds.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct LatencySummary {
    /// Samples.
    pub count: u64,
    /// Median.
    pub p50_ms: f64,
    /// 90th percentile.
    pub p90_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// 99.9th percentile.
    pub p999_ms: f64,
    /// Maximum.
    pub max_ms: f64,
}

/// How many distinct error kinds are kept; further kinds count as `other`.
const MAX_KINDS: usize = 32;

/// Errors by kind (e.g. `connect: HTTP error: 429`, `error frame: rate_limited`),
/// shared by all tasks; bounded in the number of kinds.
#[derive(Debug, Default)]
pub struct Errors(Mutex<BTreeMap<String, u64>>);

impl Errors {
    /// A new, empty tally.
    pub fn new() -> Self {
        Self::default()
    }

    /// Counts one error of this kind.
    pub fn add(&self, kind: impl Into<String>) {
        let mut kind: String = kind.into();
        kind.truncate(160);
        let mut map = match self.0.lock() {
            Ok(m) => m,
            Err(poisoned) => poisoned.into_inner(),
        };
        if !map.contains_key(&kind) && map.len() >= MAX_KINDS {
            kind = "other".into();
        }
        *map.entry(kind).or_insert(0) += 1;
    }

    /// Total count.
    pub fn total(&self) -> u64 {
        self.snapshot().values().sum()
    }

    /// Counts by kind.
    pub fn snapshot(&self) -> BTreeMap<String, u64> {
        match self.0.lock() {
            Ok(m) => m.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_in_milliseconds() {
        let mut h = Latency::new();
        for ms in 1..=1000 {
            h.record(Duration::from_millis(ms));
        }
        let s = h.summary();
        assert_eq!(s.count, 1000);
        assert!((s.p50_ms - 500.0).abs() < 1.0, "{s:?}");
        assert!((s.max_ms - 1000.0).abs() < 1.0, "{s:?}");
        let mut other = Latency::new();
        other.record(Duration::from_secs(5));
        h.merge(&other);
        assert_eq!(h.count(), 1001);
    }

    #[test]
    fn error_kinds_are_bounded() {
        let e = Errors::new();
        for i in 0..100 {
            e.add(format!("kind {i}"));
        }
        assert_eq!(e.total(), 100);
        assert!(e.snapshot().len() <= MAX_KINDS + 1);
    }
}
