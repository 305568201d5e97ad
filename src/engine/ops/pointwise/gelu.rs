//! GELU (Hendrycks & Gimpel 2016, arXiv:1606.08415), both of PyTorch's forms.
//!
//! ```text
//! exact (approximate='none'): y = x Φ(x),  Φ(x) = ½(1 + erf(x/√2)),  φ(x) = e^(−x²/2)/√(2π)
//!     f′ = Φ + x φ,   f″ = φ (2 − x²)
//! tanh (approximate='tanh'):  u = c(x + κx³), c = √(2/π), κ = 0.044715, t = tanh u
//!     y = ½ x (1 + t),   u′ = c(1 + 3κx²),   u″ = 6cκx
//!     f′ = ½(1 + t) + ½ x (1 − t²) u′
//!     f″ = (1 − t²) (u′ + ½ x (u″ − 2 t u′²))
//! ```

use super::Derivs;
use crate::engine::ops::vmath::{erf, exp, tanh};
use crate::engine::Scalar;

#[derive(Clone, Copy)]
pub struct GeluErf;

#[derive(Clone, Copy)]
pub struct GeluTanh;

const KAPPA: f64 = 0.044715;

/// Φ(x), the standard normal distribution function.
#[inline(always)]
fn cdf<T: Scalar>(x: T) -> T {
    let half = T::from_f(0.5);
    half * (T::one() + erf(x * T::from_f(std::f64::consts::FRAC_1_SQRT_2)))
}

/// φ(x), the standard normal density.
#[inline(always)]
fn pdf<T: Scalar>(x: T) -> T {
    let inv_sqrt_2pi =
        T::from_f(0.5 * std::f64::consts::FRAC_2_SQRT_PI * std::f64::consts::FRAC_1_SQRT_2);
    inv_sqrt_2pi * exp(T::from_f(-0.5) * x * x)
}

impl Derivs for GeluErf {
    #[inline(always)]
    fn f<T: Scalar>(self, x: T) -> T {
        x * cdf(x)
    }
    #[inline(always)]
    fn d1<T: Scalar>(self, x: T, _y: T) -> T {
        cdf(x) + x * pdf(x)
    }
    #[inline(always)]
    fn d2<T: Scalar>(self, x: T, _y: T) -> T {
        pdf(x) * (T::from_f(2.0) - x * x)
    }
}

/// (t, u′) at x.
#[inline(always)]
fn tanh_parts<T: Scalar>(x: T) -> (T, T) {
    let c = T::from_f((2.0 / std::f64::consts::PI).sqrt());
    let k = T::from_f(KAPPA);
    let x2 = x * x;
    let t = tanh(c * (x + k * x2 * x));
    (t, c * (T::one() + T::from_f(3.0) * k * x2))
}

impl Derivs for GeluTanh {
    #[inline(always)]
    fn f<T: Scalar>(self, x: T) -> T {
        let (t, _) = tanh_parts(x);
        T::from_f(0.5) * x * (T::one() + t)
    }
    #[inline(always)]
    fn d1<T: Scalar>(self, x: T, _y: T) -> T {
        let (t, du) = tanh_parts(x);
        let half = T::from_f(0.5);
        half * (T::one() + t) + half * x * (T::one() - t * t) * du
    }
    #[inline(always)]
    fn d2<T: Scalar>(self, x: T, _y: T) -> T {
        let (t, du) = tanh_parts(x);
        let c = T::from_f((2.0 / std::f64::consts::PI).sqrt());
        let ddu = T::from_f(6.0 * KAPPA) * c * x;
        let sech2 = T::one() - t * t;
        sech2 * (du + T::from_f(0.5) * x * (ddu - (t + t) * du * du))
    }
}
