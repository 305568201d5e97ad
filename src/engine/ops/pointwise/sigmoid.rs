//! Logistic sigmoid: y = σ(x) = 1/(1 + e⁻ˣ),  f′ = y(1 − y),  f″ = y(1 − y)(1 − 2y).

use super::Derivs;
use crate::engine::Scalar;

#[derive(Clone, Copy)]
pub struct Sigmoid;

/// σ(x) without overflow: 1/(1 + e⁻ˣ) for x ≥ 0, eˣ/(1 + eˣ) below.
pub fn sigmoid<T: Scalar>(x: T) -> T {
    if x >= T::zero() {
        T::one() / (T::one() + (-x).exp())
    } else {
        let e = x.exp();
        e / (T::one() + e)
    }
}

impl Derivs for Sigmoid {
    fn f<T: Scalar>(self, x: T) -> T {
        sigmoid(x)
    }
    fn d1<T: Scalar>(self, _x: T, y: T) -> T {
        y * (T::one() - y)
    }
    fn d2<T: Scalar>(self, _x: T, y: T) -> T {
        y * (T::one() - y) * (T::one() - (y + y))
    }
}
