//! The error function: y = erf x,  f′ = (2/√π) e^(−x²),  f″ = −2x f′.
//!
//! erf itself comes from the `libm` crate (a port of musl / FreeBSD msun, after Sun's
//! fdlibm: correctly rounded to within 1 ulp), `erff` for f32 and `erf` for f64.

use super::Derivs;
use crate::engine::Scalar;

#[derive(Clone, Copy)]
pub struct Erf;

/// erf in the precision of `T` (libm's `erff` for f32, `erf` for f64).
pub fn erf<T: Scalar>(x: T) -> T {
    if std::mem::size_of::<T>() == 4 {
        T::from_f(libm::erff(x.as_f64() as f32) as f64)
    } else {
        T::from_f(libm::erf(x.as_f64()))
    }
}

impl Derivs for Erf {
    fn f<T: Scalar>(self, x: T) -> T {
        erf(x)
    }
    fn d1<T: Scalar>(self, x: T, _y: T) -> T {
        T::from_f(std::f64::consts::FRAC_2_SQRT_PI) * (-x * x).exp()
    }
    fn d2<T: Scalar>(self, x: T, y: T) -> T {
        -(x + x) * self.d1(x, y)
    }
}
