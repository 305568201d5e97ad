//! Max pooling over k×k windows with stride s and padding p (PyTorch `nn.MaxPool2d`;
//! padded positions never win). The forward pass records each window's arg-max (the
//! first maximum, as PyTorch's CPU kernel picks), and every other pass routes through it:
//!
//! ```text
//! y = x[argmax]                 dx[argmax] += dy
//! R{y} = R{x}[argmax]           R{dx}[argmax] += R{dy}   (piecewise linear: no curvature term)
//! ```

use ndarray::{Array4, ArrayD, Ix4};

use super::avg_pool::Pool2d;
use crate::engine::Scalar;

pub struct MaxPool;

/// Flat input index of each output's maximum, `[C, N, Ho, Wo]` in standard order.
pub struct MaxPoolCache {
    pub argmax: Vec<usize>,
    pub in_shape: Vec<usize>,
}

impl MaxPool {
    pub fn forward<T: Scalar>(cfg: &Pool2d, x: &ArrayD<T>) -> (ArrayD<T>, MaxPoolCache) {
        let xs = x.as_standard_layout();
        let x4 = xs
            .view()
            .into_dimensionality::<Ix4>()
            .expect("[C, N, H, W]");
        let (c, n, h, w) = x4.dim();
        let (ho, wo) = cfg.out_hw(h, w).expect("checked at build");
        let mut y = Array4::from_elem((c, n, ho, wo), T::neg_infinity());
        let mut argmax = vec![0usize; c * n * ho * wo];
        for ci in 0..c {
            for ni in 0..n {
                let base_out = (ci * n + ni) * ho * wo;
                let base_in = (ci * n + ni) * h * w;
                cfg.windows(h, w, |oi, oj, ii, ij| {
                    let v = x4[[ci, ni, ii, ij]];
                    let o = &mut y[[ci, ni, oi, oj]];
                    // A NaN input wins its window, so NaN propagates as in PyTorch.
                    if v > *o || (v.is_nan() && !o.is_nan()) {
                        *o = v;
                        argmax[base_out + oi * wo + oj] = base_in + ii * w + ij;
                    }
                });
            }
        }
        (
            y.into_dyn(),
            MaxPoolCache {
                argmax,
                in_shape: vec![c, n, h, w],
            },
        )
    }

    fn scatter<T: Scalar>(cache: &MaxPoolCache, g: &ArrayD<T>) -> ArrayD<T> {
        let mut dx = ArrayD::<T>::zeros(cache.in_shape.as_slice());
        let d = dx.as_slice_mut().expect("fresh array");
        for (&i, &gv) in cache.argmax.iter().zip(g.iter()) {
            d[i] += gv;
        }
        dx
    }

    fn gather<T: Scalar>(cache: &MaxPoolCache, r: &ArrayD<T>, out_shape: &[usize]) -> ArrayD<T> {
        let rs = r.as_standard_layout();
        let src = rs.as_slice().expect("standard layout");
        let data: Vec<T> = cache.argmax.iter().map(|&i| src[i]).collect();
        ArrayD::from_shape_vec(out_shape, data).expect("shape matches argmax")
    }

    pub fn backward<T: Scalar>(cache: &MaxPoolCache, gy: &ArrayD<T>) -> ArrayD<T> {
        Self::scatter(cache, gy)
    }

    pub fn r_forward<T: Scalar>(
        cache: &MaxPoolCache,
        rx: &ArrayD<T>,
        out_shape: &[usize],
    ) -> ArrayD<T> {
        Self::gather(cache, rx, out_shape)
    }

    pub fn r_backward<T: Scalar>(cache: &MaxPoolCache, rgy: &ArrayD<T>) -> ArrayD<T> {
        Self::scatter(cache, rgy)
    }
}
