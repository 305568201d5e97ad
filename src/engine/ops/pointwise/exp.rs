//! Exponential: y = eˣ,  f′ = f″ = y.

use super::Derivs;
use crate::engine::ops::vmath::exp;
use crate::engine::Scalar;

#[derive(Clone, Copy)]
pub struct Exp;

impl Derivs for Exp {
    #[inline(always)]
    fn f<T: Scalar>(self, x: T) -> T {
        exp(x)
    }
    #[inline(always)]
    fn d1<T: Scalar>(self, _x: T, y: T) -> T {
        y
    }
    #[inline(always)]
    fn d2<T: Scalar>(self, _x: T, y: T) -> T {
        y
    }
}
