//! Exponential: y = eˣ,  f′ = f″ = y.

use super::Derivs;
use crate::engine::Scalar;

#[derive(Clone, Copy)]
pub struct Exp;

impl Derivs for Exp {
    fn f<T: Scalar>(self, x: T) -> T {
        x.exp()
    }
    fn d1<T: Scalar>(self, _x: T, y: T) -> T {
        y
    }
    fn d2<T: Scalar>(self, _x: T, y: T) -> T {
        y
    }
}
