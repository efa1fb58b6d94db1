//! A figure measured several times: its median with the lowest and highest beside it. On a
//! shared 2-core machine one measurement can catch a burst of someone else's work, so the
//! benchmarks report the median of rounds (or windows) and show how far the others strayed,
//! and compare two systems round by round (each round of one ran right before the same round
//! of the other, so both saw much the same machine) rather than median against median.

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

    /// `figure` of each round that has it, spread (`None` when no round has it).
    pub fn over<T>(rounds: &[T], figure: impl Fn(&T) -> Option<f64>) -> Option<Self> {
        Self::of(rounds.iter().filter_map(figure))
    }

    /// `figure` of round `i` of `a` over that of round `i` of `b`, for every `i` both have,
    /// spread; pairs where either lacks the figure, or `b`'s is not above zero, are left out.
    pub fn ratio<T>(a: &[T], b: &[T], figure: impl Fn(&T) -> Option<f64>) -> Option<Self> {
        Self::of(a.iter().zip(b).filter_map(|(a, b)| match (figure(a), figure(b)) {
            (Some(a), Some(b)) if b > 0.0 => Some(a / b),
            _ => None,
        }))
    }

    /// [`format`](Self::format) of `spread`, or `-` when nothing was measured; the range left
    /// out when it vanishes at `decimals` places (`300/s`, not `300/s (300-300)`).
    pub fn cell(spread: Option<Self>, decimals: usize, unit: &str) -> String {
        match spread {
            None => "-".to_string(),
            Some(spread) if format!("{:.decimals$}", spread.min) == format!("{:.decimals$}", spread.max) => {
                format!("{:.decimals$}{unit}", spread.median)
            }
            Some(spread) => spread.format(decimals, unit),
        }
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

    #[test]
    fn rounds_without_the_figure_are_left_out() {
        let rounds = [Some(3.0), None, Some(1.0), Some(2.0)];
        assert_eq!(Spread::over(&rounds, |r| *r), Some(Spread { median: 2.0, min: 1.0, max: 3.0 }));
        assert_eq!(Spread::over(&[None::<f64>], |r| *r), None);
        assert_eq!(Spread::cell(None, 2, "x"), "-");
        assert_eq!(Spread::cell(Spread::over(&rounds, |r| *r), 0, " s"), "2 s (1-3)");
        assert_eq!(Spread::cell(Spread::of([299.9, 300.2]), 0, "/s"), "300/s", "no range left at 0 places");
    }

    #[test]
    fn a_ratio_pairs_the_rounds_in_order() {
        // Round by round 0.5, 2.0 and 1.0: median 1.0, though the medians of each side (1000
        // over 1000) would hide how far single rounds strayed. The fourth round has no pair.
        let a = [500.0, 2000.0, 1000.0, 7.0];
        let b = [1000.0, 1000.0, 1000.0];
        assert_eq!(Spread::ratio(&a, &b, |v| Some(*v)), Some(Spread { median: 1.0, min: 0.5, max: 2.0 }));
        assert_eq!(Spread::ratio(&[1.0], &[0.0], |v| Some(*v)), None, "nothing over zero");
        assert_eq!(Spread::ratio(&a, &[], |v| Some(*v)), None);
    }
}
