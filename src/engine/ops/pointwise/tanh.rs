//! Hyperbolic tangent: y = tanh x,  f′ = 1 − y²,  f″ = −2y(1 − y²).
//! (f32: the vectorizable [`crate::engine::ops::vmath::tanhf`].)

use super::Derivs;
use crate::engine::ops::vmath::tanh;
use crate::engine::Scalar;

#[derive(Clone, Copy)]
pub struct Tanh;

impl Derivs for Tanh {
    #[inline(always)]
    fn f<T: Scalar>(self, x: T) -> T {
        tanh(x)
    }
    #[inline(always)]
    fn d1<T: Scalar>(self, _x: T, y: T) -> T {
        T::one() - y * y
    }
    #[inline(always)]
    fn d2<T: Scalar>(self, _x: T, y: T) -> T {
        let two = T::one() + T::one();
        -two * y * (T::one() - y * y)
    }
}
