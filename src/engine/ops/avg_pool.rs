//! Average pooling over k×k windows with stride s and zero padding p (PyTorch
//! `nn.AvgPool2d` with its default `count_include_pad=True`).
//!
//! ```text
//! y[c, n, i, j] = (1/|Ω_ij|) Σ_{a,b<k} x[c, n, i·s + a − p, j·s + b − p]      (outside = 0)
//! ```
//! |Ω_ij| is k² except, with `ceil_mode`, for windows hanging over the padded image's end:
//! as PyTorch (`aten/src/ATen/native/cpu/AvgPoolKernel.cpp`), a window is clipped to the
//! padded extent `[−p, H + p)` and divides by that clipped area (padding included).
//! Linear: backward spreads dy/|Ω| over each window; R{y} = forward(R{x});
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
    /// PyTorch's `ceil_mode`: the output size rounds up (a last, partial window), as long
    /// as that window starts inside the image or its left padding.
    pub ceil_mode: bool,
}

impl Pool2d {
    pub fn out_hw(&self, h: usize, w: usize) -> Option<(usize, usize)> {
        let (k, s, p) = (self.kernel, self.stride, self.padding);
        if self.ceil_mode {
            return Some((self.ceil_len(h)?, self.ceil_len(w)?));
        }
        if h + 2 * p < k || w + 2 * p < k || s == 0 || k == 0 {
            return None;
        }
        Some(((h + 2 * p - k) / s + 1, (w + 2 * p - k) / s + 1))
    }

    /// The output length of an axis of length `d` in ceil mode, PyTorch's
    /// `pooling_output_shape`: ⌊(d + 2p − k + s − 1)/s⌋ + 1, less one where that last
    /// window would start at or after `d + p`.
    fn ceil_len(&self, d: usize) -> Option<usize> {
        let (k, s, p) = (
            self.kernel as isize,
            self.stride as isize,
            self.padding as isize,
        );
        if s == 0 || k == 0 {
            return None;
        }
        let mut o = (d as isize + 2 * p - k + s - 1).div_euclid(s) + 1;
        if (o - 1) * s >= d as isize + p {
            o -= 1;
        }
        (o >= 1).then_some(o as usize)
    }

    /// 1/|Ω| per output position (row-major `[Ho, Wo]`): the window clipped to the padded
    /// image `[−p, len + p)`, padding counted (see the module docs).
    pub(crate) fn inverse_areas<T: Scalar>(&self, h: usize, w: usize) -> Vec<T> {
        let (ho, wo) = self.out_hw(h, w).expect("checked at build");
        let (k, s, p) = (self.kernel, self.stride, self.padding);
        // clipped extent of window o along an axis of length d
        let extent = |o: usize, d: usize| (k as isize).min((d + 2 * p) as isize - (o * s) as isize);
        let mut inv = Vec::with_capacity(ho * wo);
        for oi in 0..ho {
            for oj in 0..wo {
                let area = (extent(oi, h) * extent(oj, w)).max(1) as usize;
                inv.push(T::one() / T::from_usize(area).unwrap());
            }
        }
        inv
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
        let inv = cfg.inverse_areas::<T>(h, w);
        let mut y = Array4::zeros((c, n, ho, wo));
        for ci in 0..c {
            for ni in 0..n {
                cfg.windows(h, w, |oi, oj, ii, ij| {
                    y[[ci, ni, oi, oj]] += x[[ci, ni, ii, ij]] * inv[oi * wo + oj];
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
        let inv = cfg.inverse_areas::<T>(h, w);
        let wo = gy.dim().3;
        let mut dx = Array4::zeros((c, n, h, w));
        for ci in 0..c {
            for ni in 0..n {
                cfg.windows(h, w, |oi, oj, ii, ij| {
                    dx[[ci, ni, ii, ij]] += gy[[ci, ni, oi, oj]] * inv[oi * wo + oj];
                });
            }
        }
        dx.into_dyn()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::ops::oracle::{check, random, Case};
    use crate::engine::ops::MaxPool;
    use crate::engine::ops::{EngineOp, Fwd, Mode};
    use crate::engine::EngineOptions;
    use ndarray::IxDyn;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    fn pool(kernel: usize, stride: usize, padding: usize, ceil_mode: bool) -> Pool2d {
        Pool2d {
            kernel,
            stride,
            padding,
            ceil_mode,
        }
    }

    /// Output lengths in ceil mode, from PyTorch 2.x (`F.avg_pool2d(…, ceil_mode=True)`).
    #[test]
    fn ceil_mode_lengths_match_pytorch() {
        for (h, k, s, p, want) in [
            (5, 2, 2, 0, 3),
            (6, 3, 2, 1, 4),
            (5, 3, 3, 1, 2),
            (7, 2, 3, 1, 3),
            (2, 3, 2, 0, 1),
            (4, 3, 2, 0, 2),
            (5, 3, 2, 1, 3),
        ] {
            assert_eq!(pool(k, s, p, true).out_hw(h, h), Some((want, want)));
        }
        assert_eq!(pool(3, 1, 0, true).out_hw(2, 2), None);
        assert_eq!(pool(2, 2, 0, false).out_hw(5, 5), Some((2, 2)));
    }

    /// (kernel, stride, padding), average-pool and max-pool outputs.
    type Golden<'a> = ((usize, usize, usize), &'a [f64], &'a [f64]);

    /// Values from PyTorch 2.x on x[i] = (0.37 i mod 1.3) − 0.6, shape [1, 1, 5, 7]:
    /// `F.avg_pool2d` and `F.max_pool2d` with `ceil_mode=True`.
    #[test]
    fn ceil_mode_values_match_pytorch() {
        #[rustfmt::skip]
        let cases: [Golden; 3] = [
            ((2, 2, 0),
             &[-0.095, 0.32, -0.24, 0.315, 0.21, 0.3, -0.26, 0.295, 0.195, 0.285, -0.275, 0.28],
             &[0.69, 0.51, -0.05, 0.32, 0.68, 0.49, -0.07, 0.30, 0.66, 0.47, -0.09, 0.28]),
            ((3, 2, 1),
             &[-0.042222222222222244, 0.09, 0.0055555555555555115, 0.05777777777777763,
               0.1433333333333332, 0.11999999999999976, -0.006666666666667005,
               0.07666666666666644, 0.08888888888888878, 0.06999999999999981,
               -0.014444444444444902, 0.04444444444444414],
             &[0.69, 0.51, 0.51, 0.32, 0.69, 0.50, 0.50, 0.31, 0.67, 0.48, 0.48, 0.29]),
            ((2, 3, 1),
             &[-0.15, 0.16249999999999998, 0.06749999999999995, 0.33749999999999974,
               0.2999999999999995, 0.10999999999999976],
             &[-0.6, 0.51, 0.32, 0.68, 0.49, 0.30]),
        ];
        let x = ArrayD::from_shape_fn(IxDyn(&[1, 1, 5, 7]), |i| {
            let flat = i[2] * 7 + i[3];
            (flat as f64 * 0.37) % 1.3 - 0.6
        });
        let opts = EngineOptions::default();
        for ((k, s, p), avg, max) in cases {
            let cfg = pool(k, s, p, true);
            let y = FixedMap::forward(&AvgPool(&cfg), &x);
            let xs = [&x];
            let fwd = Fwd {
                options: &opts,
                mode: Mode::Eval,
                x: &xs,
                p: &[],
                affine: None,
            };
            let (m, _) = EngineOp::forward(&MaxPool(&cfg), &fwd);
            for (got, want) in [(y, avg), (m, max)] {
                assert_eq!(got.len(), want.len(), "k{k} s{s} p{p}");
                for (a, b) in got.iter().zip(want) {
                    assert!((a - b).abs() < 1e-12, "k{k} s{s} p{p}: {a} vs {b}");
                }
            }
        }
    }

    #[test]
    fn passes_match_central_differences() {
        let mut rng = ChaCha8Rng::seed_from_u64(23);
        for (k, s, p, ceil_mode, h, w) in [
            (2, 2, 0, true, 5, 7),
            (3, 2, 1, true, 6, 5),
            (3, 3, 1, true, 5, 7),
            (3, 2, 1, false, 5, 5),
        ] {
            let cfg = pool(k, s, p, ceil_mode);
            let case = Case::new(vec![random(&[2, 2, h, w], &mut rng)], vec![]);
            check(&format!("avg-pool {cfg:?}"), &AvgPool(&cfg), &case, 24);
            check(&format!("max-pool {cfg:?}"), &MaxPool(&cfg), &case, 25);
        }
    }
}
