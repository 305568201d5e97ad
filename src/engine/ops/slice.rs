//! A strided slice along one axis of the internal layout (ONNX `Slice`), e.g. the
//! `x[:, :, ::2, ::2]` subsampling of option-A shortcuts.
//!
//! ```text
//! y = x[start : end : step] along `axis`            (a linear selection)
//! backward:   dx = zeros with dy scattered back     R-forward: R{y} = slice(R{x})
//! R-backward: R{dx} = scatter(R{dy})
//! ```

use ndarray::{ArrayD, Axis, IxDyn};

use super::FixedMap;
use crate::engine::error::ShapeError;
use crate::engine::Scalar;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SliceAxis {
    pub axis: usize,
    /// Clamped to the axis: `start ≤ end ≤ len`, `step ≥ 1`.
    pub start: usize,
    pub end: usize,
    pub step: usize,
}

impl SliceAxis {
    fn slice(&self) -> ndarray::Slice {
        ndarray::Slice::new(
            self.start as isize,
            Some(self.end as isize),
            self.step as isize,
        )
    }

    pub fn out_len(&self) -> usize {
        (self.end - self.start).div_ceil(self.step)
    }
}

impl FixedMap for SliceAxis {
    const KIND: &'static str = "slice";

    fn shape(&self, x: &[usize]) -> Result<Vec<usize>, ShapeError> {
        if self.axis >= x.len() || self.end > x[self.axis] || self.start > self.end {
            return Err(ShapeError::Slice {
                start: self.start,
                end: self.end,
                axis: self.axis,
            });
        }
        let mut s = x.to_vec();
        s[self.axis] = self.out_len();
        Ok(s)
    }

    fn forward<T: Scalar>(&self, x: &ArrayD<T>) -> ArrayD<T> {
        x.slice_axis(Axis(self.axis), self.slice()).to_owned()
    }

    fn transpose<T: Scalar>(&self, gy: &ArrayD<T>, in_shape: &[usize]) -> ArrayD<T> {
        let mut dx = ArrayD::zeros(IxDyn(in_shape));
        dx.slice_axis_mut(Axis(self.axis), self.slice()).assign(gy);
        dx
    }
}
