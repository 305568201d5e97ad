//! Rectified linear unit, y = max(x, 0).
//!
//! ```text
//! backward:   dx = dy ⊙ [x > 0]
//! R-forward:  R{y} = R{x} ⊙ [x > 0]
//! R-backward: R{dx} = R{dy} ⊙ [x > 0]      (the second derivative is 0 almost everywhere)
//! ```
//! The mask is read from the output (y > 0 ⇔ x > 0), as PyTorch's `threshold_backward` does.

use ndarray::{ArrayD, Zip};

use crate::engine::Scalar;

pub struct Relu;

impl Relu {
    pub fn forward<T: Scalar>(x: &ArrayD<T>) -> ArrayD<T> {
        x.mapv(|v| if v > T::zero() { v } else { T::zero() })
    }

    /// Masks `g` (a gradient or an R-quantity) by y > 0.
    fn mask<T: Scalar>(y: &ArrayD<T>, g: &ArrayD<T>) -> ArrayD<T> {
        Zip::from(y)
            .and(g)
            .map_collect(|&yv, &gv| if yv > T::zero() { gv } else { T::zero() })
    }

    /// [`Self::backward`] (or R-forward, R-backward) in place on an owned `g`.
    pub fn mask_inplace<T: Scalar>(y: &ArrayD<T>, g: &mut ArrayD<T>) {
        Zip::from(g)
            .and(y)
            .for_each(|gv, &yv| *gv = if yv > T::zero() { *gv } else { T::zero() });
    }

    pub fn backward<T: Scalar>(y: &ArrayD<T>, gy: &ArrayD<T>) -> ArrayD<T> {
        Self::mask(y, gy)
    }

    pub fn r_forward<T: Scalar>(y: &ArrayD<T>, rx: &ArrayD<T>) -> ArrayD<T> {
        Self::mask(y, rx)
    }

    pub fn r_backward<T: Scalar>(y: &ArrayD<T>, rgy: &ArrayD<T>) -> ArrayD<T> {
        Self::mask(y, rgy)
    }
}
