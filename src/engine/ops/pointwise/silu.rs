//! SiLU / swish (Elfwing et al. 2018, arXiv:1702.03118): with s = σ(x),
//! y = x·s,  f′ = s(1 + x(1 − s)),  f″ = s(1 − s)(2 + x(1 − 2s)).

use super::sigmoid::sigmoid;
use super::Derivs;
use crate::engine::Scalar;

#[derive(Clone, Copy)]
pub struct Silu;

impl Derivs for Silu {
    #[inline(always)]
    fn f<T: Scalar>(self, x: T) -> T {
        x * sigmoid(x)
    }
    #[inline(always)]
    fn d1<T: Scalar>(self, x: T, _y: T) -> T {
        let s = sigmoid(x);
        s * (T::one() + x * (T::one() - s))
    }
    #[inline(always)]
    fn d2<T: Scalar>(self, x: T, _y: T) -> T {
        let s = sigmoid(x);
        let two = T::one() + T::one();
        s * (T::one() - s) * (two + x * (T::one() - two * s))
    }
}
