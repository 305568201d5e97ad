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
//!
//! Blocking: `cols` is never formed whole. The output columns (n, oh, ow) are cut into
//! blocks of whole output rows (n, oh), 128–2048 columns each; every pass unfolds one
//! block of x (and of R{x}) into a small buffer that stays in cache, runs its GEMMs on
//! that block (`y`, `dx`-columns written in place, `dW` accumulated over blocks in a fixed
//! order, so results do not depend on threads) and, in the reverse passes, folds the block's
//! column gradient back into dx (col2im is linear, so folding block by block is exact).
//! The reverse and R passes therefore take the layer input x (and R{x}) again instead of a
//! cached `cols`, recomputing its blocks. A 1×1, stride-1, unpadded convolution needs no
//! unfolding at all: x `[C, N·H·W]` already is `cols`, and dx = W₂ᵀ · dy directly.
//!
//! In f32 on AVX2 machines, the forward, R-forward, dW and R{dW} passes of any stride
//! (output rows of 8 or more) and the stride-1 dx / R{dx} skip im2col altogether and run
//! the direct kernels of [`crate::engine::direct`] (1.5–2× faster on ResNet shapes).

use std::any::TypeId;
use std::marker::PhantomData;

use ndarray::{Array2, ArrayD, ArrayView1, ArrayViewD, IxDyn};

use crate::engine::direct;
use crate::engine::gemm::{gemm_slices, Mat};
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

/// What the backward and R passes need from the forward pass besides the layer input
/// (which the graph keeps anyway): only its shape, as `cols` is recomputed block by block.
pub struct ConvCache<T> {
    /// Input shape `[C, N, H, W]`.
    pub in_shape: [usize; 4],
    _scalar: PhantomData<T>,
}

/// What [`Conv2d::backward_hvp`] returns: gradients and their R-values (`None` where not
/// asked for).
pub struct HvpGrads<T> {
    pub dx: Option<ArrayD<T>>,
    pub dw: Option<ArrayD<T>>,
    pub db: Option<ArrayD<T>>,
    pub rdx: Option<ArrayD<T>>,
    pub rdw: ArrayD<T>,
    pub rdb: Option<ArrayD<T>>,
}

/// Sizes of one convolution call.
#[derive(Clone, Copy, Debug)]
struct Geom {
    c: usize,
    n: usize,
    h: usize,
    w: usize,
    ho: usize,
    wo: usize,
    /// C·k·k, the rows of `cols`.
    kk: usize,
    /// N·Ho·Wo, the columns of `cols`.
    cols: usize,
}

/// Target size (elements) of one unfolded block, `C·k·k × columns`: small enough to stay
/// in L2 next to the GEMM's packed panels (tuned on ResNet-20 shapes: 128–512 columns).
const BLOCK_ELEMS: usize = 48 * 1024;
/// Bounds on the columns of a block (rounded to whole output rows).
const MIN_BLOCK_COLS: usize = 128;
const MAX_BLOCK_COLS: usize = 2048;

impl Conv2d {
    /// Output spatial size for an input of `h × w`, or `None` when the kernel does not fit.
    pub fn out_hw(&self, h: usize, w: usize) -> Option<(usize, usize)> {
        let (k, s, p) = (self.kernel, self.stride, self.padding);
        if h + 2 * p < k || w + 2 * p < k || s == 0 {
            return None;
        }
        Some(((h + 2 * p - k) / s + 1, (w + 2 * p - k) / s + 1))
    }

    fn geom(&self, shape: [usize; 4]) -> Geom {
        let [c, n, h, w] = shape;
        let (ho, wo) = self.out_hw(h, w).expect("checked at build");
        Geom {
            c,
            n,
            h,
            w,
            ho,
            wo,
            kk: c * self.kernel * self.kernel,
            cols: n * ho * wo,
        }
    }

    /// 1×1, stride 1, no padding: x `[C, N·H·W]` is its own im2col.
    fn pointwise(&self) -> bool {
        self.kernel == 1 && self.stride == 1 && self.padding == 0
    }

    /// Output rows (n, oh) per block.
    fn block_rows(&self, g: &Geom) -> usize {
        let cols = (BLOCK_ELEMS / g.kk.max(1)).clamp(MIN_BLOCK_COLS, MAX_BLOCK_COLS);
        (cols / g.wo.max(1)).max(1)
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
        let rb = self.block_rows(&self.geom(in_shape));
        (
            self.forward_rb(x, w, b, rb),
            ConvCache {
                in_shape,
                _scalar: PhantomData,
            },
        )
    }

    /// Inference forward without bias, applying `epilogue(channel, row)` to each block of
    /// each output channel right after its GEMM, while the block is still in cache (the
    /// graph fuses eval-mode batch norm and ReLU this way).
    pub fn forward_fused<T: Scalar>(
        &self,
        x: &ArrayD<T>,
        w: &ArrayViewD<T>,
        epilogue: impl Fn(usize, &mut [T]),
    ) -> ArrayD<T> {
        assert!(!self.bias, "forward_fused: convolution with bias");
        let g = self.geom(Self::shape4(x));
        let rb = self.block_rows(&g);
        let x = x.as_standard_layout();
        let xs = x.as_slice().expect("standard layout");
        let w = w.as_standard_layout();
        let w2 = Mat::new(w.as_slice().expect("standard layout"), g.kk);
        let o = self.out_channels;
        let ws = w.as_slice().expect("standard layout");
        let hw = g.ho * g.wo;
        if let Some(y) = self.forward_direct(&g, xs, ws, |y, img| {
            for ch in 0..o {
                epilogue(ch, &mut y[ch * g.cols + img * hw..][..hw]);
            }
        }) {
            return self.finish_output(y, None, &g);
        }
        let mut y = vec![T::zero(); o * g.cols];
        let mut buf = self.block_buf(&g, rb);
        self.for_blocks(&g, rb, |r0, r1| {
            let (c0, nb) = (r0 * g.wo, (r1 - r0) * g.wo);
            let bx = self.lower(&g, xs, r0, r1, &mut buf);
            gemm_slices(
                o,
                nb,
                g.kk,
                T::one(),
                w2,
                bx,
                T::zero(),
                &mut y[c0..],
                g.cols,
            );
            for ch in 0..o {
                epilogue(ch, &mut y[ch * g.cols + c0..ch * g.cols + c0 + nb]);
            }
        });
        self.finish_output(y, None, &g)
    }

    /// dx (when `need_dx`), dW, db. `x` is the layer input of the forward pass.
    pub fn backward<T: Scalar>(
        &self,
        cache: &ConvCache<T>,
        x: &ArrayD<T>,
        w: &ArrayViewD<T>,
        gy: &ArrayD<T>,
        need_dx: bool,
    ) -> (Option<ArrayD<T>>, ArrayD<T>, Option<ArrayD<T>>) {
        let rb = self.block_rows(&self.geom(cache.in_shape));
        self.backward_rb(cache, x, w, gy, need_dx, true, rb)
    }

    /// dx alone (no weight gradient), with [`Self::backward`]'s arithmetic (same bits).
    pub fn backward_dx<T: Scalar>(
        &self,
        cache: &ConvCache<T>,
        x: &ArrayD<T>,
        w: &ArrayViewD<T>,
        gy: &ArrayD<T>,
    ) -> ArrayD<T> {
        let rb = self.block_rows(&self.geom(cache.in_shape));
        let (dx, _, _) = self.backward_rb(cache, x, w, gy, true, false, rb);
        dx.expect("dx was asked for")
    }

    /// R{y} = W ⋆ R{x} + V ⋆ x + v_b (`rx` = None: R{x} = 0).
    pub fn r_forward<T: Scalar>(
        &self,
        cache: &ConvCache<T>,
        x: &ArrayD<T>,
        w: &ArrayViewD<T>,
        vw: &ArrayViewD<T>,
        vb: Option<&ArrayViewD<T>>,
        rx: Option<&ArrayD<T>>,
    ) -> ArrayD<T> {
        let rb = self.block_rows(&self.geom(cache.in_shape));
        self.r_forward_rb(cache, x, w, vw, vb, rx, rb)
    }

    /// R{dx} (when `need_dx`), R{dW}, R{db}. `x`, `rx` are the layer input and its R-value
    /// (None = 0).
    #[allow(clippy::too_many_arguments)]
    pub fn r_backward<T: Scalar>(
        &self,
        cache: &ConvCache<T>,
        x: &ArrayD<T>,
        rx: Option<&ArrayD<T>>,
        w: &ArrayViewD<T>,
        vw: &ArrayViewD<T>,
        gy: &ArrayD<T>,
        rgy: &ArrayD<T>,
        need_dx: bool,
    ) -> (Option<ArrayD<T>>, ArrayD<T>, Option<ArrayD<T>>) {
        let rb = self.block_rows(&self.geom(cache.in_shape));
        self.r_backward_rb(cache, x, rx, w, vw, gy, rgy, need_dx, rb)
    }

    /// The reverse pass of an HVP in one sweep over the blocks: R{dx} (when `need_dx`), dx
    /// (when `need_dx` and `want_dx`), dW and db (when `want_dw`), R{dW}, R{db}. Each block of x and R{x} is unfolded
    /// once for all of them (separate [`Self::backward`] and [`Self::r_backward`] calls
    /// would unfold x twice and form a dW nobody asked for).
    #[allow(clippy::too_many_arguments, clippy::type_complexity)]
    pub fn backward_hvp<T: Scalar>(
        &self,
        cache: &ConvCache<T>,
        x: &ArrayD<T>,
        rx: Option<&ArrayD<T>>,
        w: &ArrayViewD<T>,
        vw: &ArrayViewD<T>,
        gy: &ArrayD<T>,
        rgy: &ArrayD<T>,
        need_dx: bool,
        want_dx: bool,
        want_dw: bool,
    ) -> HvpGrads<T> {
        let rb = self.block_rows(&self.geom(cache.in_shape));
        self.backward_hvp_rb(cache, x, rx, w, vw, gy, rgy, need_dx, want_dx, want_dw, rb)
    }

    #[allow(clippy::too_many_arguments)]
    fn backward_hvp_rb<T: Scalar>(
        &self,
        cache: &ConvCache<T>,
        x: &ArrayD<T>,
        rx: Option<&ArrayD<T>>,
        w: &ArrayViewD<T>,
        vw: &ArrayViewD<T>,
        gy: &ArrayD<T>,
        rgy: &ArrayD<T>,
        need_dx: bool,
        want_dx: bool,
        want_dw: bool,
        rb: usize,
    ) -> HvpGrads<T> {
        let g = self.geom(cache.in_shape);
        assert_eq!(
            Self::shape4(x),
            cache.in_shape,
            "conv backward: input shape"
        );
        let o = self.out_channels;
        let x = x.as_standard_layout();
        let xs = x.as_slice().expect("standard layout");
        let rx = rx.map(|r| r.as_standard_layout());
        let rxs = rx.as_ref().map(|r| r.as_slice().expect("standard layout"));
        let (w, vw) = (w.as_standard_layout(), vw.as_standard_layout());
        let w2 = Mat::new(w.as_slice().expect("standard layout"), g.kk);
        let v2 = Mat::new(vw.as_slice().expect("standard layout"), g.kk);
        let (gy, rgy) = (gy.as_standard_layout(), rgy.as_standard_layout());
        let gys = gy.as_slice().expect("standard layout");
        let rgys = rgy.as_slice().expect("standard layout");
        assert!(
            gys.len() == o * g.cols && rgys.len() == o * g.cols,
            "conv backward: shapes"
        );
        let mut dw = want_dw.then(|| vec![T::zero(); o * g.kk]);
        let mut rdw = vec![T::zero(); o * g.kk];
        // dW = dy ⋆ x and R{dW} = R{dy} ⋆ x + dy ⋆ R{x} by the direct kernel where it applies.
        let rdw_terms: Vec<(&[T], &[T])> = std::iter::once((rgys, xs))
            .chain(rxs.map(|r| (gys, r)))
            .collect();
        let direct_dw = self.dw_direct(&g, &rdw_terms, &mut rdw)
            && dw
                .as_mut()
                .is_none_or(|dw| self.dw_direct(&g, &[(gys, xs)], dw));
        // dx = W'⋆dy and R{dx} = W'⋆R{dy} + V'⋆dy by the direct kernel where it applies.
        let direct_dx = need_dx
            .then(|| {
                let dx = match want_dx {
                    true => Some(self.dx_direct(&g, &[(w2.data, gys)])?),
                    false => None,
                };
                let rdx = self.dx_direct(&g, &[(w2.data, rgys), (v2.data, gys)])?;
                Some((dx, rdx))
            })
            .flatten();
        let need_dx = need_dx && direct_dx.is_none();
        let mut dx = (need_dx && want_dx).then(|| vec![T::zero(); g.c * g.n * g.h * g.w]);
        let mut rdx = need_dx.then(|| vec![T::zero(); g.c * g.n * g.h * g.w]);
        let mut buf = if direct_dw {
            Vec::new()
        } else {
            self.block_buf(&g, rb)
        };
        let mut rbuf = if rxs.is_some() && !direct_dw {
            self.block_buf(&g, rb)
        } else {
            Vec::new()
        };
        let mut dbuf = if need_dx {
            self.block_buf(&g, rb)
        } else {
            Vec::new()
        };
        // R{dx} = Wᵀ·R{dy} + Vᵀ·dy as one GEMM with K = 2·O: [W; V]ᵀ · [R{dy}; dy]
        let wv2: Vec<T> = if need_dx {
            w2.data[..o * g.kk]
                .iter()
                .chain(&v2.data[..o * g.kk])
                .copied()
                .collect()
        } else {
            Vec::new()
        };
        let mut stacked = if need_dx {
            vec![T::zero(); 2 * o * rb.min(g.n * g.ho) * g.wo]
        } else {
            Vec::new()
        };
        self.for_blocks(&g, rb, |r0, r1| {
            let (c0, nb) = (r0 * g.wo, (r1 - r0) * g.wo);
            let gyb = Mat::new(&gys[c0..], g.cols);
            let rgyb = Mat::new(&rgys[c0..], g.cols);
            if !direct_dw {
                let bx = self.lower(&g, xs, r0, r1, &mut buf);
                if let Some(dw) = dw.as_mut() {
                    gemm_slices(o, g.kk, nb, T::one(), gyb, bx.t(), T::one(), dw, g.kk);
                }
                let rdw = &mut rdw[..];
                gemm_slices(o, g.kk, nb, T::one(), rgyb, bx.t(), T::one(), rdw, g.kk);
                if let Some(rxs) = rxs {
                    let brx = self.lower(&g, rxs, r0, r1, &mut rbuf);
                    gemm_slices(o, g.kk, nb, T::one(), gyb, brx.t(), T::one(), rdw, g.kk);
                }
            }
            if let Some(rdx) = rdx.as_mut() {
                if let Some(dx) = dx.as_mut() {
                    self.col_grad(&g, r0, r1, &[(w2, gyb)], &mut dbuf, dx);
                }
                let st = &mut stacked[..2 * o * nb];
                for ch in 0..o {
                    let src = ch * g.cols + c0..ch * g.cols + c0 + nb;
                    st[ch * nb..(ch + 1) * nb].copy_from_slice(&rgys[src.clone()]);
                    st[(o + ch) * nb..(o + ch + 1) * nb].copy_from_slice(&gys[src]);
                }
                let a = Mat::new(&wv2[..], g.kk);
                let b = Mat::new(&stacked[..2 * o * nb], nb);
                self.col_grad_k(&g, r0, r1, 2 * o, &[(a, b)], &mut dbuf, rdx);
            }
        });
        let shape = |v: Vec<T>| ArrayD::from_shape_vec(IxDyn(&cache.in_shape), v).expect("size");
        if let Some((ddx, drdx)) = direct_dx {
            (dx, rdx) = (ddx, Some(drdx));
        }
        HvpGrads {
            dx: dx.map(shape),
            dw: dw.map(|d| self.weight_shape(d)),
            db: (want_dw && self.bias).then(|| row_sums(gys, o)),
            rdx: rdx.map(shape),
            rdw: self.weight_shape(rdw),
            rdb: self.bias.then(|| row_sums(rgys, o)),
        }
    }

    fn forward_rb<T: Scalar>(
        &self,
        x: &ArrayD<T>,
        w: &ArrayViewD<T>,
        b: Option<&ArrayViewD<T>>,
        rb: usize,
    ) -> ArrayD<T> {
        let g = self.geom(Self::shape4(x));
        let x = x.as_standard_layout();
        let xs = x.as_slice().expect("standard layout");
        let w = w.as_standard_layout();
        let ws = w.as_slice().expect("standard layout");
        if let Some(y) = self.forward_direct(&g, xs, ws, |_, _| {}) {
            return self.finish_output(y, b, &g);
        }
        let w2 = Mat::new(ws, g.kk);
        let mut y = vec![T::zero(); self.out_channels * g.cols];
        let mut buf = self.block_buf(&g, rb);
        self.for_blocks(&g, rb, |r0, r1| {
            let (c0, nb) = (r0 * g.wo, (r1 - r0) * g.wo);
            let bx = self.lower(&g, xs, r0, r1, &mut buf);
            let yb = &mut y[c0..];
            gemm_slices(
                self.out_channels,
                nb,
                g.kk,
                T::one(),
                w2,
                bx,
                T::zero(),
                yb,
                g.cols,
            );
        });
        self.finish_output(y, b, &g)
    }

    /// `[O, N·Ho·Wo]` by the direct kernel ([`direct`]) when it applies (f32, output
    /// rows of at least 8), calling `after(y, image)` once each image is complete; `None`
    /// otherwise. Both forward passes go through here, so eval and gradient passes agree
    /// bit for bit.
    fn forward_direct<T: Scalar>(
        &self,
        g: &Geom,
        xs: &[T],
        ws: &[T],
        after: impl FnMut(&mut [T], usize),
    ) -> Option<Vec<T>> {
        let (o, k, s, p) = (self.out_channels, self.kernel, self.stride, self.padding);
        direct_sum(o, k, s, p, [g.n, g.h, g.w], &[(ws, xs)], after)
    }

    /// The transposed convolutions of the reverse passes, `dx = Wᵀ ⋆ dy` summed over the
    /// `(W, dy)` terms, by the direct kernel: for stride 1, the adjoint of a k×k
    /// convolution with padding p is the convolution with the flipped, transposed kernel
    /// `W'[c, o, i, j] = W[o, c, k−1−i, k−1−j]` and padding k−1−p. `None` where it does not
    /// apply (the caller then folds GEMM columns back with col2im).
    fn dx_direct<T: Scalar>(&self, g: &Geom, terms: &[(&[T], &[T])]) -> Option<Vec<T>> {
        let (o, c, k, p) = (self.out_channels, g.c, self.kernel, self.padding);
        if self.stride != 1 || p + 1 > k {
            return None;
        }
        let flipped: Vec<Vec<T>> = terms
            .iter()
            .map(|&(w, _)| flip_transpose(w, o, c, k))
            .collect();
        let terms: Vec<(&[T], &[T])> = flipped
            .iter()
            .zip(terms)
            .map(|(wf, &(_, dy))| (&wf[..], dy))
            .collect();
        direct_sum(c, k, 1, k - 1 - p, [g.n, g.ho, g.wo], &terms, |_, _| {})
    }

    /// `dw [O, C·k·k] += Σ dy ⋆ x` over the `(dy, x)` terms by the direct kernel
    /// ([`direct::weight_grad`]); false (and `dw` untouched) where it does not apply.
    fn dw_direct<T: Scalar>(&self, g: &Geom, terms: &[(&[T], &[T])], dw: &mut [T]) -> bool {
        let Some(dwf) = as_f32_mut(dw).filter(|_| direct::applies(g.wo)) else {
            return false;
        };
        let terms: Vec<(&[f32], &[f32])> = terms
            .iter()
            .map(|&(d, x)| (as_f32(d).expect("f32"), as_f32(x).expect("f32")))
            .collect();
        let sh = direct::Shape {
            o: self.out_channels,
            c: g.c,
            k: self.kernel,
            s: self.stride,
            p: self.padding,
            h: g.h,
            w: g.w,
        };
        direct::weight_grad(sh, g.n, &terms, dwf);
        true
    }

    #[allow(clippy::too_many_arguments)]
    fn backward_rb<T: Scalar>(
        &self,
        cache: &ConvCache<T>,
        x: &ArrayD<T>,
        w: &ArrayViewD<T>,
        gy: &ArrayD<T>,
        need_dx: bool,
        want_dw: bool,
        rb: usize,
    ) -> (Option<ArrayD<T>>, ArrayD<T>, Option<ArrayD<T>>) {
        let g = self.geom(cache.in_shape);
        assert_eq!(
            Self::shape4(x),
            cache.in_shape,
            "conv backward: input shape"
        );
        let o = self.out_channels;
        let x = x.as_standard_layout();
        let xs = x.as_slice().expect("standard layout");
        let w = w.as_standard_layout();
        let w2 = Mat::new(w.as_slice().expect("standard layout"), g.kk);
        let gy = gy.as_standard_layout();
        let gys = gy.as_slice().expect("standard layout");
        assert_eq!(gys.len(), o * g.cols, "conv backward: gradient shape");
        let mut dw = vec![T::zero(); if want_dw { o * g.kk } else { 0 }];
        // without dW, the sweep below only unfolds what dx needs
        let direct_dw = !want_dw || self.dw_direct(&g, &[(gys, xs)], &mut dw);
        let direct_dx = need_dx
            .then(|| self.dx_direct(&g, &[(w2.data, gys)]))
            .flatten();
        let need_dx = need_dx && direct_dx.is_none();
        let mut dx = need_dx.then(|| vec![T::zero(); g.c * g.n * g.h * g.w]);
        let mut buf = if direct_dw {
            Vec::new()
        } else {
            self.block_buf(&g, rb)
        };
        let mut dbuf = if need_dx {
            self.block_buf(&g, rb)
        } else {
            Vec::new()
        };
        self.for_blocks(&g, rb, |r0, r1| {
            let (c0, nb) = (r0 * g.wo, (r1 - r0) * g.wo);
            let gyb = Mat::new(&gys[c0..], g.cols);
            if !direct_dw {
                let bx = self.lower(&g, xs, r0, r1, &mut buf);
                gemm_slices(o, g.kk, nb, T::one(), gyb, bx.t(), T::one(), &mut dw, g.kk);
            }
            if let Some(dx) = dx.as_mut() {
                self.col_grad(&g, r0, r1, &[(w2, gyb)], &mut dbuf, dx);
            }
        });
        let dx = direct_dx
            .or(dx)
            .map(|v| ArrayD::from_shape_vec(IxDyn(&cache.in_shape), v).expect("size"));
        let db = (want_dw && self.bias).then(|| row_sums(gys, o));
        let dw = match want_dw {
            true => self.weight_shape(dw),
            false => ArrayD::zeros(IxDyn(&[0])),
        };
        (dx, dw, db)
    }

    #[allow(clippy::too_many_arguments)]
    fn r_forward_rb<T: Scalar>(
        &self,
        cache: &ConvCache<T>,
        x: &ArrayD<T>,
        w: &ArrayViewD<T>,
        vw: &ArrayViewD<T>,
        vb: Option<&ArrayViewD<T>>,
        rx: Option<&ArrayD<T>>,
        rb: usize,
    ) -> ArrayD<T> {
        let g = self.geom(cache.in_shape);
        assert_eq!(
            Self::shape4(x),
            cache.in_shape,
            "conv r_forward: input shape"
        );
        let o = self.out_channels;
        let x = x.as_standard_layout();
        let xs = x.as_slice().expect("standard layout");
        let rx = rx.map(|r| r.as_standard_layout());
        let rxs = rx.as_ref().map(|r| r.as_slice().expect("standard layout"));
        let (w, vw) = (w.as_standard_layout(), vw.as_standard_layout());
        let w2 = Mat::new(w.as_slice().expect("standard layout"), g.kk);
        let v2 = Mat::new(vw.as_slice().expect("standard layout"), g.kk);
        {
            let (xv, xw) = ((v2.data, xs), rxs.map(|r| (w2.data, r)));
            let terms: Vec<(&[T], &[T])> = std::iter::once(xv).chain(xw).collect();
            let (k, s, p) = (self.kernel, self.stride, self.padding);
            if let Some(ry) = direct_sum(o, k, s, p, [g.n, g.h, g.w], &terms, |_, _| {}) {
                return self.finish_output(ry, vb, &g);
            }
        }
        let mut ry = vec![T::zero(); o * g.cols];
        if let (Some(rxs), false) = (rxs, self.pointwise()) {
            // One GEMM per block: [V₂ W₂] · [cols; R{cols}].
            let vw2: Vec<T> = (0..o)
                .flat_map(|i| {
                    let row = i * g.kk..(i + 1) * g.kk;
                    v2.data[row.clone()].iter().chain(&w2.data[row]).copied()
                })
                .collect();
            let mut buf2 = self.block_buf(&g, rb);
            buf2.extend_from_within(..);
            self.for_blocks(&g, rb, |r0, r1| {
                let (c0, nb) = (r0 * g.wo, (r1 - r0) * g.wo);
                let (bx, brx) = buf2[..2 * g.kk * nb].split_at_mut(g.kk * nb);
                self.im2col_block(&g, xs, r0, r1, bx);
                self.im2col_block(&g, rxs, r0, r1, brx);
                let b = Mat::new(&buf2[..2 * g.kk * nb], nb);
                let a = Mat::new(&vw2[..], 2 * g.kk);
                gemm_slices(
                    o,
                    nb,
                    2 * g.kk,
                    T::one(),
                    a,
                    b,
                    T::zero(),
                    &mut ry[c0..],
                    g.cols,
                );
            });
            return self.finish_output(ry, vb, &g);
        }
        let mut buf = self.block_buf(&g, rb);
        let mut rbuf = if rxs.is_some() {
            self.block_buf(&g, rb)
        } else {
            Vec::new()
        };
        self.for_blocks(&g, rb, |r0, r1| {
            let (c0, nb) = (r0 * g.wo, (r1 - r0) * g.wo);
            let bx = self.lower(&g, xs, r0, r1, &mut buf);
            gemm_slices(
                o,
                nb,
                g.kk,
                T::one(),
                v2,
                bx,
                T::zero(),
                &mut ry[c0..],
                g.cols,
            );
            if let Some(rxs) = rxs {
                let brx = self.lower(&g, rxs, r0, r1, &mut rbuf);
                gemm_slices(
                    o,
                    nb,
                    g.kk,
                    T::one(),
                    w2,
                    brx,
                    T::one(),
                    &mut ry[c0..],
                    g.cols,
                );
            }
        });
        self.finish_output(ry, vb, &g)
    }

    /// R-backward alone: the fused sweep without dx and dW (the graph calls
    /// [`Self::backward_hvp`] directly).
    #[allow(clippy::too_many_arguments)]
    fn r_backward_rb<T: Scalar>(
        &self,
        cache: &ConvCache<T>,
        x: &ArrayD<T>,
        rx: Option<&ArrayD<T>>,
        w: &ArrayViewD<T>,
        vw: &ArrayViewD<T>,
        gy: &ArrayD<T>,
        rgy: &ArrayD<T>,
        need_dx: bool,
        rb: usize,
    ) -> (Option<ArrayD<T>>, ArrayD<T>, Option<ArrayD<T>>) {
        let h = self.backward_hvp_rb(cache, x, rx, w, vw, gy, rgy, need_dx, false, false, rb);
        (h.rdx, h.rdw, h.rdb)
    }

    /// Calls `f(r0, r1)` for consecutive blocks of `rb` output rows (n, oh).
    fn for_blocks(&self, g: &Geom, rb: usize, mut f: impl FnMut(usize, usize)) {
        let rows = g.n * g.ho;
        let rb = rb.max(1);
        let mut r0 = 0;
        while r0 < rows {
            let r1 = (r0 + rb).min(rows);
            f(r0, r1);
            r0 = r1;
        }
    }

    /// Scratch for one unfolded block (empty for pointwise convolutions, which need none).
    fn block_buf<T: Scalar>(&self, g: &Geom, rb: usize) -> Vec<T> {
        if self.pointwise() {
            Vec::new()
        } else {
            vec![T::zero(); g.kk * rb.min(g.n * g.ho) * g.wo]
        }
    }

    /// The columns of output rows `[r0, r1)` of im2col(x), as a GEMM operand: unfolded into
    /// `buf`, or, for a pointwise convolution, a view of x itself.
    fn lower<'a, T: Scalar>(
        &self,
        g: &Geom,
        xs: &'a [T],
        r0: usize,
        r1: usize,
        buf: &'a mut [T],
    ) -> Mat<'a, T> {
        if self.pointwise() {
            Mat::new(&xs[r0 * g.wo..], g.cols)
        } else {
            let nb = (r1 - r0) * g.wo;
            self.im2col_block(g, xs, r0, r1, &mut buf[..g.kk * nb]);
            Mat::new(&buf[..g.kk * nb], nb)
        }
    }

    /// dx[block] += col2im(Σ Aᵢᵀ · Bᵢ) for the (A, dy-block) pairs in `terms`.
    fn col_grad<T: Scalar>(
        &self,
        g: &Geom,
        r0: usize,
        r1: usize,
        terms: &[(Mat<T>, Mat<T>)],
        dbuf: &mut [T],
        dx: &mut [T],
    ) {
        self.col_grad_k(g, r0, r1, self.out_channels, terms, dbuf, dx)
    }

    /// [`Self::col_grad`] with inner dimension `o` (rows of each B, columns of each A).
    #[allow(clippy::too_many_arguments)]
    fn col_grad_k<T: Scalar>(
        &self,
        g: &Geom,
        r0: usize,
        r1: usize,
        o: usize,
        terms: &[(Mat<T>, Mat<T>)],
        dbuf: &mut [T],
        dx: &mut [T],
    ) {
        let (c0, nb) = (r0 * g.wo, (r1 - r0) * g.wo);
        if self.pointwise() {
            // Blocks are disjoint column ranges of dx [C, N·H·W]: write them directly.
            for (i, &(a, b)) in terms.iter().enumerate() {
                let beta = if i == 0 { T::zero() } else { T::one() };
                gemm_slices(g.kk, nb, o, T::one(), a.t(), b, beta, &mut dx[c0..], g.cols);
            }
        } else {
            let dbuf = &mut dbuf[..g.kk * nb];
            for (i, &(a, b)) in terms.iter().enumerate() {
                let beta = if i == 0 { T::zero() } else { T::one() };
                gemm_slices(g.kk, nb, o, T::one(), a.t(), b, beta, dbuf, nb);
            }
            self.col2im_block(g, dbuf, r0, r1, dx);
        }
    }

    /// `[O, N·Ho·Wo]` + bias → `[O, N, Ho, Wo]`.
    fn finish_output<T: Scalar>(
        &self,
        mut y: Vec<T>,
        b: Option<&ArrayViewD<T>>,
        g: &Geom,
    ) -> ArrayD<T> {
        if let Some(b) = b {
            for (row, &bi) in y.chunks_exact_mut(g.cols.max(1)).zip(b.iter()) {
                row.iter_mut().for_each(|v| *v += bi);
            }
        }
        ArrayD::from_shape_vec(IxDyn(&[self.out_channels, g.n, g.ho, g.wo]), y)
            .expect("standard layout")
    }

    fn weight_shape<T: Scalar>(&self, w2: Vec<T>) -> ArrayD<T> {
        let k = self.kernel;
        ArrayD::from_shape_vec(IxDyn(&[self.out_channels, self.in_channels, k, k]), w2)
            .expect("standard layout")
    }

    /// For each output column (n, oh, ow) the valid `ow` range of kernel column `kj`.
    #[inline]
    fn ow_range(&self, kj: usize, w: usize, wo: usize) -> (usize, usize) {
        let (s, p) = (self.stride, self.padding);
        // iw = ow·s + kj − p must lie in [0, w)
        let lo = if kj >= p { 0 } else { (p - kj).div_ceil(s) };
        let hi = if w + p > kj {
            ((w + p - kj - 1) / s + 1).min(wo)
        } else {
            0
        };
        (lo.min(hi), hi)
    }

    /// The input row `ih` that output row `oh` reads through kernel row `ki`, if inside.
    #[inline]
    fn in_row(&self, oh: usize, ki: usize, h: usize) -> Option<usize> {
        (oh * self.stride + ki)
            .checked_sub(self.padding)
            .filter(|&ih| ih < h)
    }

    /// Unfolds output rows `[r0, r1)` (row r = n·Ho + oh) of x `[C, N, H, W]` into
    /// `buf [C·k·k, (r1 − r0)·Wo]`, zero padding; every element of `buf` is written.
    fn im2col_block<T: Scalar>(&self, g: &Geom, xs: &[T], r0: usize, r1: usize, buf: &mut [T]) {
        let (k, s, p) = (self.kernel, self.stride, self.padding);
        let nb = (r1 - r0) * g.wo;
        let zero = T::zero();
        for (rr, row) in buf[..g.kk * nb].chunks_exact_mut(nb).enumerate() {
            let (ci, ki, kj) = (rr / (k * k), (rr / k) % k, rr % k);
            let (lo, hi) = self.ow_range(kj, g.w, g.wo);
            let plane = &xs[ci * g.n * g.h * g.w..(ci + 1) * g.n * g.h * g.w];
            if self.same_size(g) {
                // Consecutive valid output rows read consecutive input rows shifted by
                // kj − p: one copy per image run, then re-zero the wrapped-around padding.
                Self::image_runs(g, r0, r1, |ni, oa, ob, d0| {
                    let (va, vb) = self.valid_rows(g, ki, oa, ob);
                    let out = &mut row[d0 * g.wo..(d0 + ob - oa) * g.wo];
                    if va >= vb || lo >= hi {
                        out.fill(zero);
                        return;
                    }
                    out[..(va - oa) * g.wo].fill(zero);
                    out[(vb - oa) * g.wo..].fill(zero);
                    let dst0 = (va - oa) * g.wo + lo;
                    let len = (vb - va - 1) * g.wo + hi - lo;
                    let src0 = (ni * g.h + va + ki - p) * g.w + lo + kj - p;
                    out[dst0..dst0 + len].copy_from_slice(&plane[src0..src0 + len]);
                    for o in out[(va - oa) * g.wo..(vb - oa) * g.wo].chunks_exact_mut(g.wo) {
                        o[..lo].fill(zero);
                        o[hi..].fill(zero);
                    }
                });
                continue;
            }
            let (mut ni, mut oh) = (r0 / g.ho, r0 % g.ho);
            for out in row.chunks_exact_mut(g.wo) {
                match self.in_row(oh, ki, g.h) {
                    Some(ih) if lo < hi => {
                        let src = &plane[(ni * g.h + ih) * g.w..][..g.w];
                        out[..lo].fill(zero);
                        out[hi..].fill(zero);
                        if s == 1 {
                            let iw0 = lo + kj - p;
                            out[lo..hi].copy_from_slice(&src[iw0..iw0 + hi - lo]);
                        } else {
                            let iw0 = lo * s + kj - p;
                            for (o, &v) in out[lo..hi].iter_mut().zip(src[iw0..].iter().step_by(s))
                            {
                                *o = v;
                            }
                        }
                    }
                    _ => out.fill(zero),
                }
                oh += 1;
                if oh == g.ho {
                    oh = 0;
                    ni += 1;
                }
            }
        }
    }

    /// Adjoint of [`Self::im2col_block`]: adds `buf [C·k·k, (r1 − r0)·Wo]` into
    /// dx `[C, N, H, W]`, summing overlaps.
    /// `buf` is scratch: its entries that fall on the padding are zeroed on the way.
    fn col2im_block<T: Scalar>(&self, g: &Geom, buf: &mut [T], r0: usize, r1: usize, dx: &mut [T]) {
        let (k, s, p) = (self.kernel, self.stride, self.padding);
        let nb = (r1 - r0) * g.wo;
        let zero = T::zero();
        for (rr, row) in buf[..g.kk * nb].chunks_exact_mut(nb).enumerate() {
            let (ci, ki, kj) = (rr / (k * k), (rr / k) % k, rr % k);
            let (lo, hi) = self.ow_range(kj, g.w, g.wo);
            if lo >= hi {
                continue;
            }
            let plane = &mut dx[ci * g.n * g.h * g.w..(ci + 1) * g.n * g.h * g.w];
            if self.same_size(g) {
                // Mirror of im2col's fast path: zero the padding columns, then one
                // contiguous accumulation per image run (the zeros land on neighbours).
                Self::image_runs(g, r0, r1, |ni, oa, ob, d0| {
                    let (va, vb) = self.valid_rows(g, ki, oa, ob);
                    if va >= vb {
                        return;
                    }
                    let src = &mut row[(d0 + va - oa) * g.wo..(d0 + vb - oa) * g.wo];
                    for o in src.chunks_exact_mut(g.wo) {
                        o[..lo].fill(zero);
                        o[hi..].fill(zero);
                    }
                    let len = (vb - va - 1) * g.wo + hi - lo;
                    let dst0 = (ni * g.h + va + ki - p) * g.w + lo + kj - p;
                    let dst = &mut plane[dst0..dst0 + len];
                    for (d, &v) in dst.iter_mut().zip(&src[lo..lo + len]) {
                        *d += v;
                    }
                });
                continue;
            }
            let (mut ni, mut oh) = (r0 / g.ho, r0 % g.ho);
            for src in row.chunks_exact(g.wo) {
                if let Some(ih) = self.in_row(oh, ki, g.h) {
                    let dst = &mut plane[(ni * g.h + ih) * g.w..][..g.w];
                    let iw0 = lo * s + kj - p;
                    if s == 1 {
                        for (d, &v) in dst[iw0..iw0 + hi - lo].iter_mut().zip(&src[lo..hi]) {
                            *d += v;
                        }
                    } else {
                        for (d, &v) in dst[iw0..].iter_mut().step_by(s).zip(&src[lo..hi]) {
                            *d += v;
                        }
                    }
                }
                oh += 1;
                if oh == g.ho {
                    oh = 0;
                    ni += 1;
                }
            }
        }
    }

    /// Stride 1 with "same" padding (2p = k − 1): Ho = H, Wo = W, so output row oh of
    /// image n reads input rows of the same image at a fixed offset.
    fn same_size(&self, g: &Geom) -> bool {
        self.stride == 1 && g.wo == g.w && g.ho == g.h
    }

    /// Output rows `[oa, ob)` whose input row oh + ki − p lies inside the image.
    #[inline]
    fn valid_rows(&self, g: &Geom, ki: usize, oa: usize, ob: usize) -> (usize, usize) {
        let p = self.padding;
        let va = oa.max(p.saturating_sub(ki));
        let vb = ob.min((g.h + p).saturating_sub(ki));
        (va, vb.max(va))
    }

    /// Splits output rows `[r0, r1)` by image: `f(n, oh_begin, oh_end, block_row_of_oh_begin)`.
    fn image_runs(g: &Geom, r0: usize, r1: usize, mut f: impl FnMut(usize, usize, usize, usize)) {
        let mut r = r0;
        while r < r1 {
            let (ni, oa) = (r / g.ho, r % g.ho);
            let ob = g.ho.min(oa + (r1 - r));
            f(ni, oa, ob, r - r0);
            r += ob - oa;
        }
    }

    /// Unfolds x `[C, N, H, W]` into `[C·k·k, N·Ho·Wo]`; zero padding. (The passes unfold
    /// block by block; this whole-batch form is for tests and tools.)
    pub fn im2col<T: Scalar>(&self, x: &ArrayD<T>, shape: [usize; 4]) -> Array2<T> {
        let g = self.geom(shape);
        let x = x.as_standard_layout();
        let xs = x.as_slice().expect("standard layout");
        let mut cols = vec![T::zero(); g.kk * g.cols];
        if g.cols > 0 {
            self.im2col_block(&g, xs, 0, g.n * g.ho, &mut cols);
        }
        Array2::from_shape_vec((g.kk, g.cols), cols).expect("size")
    }

    /// Folds `[C·k·k, N·Ho·Wo]` back into `[C, N, H, W]`, summing overlaps (adjoint of im2col).
    pub fn col2im<T: Scalar>(&self, cols: &Array2<T>, shape: [usize; 4]) -> ArrayD<T> {
        let g = self.geom(shape);
        let cols = cols.as_standard_layout();
        let mut cs = cols.as_slice().expect("standard layout").to_vec();
        let mut x = vec![T::zero(); g.c * g.n * g.h * g.w];
        if g.cols > 0 {
            self.col2im_block(&g, &mut cs, 0, g.n * g.ho, &mut x);
        }
        ArrayD::from_shape_vec(IxDyn(&shape), x).expect("size")
    }
}

/// Σᵢ Wᵢ ⋆ xᵢ for a `k×k` convolution with stride `s`, zero padding `p` and `out` output
/// channels, by the direct kernel (one call: weights `[W₁ | W₂ | …]` per output channel,
/// the inputs' channels stacked). Each term is (weights `[out, Cᵢ, k, k]`, input
/// `[Cᵢ, N, H, W]`) with `dims = [N, H, W]`; returns `[out, N·Ho·Wo]`, calling
/// `after(y, image)` as each image completes, or `None` unless `T` is f32 and the kernel
/// applies.
#[allow(clippy::too_many_arguments)]
fn direct_sum<T: Scalar>(
    out: usize,
    k: usize,
    s: usize,
    p: usize,
    dims: [usize; 3],
    terms: &[(&[T], &[T])],
    mut after: impl FnMut(&mut [T], usize),
) -> Option<Vec<T>> {
    let [n, h, w] = dims;
    let mut sh = direct::Shape {
        o: out,
        c: 0,
        k,
        s,
        p,
        h,
        w,
    };
    let (ho, wo) = sh.out();
    if TypeId::of::<T>() != TypeId::of::<f32>() || ho == 0 || !direct::applies(wo) {
        return None;
    }
    fn f32s<T: Scalar>(x: &[T]) -> &[f32] {
        as_f32(x).expect("checked: T is f32")
    }
    let per = n * h * w;
    let chans: Vec<usize> = terms.iter().map(|(_, x)| x.len() / per.max(1)).collect();
    let c: usize = chans.iter().sum();
    let weights: std::borrow::Cow<[f32]> = if terms.len() == 1 {
        f32s(terms[0].0).into()
    } else {
        let kk = k * k;
        let mut all = Vec::with_capacity(out * c * kk);
        for oc in 0..out {
            for (&(wi, _), &ci) in terms.iter().zip(&chans) {
                all.extend_from_slice(&f32s(wi)[oc * ci * kk..(oc + 1) * ci * kk]);
            }
        }
        all.into()
    };
    sh.c = c;
    let mut d = direct::DirectConv::new(sh, &weights);
    let srcs: Vec<&[f32]> = terms.iter().map(|&(_, x)| f32s(x)).collect();
    let mut y = vec![T::zero(); out * n * ho * wo];
    for img in 0..n {
        d.image(&srcs, n, img, as_f32_mut(&mut y).expect("f32"));
        after(&mut y, img);
    }
    Some(y)
}

/// `x` as `&[f32]` when `T` is f32 (the direct kernels' type), else `None`.
fn as_f32<T: Scalar>(x: &[T]) -> Option<&[f32]> {
    // SAFETY: T is f32 (TypeIds match), so this reinterprets a slice as itself.
    (TypeId::of::<T>() == TypeId::of::<f32>())
        .then(|| unsafe { std::slice::from_raw_parts(x.as_ptr() as *const f32, x.len()) })
}

/// [`as_f32`] for a mutable slice.
fn as_f32_mut<T: Scalar>(x: &mut [T]) -> Option<&mut [f32]> {
    // SAFETY: as in `as_f32`.
    (TypeId::of::<T>() == TypeId::of::<f32>())
        .then(|| unsafe { std::slice::from_raw_parts_mut(x.as_mut_ptr() as *mut f32, x.len()) })
}

/// `W [O, C, k, k]` → `W' [C, O, k, k]` with `W'[c, o, i, j] = W[o, c, k−1−i, k−1−j]`.
fn flip_transpose<T: Scalar>(w: &[T], o: usize, c: usize, k: usize) -> Vec<T> {
    let kk = k * k;
    let mut f = vec![T::zero(); o * c * kk];
    for oc in 0..o {
        for ci in 0..c {
            for t in 0..kk {
                f[(ci * o + oc) * kk + (kk - 1 - t)] = w[(oc * c + ci) * kk + t];
            }
        }
    }
    f
}

fn row_sums<T: Scalar>(a: &[T], o: usize) -> ArrayD<T> {
    let m = a.len() / o.max(1);
    let sums: Vec<T> = (0..o)
        .map(|i| ArrayView1::from(&a[i * m..(i + 1) * m]).sum())
        .collect();
    ndarray::Array1::from(sums).into_dyn()
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{linalg::general_mat_mul, Array4, Axis, Dimension, Ix2};

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
                                    if ih >= 0 && iw >= 0 && (ih as usize) < h && (iw as usize) < wd
                                    {
                                        acc += w[[o, ci, ki, kj]]
                                            * x[[ci, ni, ih as usize, iw as usize]];
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

    /// Deterministic pseudo-random entries in [−0.5, 0.5] from a seed and the index.
    fn hashed(seed: usize) -> impl Fn(IxDyn) -> f64 {
        move |i: IxDyn| {
            let h = i
                .slice()
                .iter()
                .fold(seed, |a, &v| a.wrapping_mul(31).wrapping_add(v));
            ((h * 2654435761) % 1000) as f64 / 997.0 - 0.5
        }
    }

    fn close(a: &ArrayD<f64>, b: &ArrayD<f64>, what: &str) {
        assert_eq!(a.shape(), b.shape(), "{what}: shape");
        let scale = b.iter().fold(1.0f64, |m, v| m.max(v.abs()));
        for (x, y) in a.iter().zip(b.iter()) {
            assert!((x - y).abs() <= 1e-12 * scale, "{what}: {x} vs {y}");
        }
    }

    #[test]
    fn matches_direct_convolution_and_col2im_is_adjoint() {
        for (k, s, p, h) in [
            (3, 1, 1, 5),
            (3, 2, 1, 6),
            (1, 2, 0, 5),
            (3, 1, 0, 4),
            (1, 1, 0, 3),
        ] {
            let cfg = Conv2d {
                in_channels: 2,
                out_channels: 3,
                kernel: k,
                stride: s,
                padding: p,
                bias: false,
            };
            let x = Array4::from_shape_fn((2, 2, h, h), |(a, b, c, d)| {
                ((a * 7 + b * 5 + c * 3 + d) % 11) as f64 - 5.0
            });
            let w = Array4::from_shape_fn((3, 2, k, k), |(a, b, c, d)| {
                ((a * 3 + b * 2 + c + d * 5) % 7) as f64 - 3.0
            });
            let xd = x.clone().into_dyn();
            let (y, cache) = cfg.forward(&xd, &w.view().into_dyn(), None);
            let y_ref = conv_slow(&cfg, &x, &w);
            assert_eq!(y.shape(), y_ref.shape());
            assert!(y
                .iter()
                .zip(y_ref.iter())
                .all(|(a, b)| (a - b).abs() < 1e-12));
            // ⟨im2col(x), c⟩ = ⟨x, col2im(c)⟩
            let cols = cfg.im2col(&xd, cache.in_shape);
            let c = cols.mapv(|v| v * 0.5 + 1.0);
            let lhs: f64 = (&cols * &c).sum();
            let back = cfg.col2im(&c, cache.in_shape);
            let rhs: f64 = (&xd * &back).sum();
            assert!(
                (lhs - rhs).abs() < 1e-9 * lhs.abs().max(1.0),
                "k{k} s{s} p{p}: {lhs} vs {rhs}"
            );
        }
    }

    fn mm(a: ndarray::ArrayView2<f64>, b: ndarray::ArrayView2<f64>) -> Array2<f64> {
        let mut c = Array2::zeros((a.nrows(), b.ncols()));
        general_mat_mul(1.0, &a, &b, 0.0, &mut c);
        c
    }

    fn rows(y: &ArrayD<f64>, o: usize) -> Array2<f64> {
        let m = y.len() / o;
        y.to_shape((o, m))
            .unwrap()
            .into_dimensionality::<Ix2>()
            .unwrap()
            .to_owned()
    }

    /// The four passes on the whole-batch `cols`, as in the module docs.
    #[allow(clippy::type_complexity)]
    fn unblocked(
        cfg: &Conv2d,
        x: &ArrayD<f64>,
        rx: &ArrayD<f64>,
        w: &ArrayD<f64>,
        v: &ArrayD<f64>,
        gy: &ArrayD<f64>,
        rgy: &ArrayD<f64>,
    ) -> [ArrayD<f64>; 6] {
        let sh = Conv2d::shape4(x);
        let (o, kk) = (cfg.out_channels, w.len() / cfg.out_channels);
        let w2 = w
            .to_shape((o, kk))
            .unwrap()
            .into_dimensionality::<Ix2>()
            .unwrap()
            .to_owned();
        let v2 = v
            .to_shape((o, kk))
            .unwrap()
            .into_dimensionality::<Ix2>()
            .unwrap()
            .to_owned();
        let (cols, rcols) = (cfg.im2col(x, sh), cfg.im2col(rx, sh));
        let (gy2, rgy2) = (rows(gy, o), rows(rgy, o));
        let ys = [o, sh[1], gy.shape()[2], gy.shape()[3]];
        let y = mm(w2.view(), cols.view())
            .into_shape_with_order(IxDyn(&ys))
            .unwrap();
        let ry = (mm(w2.view(), rcols.view()) + mm(v2.view(), cols.view()))
            .into_shape_with_order(IxDyn(&ys))
            .unwrap();
        let ws = w.shape().to_vec();
        let dw = mm(gy2.view(), cols.t())
            .into_shape_with_order(IxDyn(&ws))
            .unwrap();
        let dx = cfg.col2im(&mm(w2.t(), gy2.view()), sh);
        let rdw = (mm(rgy2.view(), cols.t()) + mm(gy2.view(), rcols.t()))
            .into_shape_with_order(IxDyn(&ws))
            .unwrap();
        let rdx = cfg.col2im(&(mm(w2.t(), rgy2.view()) + mm(v2.t(), gy2.view())), sh);
        [y, ry, dw, dx, rdw, rdx]
    }

    #[test]
    fn blocked_passes_match_unblocked_reference() {
        let db_ref = |g: &ArrayD<f64>| g.sum_axis(Axis(3)).sum_axis(Axis(2)).sum_axis(Axis(1));
        // (C, O, k, s, p, N, H, W, rows per block); blocks that cut images in the middle.
        for &(c, o, k, s, p, n, h, wd, rb) in &[
            (3, 4, 3, 2, 1, 3, 7, 6, 2),
            (2, 5, 3, 1, 1, 2, 5, 5, 3),
            (3, 2, 1, 2, 0, 3, 5, 4, 4),
            (4, 3, 1, 1, 0, 3, 3, 5, 2),
            (2, 3, 3, 1, 0, 2, 4, 6, 1),
            (2, 2, 5, 3, 2, 2, 9, 7, 5),
            (3, 4, 3, 2, 1, 3, 7, 6, 1000),
            (2, 3, 5, 1, 2, 3, 1, 2, 2),
            (3, 2, 3, 1, 1, 2, 4, 7, 3),
            (2, 2, 5, 1, 2, 3, 6, 5, 4),
        ] {
            let cfg = Conv2d {
                in_channels: c,
                out_channels: o,
                kernel: k,
                stride: s,
                padding: p,
                bias: true,
            };
            let f = hashed;
            let x = ArrayD::from_shape_fn(IxDyn(&[c, n, h, wd]), f(1));
            let rx = ArrayD::from_shape_fn(IxDyn(&[c, n, h, wd]), f(2));
            let w = ArrayD::from_shape_fn(IxDyn(&[o, c, k, k]), f(3));
            let v = ArrayD::from_shape_fn(IxDyn(&[o, c, k, k]), f(4));
            let b = ArrayD::from_shape_fn(IxDyn(&[o]), f(5));
            let vb = ArrayD::from_shape_fn(IxDyn(&[o]), f(6));
            let (ho, wo) = cfg.out_hw(h, wd).unwrap();
            let gy = ArrayD::from_shape_fn(IxDyn(&[o, n, ho, wo]), f(7));
            let rgy = ArrayD::from_shape_fn(IxDyn(&[o, n, ho, wo]), f(8));
            let [y0, ry0, dw0, dx0, rdw0, rdx0] = unblocked(&cfg, &x, &rx, &w, &v, &gy, &rgy);
            let tag = format!("c{c} o{o} k{k} s{s} p{p} n{n} h{h} w{wd} rb{rb}");
            let (wv, vv) = (w.view(), v.view());
            let y = cfg.forward_rb(&x, &wv, None, rb);
            close(&y, &y0, &format!("y {tag}"));
            let (yb, cache) = cfg.forward(&x, &wv, Some(&b.view()));
            close(
                &(&yb - &b.to_shape((o, 1, 1, 1)).unwrap()),
                &y0,
                &format!("y+b {tag}"),
            );
            let (dx, dw, db) = cfg.backward_rb(&cache, &x, &wv, &gy, true, true, rb);
            close(&dx.unwrap(), &dx0, &format!("dx {tag}"));
            close(&dw, &dw0, &format!("dw {tag}"));
            close(
                &db.unwrap(),
                &gy.sum_axis(Axis(3)).sum_axis(Axis(2)).sum_axis(Axis(1)),
                &tag,
            );
            let (nodx, dw2, _) = cfg.backward_rb(&cache, &x, &wv, &gy, false, true, rb);
            assert!(nodx.is_none());
            close(&dw2, &dw0, &format!("dw (no dx) {tag}"));
            let ry = cfg.r_forward_rb(&cache, &x, &wv, &vv, None, Some(&rx), rb);
            close(&ry, &ry0, &format!("ry {tag}"));
            let ry_b = cfg.r_forward_rb(&cache, &x, &wv, &vv, Some(&vb.view()), None, rb);
            // R{x} = 0 with v_b: R{y} = V ⋆ x + v_b = ry0 − W ⋆ R{x} + v_b.
            let w_rx = cfg.forward_rb(&rx, &wv, None, rb);
            close(
                &(&ry_b - &vb.to_shape((o, 1, 1, 1)).unwrap() + &w_rx),
                &ry0,
                &tag,
            );
            // the fused HVP reverse sweep gives the same as backward + r_backward
            let hg = cfg.backward_hvp_rb(
                &cache,
                &x,
                Some(&rx),
                &wv,
                &vv,
                &gy,
                &rgy,
                true,
                true,
                true,
                rb,
            );
            close(hg.dx.as_ref().unwrap(), &dx0, &format!("fused dx {tag}"));
            close(hg.dw.as_ref().unwrap(), &dw0, &format!("fused dw {tag}"));
            close(hg.rdx.as_ref().unwrap(), &rdx0, &format!("fused rdx {tag}"));
            close(&hg.rdw, &rdw0, &format!("fused rdw {tag}"));
            close(
                hg.db.as_ref().unwrap(),
                &db_ref(&gy),
                &format!("fused db {tag}"),
            );
            close(
                hg.rdb.as_ref().unwrap(),
                &db_ref(&rgy),
                &format!("fused rdb {tag}"),
            );
            let h0 = cfg.backward_hvp_rb(
                &cache, &x, None, &wv, &vv, &gy, &rgy, false, true, false, rb,
            );
            let (_, rdw_norx, _) =
                cfg.r_backward_rb(&cache, &x, None, &wv, &vv, &gy, &rgy, false, rb);
            assert!(h0.dx.is_none() && h0.rdx.is_none() && h0.dw.is_none() && h0.db.is_none());
            close(&h0.rdw, &rdw_norx, &format!("fused rdw, R{{x}} = 0 {tag}"));
            // conv → affine → ReLU fused per block equals the three passes
            let cfg_nb = Conv2d {
                bias: false,
                ..cfg.clone()
            };
            let yf = cfg_nb.forward_fused(&x, &wv, |ch, row: &mut [f64]| {
                for t in row.iter_mut() {
                    *t = (*t * (1.0 + ch as f64) - 0.1).max(0.0);
                }
            });
            let mut y3 = y0.clone();
            for (ch, mut plane) in y3.axis_iter_mut(Axis(0)).enumerate() {
                plane.mapv_inplace(|t| (t * (1.0 + ch as f64) - 0.1).max(0.0));
            }
            close(&yf, &y3, &format!("fused forward {tag}"));
            let (rdx, rdw, rdb) =
                cfg.r_backward_rb(&cache, &x, Some(&rx), &wv, &vv, &gy, &rgy, true, rb);
            close(&rdx.unwrap(), &rdx0, &format!("rdx {tag}"));
            close(&rdw, &rdw0, &format!("rdw {tag}"));
            assert!(rdb.is_some());
            // Blocked equals auto-blocked.
            let (rdx_a, rdw_a, _) =
                cfg.r_backward(&cache, &x, Some(&rx), &wv, &vv, &gy, &rgy, true);
            close(&rdx_a.unwrap(), &rdx0, &format!("rdx auto {tag}"));
            close(&rdw_a, &rdw0, &format!("rdw auto {tag}"));
        }
    }

    /// The f32 passes that take the direct kernels (rows ≥ 8: forward, fused forward,
    /// R-forward, dW and R{dW} at any stride, dx and R{dx} as stride-1 transposed
    /// convolutions; the stride-2 dx stays on col2im) against the f64
    /// im2col reference, to f32 rounding (relative to each tensor's largest entry).
    #[test]
    fn f32_direct_passes_match_f64_reference() {
        let close32 = |a: &ArrayD<f32>, b: &ArrayD<f64>, what: &str| {
            assert_eq!(a.shape(), b.shape(), "{what}: shape");
            let scale = b.iter().fold(1e-30f64, |m, v| m.max(v.abs()));
            let err = a
                .iter()
                .zip(b.iter())
                .fold(0.0f64, |m, (x, y)| m.max((*x as f64 - y).abs()));
            assert!(
                err <= 2e-6 * scale,
                "{what}: max error {err} vs scale {scale}"
            );
        };
        // (C, O, k, s, p, N, H, W): ResNet-like 3×3 same-size, a 1×1, a 5×5 valid, odd
        // widths; stride-2 3×3 and 1×1 (the forward passes run on polyphase planes).
        for &(c, o, k, st, p, n, h, wd) in &[
            (16, 16, 3, 1, 1, 2, 8, 8),
            (5, 11, 3, 1, 1, 3, 9, 13),
            (6, 4, 1, 1, 0, 2, 5, 10),
            (3, 7, 5, 1, 0, 2, 12, 14),
            (4, 9, 3, 2, 1, 2, 16, 17),
            (6, 8, 1, 2, 0, 2, 16, 16),
        ] {
            let cfg = Conv2d {
                in_channels: c,
                out_channels: o,
                kernel: k,
                stride: st,
                padding: p,
                bias: false,
            };
            let f = hashed;
            let (ho, wo) = cfg.out_hw(h, wd).unwrap();
            let x = ArrayD::from_shape_fn(IxDyn(&[c, n, h, wd]), f(1));
            let rx = ArrayD::from_shape_fn(IxDyn(&[c, n, h, wd]), f(2));
            let w = ArrayD::from_shape_fn(IxDyn(&[o, c, k, k]), f(3));
            let v = ArrayD::from_shape_fn(IxDyn(&[o, c, k, k]), f(4));
            let gy = ArrayD::from_shape_fn(IxDyn(&[o, n, ho, wo]), f(7));
            let rgy = ArrayD::from_shape_fn(IxDyn(&[o, n, ho, wo]), f(8));
            // The reference sees exactly the f32 inputs.
            let r = |a: &ArrayD<f64>| a.mapv(|t| t as f32 as f64);
            let (x, rx, w, v, gy, rgy) = (r(&x), r(&rx), r(&w), r(&v), r(&gy), r(&rgy));
            let [y0, ry0, dw0, dx0, rdw0, rdx0] = unblocked(&cfg, &x, &rx, &w, &v, &gy, &rgy);
            let s = |a: &ArrayD<f64>| a.mapv(|t| t as f32);
            let (x, rx, w, v, gy, rgy) = (s(&x), s(&rx), s(&w), s(&v), s(&gy), s(&rgy));
            let tag = format!("c{c} o{o} k{k} s{st} p{p} n{n} h{h} w{wd}");
            let (wv, vv) = (w.view(), v.view());
            let (y, cache) = cfg.forward(&x, &wv, None);
            close32(&y, &y0, &format!("y {tag}"));
            let yf = cfg.forward_fused(&x, &wv, |_, _: &mut [f32]| {});
            assert_eq!(yf, y, "fused and plain forward differ: {tag}");
            let ry = cfg.r_forward(&cache, &x, &wv, &vv, None, Some(&rx));
            close32(&ry, &ry0, &format!("ry {tag}"));
            let (dx, dw, _) = cfg.backward(&cache, &x, &wv, &gy, true);
            close32(&dx.unwrap(), &dx0, &format!("dx {tag}"));
            close32(&dw, &dw0, &format!("dw {tag}"));
            let hg = cfg.backward_hvp(&cache, &x, Some(&rx), &wv, &vv, &gy, &rgy, true, true, true);
            close32(hg.dx.as_ref().unwrap(), &dx0, &format!("fused dx {tag}"));
            close32(hg.rdx.as_ref().unwrap(), &rdx0, &format!("fused rdx {tag}"));
            close32(&hg.rdw, &rdw0, &format!("fused rdw {tag}"));
        }
    }
}
