//! Small pieces every timing bench shares: timing a call, running two
//! sides in turn, medians and percentiles of samples, ratios, and figures
//! written the way the README's tables write them ("3.3 ms", "166 ms",
//! "0.50 s", "20,000").

use std::time::{Duration, Instant};

/// Runs `f` and returns its result with the wall time it took.
pub fn timed<T>(f: impl FnOnce() -> T) -> (T, Duration) {
    let t = Instant::now();
    let v = f();
    (v, t.elapsed())
}

/// Runs `a` and `b` one after the other, `a` first when `a_first`, and
/// returns their results as (a, b): benches alternate who goes first so
/// neither side always runs on a warmer (or busier) system.
pub fn in_turn<A, B>(a_first: bool, a: impl FnOnce() -> A, b: impl FnOnce() -> B) -> (A, B) {
    if a_first {
        let x = a();
        (x, b())
    } else {
        let y = b();
        (a(), y)
    }
}

/// The nearest-rank `q` quantile (0 ≤ q ≤ 1) of `samples`, or `None` when
/// there are none. Nearest rank: the smallest sample with at least `q` of
/// all samples at or below it, so p50 of 100 samples is the 50th, p99 the
/// 99th and p100 the largest; never an interpolated value nobody measured.
pub fn percentile(samples: &[Duration], q: f64) -> Option<Duration> {
    if samples.is_empty() {
        return None;
    }
    let mut sorted = samples.to_vec();
    sorted.sort_unstable();
    let n = sorted.len();
    // ceil(q * n) as a 1-based rank, kept within 1..=n.
    let rank = (q.clamp(0.0, 1.0) * n as f64).ceil() as usize;
    sorted.get(rank.clamp(1, n) - 1).copied()
}

/// The median (nearest-rank p50); zero for no samples.
pub fn median(samples: &[Duration]) -> Duration {
    percentile(samples, 0.5).unwrap_or_default()
}

/// The smallest sample; zero for no samples.
pub fn minimum(samples: &[Duration]) -> Duration {
    samples.iter().copied().min().unwrap_or_default()
}

/// `a / b` as a plain number (b of zero counts as one nanosecond).
pub fn ratio(a: Duration, b: Duration) -> f64 {
    a.as_secs_f64() / b.as_secs_f64().max(1e-9)
}

/// A duration as the README writes it: microseconds below 1 ms
/// ("0.105 ms"), one decimal below 100 ms ("3.3 ms", "40.2 ms"), whole
/// milliseconds below 1 s ("166 ms"), then seconds with two decimals.
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_secs_f64() * 1e3;
    if ms < 1.0 {
        format!("{ms:.3} ms")
    } else if ms < 100.0 {
        format!("{ms:.1} ms")
    } else if ms < 1000.0 {
        format!("{ms:.0} ms")
    } else {
        format!("{:.2} s", ms / 1e3)
    }
}

/// A count with thousands separators, as the README writes it ("20,000").
pub fn format_count(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, ch) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

/// A ratio as the README writes it ("0.25×").
pub fn format_ratio(r: f64) -> String {
    format!("{r:.2}×")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: &[u64]) -> Vec<Duration> {
        v.iter().map(|&m| Duration::from_millis(m)).collect()
    }

    #[test]
    fn percentiles_are_nearest_rank_samples() {
        let hundred = ms(&(1..=100).rev().collect::<Vec<_>>());
        assert_eq!(percentile(&hundred, 0.5), Some(Duration::from_millis(50)));
        assert_eq!(percentile(&hundred, 0.99), Some(Duration::from_millis(99)));
        assert_eq!(percentile(&hundred, 1.0), Some(Duration::from_millis(100)));
        assert_eq!(percentile(&hundred, 0.0), Some(Duration::from_millis(1)));
        // Ten samples: p99 is the largest, not something between.
        let ten = ms(&[5, 1, 9, 3, 7, 2, 8, 4, 6, 10]);
        assert_eq!(percentile(&ten, 0.99), Some(Duration::from_millis(10)));
        assert_eq!(percentile(&ten, 0.9), Some(Duration::from_millis(9)));
        assert_eq!(median(&ten), Duration::from_millis(5));
        assert_eq!(percentile(&[], 0.5), None);
        assert_eq!(median(&ms(&[7])), Duration::from_millis(7));
    }

    #[test]
    fn durations_read_like_the_readme() {
        assert_eq!(format_duration(Duration::from_micros(105)), "0.105 ms");
        assert_eq!(format_duration(Duration::from_micros(3_340)), "3.3 ms");
        assert_eq!(format_duration(Duration::from_micros(40_240)), "40.2 ms");
        assert_eq!(format_duration(Duration::from_micros(166_400)), "166 ms");
        assert_eq!(format_duration(Duration::from_millis(503)), "503 ms");
        assert_eq!(format_duration(Duration::from_millis(9_700)), "9.70 s");
        assert_eq!(format_ratio(0.2541), "0.25×");
        assert_eq!(format_count(20_000), "20,000");
        assert_eq!(format_count(1_234_567), "1,234,567");
        assert_eq!(format_count(999), "999");
    }

    #[test]
    fn in_turn_runs_the_named_side_first_and_keeps_the_result_order() {
        let order = std::cell::RefCell::new(vec![]);
        let run = |first| {
            in_turn(
                first,
                || order.borrow_mut().push('a'),
                || order.borrow_mut().push('b'),
            )
        };
        run(true);
        run(false);
        assert_eq!(*order.borrow(), ['a', 'b', 'b', 'a']);
        assert_eq!(in_turn(false, || 1, || 2), (1, 2));
        assert_eq!(minimum(&ms(&[3, 1, 2])), Duration::from_millis(1));
    }
}
