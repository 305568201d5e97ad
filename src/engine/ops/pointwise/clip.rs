//! Clamp to [min, max] (ONNX `Clip`, `torch.clamp`, `nn.Hardtanh`; ReLU6 is [0, 6]):
//! y = min(max(x, min), max),  f′ = 1 for min < x < max and 0 for x ≤ min or x ≥ max (at
//! the boundary as PyTorch's `hardtanh_backward`),  f″ = 0. A NaN input stays NaN.

use super::Derivs;
use crate::engine::Scalar;

#[derive(Clone, Copy)]
pub struct Clip {
    min: f64,
    max: f64,
}

impl Clip {
    pub fn new(min: f64, max: f64) -> Self {
        Clip { min, max }
    }
}

impl Derivs for Clip {
    const CURVED: bool = false;

    #[inline(always)]
    fn f<T: Scalar>(self, x: T) -> T {
        let (lo, hi) = (T::from_f(self.min), T::from_f(self.max));
        if x < lo {
            lo
        } else if x > hi {
            hi
        } else {
            x
        }
    }
    #[inline(always)]
    fn d1<T: Scalar>(self, x: T, _y: T) -> T {
        let (lo, hi) = (T::from_f(self.min), T::from_f(self.max));
        if x <= lo || x >= hi {
            T::zero()
        } else {
            T::one()
        }
    }
    #[inline(always)]
    fn d2<T: Scalar>(self, _x: T, _y: T) -> T {
        T::zero()
    }
}
