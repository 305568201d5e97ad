//! Hyperbolic tangent: y = tanh x,  f′ = 1 − y²,  f″ = −2y(1 − y²).

use super::Derivs;
use crate::engine::Scalar;

#[derive(Clone, Copy)]
pub struct Tanh;

impl Derivs for Tanh {
    fn f<T: Scalar>(self, x: T) -> T {
        x.tanh()
    }
    fn d1<T: Scalar>(self, _x: T, y: T) -> T {
        T::one() - y * y
    }
    fn d2<T: Scalar>(self, _x: T, y: T) -> T {
        let two = T::one() + T::one();
        -two * y * (T::one() - y * y)
    }
}
