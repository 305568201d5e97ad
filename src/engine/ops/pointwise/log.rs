//! Natural logarithm: y = ln x,  f′ = 1/x,  f″ = −1/x².

use super::Derivs;
use crate::engine::Scalar;

#[derive(Clone, Copy)]
pub struct Log;

impl Derivs for Log {
    fn f<T: Scalar>(self, x: T) -> T {
        x.ln()
    }
    fn d1<T: Scalar>(self, x: T, _y: T) -> T {
        x.recip()
    }
    fn d2<T: Scalar>(self, x: T, _y: T) -> T {
        -(x * x).recip()
    }
}
