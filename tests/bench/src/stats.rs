//! Median and spread of repeated runs, and the log-log slope that says how a cost grows.

use serde::{Deserialize, Serialize};

/// Median, min and max of a set of runs.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub median: f64,
    pub min: f64,
    pub max: f64,
    pub n: usize,
}

impl Summary {
    /// None for no runs. The median of an even count is the mean of the middle two.
    pub fn of(values: &[f64]) -> Option<Summary> {
        let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        let n = v.len();
        let median = if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        };
        Some(Summary {
            median,
            min: v[0],
            max: v[n - 1],
            n,
        })
    }
}

/// Least-squares slope of ln(y) against ln(x): 1 = linear, 2 = quadratic. None with fewer
/// than two usable points.
pub fn loglog_slope(points: &[(f64, f64)]) -> Option<f64> {
    let p: Vec<(f64, f64)> = points
        .iter()
        .filter(|(x, y)| *x > 0.0 && *y > 0.0)
        .map(|(x, y)| (x.ln(), y.ln()))
        .collect();
    if p.len() < 2 {
        return None;
    }
    let n = p.len() as f64;
    let mx = p.iter().map(|q| q.0).sum::<f64>() / n;
    let my = p.iter().map(|q| q.1).sum::<f64>() / n;
    let sxx: f64 = p.iter().map(|q| (q.0 - mx).powi(2)).sum();
    if sxx == 0.0 {
        return None;
    }
    let sxy: f64 = p.iter().map(|q| (q.0 - mx) * (q.1 - my)).sum();
    Some(sxy / sxx)
}

/// Words for a log-log slope.
pub fn growth_words(slope: f64) -> &'static str {
    if slope < 0.85 {
        "sub-linear (fixed costs still dominate at these sizes)"
    } else if slope <= 1.15 {
        "linear"
    } else if slope <= 1.4 {
        "slightly worse than linear"
    } else {
        "clearly worse than linear"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_and_spread() {
        let s = Summary::of(&[3.0, 1.0, 2.0, 10.0, 4.0]).unwrap();
        assert_eq!((s.median, s.min, s.max, s.n), (3.0, 1.0, 10.0, 5));
        assert_eq!(Summary::of(&[1.0, 2.0]).unwrap().median, 1.5);
        assert!(Summary::of(&[]).is_none());
    }

    #[test]
    fn slope_of_power_laws() {
        let lin: Vec<(f64, f64)> = [1.0, 4.0, 16.0].iter().map(|x| (*x, 3.0 * x)).collect();
        assert!((loglog_slope(&lin).unwrap() - 1.0).abs() < 1e-9);
        let quad: Vec<(f64, f64)> = [1.0, 4.0, 16.0].iter().map(|x| (*x, x * x)).collect();
        assert!((loglog_slope(&quad).unwrap() - 2.0).abs() < 1e-9);
        assert_eq!(growth_words(1.02), "linear");
        assert!(loglog_slope(&[(1.0, 1.0)]).is_none());
    }
}
