//! 2-D convolution (PyTorch `nn.Conv2d` with groups = 1, dilation = 1) by im2col + GEMM.
//!
//! ```text
//! x  [C, N, H, W]   (channel-major, see engine docs)     W [O, C, k, k]   b [O]
//! Ho = (H + 2p − k)/s + 1,  Wo likewise
//! cols = im2col(x)                      [C·k·k, N·Ho·Wo]
//! y    = W₂ · cols + b                  [O, N·Ho·Wo] = [O, N, Ho, Wo],  W₂ = W as [O, C·k·k]
//! backward:   dW₂ = dy · colsᵀ,   dx = col2im(W₂ᵀ · dy),   db = Σ dy
//! R-forward:  R{y} = W₂ · im2col(R{x}) + V₂ · cols + v_b
//! R-backward: R{dW₂} = R{dy} · colsᵀ + dy · R{cols}ᵀ
//!             R{dx}  = col2im(W₂ᵀ · R{dy} + V₂ᵀ · dy),   R{db} = Σ R{dy}
//! ```
//! V, v_b are this layer's slices of the direction v. R-operator: Pearlmutter (1994),
//! "Fast exact multiplication by the Hessian", Neural Computation 6(1):147–160.

use ndarray::{Array2, Array4, ArrayD, ArrayView2, ArrayViewD, Axis, Ix2, IxDyn};

use crate::engine::gemm::gemm;
use crate::engine::Scalar;

/// Hyper-parameters of a square-kernel convolution.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Conv2d {
    pub in_channels: usize,
    pub out_channels: usize,
    pub kernel: usize,
    pub stride: usize,
    pub padding: usize,
    pub bias: bool,
}

/// What the backward and R passes need from the forward pass.
pub struct ConvCache<T> {
    /// im2col of the input, `[C·k·k, N·Ho·Wo]`.
    pub cols: Array2<T>,
    /// Input shape `[C, N, H, W]`.
    pub in_shape: [usize; 4],
}

impl Conv2d {
    /// Output spatial size for an input of `h × w`, or `None` when the kernel does not fit.
    pub fn out_hw(&self, h: usize, w: usize) -> Option<(usize, usize)> {
        let (k, s, p) = (self.kernel, self.stride, self.padding);
        if h + 2 * p < k || w + 2 * p < k || s == 0 {
            return None;
        }
        Some(((h + 2 * p - k) / s + 1, (w + 2 * p - k) / s + 1))
    }

    fn w2<'a, T: Scalar>(&self, w: &'a ArrayViewD<'a, T>) -> ArrayView2<'a, T> {
        let k2 = self.in_channels * self.kernel * self.kernel;
        w.view()
            .into_shape_with_order((self.out_channels, k2))
            .expect("conv weight is contiguous [O, C, k, k]")
    }

    fn shape4(x: &ArrayD<impl Clone>) -> [usize; 4] {
        let s = x.shape();
        [s[0], s[1], s[2], s[3]]
    }

    /// y = W ⋆ x + b.
    pub fn forward<T: Scalar>(
        &self,
        x: &ArrayD<T>,
        w: &ArrayViewD<T>,
        b: Option<&ArrayViewD<T>>,
    ) -> (ArrayD<T>, ConvCache<T>) {
        let in_shape = Self::shape4(x);
        let cols = self.im2col(x, in_shape);
        let mut y = self.gemm_out(&cols, w, in_shape);
        if let Some(b) = b {
            add_bias(&mut y, b);
        }
        (self.to_4d(y, in_shape), ConvCache { cols, in_shape })
    }

    /// dx (when `need_dx`), dW, db.
    pub fn backward<T: Scalar>(
        &self,
        cache: &ConvCache<T>,
        w: &ArrayViewD<T>,
        gy: &ArrayD<T>,
        need_dx: bool,
    ) -> (Option<ArrayD<T>>, ArrayD<T>, Option<ArrayD<T>>) {
        let gy2 = as_rows(gy, self.out_channels);
        let mut dw = Array2::zeros((self.out_channels, cache.cols.nrows()));
        gemm(T::one(), gy2, cache.cols.t(), T::zero(), &mut dw.view_mut());
        let dx = need_dx.then(|| {
            let mut dcols = Array2::zeros(cache.cols.dim());
            gemm(T::one(), self.w2(w).t(), gy2, T::zero(), &mut dcols.view_mut());
            self.col2im(&dcols, cache.in_shape)
        });
        let db = self.bias.then(|| gy2.sum_axis(Axis(1)).into_dyn());
        (dx, self.weight_shape(dw), db)
    }

    /// R{y} = W ⋆ R{x} + V ⋆ x + v_b. Returns R{y} and R{cols} (None when R{x} = 0).
    pub fn r_forward<T: Scalar>(
        &self,
        cache: &ConvCache<T>,
        w: &ArrayViewD<T>,
        vw: &ArrayViewD<T>,
        vb: Option<&ArrayViewD<T>>,
        rx: Option<&ArrayD<T>>,
    ) -> (ArrayD<T>, Option<Array2<T>>) {
        let mut ry = self.gemm_out(&cache.cols, vw, cache.in_shape);
        let rcols = rx.map(|rx| {
            let rcols = self.im2col(rx, cache.in_shape);
            gemm(T::one(), self.w2(w), rcols.view(), T::one(), &mut ry.view_mut());
            rcols
        });
        if let Some(vb) = vb {
            add_bias(&mut ry, vb);
        }
        (self.to_4d(ry, cache.in_shape), rcols)
    }

    /// R{dx} (when `need_dx`), R{dW}, R{db}.
    #[allow(clippy::too_many_arguments)]
    pub fn r_backward<T: Scalar>(
        &self,
        cache: &ConvCache<T>,
        rcols: Option<&Array2<T>>,
        w: &ArrayViewD<T>,
        vw: &ArrayViewD<T>,
        gy: &ArrayD<T>,
        rgy: &ArrayD<T>,
        need_dx: bool,
    ) -> (Option<ArrayD<T>>, ArrayD<T>, Option<ArrayD<T>>) {
        let gy2 = as_rows(gy, self.out_channels);
        let rgy2 = as_rows(rgy, self.out_channels);
        let mut rdw = Array2::zeros((self.out_channels, cache.cols.nrows()));
        gemm(T::one(), rgy2, cache.cols.t(), T::zero(), &mut rdw.view_mut());
        if let Some(rcols) = rcols {
            gemm(T::one(), gy2, rcols.t(), T::one(), &mut rdw.view_mut());
        }
        let rdx = need_dx.then(|| {
            let mut rdcols = Array2::zeros(cache.cols.dim());
            gemm(T::one(), self.w2(w).t(), rgy2, T::zero(), &mut rdcols.view_mut());
            gemm(T::one(), self.w2(vw).t(), gy2, T::one(), &mut rdcols.view_mut());
            self.col2im(&rdcols, cache.in_shape)
        });
        let rdb = self.bias.then(|| rgy2.sum_axis(Axis(1)).into_dyn());
        (rdx, self.weight_shape(rdw), rdb)
    }

    fn gemm_out<T: Scalar>(&self, cols: &Array2<T>, w: &ArrayViewD<T>, _in: [usize; 4]) -> Array2<T> {
        let mut y = Array2::zeros((self.out_channels, cols.ncols()));
        gemm(T::one(), self.w2(w), cols.view(), T::zero(), &mut y.view_mut());
        y
    }

    fn to_4d<T: Scalar>(&self, y: Array2<T>, in_shape: [usize; 4]) -> ArrayD<T> {
        let (ho, wo) = self.out_hw(in_shape[2], in_shape[3]).expect("checked at build");
        y.into_shape_with_order(IxDyn(&[self.out_channels, in_shape[1], ho, wo]))
            .expect("standard layout")
    }

    fn weight_shape<T: Scalar>(&self, w2: Array2<T>) -> ArrayD<T> {
        let k = self.kernel;
        w2.into_shape_with_order(IxDyn(&[self.out_channels, self.in_channels, k, k]))
            .expect("standard layout")
    }

    /// For each output column (n, oh, ow) the valid `ow` range of kernel column `kj`.
    fn ow_range(&self, kj: usize, w: usize, wo: usize) -> (usize, usize) {
        let (s, p) = (self.stride, self.padding);
        // iw = ow·s + kj − p must lie in [0, w)
        let lo = if kj >= p { 0 } else { (p - kj).div_ceil(s) };
        let hi = if w + p > kj { ((w + p - kj - 1) / s + 1).min(wo) } else { 0 };
        (lo.min(hi), hi)
    }

    /// Unfolds x `[C, N, H, W]` into `[C·k·k, N·Ho·Wo]`; zero padding.
    pub fn im2col<T: Scalar>(&self, x: &ArrayD<T>, shape: [usize; 4]) -> Array2<T> {
        let [c, n, h, w] = shape;
        let (k, s, p) = (self.kernel, self.stride, self.padding);
        let (ho, wo) = self.out_hw(h, w).expect("checked at build");
        let x = x.as_standard_layout();
        let xs = x.as_slice().expect("standard layout");
        let mut cols = Array2::<T>::zeros((c * k * k, n * ho * wo));
        for (r, mut row) in cols.axis_iter_mut(Axis(0)).enumerate() {
            let (ci, ki, kj) = (r / (k * k), (r / k) % k, r % k);
            let row = row.as_slice_mut().expect("row of a standard array");
            let (lo, hi) = self.ow_range(kj, w, wo);
            for ni in 0..n {
                for oh in 0..ho {
                    let ih = (oh * s + ki) as isize - p as isize;
                    if ih < 0 || ih >= h as isize {
                        continue;
                    }
                    let src = ((ci * n + ni) * h + ih as usize) * w;
                    let dst = (ni * ho + oh) * wo;
                    if s == 1 {
                        let iw0 = lo + kj - p;
                        row[dst + lo..dst + hi].copy_from_slice(&xs[src + iw0..src + iw0 + hi - lo]);
                    } else {
                        for ow in lo..hi {
                            row[dst + ow] = xs[src + ow * s + kj - p];
                        }
                    }
                }
            }
        }
        cols
    }

    /// Folds `[C·k·k, N·Ho·Wo]` back into `[C, N, H, W]`, summing overlaps (adjoint of im2col).
    pub fn col2im<T: Scalar>(&self, cols: &Array2<T>, shape: [usize; 4]) -> ArrayD<T> {
        let [c, n, h, w] = shape;
        let (k, s, p) = (self.kernel, self.stride, self.padding);
        let (ho, wo) = self.out_hw(h, w).expect("checked at build");
        let mut x = Array4::<T>::zeros((c, n, h, w));
        let xs = x.as_slice_mut().expect("fresh array");
        for (r, row) in cols.axis_iter(Axis(0)).enumerate() {
            let (ci, ki, kj) = (r / (k * k), (r / k) % k, r % k);
            let row = row.to_slice().expect("row of a standard array");
            let (lo, hi) = self.ow_range(kj, w, wo);
            for ni in 0..n {
                for oh in 0..ho {
                    let ih = (oh * s + ki) as isize - p as isize;
                    if ih < 0 || ih >= h as isize {
                        continue;
                    }
                    let dst = ((ci * n + ni) * h + ih as usize) * w;
                    let src = (ni * ho + oh) * wo;
                    for ow in lo..hi {
                        xs[dst + ow * s + kj - p] += row[src + ow];
                    }
                }
            }
        }
        x.into_dyn()
    }
}

/// Views `[O, N, H, W]` as `[O, N·H·W]`.
fn as_rows<T: Scalar>(y: &ArrayD<T>, o: usize) -> ArrayView2<'_, T> {
    let m = y.len() / o;
    y.view().into_shape_with_order((o, m)).expect("standard layout").into_dimensionality::<Ix2>().unwrap()
}

fn add_bias<T: Scalar>(y: &mut Array2<T>, b: &ArrayViewD<T>) {
    for (mut row, &bi) in y.axis_iter_mut(Axis(0)).zip(b.iter()) {
        row.mapv_inplace(|v| v + bi);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Direct 7-loop convolution, the slow obvious reference.
    fn conv_slow(cfg: &Conv2d, x: &Array4<f64>, w: &Array4<f64>) -> Array4<f64> {
        let (c, n, h, wd) = x.dim();
        let (ho, wo) = cfg.out_hw(h, wd).unwrap();
        let mut y = Array4::zeros((cfg.out_channels, n, ho, wo));
        for o in 0..cfg.out_channels {
            for ni in 0..n {
                for oh in 0..ho {
                    for ow in 0..wo {
                        let mut acc = 0.0;
                        for ci in 0..c {
                            for ki in 0..cfg.kernel {
                                for kj in 0..cfg.kernel {
                                    let ih = (oh * cfg.stride + ki) as isize - cfg.padding as isize;
                                    let iw = (ow * cfg.stride + kj) as isize - cfg.padding as isize;
                                    if ih >= 0 && iw >= 0 && (ih as usize) < h && (iw as usize) < wd {
                                        acc += w[[o, ci, ki, kj]] * x[[ci, ni, ih as usize, iw as usize]];
                                    }
                                }
                            }
                        }
                        y[[o, ni, oh, ow]] = acc;
                    }
                }
            }
        }
        y
    }

    #[test]
    fn matches_direct_convolution_and_col2im_is_adjoint() {
        for (k, s, p, h) in [(3, 1, 1, 5), (3, 2, 1, 6), (1, 2, 0, 5), (3, 1, 0, 4), (1, 1, 0, 3)] {
            let cfg = Conv2d { in_channels: 2, out_channels: 3, kernel: k, stride: s, padding: p, bias: false };
            let x = Array4::from_shape_fn((2, 2, h, h), |(a, b, c, d)| ((a * 7 + b * 5 + c * 3 + d) % 11) as f64 - 5.0);
            let w = Array4::from_shape_fn((3, 2, k, k), |(a, b, c, d)| ((a * 3 + b * 2 + c + d * 5) % 7) as f64 - 3.0);
            let (y, cache) = cfg.forward(&x.clone().into_dyn(), &w.view().into_dyn(), None);
            let y_ref = conv_slow(&cfg, &x, &w);
            assert_eq!(y.shape(), y_ref.shape());
            assert!(y.iter().zip(y_ref.iter()).all(|(a, b)| (a - b).abs() < 1e-12));
            // ⟨im2col(x), c⟩ = ⟨x, col2im(c)⟩
            let c = cache.cols.mapv(|v| v * 0.5 + 1.0);
            let lhs: f64 = (&cache.cols * &c).sum();
            let back = cfg.col2im(&c, cache.in_shape);
            let rhs: f64 = (&x.clone().into_dyn() * &back).sum();
            assert!((lhs - rhs).abs() < 1e-9 * lhs.abs().max(1.0), "k{k} s{s} p{p}: {lhs} vs {rhs}");
        }
    }
}
