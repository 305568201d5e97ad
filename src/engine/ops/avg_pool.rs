//! Average pooling over k×k windows with stride s and zero padding p (PyTorch
//! `nn.AvgPool2d` with its default `count_include_pad=True`: every window divides by k²).
//!
//! ```text
//! y[c, n, i, j] = (1/k²) Σ_{a,b<k} x[c, n, i·s + a − p, j·s + b − p]      (outside = 0)
//! ```
//! Linear: backward spreads dy/k² over each window; R{y} = forward(R{x});
//! R{dx} = backward(R{dy}).

use ndarray::{Array4, ArrayD, Ix4};

use super::FixedMap;
use crate::engine::error::ShapeError;
use crate::engine::Scalar;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pool2d {
    pub kernel: usize,
    pub stride: usize,
    pub padding: usize,
}

impl Pool2d {
    pub fn out_hw(&self, h: usize, w: usize) -> Option<(usize, usize)> {
        let (k, s, p) = (self.kernel, self.stride, self.padding);
        if h + 2 * p < k || w + 2 * p < k || s == 0 || k == 0 {
            return None;
        }
        Some(((h + 2 * p - k) / s + 1, (w + 2 * p - k) / s + 1))
    }

    /// `[C, N, Ho, Wo]` for an input `[C, N, H, W]`.
    pub(crate) fn out_shape(&self, x: &[usize]) -> Result<Vec<usize>, ShapeError> {
        if x.len() != 4 {
            return Err(ShapeError::Rank { rank: 4 });
        }
        let (ho, wo) = self.out_hw(x[2], x[3]).ok_or(ShapeError::Window)?;
        Ok(vec![x[0], x[1], ho, wo])
    }

    /// Calls `f(oi, oj, ii, ij)` for every in-bounds input pixel of every window.
    pub(crate) fn windows(
        &self,
        h: usize,
        w: usize,
        mut f: impl FnMut(usize, usize, usize, usize),
    ) {
        let (ho, wo) = self.out_hw(h, w).expect("checked at build");
        for oi in 0..ho {
            for oj in 0..wo {
                for a in 0..self.kernel {
                    for b in 0..self.kernel {
                        let ii = (oi * self.stride + a) as isize - self.padding as isize;
                        let ij = (oj * self.stride + b) as isize - self.padding as isize;
                        if ii >= 0 && ij >= 0 && (ii as usize) < h && (ij as usize) < w {
                            f(oi, oj, ii as usize, ij as usize);
                        }
                    }
                }
            }
        }
    }
}

/// The op of an `Op::AvgPool` node.
pub struct AvgPool<'a>(pub &'a Pool2d);

impl FixedMap for AvgPool<'_> {
    const KIND: &'static str = "avg-pool";

    fn shape(&self, x: &[usize]) -> Result<Vec<usize>, ShapeError> {
        self.0.out_shape(x)
    }

    fn forward<T: Scalar>(&self, x: &ArrayD<T>) -> ArrayD<T> {
        let cfg = self.0;
        let x = x.view().into_dimensionality::<Ix4>().expect("[C, N, H, W]");
        let (c, n, h, w) = x.dim();
        let (ho, wo) = cfg.out_hw(h, w).expect("checked at build");
        let inv = T::one() / T::from_usize(cfg.kernel * cfg.kernel).unwrap();
        let mut y = Array4::zeros((c, n, ho, wo));
        for ci in 0..c {
            for ni in 0..n {
                cfg.windows(h, w, |oi, oj, ii, ij| {
                    y[[ci, ni, oi, oj]] += x[[ci, ni, ii, ij]] * inv;
                });
            }
        }
        y.into_dyn()
    }

    fn transpose<T: Scalar>(&self, gy: &ArrayD<T>, in_shape: &[usize]) -> ArrayD<T> {
        let cfg = self.0;
        let gy = gy
            .view()
            .into_dimensionality::<Ix4>()
            .expect("[C, N, Ho, Wo]");
        let (c, n, h, w) = (in_shape[0], in_shape[1], in_shape[2], in_shape[3]);
        let inv = T::one() / T::from_usize(cfg.kernel * cfg.kernel).unwrap();
        let mut dx = Array4::zeros((c, n, h, w));
        for ci in 0..c {
            for ni in 0..n {
                cfg.windows(h, w, |oi, oj, ii, ij| {
                    dx[[ci, ni, ii, ij]] += gy[[ci, ni, oi, oj]] * inv;
                });
            }
        }
        dx.into_dyn()
    }
}
