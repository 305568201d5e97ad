//! Row reductions with eight interleaved partial results, so the compiler can keep them in
//! one vector register (a plain left fold of floats cannot be vectorized: it would change
//! the order of the additions). The order is fixed, so the bits are too. Used by the
//! row-wise ops (softmax, layer, group and batch norm).

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

/// (Σ a·f(b), Σ a) in one pass over `a` and `b`; with `f` the identity, the same bits as
/// [`dot`] and [`sum`].
#[inline(always)]
pub fn dot_sum<T: Scalar>(a: &[T], b: &[T], f: impl Fn(T) -> T) -> (T, T) {
    assert_eq!(a.len(), b.len(), "dot_sum: lengths");
    let (mut ab, mut sa) = ([T::zero(); LANES], [T::zero(); LANES]);
    let (ca, cb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    let tail_ab = ra
        .iter()
        .zip(rb)
        .fold(T::zero(), |s, (&x, &y)| s + x * f(y));
    let tail_a = ra.iter().fold(T::zero(), |s, &v| s + v);
    for (x, y) in ca.zip(cb) {
        for i in 0..LANES {
            ab[i] += x[i] * f(y[i]);
            sa[i] += x[i];
        }
    }
    (finish(ab, tail_ab), finish(sa, tail_a))
}

/// One pass over a row: `a' = m(a, c)` (e.g. a gradient masked by a ReLU's output `c`),
/// written as `a ← h(a')`, copied into `copy` first where given, and with `sums`
/// (Σ a'·f(b), Σ a') — the bits of [`dot_sum`] on the row of `a'` (the same lanes, tail
/// and order); zeros without `sums`. All slices of one length (`copy` too).
#[inline(always)]
pub fn map_dot_sum<T: Scalar>(
    (a, c, b): (&mut [T], &[T], &[T]),
    m: impl Fn(T, T) -> T,
    f: impl Fn(T) -> T,
    h: impl Fn(T) -> T,
    mut copy: Option<&mut [T]>,
    sums: bool,
) -> (T, T) {
    let n = a.len();
    assert!(c.len() == n && b.len() == n, "map_dot_sum: lengths");
    if let Some(cp) = &copy {
        assert_eq!(cp.len(), n, "map_dot_sum: copy length");
    }
    let full = n - n % LANES;
    let (mut ab, mut sa) = ([T::zero(); LANES], [T::zero(); LANES]);
    let rows = (&mut a[..full], &c[..full], &b[..full]);
    let acc = (&mut ab, &mut sa);
    // one loop per case, so each compiles to straight vector code
    match (copy.as_deref_mut(), sums) {
        (Some(cp), true) => map_lanes::<T, true>(rows, (&m, &f, &h), copy_to(cp), acc),
        (Some(cp), false) => map_lanes::<T, false>(rows, (&m, &f, &h), copy_to(cp), acc),
        (None, true) => map_lanes::<T, true>(rows, (&m, &f, &h), |_, _| {}, acc),
        (None, false) => map_lanes::<T, false>(rows, (&m, &f, &h), |_, _| {}, acc),
    }
    let (mut tail_ab, mut tail_a) = (T::zero(), T::zero());
    for k in full..n {
        let v = m(a[k], c[k]);
        if let Some(cp) = copy.as_deref_mut() {
            cp[k] = v;
        }
        tail_ab += v * f(b[k]);
        tail_a += v;
        a[k] = h(v);
    }
    if !sums {
        return (T::zero(), T::zero());
    }
    (finish(ab, tail_ab), finish(sa, tail_a))
}

/// Writes chunk `k` of lanes into `cp`.
#[inline(always)]
fn copy_to<T: Scalar>(cp: &mut [T]) -> impl FnMut(usize, &[T; LANES]) + '_ {
    move |k, v| cp[k * LANES..][..LANES].copy_from_slice(v)
}

/// [`map_dot_sum`]'s whole chunks (`a`, `c`, `b` a multiple of [`LANES`] long): each
/// chunk's `a' = m(a, c)` handed to `put(chunk, a')`, summed into `ab`, `sa` when `SUMS`,
/// and written back as `h(a')`.
#[inline(always)]
fn map_lanes<T: Scalar, const SUMS: bool>(
    (a, c, b): (&mut [T], &[T], &[T]),
    (m, f, h): (impl Fn(T, T) -> T, impl Fn(T) -> T, impl Fn(T) -> T),
    mut put: impl FnMut(usize, &[T; LANES]),
    (ab, sa): (&mut [T; LANES], &mut [T; LANES]),
) {
    let chunks = a
        .chunks_exact_mut(LANES)
        .zip(c.chunks_exact(LANES))
        .zip(b.chunks_exact(LANES));
    for (k, ((ak, ck), bk)) in chunks.enumerate() {
        let mut v = [T::zero(); LANES];
        for i in 0..LANES {
            v[i] = m(ak[i], ck[i]);
        }
        put(k, &v);
        for i in 0..LANES {
            if SUMS {
                ab[i] += v[i] * f(bk[i]);
                sa[i] += v[i];
            }
            ak[i] = h(v[i]);
        }
    }
}

/// Σ (a·f(b) + c·g(d)), each term added as `(s + a·f(b)) + c·g(d)` (all four of one
/// length).
#[inline(always)]
pub fn dot2<T: Scalar>(
    (a, b, f): (&[T], &[T], impl Fn(T) -> T),
    (c, d, g): (&[T], &[T], impl Fn(T) -> T),
) -> T {
    let n = a.len();
    assert!(
        b.len() == n && c.len() == n && d.len() == n,
        "dot2: lengths"
    );
    let mut acc = [T::zero(); LANES];
    let whole = n - n % LANES;
    for j in (0..whole).step_by(LANES) {
        let (a, b) = (&a[j..j + LANES], &b[j..j + LANES]);
        let (c, d) = (&c[j..j + LANES], &d[j..j + LANES]);
        for i in 0..LANES {
            acc[i] = acc[i] + a[i] * f(b[i]) + c[i] * g(d[i]);
        }
    }
    let tail = (whole..n).fold(T::zero(), |s, j| s + a[j] * f(b[j]) + c[j] * g(d[j]));
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
            let (ds, ss) = dot_sum(&a, &b, |v| v);
            assert_eq!(
                (ds.to_bits(), ss.to_bits()),
                (dot(&a, &b).to_bits(), sum(&a).to_bits())
            );
            let d2: f64 = a.iter().zip(&b).map(|(x, y)| x * y + y * x).sum();
            assert!(close(dot2((&a, &b, |v| v), (&b, &a, |v| v)), d2));
            let s: f64 = a.iter().map(|x| (x - 0.3) * (x - 0.3)).sum();
            assert!(close(sq_dev(&a, 0.3), s));
            let m = a.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            assert_eq!(max(&a), m);
        }
    }

    /// map_dot_sum has the bits of the separate passes (mask, copy, dot_sum, map) in each
    /// of its cases (copy or not, sums or not), on whole chunks and tails.
    #[test]
    fn map_dot_sum_is_the_separate_passes() {
        for n in [0usize, 1, 7, 8, 9, 31, 100] {
            let g: Vec<f32> = (0..n).map(|i| ((i * 37 % 11) as f32) * 0.3 - 1.7).collect();
            let y: Vec<f32> = (0..n).map(|i| ((i * 13 % 7) as f32) - 3.0).collect();
            let x: Vec<f32> = (0..n).map(|i| ((i * 29 % 17) as f32) * 0.11).collect();
            let masked: Vec<f32> = g
                .iter()
                .zip(&y)
                .map(|(&a, &c)| if c > 0.0 { a } else { 0.0 })
                .collect();
            let f = |v: f32| (v - 0.5) * 1.25;
            let (want_ab, want_a) = dot_sum(&masked, &x, f);
            let want: Vec<f32> = masked.iter().map(|&v| v * 0.75).collect();
            for (with_copy, sums) in [(true, true), (true, false), (false, true), (false, false)] {
                let mut a = g.clone();
                let mut cp = vec![f32::NAN; n];
                let copy = with_copy.then_some(&mut cp[..]);
                let m = |a: f32, c: f32| if c > 0.0 { a } else { 0.0 };
                let (ab, sa) = map_dot_sum((&mut a, &y, &x), m, f, |v| v * 0.75, copy, sums);
                let bits = |v: &[f32]| v.iter().map(|t| t.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&a), bits(&want), "n {n}");
                if with_copy {
                    assert_eq!(bits(&cp), bits(&masked), "n {n}");
                }
                let sums_want = if sums { (want_ab, want_a) } else { (0.0, 0.0) };
                assert_eq!(
                    (ab.to_bits(), sa.to_bits()),
                    (sums_want.0.to_bits(), sums_want.1.to_bits())
                );
            }
        }
    }
}
