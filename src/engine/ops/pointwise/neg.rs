//! Negation: y = −x,  f′ = −1,  f″ = 0.

use super::Derivs;
use crate::engine::Scalar;

#[derive(Clone, Copy)]
pub struct Neg;

impl Derivs for Neg {
    const CURVED: bool = false;

    fn f<T: Scalar>(self, x: T) -> T {
        -x
    }
    fn d1<T: Scalar>(self, _x: T, _y: T) -> T {
        -T::one()
    }
    fn d2<T: Scalar>(self, _x: T, _y: T) -> T {
        T::zero()
    }
}
