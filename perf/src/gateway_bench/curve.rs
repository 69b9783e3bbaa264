//! Percentile curves and CDFs of a latency histogram, as points to plot or store.
//!
//! A percentile curve is drawn against "nines": x = -log10(1 - q), so 90% is at 1, 99% at 2,
//! 99.9% at 3. Quantiles finer than the sample count supports (1 - q < 1 / count) are left
//! out; the maximum is plotted at x = log10(count), where the last sample sits.

use hdrhistogram::Histogram;

/// Quantiles sampled for a percentile curve (those with too few samples are skipped).
pub const CURVE_QUANTILES: &[f64] = &[
    0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.75, 0.8, 0.85, 0.9, 0.925, 0.95, 0.9625, 0.975, 0.98,
    0.99, 0.9925, 0.995, 0.9975, 0.999, 0.99925, 0.9995, 0.99975, 0.9999, 0.999925, 0.99995,
    0.999975, 0.99999,
];

/// One point of a percentile curve.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CurvePoint {
    /// Quantile in [0, 1]; 1 is the maximum.
    pub quantile: f64,
    /// Plot position: -log10(1 - quantile), or log10(count) for the maximum.
    pub nines: f64,
    /// Value at that quantile, ns.
    pub value_ns: u64,
}

/// -log10(1 - q), capped at `cap` (and 0 for q <= 0).
pub fn nines(quantile: f64, cap: f64) -> f64 {
    if quantile <= 0.0 {
        0.0
    } else if quantile >= 1.0 {
        cap
    } else {
        (-(1.0 - quantile).log10()).min(cap)
    }
}

/// The percentile curve of `histogram`: [`CURVE_QUANTILES`] that the sample count resolves,
/// then the maximum. Empty for an empty histogram.
pub fn percentile_curve(histogram: &Histogram<u64>) -> Vec<CurvePoint> {
    let count = histogram.len();
    if count == 0 {
        return Vec::new();
    }
    let cap = (count as f64).log10().max(0.0);
    let mut points: Vec<CurvePoint> = CURVE_QUANTILES
        .iter()
        .filter(|&&q| q == 0.0 || (1.0 - q) * count as f64 >= 1.0)
        .map(|&q| CurvePoint {
            quantile: q,
            nines: nines(q, cap),
            value_ns: if q == 0.0 {
                histogram.min()
            } else {
                histogram.value_at_quantile(q)
            },
        })
        .collect();
    points.push(CurvePoint {
        quantile: 1.0,
        nines: cap.max(points.last().map_or(0.0, |p| p.nines)),
        value_ns: histogram.max(),
    });
    points
}

/// The CDF of `histogram`: (value ns, fraction of samples <= value), one point per recorded
/// value bucket (HDR buckets: 3 significant digits), at most `max_points` (evenly thinned,
/// the last point always kept).
pub fn cdf(histogram: &Histogram<u64>, max_points: usize) -> Vec<(u64, f64)> {
    let count = histogram.len();
    if count == 0 {
        return Vec::new();
    }
    let all: Vec<(u64, f64)> = histogram
        .iter_recorded()
        .map(|v| {
            (
                histogram.highest_equivalent(v.value_iterated_to()),
                v.count_since_last_iteration() as f64,
            )
        })
        .scan(0.0, |seen, (value, n)| {
            *seen += n;
            Some((value, *seen / count as f64))
        })
        .collect();
    let max_points = max_points.max(2);
    if all.len() <= max_points {
        return all;
    }
    let step = all.len() as f64 / (max_points - 1) as f64;
    let mut thinned: Vec<(u64, f64)> = (0..max_points - 1)
        .map(|i| all[(i as f64 * step) as usize])
        .collect();
    thinned.push(*all.last().expect("not empty"));
    thinned
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uniform(n: u64) -> Histogram<u64> {
        let mut h = Histogram::new_with_bounds(1, 10_000_000_000, 3).unwrap();
        for v in 1..=n {
            h.record(v).unwrap();
        }
        h
    }

    #[test]
    fn nines_of_the_usual_quantiles() {
        assert_eq!(nines(0.0, 5.0), 0.0);
        assert!((nines(0.9, 5.0) - 1.0).abs() < 1e-9);
        assert!((nines(0.99, 5.0) - 2.0).abs() < 1e-9);
        assert!((nines(0.999, 5.0) - 3.0).abs() < 1e-9);
        assert_eq!(nines(0.999999, 5.0), 5.0);
        assert_eq!(nines(1.0, 4.0), 4.0);
    }

    #[test]
    fn the_curve_of_a_uniform_distribution() {
        let curve = percentile_curve(&uniform(1_000));
        let at = |q: f64| curve.iter().find(|p| p.quantile == q).map(|p| p.value_ns);
        assert_eq!(at(0.0), Some(1));
        assert_eq!(at(0.5), Some(500));
        assert_eq!(at(0.99), Some(990));
        assert_eq!(at(0.999), Some(999));
        assert_eq!(at(0.9999), None, "1,000 samples do not resolve 99.99%");
        let last = curve.last().unwrap();
        assert_eq!((last.quantile, last.value_ns), (1.0, 1_000));
        assert!((last.nines - 3.0).abs() < 1e-9);
        assert!(curve.windows(2).all(|w| w[0].nines <= w[1].nines));
        assert!(curve.windows(2).all(|w| w[0].value_ns <= w[1].value_ns));
        assert!(percentile_curve(&uniform(0)).is_empty());
        let one = percentile_curve(&uniform(1));
        assert_eq!(one.len(), 2);
        assert_eq!(one[1].value_ns, 1);
    }

    #[test]
    fn the_cdf_rises_to_one() {
        let h = uniform(10_000);
        let full = cdf(&h, 1_000_000);
        assert!(full.windows(2).all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1));
        assert_eq!(full.last().unwrap().1, 1.0);
        // The median is where the CDF crosses one half.
        let median = full.iter().find(|p| p.1 >= 0.5).unwrap().0;
        assert!((4_990..=5_010).contains(&median), "{median}");
        let thin = cdf(&h, 50);
        assert_eq!(thin.len(), 50);
        assert_eq!(thin.last(), full.last());
        assert!(cdf(&uniform(0), 10).is_empty());
    }
}
