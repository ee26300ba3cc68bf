//! Medians, percentiles, latency summaries and number formatting.

use std::time::Instant;

/// Median of `v` (mean of the middle two for an even count); NaN when empty.
pub fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    match s.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => s[n / 2],
        n => (s[n / 2 - 1] + s[n / 2]) / 2.0,
    }
}

/// Nearest-rank percentile (`q` in 0..=1) of sorted `s`; NaN when empty.
pub fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Latency summary in milliseconds.
#[derive(Clone, Copy, Debug)]
pub struct Latency {
    pub p50: f64,
    pub p99: f64,
    pub max: f64,
    pub samples: usize,
}

impl Latency {
    pub const FAILED: Latency = Latency {
        p50: f64::NAN,
        p99: f64::NAN,
        max: f64::NAN,
        samples: 0,
    };

    pub fn from_ms(mut v: Vec<f64>) -> Latency {
        v.sort_by(f64::total_cmp);
        Latency {
            p50: percentile(&v, 0.50),
            p99: percentile(&v, 0.99),
            max: v.last().copied().unwrap_or(f64::NAN),
            samples: v.len(),
        }
    }
}

/// Runs `op` `n` times and times each call: the building block of a
/// latency row (see bench/README.md, "Adding a latency row").
pub fn time_each(n: usize, mut op: impl FnMut() -> Result<(), String>) -> Result<Latency, String> {
    let mut v = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        op()?;
        v.push(t.elapsed().as_secs_f64() * 1e3);
    }
    Ok(Latency::from_ms(v))
}

/// A latency in ms with sensible precision.
pub fn ms(v: f64) -> String {
    match v {
        v if v.is_nan() => "n/a".into(),
        v if v < 10.0 => format!("{v:.2} ms"),
        v => format!("{v:.0} ms"),
    }
}

/// 1234567 -> "1,234,567".
pub fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statistics() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 0.5), 50.0);
        assert_eq!(percentile(&v, 0.99), 99.0);
        assert_eq!(thousands(1_234_567), "1,234,567");
        assert_eq!(ms(0.123), "0.12 ms");
    }
}
