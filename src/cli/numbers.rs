//! Value parsers for number flags. Every option that takes a value accepts a leading minus
//! (see [`super::command`]; real-valued ones also `-1e-3`), so `--samples -1` reaches these
//! parsers and is refused as out of range, not as an unknown argument.

/// A whole number ≥ `min`, as `T`; the message says the range.
fn whole<T: TryFrom<u64>>(s: &str, min: u64) -> Result<T, String> {
    let v: i128 = s
        .trim()
        .parse()
        .map_err(|_| format!("'{s}' is not a whole number"))?;
    if v < i128::from(min) {
        return Err(format!("{v} is out of range: must be at least {min}"));
    }
    u64::try_from(v)
        .ok()
        .and_then(|v| T::try_from(v).ok())
        .ok_or_else(|| format!("{v} is out of range: too large"))
}

/// A count or index: 0, 1, 2, …
pub fn count<T: TryFrom<u64>>(s: &str) -> Result<T, String> {
    whole(s, 0)
}

/// A positive count: 1, 2, …
pub fn positive<T: TryFrom<u64>>(s: &str) -> Result<T, String> {
    whole(s, 1)
}

/// A finite real number, with `min` as its bound (`strict`: above it, else at least it).
fn real(s: &str, min: f64, strict: bool) -> Result<f64, String> {
    let v: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("'{s}' is not a number"))?;
    if !v.is_finite() {
        return Err(format!("{v} is out of range: must be finite"));
    }
    match strict {
        true if v <= min => Err(format!("{v} is out of range: must be above {min}")),
        false if v < min => Err(format!("{v} is out of range: must be at least {min}")),
        _ => Ok(v),
    }
}

/// A finite real number ≥ 0 (learning rates, momenta, weight decay).
pub fn non_negative(s: &str) -> Result<f64, String> {
    real(s, 0.0, false)
}

/// A finite real number > 0 (tolerances, ε).
pub fn positive_real(s: &str) -> Result<f64, String> {
    real(s, 0.0, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negative_and_zero_are_range_errors() {
        assert_eq!(count::<usize>("0"), Ok(0));
        assert_eq!(positive::<u64>(" 7 "), Ok(7));
        let e = count::<usize>("-1").unwrap_err();
        assert!(
            e.contains("out of range") && e.contains("at least 0"),
            "{e}"
        );
        let e = positive::<u64>("0").unwrap_err();
        assert!(e.contains("at least 1"), "{e}");
        assert!(count::<u32>("5000000000")
            .unwrap_err()
            .contains("too large"));
        assert!(count::<usize>("1.5")
            .unwrap_err()
            .contains("not a whole number"));
    }

    #[test]
    fn reals_have_ranges() {
        assert_eq!(non_negative("0"), Ok(0.0));
        assert_eq!(positive_real("1e-3"), Ok(1e-3));
        assert!(non_negative("-1e-3").unwrap_err().contains("at least 0"));
        assert!(positive_real("0").unwrap_err().contains("above 0"));
        assert!(positive_real("inf").unwrap_err().contains("finite"));
        assert!(non_negative("x").unwrap_err().contains("not a number"));
    }
}
