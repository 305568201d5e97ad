//! Negation: y = −x,  f′ = −1,  f″ = 0.

use super::Derivs;
use crate::engine::Scalar;

#[derive(Clone, Copy)]
pub struct Neg;

impl Derivs for Neg {
    const CURVED: bool = false;

    #[inline(always)]
    fn f<T: Scalar>(self, x: T) -> T {
        -x
    }
    #[inline(always)]
    fn d1<T: Scalar>(self, _x: T, _y: T) -> T {
        -T::one()
    }
    #[inline(always)]
    fn d2<T: Scalar>(self, _x: T, _y: T) -> T {
        T::zero()
    }
}
