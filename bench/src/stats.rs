//! Percentiles, latency summaries and number formatting.

use std::time::Instant;

/// Nearest-rank percentile (`q` in 0..=1) of `v`; NaN when empty.
pub fn percentile(v: &[f64], q: f64) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let rank = (q * s.len() as f64).ceil() as usize;
    s.get(rank.max(1) - 1).copied().unwrap_or(f64::NAN)
}

/// The middle value (of an even count, the lower of the middle two).
pub fn median(v: &[f64]) -> f64 {
    percentile(v, 0.5)
}

/// Latency summary in milliseconds; NaN figures when there are no samples.
#[derive(Clone, Copy, Debug)]
pub struct Latency {
    pub p50: f64,
    pub p99: f64,
    pub max: f64,
    pub samples: usize,
}

impl Latency {
    pub fn from_ms(v: &[f64]) -> Latency {
        let (p50, p99, max) = (percentile(v, 0.5), percentile(v, 0.99), percentile(v, 1.0));
        Latency {
            p50,
            p99,
            max,
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
    Ok(Latency::from_ms(&v))
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
        assert!(median(&[]).is_nan());
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 0.5), 50.0);
        assert_eq!(percentile(&v, 0.99), 99.0);
        assert_eq!(Latency::from_ms(&v).max, 100.0);
        assert_eq!(thousands(1_234_567), "1,234,567");
    }
}
