//! exp, tanh and erf for the elementwise ops: in f64 the standard library's (and libm's
//! erf), in f32 branch-free polynomial versions that the compiler vectorizes in a loop
//! over an array (a libm call per element costs 10–30 ns; these, a few per vector). Each
//! f32 version is within about 2 ulp of the correctly rounded value (tested against the
//! f64 functions below), as PyTorch's vectorized CPU kernels also trade the last ulp for
//! speed.
//!
//! Method: Cody & Waite (1980) argument reduction for exp (x = n ln 2 + r, |r| ≤ ln 2 / 2,
//! eˣ = 2ⁿ e^r); tanh x = x + x³ P(x²) below |x| = 0.625 and 1 − 2/(e^{2|x|} + 1) above;
//! erf x = x P(x²) for |x| ≤ 1 and 1 − exp(H(|x|) − x²) above, H fitting ln erfc t + t²
//! (as in N. Juffa's branch-free erff). The polynomials are Chebyshev fits (mpmath
//! `chebyfit`) whose maximum error, with the coefficients rounded to f32, is under
//! 7e-8 of the function fitted.

use ndarray::ArrayD;

use crate::engine::Scalar;

/// `wide!(expr)` evaluates `expr` compiled for AVX2 where the CPU has it, else as it is:
/// the same arithmetic either way (no FMA contraction), so the same bits, in vectors twice
/// as wide. It is [`run_wide`] with the closure `#[inline(always)]`: only code inlined
/// into the AVX2 function is compiled for AVX2, and LLVM would inline only small closures
/// (the closure is called from two places, the AVX2 function and the baseline path), so a
/// large body (batch norm's passes, the padded copy) would stay one baseline function
/// that the AVX2 function merely calls. Functions and closures that `expr` calls must be
/// `#[inline(always)]` too, for the same reason.
macro_rules! wide {
    ($body:expr $(,)?) => {
        $crate::engine::ops::vmath::run_wide(
            #[inline(always)]
            || $body,
        )
    };
}
pub(crate) use wide;

/// The dispatch behind [`wide!`]: `f` through a `#[target_feature(enable = "avx2")]`
/// function where the CPU has AVX2 (and the tests' `plain` does not forbid it), else directly. Call
/// it through the macro, which makes `f` inline into both.
#[inline(always)]
pub fn run_wide<R>(f: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx2")]
        unsafe fn avx2<R>(f: impl FnOnce() -> R) -> R {
            f()
        }
        if std::is_x86_feature_detected!("avx2") && !plain_forced() {
            // SAFETY: the CPU has AVX2.
            return unsafe { avx2(f) };
        }
    }
    f()
}

/// `f(a, b)` element by element into a new array, in [`wide!`] vectors; `None` unless `a`
/// and `b` have one shape and are both contiguous in standard layout (the caller then
/// takes ndarray's path, with the same arithmetic, so the same bits).
#[inline(always)]
pub fn zip_map<T: Scalar>(
    a: &ArrayD<T>,
    b: &ArrayD<T>,
    f: impl Fn(T, T) -> T,
) -> Option<ArrayD<T>> {
    if a.shape() != b.shape() {
        return None;
    }
    let (x, y) = (a.as_slice()?, b.as_slice()?);
    let v = wide!(x.iter().zip(y).map(|(&u, &w)| f(u, w)).collect(),);
    Some(ArrayD::from_shape_vec(a.raw_dim(), v).expect("same length"))
}

/// `f(&mut a, b)` element by element in place, in [`wide!`] vectors; false (nothing done)
/// under [`zip_map`]'s conditions for `None`.
#[inline(always)]
pub fn zip_mut<T: Scalar>(a: &mut ArrayD<T>, b: &ArrayD<T>, f: impl Fn(&mut T, T)) -> bool {
    if a.shape() != b.shape() {
        return false;
    }
    let (Some(x), Some(y)) = (a.as_slice_mut(), b.as_slice()) else {
        return false;
    };
    wide!(x.iter_mut().zip(y).for_each(|(u, &w)| f(u, w)),);
    true
}

/// `a += b` element by element, in [`wide!`] vectors (`b` at least as long as `a`): the
/// bits of [`zip_mut`]'s sum, for rows of contiguous arrays.
#[inline(always)]
pub fn add_into<T: Scalar>(a: &mut [T], b: &[T]) {
    let b = &b[..a.len()];
    wide!(a.iter_mut().zip(b).for_each(|(u, &w)| *u += w),);
}

/// Whether every value is finite, in [`wide!`] vectors: no early exit inside a block
/// of 256 values, so the test vectorizes (`Iterator::all` tests one value a cycle).
pub fn all_finite<T: Copy + Into<f64>>(v: &[T]) -> bool {
    wide!(v
        .chunks(256)
        .all(|b| b.iter().fold(true, |ok, &x| ok & x.into().is_finite())))
}

/// Initialized floats as an output to write (kernels that take `MaybeUninit` outputs
/// and write only initialized values).
pub(crate) fn uninit(y: &mut [f32]) -> &mut [std::mem::MaybeUninit<f32>] {
    // SAFETY: same layout; what is written through the result is initialized.
    unsafe { &mut *(y as *mut [f32] as *mut [std::mem::MaybeUninit<f32>]) }
}

#[cfg(test)]
thread_local! {
    static PLAIN: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Whether this thread's tests asked for the baseline loops ([`plain`]).
#[inline(always)]
pub(super) fn plain_forced() -> bool {
    #[cfg(test)]
    return PLAIN.with(|p| p.get());
    #[cfg(not(test))]
    false
}

/// Tests: runs `f` with [`wide!`] taking the baseline loops on this thread, so the narrower
/// path is tested on machines that have AVX2 too.
#[cfg(test)]
pub fn plain<R>(f: impl FnOnce() -> R) -> R {
    let before = PLAIN.with(|p| p.replace(true));
    let r = f();
    PLAIN.with(|p| p.set(before));
    r
}

fn is_f32<T: Scalar>() -> bool {
    std::mem::size_of::<T>() == 4
}

/// Horner's rule, highest degree first.
#[inline(always)]
fn poly<const N: usize>(c: [f32; N], x: f32) -> f32 {
    c[1..].iter().fold(c[0], |acc, &k| acc * x + k)
}

/// 1.5·2²³: adding it rounds |v| < 2²² to an integer (ties to even), which then is the
/// low bits of the sum's representation (no `round` or float-to-int conversion, neither of
/// which vectorizes on baseline x86-64).
const MAGIC: f32 = 12_582_912.0;

/// e·2ⁿ for n in [−150, 128] given as `MAGIC + n`, as (e·2^⌊n/2⌋)·2^(n−⌊n/2⌋): each
/// factor is a normal number, and the result under- or overflows only where it should.
#[inline(always)]
fn scale(e: f32, magic_n: f32) -> f32 {
    let n = magic_n.to_bits() as i32 - MAGIC.to_bits() as i32;
    let a = n >> 1;
    let b = n - a;
    e * f32::from_bits(((a + 127) << 23) as u32) * f32::from_bits(((b + 127) << 23) as u32)
}

/// eˣ in f32: 0 below −104 (where eˣ rounds to 0), ∞ above 88.8, NaN for NaN.
#[inline(always)]
pub fn expf(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    // ln 2 = C1 + C2, C1 with 9 significant bits so n·C1 is exact
    const C1: f32 = 0.693_359_4;
    const C2: f32 = -2.121_944_4e-4;
    // (e^r − 1 − r)/r² on |r| ≤ ln 2 / 2
    const P: [f32; 5] = [
        0.001_392_617_6,
        0.008_363_173,
        0.041_666_555,
        0.166_665_77,
        0.5,
    ];
    let x = x.clamp(-104.0, 88.8);
    let magic_n = x * LOG2E + MAGIC;
    let n = magic_n - MAGIC;
    let r = (x - n * C1) - n * C2;
    let e = 1.0 + r + r * r * poly(P, r);
    scale(e, magic_n)
}

/// tanh x in f32.
#[inline(always)]
pub fn tanhf(x: f32) -> f32 {
    // (tanh(√s)/√s − 1)/s on s ≤ 0.625²
    const P: [f32; 5] = [
        -0.006_096_714,
        0.020_997_18,
        -0.053_850_91,
        0.133_327_7,
        -0.333_333_3,
    ];
    let a = x.abs();
    let s = x * x;
    let small = x + x * s * poly(P, s);
    let large = (1.0 - 2.0 / (expf(a + a) + 1.0)).copysign(x);
    if a < 0.625 {
        small
    } else {
        large
    }
}

/// erf x in f32.
#[inline(always)]
pub fn erff(x: f32) -> f32 {
    // erf(√s)/√s on s ≤ 1 (the constant term is the fit's, near 2/√π)
    #[allow(clippy::approx_constant)]
    const A: [f32; 7] = [
        7.875_875e-5,
        -8.016_864e-4,
        0.005_189_087_4,
        -0.026_854_212,
        0.112_835_95,
        -0.376_126_27,
        1.128_379_2,
    ];
    // ln erfc(t) + t² at t = 2.5 + 1.5u, u in [−1, 1]
    const B: [f32; 9] = [
        4.195_84e-5,
        -2.274_995e-4,
        8.803_971e-4,
        -0.003_190_305_4,
        0.010_961_849,
        -0.036_647_58,
        0.126_239_17,
        -0.529_021,
        -1.556_815_3,
    ];
    let a = x.abs();
    let small = x * poly(A, x * x);
    // erf rounds to 1 beyond t = 3.92; a NaN stays NaN (the comparison is false)
    let t = if a > 4.0 { 4.0 } else { a };
    let u = (t - 2.5) * (1.0 / 1.5);
    let large = (1.0 - expf(poly(B, u) - t * t)).copysign(x);
    if a <= 1.0 {
        small
    } else {
        large
    }
}

/// eˣ in the precision of `T`.
#[inline(always)]
pub fn exp<T: Scalar>(x: T) -> T {
    match is_f32::<T>() {
        true => T::from_f(expf(x.as_f64() as f32) as f64),
        false => x.exp(),
    }
}

/// tanh x in the precision of `T`.
#[inline(always)]
pub fn tanh<T: Scalar>(x: T) -> T {
    match is_f32::<T>() {
        true => T::from_f(tanhf(x.as_f64() as f32) as f64),
        false => x.tanh(),
    }
}

/// erf x in the precision of `T` (f64: libm's `erf`, a port of FreeBSD msun's, < 1 ulp).
#[inline(always)]
pub fn erf<T: Scalar>(x: T) -> T {
    match is_f32::<T>() {
        true => T::from_f(erff(x.as_f64() as f32) as f64),
        false => T::from_f(libm::erf(x.as_f64())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Max error in units of f32's ulp at the reference value, over a dense grid.
    fn max_ulp(f: impl Fn(f32) -> f32, g: impl Fn(f64) -> f64, lo: f32, hi: f32) -> f64 {
        let n = 200_000;
        (0..=n)
            .map(|i| {
                let x = lo + (hi - lo) * (i as f32 / n as f32);
                let (got, want) = (f(x) as f64, g(x as f64));
                let ulp = (want.abs().max(f32::MIN_POSITIVE as f64) * f32::EPSILON as f64)
                    .max(f64::from(f32::from_bits(1)));
                (got - want).abs() / ulp
            })
            .fold(0.0, f64::max)
    }

    #[test]
    fn all_finite_finds_each_non_finite_value() {
        // one ∞, −∞ or NaN at each position of lengths around the 256-value blocks, in
        // f32 and f64, on the AVX2 loops and the baseline ones
        for len in [0, 1, 7, 255, 256, 257, 600] {
            let base: Vec<f32> = (0..len).map(|i| i as f32 * 1e30).collect();
            for wide_loops in [true, false] {
                let check = |v: &[f32]| {
                    let w: Vec<f64> = v.iter().map(|&x| x as f64).collect();
                    let run = || (all_finite(v), all_finite(&w));
                    let got = if wide_loops { run() } else { plain(run) };
                    let want = v.iter().all(|x| x.is_finite());
                    assert_eq!(got, (want, want), "len {len}");
                };
                check(&base);
                for at in 0..len {
                    for bad in [f32::INFINITY, f32::NEG_INFINITY, f32::NAN] {
                        let mut v = base.clone();
                        v[at] = bad;
                        check(&v);
                    }
                }
            }
        }
    }

    #[test]
    fn accuracy_against_f64() {
        let e = max_ulp(expf, f64::exp, -103.0, 88.7);
        assert!(e <= 2.0, "exp: {e} ulp");
        let e = max_ulp(expf, f64::exp, -5.0, 5.0);
        assert!(e <= 1.5, "exp near 0: {e} ulp");
        let t = max_ulp(tanhf, f64::tanh, -10.0, 10.0);
        assert!(t <= 3.0, "tanh: {t} ulp");
        let t = max_ulp(tanhf, f64::tanh, -1e-3, 1e-3);
        assert!(t <= 1.5, "tanh near 0: {t} ulp");
        let r = max_ulp(erff, libm::erf, -6.0, 6.0);
        assert!(r <= 3.0, "erf: {r} ulp");
        let r = max_ulp(erff, libm::erf, -1e-3, 1e-3);
        assert!(r <= 1.5, "erf near 0: {r} ulp");
    }

    /// The AVX2-compiled loop gives the bits of the baseline one (run on this machine's
    /// widest path and on the plain one).
    #[test]
    fn wide_loops_keep_the_bits() {
        let x: Vec<f32> = (0..1003).map(|i| (i as f32 - 501.0) * 0.0173).collect();
        let run = |x: &[f32]| -> Vec<u32> {
            x.iter()
                .map(|&v| (expf(v) + tanhf(v) * erff(v)).to_bits())
                .collect()
        };
        let baseline = run(&x);
        let widened = wide!(run(&x),);
        assert_eq!(baseline, widened);
        assert_eq!(plain(|| wide!(run(&x))), baseline);
    }

    #[test]
    fn special_values() {
        assert_eq!(expf(0.0), 1.0);
        assert_eq!(expf(f32::NEG_INFINITY), 0.0);
        assert_eq!(expf(-200.0), 0.0);
        assert_eq!(expf(f32::INFINITY), f32::INFINITY);
        assert_eq!(expf(89.0), f32::INFINITY);
        assert!(expf(88.7).is_finite());
        assert!(expf(f32::NAN).is_nan());
        assert_eq!(tanhf(f32::INFINITY), 1.0);
        assert_eq!(tanhf(f32::NEG_INFINITY), -1.0);
        assert_eq!(tanhf(30.0), 1.0);
        assert!(tanhf(f32::NAN).is_nan());
        assert_eq!(erff(0.0), 0.0);
        assert_eq!(erff(f32::INFINITY), 1.0);
        assert_eq!(erff(-5.0), -1.0);
        assert!(erff(f32::NAN).is_nan());
        // the generic forms pick the f64 functions for f64
        assert_eq!(exp(1.0f64), 1f64.exp());
        assert_eq!(erf(0.5f64), libm::erf(0.5));
        assert_eq!(tanh(0.3f64), 0.3f64.tanh());
    }
}
