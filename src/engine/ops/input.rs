//! The input batch: the graph's node 0, which reads the batch in PyTorch layout and
//! stores it in the internal one (`[N, C, H, W]` → `[C, N, H, W]`; `[N, F]` as it is).
//! It does not depend on θ: its R-value is zero and nothing flows back into it.

use ndarray::ArrayD;

use super::flatten::swap_batch_channel;
use super::{EngineOp, Fwd, Grads, Taped};
use crate::engine::error::ShapeError;
use crate::engine::Scalar;

pub struct Input;

impl EngineOp for Input {
    const KIND: &'static str = "input";
    type Cache<T: Scalar> = ();
    type RCache<T: Scalar> = ();

    /// `x[0]` is the batch's shape, `[N, …]`.
    fn infer_shape(&self, x: &[&[usize]]) -> Result<Vec<usize>, ShapeError> {
        let mut s = x[0].to_vec();
        if s.len() == 4 {
            s.swap(0, 1);
        }
        Ok(s)
    }

    fn forward<T: Scalar>(&self, a: &Fwd<T>) -> (ArrayD<T>, ()) {
        (swap_batch_channel(a.x[0]), ())
    }

    fn backward<T: Scalar>(&self, _a: &Taped<T>, _c: &(), _gy: ArrayD<T>) -> Grads<T> {
        Grads::none()
    }

    fn r_forward<T: Scalar>(&self, _a: &Taped<T>, _c: &()) -> (Option<ArrayD<T>>, ()) {
        (None, ())
    }

    fn r_backward<T: Scalar>(
        &self,
        _a: &Taped<T>,
        _c: &(),
        _rc: &(),
        _gy: &ArrayD<T>,
        _rgy: ArrayD<T>,
    ) -> Grads<T> {
        Grads::none()
    }
}
