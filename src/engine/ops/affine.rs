//! A constant per-channel affine map, y = a·x + b: input normalization (`(x − mean)/std`)
//! as ONNX exports it (Sub/Mul/Div by constants). `a`, `b` hold one value or one per
//! channel (axis 0 of `[C, N, H, W]`, axis 1 of `[N, F]`). No parameters.
//!
//! ```text
//! backward:   dx = a ⊙ dy
//! R-forward:  R{y} = a ⊙ R{x}
//! R-backward: R{dx} = a ⊙ R{dy}
//! ```

use ndarray::{ArrayD, Axis};

use super::FixedMap;
use crate::engine::error::ShapeError;
use crate::engine::Scalar;

#[derive(Clone, Debug, PartialEq)]
pub struct Affine {
    pub scale: Vec<f64>,
    pub shift: Vec<f64>,
}

impl Affine {
    /// Channel axis of a tensor in the internal layout.
    fn axis(ndim: usize) -> usize {
        if ndim == 2 {
            1
        } else {
            0
        }
    }

    /// Whether `scale` and `shift` fit a tensor with `c` channels.
    pub fn fits(&self, c: usize) -> bool {
        [&self.scale, &self.shift]
            .iter()
            .all(|v| v.len() == 1 || v.len() == c)
    }

    fn at(v: &[f64], c: usize) -> f64 {
        if v.len() == 1 {
            v[0]
        } else {
            v[c]
        }
    }

    fn apply<T: Scalar>(&self, x: &ArrayD<T>, shift: bool) -> ArrayD<T> {
        let mut y = x.clone();
        let ax = Self::axis(x.ndim());
        for (c, mut lane) in y.axis_iter_mut(Axis(ax)).enumerate() {
            let a = T::from_f(Self::at(&self.scale, c));
            let b = T::from_f(if shift { Self::at(&self.shift, c) } else { 0.0 });
            lane.mapv_inplace(|v| v * a + b);
        }
        y
    }
}

impl FixedMap for Affine {
    const KIND: &'static str = "affine";

    fn shape(&self, x: &[usize]) -> Result<Vec<usize>, ShapeError> {
        let c = x[Self::axis(x.len())];
        if !self.fits(c) {
            return Err(ShapeError::Constants { channels: c });
        }
        Ok(x.to_vec())
    }

    fn forward<T: Scalar>(&self, x: &ArrayD<T>) -> ArrayD<T> {
        self.apply(x, true)
    }

    fn jacobian<T: Scalar>(&self, r: &ArrayD<T>) -> ArrayD<T> {
        self.apply(r, false)
    }

    fn transpose<T: Scalar>(&self, g: &ArrayD<T>, _in_shape: &[usize]) -> ArrayD<T> {
        self.apply(g, false)
    }
}
