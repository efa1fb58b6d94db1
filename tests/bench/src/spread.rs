//! A figure measured several times: its median with the lowest and highest beside it. On a
//! shared 2-core machine one measurement can catch a burst of someone else's work, so the
//! benchmarks report the median of rounds (or windows) and show how far the others strayed.

/// The median, lowest and highest of several measurements of one figure.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Spread {
    pub median: f64,
    pub min: f64,
    pub max: f64,
}

impl Spread {
    /// The spread of `values`; `None` when there are none (or one is not a number).
    pub fn of(values: impl IntoIterator<Item = f64>) -> Option<Self> {
        let mut sorted: Vec<f64> = values.into_iter().collect();
        if sorted.is_empty() || sorted.iter().any(|v| v.is_nan()) {
            return None;
        }
        sorted.sort_by(f64::total_cmp);
        let middle = sorted.len() / 2;
        let median =
            if sorted.len().is_multiple_of(2) { (sorted[middle - 1] + sorted[middle]) / 2.0 } else { sorted[middle] };
        Some(Self { median, min: sorted[0], max: sorted[sorted.len() - 1] })
    }

    /// `12.3 (11.9-13.0)` with `decimals` places and `unit` after the median (`1.05x
    /// (0.98-1.10)`); the range left out when there is none.
    pub fn format(&self, decimals: usize, unit: &str) -> String {
        if self.min == self.max {
            format!("{:.decimals$}{unit}", self.median)
        } else {
            format!("{:.decimals$}{unit} ({:.decimals$}-{:.decimals$})", self.median, self.min, self.max)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Spread;

    #[test]
    fn the_median_of_an_odd_count_is_the_middle_one() {
        let spread = Spread::of([14.0, 9.5, 10.0, 30.0, 10.5]).unwrap();
        assert_eq!(spread, Spread { median: 10.5, min: 9.5, max: 30.0 });
        assert_eq!(spread.format(1, ""), "10.5 (9.5-30.0)");
        assert_eq!(spread.format(2, "x"), "10.50x (9.50-30.00)");
    }

    #[test]
    fn the_median_of_an_even_count_lies_between_the_middle_two() {
        assert_eq!(Spread::of([4.0, 1.0, 3.0, 2.0]).unwrap().median, 2.5);
    }

    #[test]
    fn one_measurement_has_no_range_and_none_has_no_spread() {
        assert_eq!(Spread::of([7.0]).unwrap().format(2, "x"), "7.00x");
        assert_eq!(Spread::of([]), None);
        assert_eq!(Spread::of([1.0, f64::NAN]), None);
    }
}
