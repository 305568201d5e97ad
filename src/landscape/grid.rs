//! Grid axes of a surface: `MIN:MAX:NUM`, sampled like numpy's `linspace(MIN, MAX, NUM)`.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// One axis of a surface grid, e.g. `-1:1:51` (loss-landscape's `--x` syntax and default).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GridAxis {
    pub min: f64,
    pub max: f64,
    pub num: usize,
}

impl GridAxis {
    /// The NUM coordinates, exactly as `numpy.linspace(min, max, num)` computes them:
    /// `min + i·step` with `step = (max − min)/(num − 1)`, and the last one set to `max`.
    pub fn coordinates(&self) -> Vec<f64> {
        (0..self.num).map(|i| self.coordinate(i)).collect()
    }

    /// Coordinate `i` (below `num`) of [`GridAxis::coordinates`], in O(1).
    pub fn coordinate(&self, i: usize) -> f64 {
        if i + 1 >= self.num {
            return if self.num == 1 { self.min } else { self.max };
        }
        let step = (self.max - self.min) / (self.num - 1) as f64;
        self.min + i as f64 * step
    }
}

impl fmt::Display for GridAxis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.min, self.max, self.num)
    }
}

/// Why a `MIN:MAX:NUM` axis could not be read (the axes are the fields `x` and `y`).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("`x`/`y` expect MIN:MAX:NUM, e.g. -1:1:51; got '{given}': {why}")]
pub struct GridAxisError {
    /// The text that was given.
    pub given: String,
    pub why: AxisFault,
}

/// What is wrong with a `MIN:MAX:NUM` axis.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AxisFault {
    /// Occurs when the text does not have exactly three `:`-separated fields.
    #[error("need three fields separated by ':'")]
    Fields,
    /// Occurs when MIN does not parse as a number.
    #[error("MIN is not a number")]
    Min,
    /// Occurs when MAX does not parse as a number.
    #[error("MAX is not a number")]
    Max,
    /// Occurs when NUM does not parse as a non-negative integer.
    #[error("NUM is not a positive integer")]
    Num,
    /// Occurs when MIN or MAX is infinite or NaN.
    #[error("MIN and MAX must be finite")]
    NotFinite,
    /// Occurs when NUM is 0.
    #[error("NUM must be at least 1")]
    NoPoints,
    /// Occurs when several points are asked for but MIN is not below MAX.
    #[error("MIN must be below MAX (or NUM = 1 for a single point)")]
    Order,
    /// Occurs when a single point is asked for but MIN and MAX differ.
    #[error("with NUM = 1, MIN and MAX must be equal")]
    Single,
}

impl FromStr for GridAxis {
    type Err = GridAxisError;

    fn from_str(s: &str) -> Result<Self, GridAxisError> {
        let bad = |why: AxisFault| GridAxisError {
            given: s.to_string(),
            why,
        };
        let parts: Vec<&str> = s.split(':').collect();
        if parts.len() != 3 {
            return Err(bad(AxisFault::Fields));
        }
        let min: f64 = parts[0].trim().parse().map_err(|_| bad(AxisFault::Min))?;
        let max: f64 = parts[1].trim().parse().map_err(|_| bad(AxisFault::Max))?;
        let num: usize = parts[2].trim().parse().map_err(|_| bad(AxisFault::Num))?;
        if !min.is_finite() || !max.is_finite() {
            return Err(bad(AxisFault::NotFinite));
        }
        if num == 0 {
            return Err(bad(AxisFault::NoPoints));
        }
        if num > 1 && min >= max {
            return Err(bad(AxisFault::Order));
        }
        if num == 1 && min != max {
            return Err(bad(AxisFault::Single));
        }
        Ok(GridAxis { min, max, num })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_samples_like_linspace() {
        let a: GridAxis = "-1:1:5".parse().unwrap();
        assert_eq!(a.coordinates(), vec![-1.0, -0.5, 0.0, 0.5, 1.0]);
        assert_eq!(a.to_string(), "-1:1:5");
        assert_eq!(
            "0:0:1".parse::<GridAxis>().unwrap().coordinates(),
            vec![0.0]
        );
        for bad in ["1:0:5", "-1:1:0", "a:b:c", "-1:1", "0:1:1", "nan:1:3"] {
            assert!(bad.parse::<GridAxis>().is_err(), "{bad}");
        }
    }
}
