//! Power with a constant exponent p (ONNX `Pow` with a constant exponent, `x ** p`):
//! y = xᵖ,  f′ = p xᵖ⁻¹,  f″ = p(p − 1) xᵖ⁻²; a coefficient of 0 gives a derivative of
//! exactly 0 (as PyTorch's pow_backward for p = 0), never 0·∞. Integer exponents use
//! repeated multiplication (`powi`, exact for x² as PyTorch's `x*x`), so negative bases
//! work; a non-integer exponent of a negative base is NaN.

use super::Derivs;
use crate::engine::Scalar;

#[derive(Clone, Copy)]
pub struct Pow {
    p: f64,
}

impl Pow {
    pub fn new(p: f64) -> Self {
        Pow { p }
    }
}

/// xᵉ: `powi` for integer exponents, `sqrt` for ½, `powf` otherwise.
#[inline(always)]
fn power<T: Scalar>(x: T, e: f64) -> T {
    if e.fract() == 0.0 && e.abs() <= i32::MAX as f64 {
        x.powi(e as i32)
    } else if e == 0.5 {
        x.sqrt()
    } else {
        x.powf(T::from_f(e))
    }
}

impl Derivs for Pow {
    #[inline(always)]
    fn f<T: Scalar>(self, x: T) -> T {
        power(x, self.p)
    }
    #[inline(always)]
    fn d1<T: Scalar>(self, x: T, _y: T) -> T {
        if self.p == 0.0 {
            T::zero()
        } else {
            T::from_f(self.p) * power(x, self.p - 1.0)
        }
    }
    #[inline(always)]
    fn d2<T: Scalar>(self, x: T, _y: T) -> T {
        let c = self.p * (self.p - 1.0);
        if c == 0.0 {
            T::zero()
        } else {
            T::from_f(c) * power(x, self.p - 2.0)
        }
    }
}
