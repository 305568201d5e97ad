//! Natural logarithm: y = ln x,  f′ = 1/x,  f″ = −1/x².

use super::Derivs;
use crate::engine::Scalar;

#[derive(Clone, Copy)]
pub struct Log;

impl Derivs for Log {
    #[inline(always)]
    fn f<T: Scalar>(self, x: T) -> T {
        x.ln()
    }
    #[inline(always)]
    fn d1<T: Scalar>(self, x: T, _y: T) -> T {
        x.recip()
    }
    #[inline(always)]
    fn d2<T: Scalar>(self, x: T, _y: T) -> T {
        -(x * x).recip()
    }
}
