//! Rectified linear unit, y = max(x, 0).
//!
//! ```text
//! backward:   dx = dy ⊙ [x > 0]
//! R-forward:  R{y} = R{x} ⊙ [x > 0]
//! R-backward: R{dx} = R{dy} ⊙ [x > 0]      (the second derivative is 0 almost everywhere)
//! ```
//! The mask is read from the output (y > 0 ⇔ x > 0), as PyTorch's `threshold_backward` does.
//! Inference runs in place, or inside the epilogue of a fused convolution.

use ndarray::{ArrayD, Zip};

use super::{Activation, EngineOp, Fwd, Grads, Mode, Taped};
use crate::engine::error::ShapeError;
use crate::engine::Scalar;

pub struct Relu;

fn relu<T: Scalar>(v: T) -> T {
    if v > T::zero() {
        v
    } else {
        T::zero()
    }
}

/// Masks an owned `g` (a gradient or an R-quantity) by y > 0, in place.
fn mask<T: Scalar>(y: &ArrayD<T>, mut g: ArrayD<T>) -> ArrayD<T> {
    Zip::from(&mut g)
        .and(y)
        .for_each(|gv, &yv| *gv = if yv > T::zero() { *gv } else { T::zero() });
    g
}

impl EngineOp for Relu {
    const KIND: &'static str = "relu";
    type Cache<T: Scalar> = ();
    type RCache<T: Scalar> = ();

    fn infer_shape(&self, x: &[&[usize]]) -> Result<Vec<usize>, ShapeError> {
        Ok(x[0].to_vec())
    }

    fn forward<T: Scalar>(&self, a: &Fwd<T>) -> (ArrayD<T>, ()) {
        (a.x[0].mapv(relu), ())
    }

    fn in_place(&self, _mode: Mode) -> bool {
        true
    }

    fn forward_in_place<T: Scalar>(&self, _a: &Fwd<T>, x0: &mut ArrayD<T>) {
        x0.mapv_inplace(relu);
    }

    fn activation(&self) -> Option<Activation> {
        Some(Activation::Relu)
    }

    fn backward<T: Scalar>(&self, a: &Taped<T>, _c: &(), gy: ArrayD<T>) -> Grads<T> {
        Grads::input(mask(a.y, gy))
    }

    fn r_forward<T: Scalar>(&self, a: &Taped<T>, _c: &()) -> (Option<ArrayD<T>>, ()) {
        (a.rx(0).map(|r| mask(a.y, r.clone())), ())
    }

    fn r_backward<T: Scalar>(
        &self,
        a: &Taped<T>,
        _c: &(),
        _rc: &(),
        _gy: &ArrayD<T>,
        rgy: ArrayD<T>,
    ) -> Grads<T> {
        Grads::input(mask(a.y, rgy))
    }
}
