//! Reciprocal: y = 1/x,  f′ = −y²,  f″ = 2y³.

use super::Derivs;
use crate::engine::Scalar;

#[derive(Clone, Copy)]
pub struct Reciprocal;

impl Derivs for Reciprocal {
    fn f<T: Scalar>(self, x: T) -> T {
        x.recip()
    }
    fn d1<T: Scalar>(self, _x: T, y: T) -> T {
        -(y * y)
    }
    fn d2<T: Scalar>(self, _x: T, y: T) -> T {
        (y + y) * y * y
    }
}
