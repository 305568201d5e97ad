//! The error function: y = erf x,  f′ = (2/√π) e^(−x²),  f″ = −2x f′.
//!
//! erf itself: in f64 the `libm` crate's (a port of FreeBSD msun's, within 1 ulp), in f32
//! the vectorizable [`crate::engine::ops::vmath::erff`].

use super::Derivs;
use crate::engine::ops::vmath::{erf, exp};
use crate::engine::Scalar;

#[derive(Clone, Copy)]
pub struct Erf;

impl Derivs for Erf {
    #[inline(always)]
    fn f<T: Scalar>(self, x: T) -> T {
        erf(x)
    }
    #[inline(always)]
    fn d1<T: Scalar>(self, x: T, _y: T) -> T {
        T::from_f(std::f64::consts::FRAC_2_SQRT_PI) * exp(-x * x)
    }
    #[inline(always)]
    fn d2<T: Scalar>(self, x: T, y: T) -> T {
        -(x + x) * self.d1(x, y)
    }
}
