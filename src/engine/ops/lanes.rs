//! Row reductions with eight interleaved partial results, so the compiler can keep them in
//! one vector register (a plain left fold of floats cannot be vectorized: it would change
//! the order of the additions). The order is fixed, so the bits are too. Used by the
//! row-wise ops (softmax, layer, group and batch norm).

use crate::engine::Scalar;
use std::mem::MaybeUninit;

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
    mut copy: Option<&mut [MaybeUninit<T>]>,
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
            cp[k].write(v);
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

/// A row, and a second one to subtract from it where given ([`bn_eval_row`]'s x).
pub type RowLess<'a, T> = (&'a [T], Option<&'a [T]>);

/// Batch norm's eval-mode backward over one channel's row, in one pass (Ioffe & Szegedy
/// 2015, with the batch statistics fixed): `v = g`, or with a `mask` (the output of the
/// ReLU after it) `v = g` where `mask > 0` and 0 elsewhere; `copy ← v` where given; with
/// `sums` returns (Σ v·x̂, Σ v), x̂ = (x − μ)·σ for `xhat = (μ, σ)` where x = `src`, or
/// `src − less` (rounded to T first) where `less` is given, in [`dot_sum`]'s
/// lanes and order (zeros without `sums`); and `g ← (v·γ)·s` for `scale = (γ, s)`.
/// The bits of [`map_dot_sum`] with those maps; in f32 with AVX2 (unless the tests' `plain`
/// forbids it) through explicit vectors, which the compiler does not form from the generic
/// loop (it ran one element at a time there).
#[inline(always)]
pub fn bn_eval_row<T: Scalar>(
    (g, mask, (src, less)): (&mut [T], Option<&[T]>, RowLess<T>),
    (mu, sx): (T, T),
    (gm, s): (T, T),
    copy: Option<&mut [MaybeUninit<T>]>,
    sums: bool,
) -> (T, T) {
    #[cfg(target_arch = "x86_64")]
    if f32_avx2::<T>() {
        let n = g.len();
        assert!(src.len() == n, "bn_eval_row: lengths");
        assert!(
            less.is_none_or(|l| l.len() == n),
            "bn_eval_row: less length"
        );
        assert!(
            mask.is_none_or(|m| m.len() == n),
            "bn_eval_row: mask length"
        );
        assert!(
            copy.as_ref().is_none_or(|c| c.len() == n),
            "bn_eval_row: copy length"
        );
        // SAFETY: the CPU has AVX2 and the lengths are checked above.
        let (ab, sa) = unsafe {
            avx2::bn_eval_row(
                (
                    as_f32_mut(g),
                    mask.map(as_f32),
                    (as_f32(src), less.map(as_f32)),
                ),
                (to_f32(mu), to_f32(sx)),
                (to_f32(gm), to_f32(s)),
                copy.map(as_f32_uninit),
                sums,
            )
        };
        return (from_f32(ab), from_f32(sa));
    }
    let diff: Vec<T>;
    let src = match less {
        Some(l) => {
            assert_eq!(l.len(), src.len(), "bn_eval_row: less length");
            diff = src.iter().zip(l).map(|(&a, &b)| a - b).collect();
            &diff[..]
        }
        None => src,
    };
    let f = move |v: T| (v - mu) * sx;
    let h = move |v: T| v * gm * s;
    match mask {
        Some(m) => map_dot_sum(
            (g, m, src),
            |a, c| if c > T::zero() { a } else { T::zero() },
            f,
            h,
            copy,
            sums,
        ),
        None => map_dot_sum((g, src, src), |a, _| a, f, h, copy, sums),
    }
}

/// Batch norm's eval-mode R-backward over one channel's row in one pass (the R-operator of
/// Pearlmutter 1994 on Ioffe & Szegedy 2015's normalization with its statistics fixed):
/// appends R{dx} = s·(R{dy}·γ + dy·v_γ) to `out` and returns (R{dγ}, R{dβ}) =
/// (Σ R{dy}·x̂ + dy·(s·R{x}), Σ R{dy}) with x̂ = (x − μ)·σ — the bits of [`dot2`] (with those maps)
/// and [`sum`] (three passes over R{dy} before). `rows` = (R{dy}, x, dy, R{x}) of one length,
/// `xhat` = (μ, σ), `coef` = (γ, v_γ, s). Explicit AVX2 vectors for f32 as
/// [`bn_eval_row`].
#[inline(always)]
pub fn bn_eval_r_row<T: Scalar>(
    out: &mut Vec<T>,
    (rg, x, g, rx): (&[T], &[T], &[T], &[T]),
    (mu, sx): (T, T),
    (gm, vg, s): (T, T, T),
) -> (T, T) {
    let n = rg.len();
    assert!(
        x.len() == n && g.len() == n && rx.len() == n,
        "bn_eval_r_row: lengths"
    );
    out.reserve(n);
    #[cfg(target_arch = "x86_64")]
    if f32_avx2::<T>() {
        let spare = &mut out.spare_capacity_mut()[..n];
        let dst = spare.as_mut_ptr() as *mut f32;
        let (rg, x, g, rx) = (as_f32(rg), as_f32(x), as_f32(g), as_f32(rx));
        let (c, e) = (
            (to_f32(mu), to_f32(sx)),
            (to_f32(gm), to_f32(vg), to_f32(s)),
        );
        // SAFETY: the CPU has AVX2, the lengths are checked above, `dst` has room for `n`
        // f32s (T is f32: `as_f32` checked it), and the kernel writes all `n`.
        let (a, b) = unsafe {
            let r = avx2::bn_eval_r_row(dst, (rg, x, g, rx), c, e);
            out.set_len(out.len() + n);
            r
        };
        return (from_f32(a), from_f32(b));
    }
    let rdg = dot2((rg, x, move |v| (v - mu) * sx), (g, rx, move |r| s * r));
    out.extend(rg.iter().zip(g).map(|(&r, &d)| s * (r * gm + d * vg)));
    (rdg, sum(rg))
}

/// Whether `T` is f32 and the explicit AVX2 kernels may run (the CPU has AVX2 and the
/// tests' `plain` does not forbid it).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn f32_avx2<T: Scalar>() -> bool {
    is_f32::<T>() && std::is_x86_feature_detected!("avx2") && !super::vmath::plain_forced()
}

/// Whether `T` is f32.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn is_f32<T: Scalar>() -> bool {
    std::any::TypeId::of::<T>() == std::any::TypeId::of::<f32>()
}

/// `x` as f32s; only for `T` = f32 (checked).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn as_f32<T: Scalar>(x: &[T]) -> &[f32] {
    assert!(is_f32::<T>(), "lanes: f32 only");
    // SAFETY: T is f32 (TypeIds match), so this reinterprets a slice as itself.
    unsafe { std::slice::from_raw_parts(x.as_ptr() as *const f32, x.len()) }
}

/// [`as_f32`] for a mutable slice.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn as_f32_mut<T: Scalar>(x: &mut [T]) -> &mut [f32] {
    assert!(is_f32::<T>(), "lanes: f32 only");
    // SAFETY: as in `as_f32`.
    unsafe { std::slice::from_raw_parts_mut(x.as_mut_ptr() as *mut f32, x.len()) }
}

/// [`as_f32_mut`] for a slice still to be written.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn as_f32_uninit<T: Scalar>(x: &mut [MaybeUninit<T>]) -> &mut [MaybeUninit<f32>] {
    assert!(is_f32::<T>(), "lanes: f32 only");
    // SAFETY: as in `as_f32`.
    unsafe { std::slice::from_raw_parts_mut(x.as_mut_ptr() as *mut MaybeUninit<f32>, x.len()) }
}

/// A `T` that is f32 as f32, and back (exact).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn to_f32<T: Scalar>(v: T) -> f32 {
    v.to_f32().expect("f32")
}

#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn from_f32<T: Scalar>(v: f32) -> T {
    T::from_f32(v).expect("f32")
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::{finish, LANES};
    use std::arch::x86_64::*;
    use std::mem::MaybeUninit;

    /// See [`super::bn_eval_row`]: its f32 form, the whole chunks in ymm vectors (one
    /// lane per accumulator of [`super::dot_sum`]), the tail as [`super::map_dot_sum`]'s.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn bn_eval_row(
        (g, mask, (src, less)): (&mut [f32], Option<&[f32]>, super::RowLess<f32>),
        (mu, sx): (f32, f32),
        (gm, s): (f32, f32),
        mut copy: Option<&mut [MaybeUninit<f32>]>,
        sums: bool,
    ) -> (f32, f32) {
        let n = g.len();
        let full = n - n % LANES;
        let cp = copy.as_deref_mut().map(|c| c.as_mut_ptr() as *mut f32);
        let mk = mask.map(|m| m.as_ptr());
        let ls = less.map(|l| l.as_ptr());
        let args = (g.as_mut_ptr(), mk, (src.as_ptr(), ls), cp, full);
        let c = [mu, sx, gm, s];
        // without the sums x is never read, so `less` takes no case of its own there
        let (ab, sa) = match (mk.is_some(), cp.is_some(), sums, ls.is_some()) {
            (true, true, true, false) => chunks::<true, true, true, false>(args, c),
            (true, true, false, _) => chunks::<true, true, false, false>(args, c),
            (true, false, true, false) => chunks::<true, false, true, false>(args, c),
            (true, false, false, _) => chunks::<true, false, false, false>(args, c),
            (false, true, true, false) => chunks::<false, true, true, false>(args, c),
            (false, true, false, _) => chunks::<false, true, false, false>(args, c),
            (false, false, true, false) => chunks::<false, false, true, false>(args, c),
            (false, false, false, _) => chunks::<false, false, false, false>(args, c),
            (true, true, true, true) => chunks::<true, true, true, true>(args, c),
            (true, false, true, true) => chunks::<true, false, true, true>(args, c),
            (false, true, true, true) => chunks::<false, true, true, true>(args, c),
            (false, false, true, true) => chunks::<false, false, true, true>(args, c),
        };
        let (mut tail_ab, mut tail_a) = (0.0f32, 0.0f32);
        for k in full..n {
            let v = match mask {
                Some(m) if m[k] > 0.0 => g[k],
                Some(_) => 0.0,
                None => g[k],
            };
            if let Some(cp) = copy.as_deref_mut() {
                cp[k].write(v);
            }
            let x = match less {
                Some(l) => src[k] - l[k],
                None => src[k],
            };
            tail_ab += v * ((x - mu) * sx);
            tail_a += v;
            g[k] = v * gm * s;
        }
        if !sums {
            return (0.0, 0.0);
        }
        (finish(ab, tail_ab), finish(sa, tail_a))
    }

    /// See [`super::bn_eval_r_row`]: the whole chunks in ymm vectors (one lane per
    /// accumulator of [`super::dot2`] and of [`super::sum`]), the tails as theirs; writes
    /// `rg.len()` floats at `out`.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn bn_eval_r_row(
        out: *mut f32,
        (rg, x, g, rx): (&[f32], &[f32], &[f32], &[f32]),
        (mu, sx): (f32, f32),
        (gm, vg, s): (f32, f32, f32),
    ) -> (f32, f32) {
        let n = rg.len();
        let whole = n - n % LANES;
        let (vmu, vsx, vs) = (_mm256_set1_ps(mu), _mm256_set1_ps(sx), _mm256_set1_ps(s));
        let (vgm, vvg) = (_mm256_set1_ps(gm), _mm256_set1_ps(vg));
        let (mut acc, mut sacc) = (_mm256_setzero_ps(), _mm256_setzero_ps());
        let (pr, px, pg, prx) = (rg.as_ptr(), x.as_ptr(), g.as_ptr(), rx.as_ptr());
        let mut j = 0;
        while j < whole {
            let (r, d) = (_mm256_loadu_ps(pr.add(j)), _mm256_loadu_ps(pg.add(j)));
            let xh = _mm256_mul_ps(_mm256_sub_ps(_mm256_loadu_ps(px.add(j)), vmu), vsx);
            let t2 = _mm256_mul_ps(d, _mm256_mul_ps(vs, _mm256_loadu_ps(prx.add(j))));
            acc = _mm256_add_ps(_mm256_add_ps(acc, _mm256_mul_ps(r, xh)), t2);
            sacc = _mm256_add_ps(sacc, r);
            let o = _mm256_add_ps(_mm256_mul_ps(r, vgm), _mm256_mul_ps(d, vvg));
            _mm256_storeu_ps(out.add(j), _mm256_mul_ps(vs, o));
            j += LANES;
        }
        let (mut lanes, mut slanes) = ([0.0f32; LANES], [0.0f32; LANES]);
        _mm256_storeu_ps(lanes.as_mut_ptr(), acc);
        _mm256_storeu_ps(slanes.as_mut_ptr(), sacc);
        let (mut tail, mut stail) = (0.0f32, 0.0f32);
        for j in whole..n {
            tail = tail + rg[j] * ((x[j] - mu) * sx) + g[j] * (s * rx[j]);
            stail += rg[j];
            *out.add(j) = s * (rg[j] * gm + g[j] * vg);
        }
        (finish(lanes, tail), finish(slanes, stail))
    }

    /// The chunks `0..full` of [`bn_eval_row`], one loop per case.
    #[target_feature(enable = "avx2")]
    #[allow(clippy::type_complexity)]
    unsafe fn chunks<const MASK: bool, const COPY: bool, const SUMS: bool, const LESS: bool>(
        (g, mask, (src, less), copy, full): (
            *mut f32,
            Option<*const f32>,
            (*const f32, Option<*const f32>),
            Option<*mut f32>,
            usize,
        ),
        [mu, sx, gm, s]: [f32; 4],
    ) -> ([f32; LANES], [f32; LANES]) {
        let zero = _mm256_setzero_ps();
        let (vmu, vsx, vgm, vs) = (
            _mm256_set1_ps(mu),
            _mm256_set1_ps(sx),
            _mm256_set1_ps(gm),
            _mm256_set1_ps(s),
        );
        let (mut ab, mut sa) = (zero, zero);
        let mut k = 0;
        while k < full {
            let a = _mm256_loadu_ps(g.add(k));
            let v = if MASK {
                let m = _mm256_loadu_ps(mask.unwrap_unchecked().add(k));
                _mm256_and_ps(a, _mm256_cmp_ps::<_CMP_GT_OQ>(m, zero))
            } else {
                a
            };
            if COPY {
                _mm256_storeu_ps(copy.unwrap_unchecked().add(k), v);
            }
            if SUMS {
                let mut x = _mm256_loadu_ps(src.add(k));
                if LESS {
                    x = _mm256_sub_ps(x, _mm256_loadu_ps(less.unwrap_unchecked().add(k)));
                }
                let xh = _mm256_mul_ps(_mm256_sub_ps(x, vmu), vsx);
                ab = _mm256_add_ps(ab, _mm256_mul_ps(v, xh));
                sa = _mm256_add_ps(sa, v);
            }
            _mm256_storeu_ps(g.add(k), _mm256_mul_ps(_mm256_mul_ps(v, vgm), vs));
            k += LANES;
        }
        let (mut oab, mut osa) = ([0.0f32; LANES], [0.0f32; LANES]);
        _mm256_storeu_ps(oab.as_mut_ptr(), ab);
        _mm256_storeu_ps(osa.as_mut_ptr(), sa);
        (oab, osa)
    }
}

/// Writes chunk `k` of lanes into `cp`.
#[inline(always)]
fn copy_to<T: Scalar>(cp: &mut [MaybeUninit<T>]) -> impl FnMut(usize, &[T; LANES]) + '_ {
    move |k, v| {
        for (d, &x) in cp[k * LANES..][..LANES].iter_mut().zip(v) {
            d.write(x);
        }
    }
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
    // a written slice as one to write (what `grads_relu` passes: its spare capacity)
    use crate::engine::ops::vmath::uninit;

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
                let copy = with_copy.then_some(uninit(&mut cp));
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

    /// bn_eval_row's AVX2 vectors have the bits of its generic loop (the tests' `plain`)
    /// in each case (mask, copy, sums), on whole chunks and tails, with NaN, ±0 and
    /// negative values in the gradient and the mask; and f64 takes the generic loop.
    #[test]
    fn bn_eval_row_vectors_are_the_generic_loop() {
        use crate::engine::ops::vmath::plain;
        let bits = |v: &[f32]| v.iter().map(|t| t.to_bits()).collect::<Vec<_>>();
        for n in [0usize, 1, 7, 8, 9, 31, 100, 1027] {
            let mut g: Vec<f32> = (0..n).map(|i| ((i * 37 % 11) as f32) * 0.3 - 1.7).collect();
            let mut y: Vec<f32> = (0..n).map(|i| ((i * 13 % 7) as f32) - 3.0).collect();
            let x: Vec<f32> = (0..n)
                .map(|i| ((i * 29 % 17) as f32) * 0.11 - 0.4)
                .collect();
            if n > 9 {
                (g[0], g[5], y[4], y[6], y[8]) = (f32::NAN, -0.0, f32::NAN, -0.0, 0.0);
            }
            let q: Vec<f32> = (0..n).map(|i| ((i * 7 % 13) as f32) * 0.7 - 2.1).collect();
            let cases = (0..16).map(|c| (c & 1 > 0, c & 2 > 0, c & 4 > 0, c & 8 > 0));
            for (masked, with_copy, sums, less) in cases {
                let run = |wide: bool| {
                    let (mut a, mut cp) = (g.clone(), vec![f32::NAN; n]);
                    let mut go = || {
                        bn_eval_row(
                            (
                                &mut a,
                                masked.then_some(&y[..]),
                                (&x, less.then_some(&q[..])),
                            ),
                            (0.37, 1.9),
                            (0.8, 1.3),
                            with_copy.then_some(uninit(&mut cp)),
                            sums,
                        )
                    };
                    let (ab, sa) = if wide { go() } else { plain(go) };
                    (bits(&a), bits(&cp), ab.to_bits(), sa.to_bits())
                };
                let (wide, generic) = (run(true), run(false));
                assert_eq!(
                    wide, generic,
                    "n {n} mask {masked} copy {with_copy} sums {sums} less {less}"
                );
                if less {
                    // the difference formed first: the same bits
                    let d: Vec<f32> = x.iter().zip(&q).map(|(&a, &b)| a - b).collect();
                    let mut a = g.clone();
                    let m = masked.then_some(&y[..]);
                    let (ab, sa) =
                        bn_eval_row((&mut a, m, (&d, None)), (0.37, 1.9), (0.8, 1.3), None, sums);
                    assert_eq!(
                        (bits(&a), ab.to_bits(), sa.to_bits()),
                        (wide.0.clone(), wide.2, wide.3)
                    );
                }
                // the generic loop is map_dot_sum's: v·γ·s, and the masked rows zero
                let gen_a: Vec<f32> = g
                    .iter()
                    .zip(&y)
                    .map(|(&v, &m)| {
                        if !masked || m > 0.0 {
                            v * 0.8 * 1.3
                        } else {
                            0.0
                        }
                    })
                    .collect();
                assert_eq!(generic.0, bits(&gen_a), "n {n}");
                let (sx, ss) = (f32::from_bits(generic.2), f32::from_bits(generic.3));
                if sums && n > 9 {
                    // the NaN at g[0] reaches the sums unless the mask (y[0] = −3) drops it
                    assert_eq!(sx.is_nan(), !masked, "n {n}");
                    assert_eq!(ss.is_nan(), !masked, "n {n}");
                }
                if !sums {
                    assert_eq!((sx, ss), (0.0, 0.0));
                }
            }
        }
        let (mut a, x) = (vec![1.5f64; 19], vec![0.25f64; 19]);
        let (ab, sa) = bn_eval_row(
            (&mut a, None, (&x, None)),
            (0.5, 2.0),
            (3.0, 0.5),
            None,
            true,
        );
        assert_eq!((ab, sa), (-0.5 * 1.5 * 19.0, 1.5 * 19.0));
        assert!(a.iter().all(|&v| v == 2.25));
    }

    /// bn_eval_r_row's AVX2 vectors have the bits of the separate passes it replaces
    /// (dot2 with its maps, sum, and the R{dx} map) on whole chunks and tails, with NaN and ±0;
    /// the tests' `plain` and f64 take the generic loop.
    #[test]
    fn bn_eval_r_row_is_the_separate_passes() {
        use crate::engine::ops::vmath::plain;
        let bits = |v: &[f32]| v.iter().map(|t| t.to_bits()).collect::<Vec<_>>();
        for n in [0usize, 1, 7, 8, 9, 31, 100, 1027] {
            let v = |k: usize, sc: f32| -> Vec<f32> {
                (0..n).map(|i| ((i * k % 23) as f32) * sc - 1.1).collect()
            };
            let (mut rg, x, mut g, rx) = (v(37, 0.3), v(13, 0.7), v(29, 0.11), v(7, 0.9));
            if n > 9 {
                (rg[3], rg[4], g[9]) = (f32::NAN, -0.0, -0.0);
            }
            let (xh, coef) = ((0.37f32, 1.9f32), (0.8f32, -0.45f32, 1.3f32));
            let want_dx: Vec<f32> = rg
                .iter()
                .zip(&g)
                .map(|(&r, &d)| 1.3 * (r * 0.8 + d * -0.45))
                .collect();
            let want = (
                dot2((&rg, &x, |v| (v - 0.37) * 1.9), (&g, &rx, |r| 1.3 * r)).to_bits(),
                sum(&rg).to_bits(),
            );
            let run = |wide: bool| {
                let mut out = vec![7.0f32];
                let mut go = || bn_eval_r_row(&mut out, (&rg, &x, &g, &rx), xh, coef);
                let (a, b) = if wide { go() } else { plain(go) };
                ((a.to_bits(), b.to_bits()), bits(&out))
            };
            let want_out: Vec<u32> = std::iter::once(7.0f32.to_bits())
                .chain(bits(&want_dx))
                .collect();
            for wide in [true, false] {
                assert_eq!(run(wide), (want, want_out.clone()), "n {n} wide {wide}");
            }
        }
        let (rg, x) = (vec![1.5f64; 19], vec![0.25f64; 19]);
        let mut out = Vec::new();
        let (a, b) = bn_eval_r_row(&mut out, (&rg, &x, &rg, &x), (0.5, 2.0), (3.0, 1.0, 0.5));
        assert_eq!((a, b), (1.5 * -0.5 * 19.0 + 1.5 * 0.125 * 19.0, 1.5 * 19.0));
        assert!(out.iter().all(|&v| v == 0.5 * (4.5 + 1.5)));
    }
}
