//! Row reductions with eight interleaved partial results, so the compiler can keep them in
//! one vector register (a plain left fold of floats cannot be vectorized: it would change
//! the order of the additions). The order is fixed, so the bits are too. Used by the
//! row-wise ops (softmax, layer and group norm).

use crate::engine::Scalar;

const LANES: usize = 8;

/// Combines the lanes pairwise, then adds the tail in order.
#[inline(always)]
fn finish<T: Scalar>(acc: [T; LANES], tail: T) -> T {
    ((acc[0] + acc[4]) + (acc[2] + acc[6])) + ((acc[1] + acc[5]) + (acc[3] + acc[7])) + tail
}

/// Σ a.
#[inline(always)]
pub fn sum<T: Scalar>(a: &[T]) -> T {
    let mut acc = [T::zero(); LANES];
    let chunks = a.chunks_exact(LANES);
    let tail = chunks.remainder().iter().fold(T::zero(), |s, &v| s + v);
    for c in chunks {
        for i in 0..LANES {
            acc[i] += c[i];
        }
    }
    finish(acc, tail)
}

/// Σ a·b (`a` and `b` of one length).
#[inline(always)]
pub fn dot<T: Scalar>(a: &[T], b: &[T]) -> T {
    assert_eq!(a.len(), b.len(), "dot: lengths");
    let mut acc = [T::zero(); LANES];
    let (ca, cb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let tail = (ca.remainder().iter().zip(cb.remainder())).fold(T::zero(), |s, (&x, &y)| s + x * y);
    for (x, y) in ca.zip(cb) {
        for i in 0..LANES {
            acc[i] += x[i] * y[i];
        }
    }
    finish(acc, tail)
}

/// Σ (a − c)², the sum of squares about `c`.
#[inline(always)]
pub fn sq_dev<T: Scalar>(a: &[T], c: T) -> T {
    let mut acc = [T::zero(); LANES];
    let chunks = a.chunks_exact(LANES);
    let tail = (chunks.remainder().iter()).fold(T::zero(), |s, &v| s + (v - c) * (v - c));
    for x in chunks {
        for i in 0..LANES {
            let d = x[i] - c;
            acc[i] += d * d;
        }
    }
    finish(acc, tail)
}

/// max a (−∞ for an empty row; a NaN anywhere is propagated unless later values are
/// larger, as with a plain fold of `max`).
#[inline(always)]
pub fn max<T: Scalar>(a: &[T]) -> T {
    let mut acc = [T::neg_infinity(); LANES];
    let chunks = a.chunks_exact(LANES);
    let tail =
        (chunks.remainder().iter()).fold(T::neg_infinity(), |m, &v| if v > m { v } else { m });
    for x in chunks {
        for i in 0..LANES {
            acc[i] = if x[i] > acc[i] { x[i] } else { acc[i] };
        }
    }
    acc.iter().fold(tail, |m, &v| if v > m { v } else { m })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reductions_match_plain_folds() {
        for n in [0usize, 1, 7, 8, 9, 31, 100] {
            let a: Vec<f64> = (0..n).map(|i| ((i * 37 % 11) as f64) - 4.5).collect();
            let b: Vec<f64> = (0..n).map(|i| ((i * 13 % 7) as f64) * 0.25).collect();
            let close = |x: f64, y: f64| (x - y).abs() <= 1e-12 * (1.0 + y.abs());
            assert!(close(sum(&a), a.iter().sum()));
            let d: f64 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
            assert!(close(dot(&a, &b), d));
            let s: f64 = a.iter().map(|x| (x - 0.3) * (x - 0.3)).sum();
            assert!(close(sq_dev(&a, 0.3), s));
            let m = a.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            assert_eq!(max(&a), m);
        }
    }
}
