//! Zero padding along any non-batch axes of the internal layout (ONNX `Pad`, constant 0),
//! e.g. the channel padding of option-A shortcuts (He et al. 2016, §4.2).
//!
//! ```text
//! y = x placed at offset `before` inside zeros      (a linear injection)
//! backward:   dx = dy[before .. before + in]   R-forward: R{y} = pad(R{x})
//! R-backward: R{dx} = R{dy}[before .. before + in]
//! ```

use ndarray::{ArrayD, IxDyn, Slice};

use super::FixedMap;
use crate::engine::error::ShapeError;
use crate::engine::Scalar;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pad {
    /// Zeros before and after, per axis of the internal layout.
    pub before: Vec<usize>,
    pub after: Vec<usize>,
}

impl Pad {
    pub fn out_shape(&self, x: &[usize]) -> Vec<usize> {
        x.iter()
            .zip(self.before.iter().zip(&self.after))
            .map(|(&d, (&b, &a))| d + b + a)
            .collect()
    }
}

impl FixedMap for Pad {
    const KIND: &'static str = "pad";

    fn shape(&self, x: &[usize]) -> Result<Vec<usize>, ShapeError> {
        if self.before.len() != x.len() || self.after.len() != x.len() {
            return Err(ShapeError::Rank {
                rank: self.before.len(),
            });
        }
        Ok(self.out_shape(x))
    }

    fn forward<T: Scalar>(&self, x: &ArrayD<T>) -> ArrayD<T> {
        let mut y = ArrayD::zeros(IxDyn(&self.out_shape(x.shape())));
        let mut inner = y.view_mut();
        for (ax, (&b, &d)) in self.before.iter().zip(x.shape()).enumerate() {
            inner.slice_axis_inplace(ndarray::Axis(ax), Slice::from(b..b + d));
        }
        inner.assign(x);
        y
    }

    /// `in_shape` is the shape of the unpadded input.
    fn transpose<T: Scalar>(&self, gy: &ArrayD<T>, in_shape: &[usize]) -> ArrayD<T> {
        let mut v = gy.view();
        for (ax, (&b, &d)) in self.before.iter().zip(in_shape).enumerate() {
            v.slice_axis_inplace(ndarray::Axis(ax), Slice::from(b..b + d));
        }
        v.to_owned()
    }
}
