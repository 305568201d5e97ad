//! Square root: y = √x,  f′ = 1/(2y),  f″ = −1/(4 x y)  (x = 0 gives ∞, as in PyTorch;
//! x < 0 gives NaN).

use super::Derivs;
use crate::engine::Scalar;

#[derive(Clone, Copy)]
pub struct Sqrt;

impl Derivs for Sqrt {
    #[inline(always)]
    fn f<T: Scalar>(self, x: T) -> T {
        x.sqrt()
    }
    #[inline(always)]
    fn d1<T: Scalar>(self, _x: T, y: T) -> T {
        T::from_f(0.5) / y
    }
    #[inline(always)]
    fn d2<T: Scalar>(self, x: T, y: T) -> T {
        T::from_f(-0.25) / (x * y)
    }
}
