//! Zero padding along any non-batch axes of the internal layout (ONNX `Pad`, constant 0),
//! e.g. the channel padding of option-A shortcuts (He et al. 2016, §4.2).
//!
//! ```text
//! y = x placed at offset `before` inside zeros      (a linear injection)
//! backward:   dx = dy[before .. before + in]   R-forward: R{y} = pad(R{x})
//! R-backward: R{dx} = R{dy}[before .. before + in]
//! ```

use ndarray::{ArrayD, IxDyn, Slice};

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

    pub fn forward<T: Scalar>(&self, x: &ArrayD<T>) -> ArrayD<T> {
        let mut y = ArrayD::zeros(IxDyn(&self.out_shape(x.shape())));
        let mut inner = y.view_mut();
        for (ax, (&b, &d)) in self.before.iter().zip(x.shape()).enumerate() {
            inner.slice_axis_inplace(ndarray::Axis(ax), Slice::from(b..b + d));
        }
        inner.assign(x);
        y
    }

    /// `in_shape` is the shape of the unpadded input.
    pub fn backward<T: Scalar>(&self, gy: &ArrayD<T>, in_shape: &[usize]) -> ArrayD<T> {
        let mut v = gy.view();
        for (ax, (&b, &d)) in self.before.iter().zip(in_shape).enumerate() {
            v.slice_axis_inplace(ndarray::Axis(ax), Slice::from(b..b + d));
        }
        v.to_owned()
    }

    pub fn r_forward<T: Scalar>(&self, rx: &ArrayD<T>) -> ArrayD<T> {
        self.forward(rx)
    }

    pub fn r_backward<T: Scalar>(&self, rgy: &ArrayD<T>, in_shape: &[usize]) -> ArrayD<T> {
        self.backward(rgy, in_shape)
    }
}
