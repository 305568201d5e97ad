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
use super::{EngineOp, Fwd, Grads, Taped};
use crate::engine::error::ShapeError;
use crate::engine::Scalar;

/// The op of an `Op::MaxPool` node.
pub struct MaxPool<'a>(pub &'a Pool2d);

/// Flat input index of each output's maximum, `[C, N, Ho, Wo]` in standard order.
pub struct MaxPoolCache {
    pub argmax: Vec<usize>,
    pub in_shape: Vec<usize>,
}

impl MaxPoolCache {
    fn forward<T: Scalar>(cfg: &Pool2d, x: &ArrayD<T>) -> (ArrayD<T>, MaxPoolCache) {
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

    /// `dx[argmax] += g`.
    fn scatter<T: Scalar>(&self, g: &ArrayD<T>) -> ArrayD<T> {
        let mut dx = ArrayD::<T>::zeros(self.in_shape.as_slice());
        let d = dx.as_slice_mut().expect("fresh array");
        for (&i, &gv) in self.argmax.iter().zip(g.iter()) {
            d[i] += gv;
        }
        dx
    }

    /// `r[argmax]`, shaped as the output.
    fn gather<T: Scalar>(&self, r: &ArrayD<T>, out_shape: &[usize]) -> ArrayD<T> {
        let rs = r.as_standard_layout();
        let src = rs.as_slice().expect("standard layout");
        let data: Vec<T> = self.argmax.iter().map(|&i| src[i]).collect();
        ArrayD::from_shape_vec(out_shape, data).expect("shape matches argmax")
    }
}

impl EngineOp for MaxPool<'_> {
    const KIND: &'static str = "max-pool";
    type Cache<T: Scalar> = MaxPoolCache;
    type RCache<T: Scalar> = ();

    fn infer_shape(&self, x: &[&[usize]]) -> Result<Vec<usize>, ShapeError> {
        self.0.out_shape(x[0])
    }

    fn forward<T: Scalar>(&self, a: &Fwd<T>) -> (ArrayD<T>, MaxPoolCache) {
        MaxPoolCache::forward(self.0, a.x[0])
    }

    fn cache_bytes<T: Scalar>(c: &MaxPoolCache) -> usize {
        c.argmax.len() * std::mem::size_of::<usize>()
    }

    fn backward<T: Scalar>(&self, _a: &Taped<T>, c: &MaxPoolCache, gy: ArrayD<T>) -> Grads<T> {
        Grads::input(c.scatter(&gy))
    }

    fn r_forward<T: Scalar>(&self, a: &Taped<T>, c: &MaxPoolCache) -> (Option<ArrayD<T>>, ()) {
        (a.rx(0).map(|r| c.gather(r, a.y.shape())), ())
    }

    fn r_backward<T: Scalar>(
        &self,
        _a: &Taped<T>,
        c: &MaxPoolCache,
        _rc: &(),
        _gy: &ArrayD<T>,
        rgy: ArrayD<T>,
    ) -> Grads<T> {
        Grads::input(c.scatter(&rgy))
    }
}
