//! Logistic sigmoid: y = σ(x) = 1/(1 + e⁻ˣ),  f′ = y(1 − y),  f″ = y(1 − y)(1 − 2y).

use super::Derivs;
use crate::engine::ops::vmath::exp;
use crate::engine::Scalar;

#[derive(Clone, Copy)]
pub struct Sigmoid;

/// σ(x) without overflow: with e = e^(−|x|), 1/(1 + e) for x ≥ 0 and e/(1 + e) below
/// (branch-free, so a loop of it vectorizes).
#[inline(always)]
pub fn sigmoid<T: Scalar>(x: T) -> T {
    let e = exp(-x.abs());
    let s = T::one() / (T::one() + e);
    if x >= T::zero() {
        s
    } else {
        e * s
    }
}

impl Derivs for Sigmoid {
    #[inline(always)]
    fn f<T: Scalar>(self, x: T) -> T {
        sigmoid(x)
    }
    #[inline(always)]
    fn d1<T: Scalar>(self, _x: T, y: T) -> T {
        y * (T::one() - y)
    }
    #[inline(always)]
    fn d2<T: Scalar>(self, _x: T, y: T) -> T {
        y * (T::one() - y) * (T::one() - (y + y))
    }
}
