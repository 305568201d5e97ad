//! Elementwise sum of two activations: the residual connection, y = a + b.
//!
//! ```text
//! backward:   da = dy,  db = dy
//! R-forward:  R{y} = R{a} + R{b}
//! R-backward: R{da} = R{dy},  R{db} = R{dy}
//! ```
//! Inference adds b into a's buffer when no later node reads a.

use ndarray::ArrayD;

use super::{EngineOp, Fwd, Grads, Mode, Taped};
use crate::engine::error::ShapeError;
use crate::engine::Scalar;

pub struct Add;

/// The same gradient flows to both inputs: one copy, one move.
fn both<T: Scalar>(gy: ArrayD<T>) -> Grads<T> {
    Grads {
        dx: vec![Some(gy.clone()), Some(gy)],
        dp: vec![],
    }
}

impl EngineOp for Add {
    const KIND: &'static str = "add";
    type Cache<T: Scalar> = ();
    type RCache<T: Scalar> = ();

    fn infer_shape(&self, x: &[&[usize]]) -> Result<Vec<usize>, ShapeError> {
        if x[0] != x[1] {
            return Err(ShapeError::Summands {
                a: x[0].into(),
                b: x[1].into(),
            });
        }
        Ok(x[0].to_vec())
    }

    fn forward<T: Scalar>(&self, a: &Fwd<T>) -> (ArrayD<T>, ()) {
        (a.x[0] + a.x[1], ())
    }

    fn in_place(&self, _mode: Mode) -> bool {
        true
    }

    fn forward_in_place<T: Scalar>(&self, a: &Fwd<T>, x0: &mut ArrayD<T>) {
        *x0 += a.x[1];
    }

    fn backward<T: Scalar>(&self, _a: &Taped<T>, _c: &(), gy: ArrayD<T>) -> Grads<T> {
        both(gy)
    }

    fn r_forward<T: Scalar>(&self, a: &Taped<T>, _c: &()) -> (Option<ArrayD<T>>, ()) {
        let r = match (a.rx(0), a.rx(1)) {
            (Some(x), Some(y)) => Some(x + y),
            (Some(x), None) | (None, Some(x)) => Some(x.clone()),
            (None, None) => None,
        };
        (r, ())
    }

    fn r_backward<T: Scalar>(
        &self,
        _a: &Taped<T>,
        _c: &(),
        _rc: &(),
        _gy: &ArrayD<T>,
        rgy: ArrayD<T>,
    ) -> Grads<T> {
        both(rgy)
    }
}
