//! Reciprocal: y = 1/x,  f′ = −y²,  f″ = 2y³.

use super::Derivs;
use crate::engine::Scalar;

#[derive(Clone, Copy)]
pub struct Reciprocal;

impl Derivs for Reciprocal {
    #[inline(always)]
    fn f<T: Scalar>(self, x: T) -> T {
        x.recip()
    }
    #[inline(always)]
    fn d1<T: Scalar>(self, _x: T, y: T) -> T {
        -(y * y)
    }
    #[inline(always)]
    fn d2<T: Scalar>(self, _x: T, y: T) -> T {
        (y + y) * y * y
    }
}
