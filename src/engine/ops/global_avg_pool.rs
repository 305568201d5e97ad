//! Global average pooling: `[C, N, H, W]` → `[N, C]`, y[n, c] = mean over (h, w) of x[c, n, h, w]
//! (PyTorch `adaptive_avg_pool2d(x, 1)` followed by flatten).
//!
//! Linear: dx[c, n, h, w] = dy[n, c] / (H·W); R{y} = forward(R{x}); R{dx} = backward(R{dy}).

use ndarray::{Array2, ArrayD, Axis, Ix2};

use super::FixedMap;
use crate::engine::error::ShapeError;
use crate::engine::Scalar;

pub struct GlobalAvgPool;

impl FixedMap for GlobalAvgPool {
    const KIND: &'static str = "global-avg-pool";

    fn shape(&self, x: &[usize]) -> Result<Vec<usize>, ShapeError> {
        if x.len() != 4 {
            return Err(ShapeError::Rank { rank: 4 });
        }
        Ok(vec![x[1], x[0]])
    }

    fn forward<T: Scalar>(&self, x: &ArrayD<T>) -> ArrayD<T> {
        let (c, n) = (x.shape()[0], x.shape()[1]);
        let hw = x.len() / (c * n);
        let x3 = x
            .view()
            .into_shape_with_order((c, n, hw))
            .expect("standard layout");
        let inv = T::one() / T::from_usize(hw).unwrap();
        let mut y = Array2::zeros((n, c));
        for ci in 0..c {
            for ni in 0..n {
                y[[ni, ci]] = x3.slice(ndarray::s![ci, ni, ..]).sum() * inv;
            }
        }
        y.into_dyn()
    }

    /// `in_shape` = `[C, N, H, W]`.
    fn transpose<T: Scalar>(&self, gy: &ArrayD<T>, in_shape: &[usize]) -> ArrayD<T> {
        let gy = gy.view().into_dimensionality::<Ix2>().expect("[N, C]");
        let hw: usize = in_shape[2..].iter().product();
        let inv = T::one() / T::from_usize(hw).unwrap();
        let mut dx = ArrayD::zeros(in_shape);
        for (ci, mut plane) in dx.axis_iter_mut(Axis(0)).enumerate() {
            for (ni, mut img) in plane.axis_iter_mut(Axis(0)).enumerate() {
                img.fill(gy[[ni, ci]] * inv);
            }
        }
        dx
    }
}
