//! 2-D convolution (PyTorch `nn.Conv2d`, dilation = 1) by im2col + GEMM; groups > 1 in
//! `grouped.rs`.
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
//! Blocking (`im2col.rs`): `cols` is never formed whole. The output columns (n, oh, ow) are
//! cut into blocks of whole output rows (n, oh), 128–2048 columns each; every pass unfolds
//! one block of x (and of R{x}) into a small buffer that stays in cache, runs its GEMMs on
//! that block (`y`, `dx`-columns written in place, `dW` accumulated over blocks in a fixed
//! order, so results do not depend on threads) and, in the reverse passes, folds the block's
//! column gradient back into dx (col2im is linear, so folding block by block is exact).
//! The reverse and R passes therefore take the layer input x (and R{x}) again instead of a
//! cached `cols`, recomputing its blocks. A 1×1, stride-1, unpadded convolution needs no
//! unfolding at all: x `[C, N·H·W]` already is `cols`, and dx = W₂ᵀ · dy directly.
//!
//! In f32 on AVX2 machines, the forward, R-forward, dW and R{dW} passes of any stride
//! (output rows of 8 or more) and the stride-1 dx / R{dx} skip im2col altogether and run
//! the direct kernels of `kernels.rs` (1.5–2× faster on ResNet shapes), unless the graph's
//! [`EngineOptions`] say [`ConvAlgorithm::Im2col`](crate::engine::ConvAlgorithm).
//! Inference fuses an epilogue (eval-mode batch norm, ReLU) into the forward pass; where
//! the graph also gives it as numbers ([`ChannelAffine`](super::ChannelAffine)) and the
//! forward takes Winograd, the output transform applies it as it stores the outputs.

mod direct;
mod grouped;
mod im2col;
mod kernels;
pub use kernels::{fma_peak, kernel_rates, KernelRate};
#[cfg(test)]
mod tests;
mod winograd;

use std::borrow::Cow;

use ndarray::{ArrayD, ArrayView1, ArrayViewD, IxDyn};

use super::{ChannelMap, EngineOp, Fwd, Grads, Taped, TapedMap};
use crate::engine::error::ShapeError;
use crate::engine::gemm::Mat;
use crate::engine::options::{ConvAlgorithm, EngineOptions, GemmBackend};
use crate::engine::Scalar;
use kernels::Kernel;

/// Hyper-parameters of a square-kernel convolution.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Conv2d {
    pub in_channels: usize,
    pub out_channels: usize,
    pub kernel: usize,
    pub stride: usize,
    pub padding: usize,
    pub bias: bool,
    /// Channel groups (1: a dense convolution); weight `[O, C/groups, k, k]`.
    pub groups: usize,
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

/// One call of the passes: the geometry, the output rows per block, and the arithmetic
/// the options choose (GEMM backend, direct kernel).
struct Plan<'c> {
    conv: &'c Conv2d,
    g: Geom,
    /// Output rows (n, oh) per block.
    rb: usize,
    gemm: GemmBackend,
    /// The direct kernel, where the scalar type (f32), options and CPU allow one.
    direct: Option<Kernel>,
    /// Whether f32 3×3 stride-1 sums (forward, R-forward, dx, R{dx}; dW and R{dW} with 8
    /// or more input channels) take Winograd F(2×2, 3×3) (`winograd.rs`,
    /// `winograd_grad.rs`) instead of the direct kernel.
    winograd: bool,
    /// Whether those sums with padding 1 on sides that are multiples of 4 take F(4×4, 3×3)
    /// instead: forward, R-forward, dx and R{dx} up to 16 wide (`winograd_f4.rs`), dW and
    /// R{dW} up to 32 wide (`winograd_grad4.rs`).
    winograd4: bool,
    /// The forward's epilogue as numbers, where [`Plan::fusing`] was given one (f32): the
    /// Winograd output transform then applies it instead of the epilogue's pass.
    fused: Option<winograd::Epi<'c>>,
}

/// `[C, N, H, W]` as an array.
fn shape4(s: &[usize]) -> [usize; 4] {
    [s[0], s[1], s[2], s[3]]
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

    /// The plan of one call on an input of shape `[C, N, H, W]`.
    fn plan<T: Scalar>(&self, options: &EngineOptions, x: [usize; 4]) -> Plan<'_> {
        let [c, n, h, w] = x;
        let (ho, wo) = self.out_hw(h, w).expect("checked at build");
        let g = Geom {
            c,
            n,
            h,
            w,
            ho,
            wo,
            kk: c * self.kernel * self.kernel,
            cols: n * ho * wo,
        };
        let cols = (BLOCK_ELEMS / g.kk.max(1)).clamp(MIN_BLOCK_COLS, MAX_BLOCK_COLS);
        let direct = match options.conv {
            ConvAlgorithm::Auto | ConvAlgorithm::Winograd | ConvAlgorithm::Winograd4 => {
                direct::kernel_for::<T>(options.simd)
            }
            ConvAlgorithm::Im2col => None,
        };
        let winograd4 = options.conv == ConvAlgorithm::Winograd4 && direct.is_some();
        let winograd = (options.conv == ConvAlgorithm::Winograd || winograd4) && direct.is_some();
        Plan {
            conv: self,
            g,
            rb: (cols / g.wo.max(1)).max(1),
            gemm: options.gemm,
            direct,
            winograd,
            winograd4,
            fused: None,
        }
    }
}

impl EngineOp for Conv2d {
    const KIND: &'static str = "conv2d";
    type Cache<T: Scalar> = ();
    type RCache<T: Scalar> = ();

    fn infer_shape(&self, x: &[&[usize]]) -> Result<Vec<usize>, ShapeError> {
        let x = x[0];
        let g = self.groups;
        if g == 0 || !self.in_channels.is_multiple_of(g) || !self.out_channels.is_multiple_of(g) {
            return Err(ShapeError::Groups {
                groups: g,
                in_channels: self.in_channels,
                out_channels: self.out_channels,
            });
        }
        if x.len() != 4 || x[0] != self.in_channels {
            return Err(ShapeError::Image {
                channels: self.in_channels,
            });
        }
        let (ho, wo) = self.out_hw(x[2], x[3]).ok_or(ShapeError::Kernel)?;
        Ok(vec![self.out_channels, x[1], ho, wo])
    }

    fn forward<T: Scalar>(&self, a: &Fwd<T>) -> (ArrayD<T>, ()) {
        if self.groups != 1 {
            let y = self.grouped_forward(a.options, a.x[0], &a.p[0], a.p.get(1), None);
            return (y, ());
        }
        let plan = self.plan::<T>(a.options, shape4(a.x[0].shape()));
        (plan.forward(a.x[0], &a.p[0], a.p.get(1), None), ())
    }

    /// Without bias only (the epilogue follows the convolution's sum).
    fn forward_fused<T: Scalar>(&self, a: &Fwd<T>, epilogue: &ChannelMap<T>) -> Option<ArrayD<T>> {
        if self.groups != 1 {
            return (!self.bias)
                .then(|| self.grouped_forward(a.options, a.x[0], &a.p[0], None, Some(epilogue)));
        }
        let plan = self.plan::<T>(a.options, shape4(a.x[0].shape()));
        let plan = plan.fusing(a.affine);
        (!self.bias).then(|| plan.forward(a.x[0], &a.p[0], None, Some(epilogue)))
    }

    /// Without bias only, as [`EngineOp::forward_fused`].
    fn forward_lean<T: Scalar>(
        &self,
        a: &Fwd<T>,
        epilogue: &ChannelMap<T>,
    ) -> Option<(ArrayD<T>, ())> {
        self.forward_fused(a, epilogue).map(|y| (y, ()))
    }

    /// Without bias and groups only.
    fn forward_taped<T: Scalar>(
        &self,
        a: &Fwd<T>,
        map: &TapedMap<T>,
    ) -> Option<(ArrayD<T>, ArrayD<T>, ())> {
        if self.groups != 1 || self.bias {
            return None;
        }
        let plan = self.plan::<T>(a.options, shape4(a.x[0].shape()));
        let len = self.out_channels * plan.g.cols;
        let mut z: Vec<T> = Vec::with_capacity(len);
        let spare = &mut z.spare_capacity_mut()[..len];
        let mut written = 0;
        let y = plan.forward_with(a.x[0], &a.p[0], None, |ch, off, v| {
            map(ch, v, &mut spare[off..][..v.len()]);
            written += v.len();
        });
        // the blocks tile the output: each element was passed to `map` once
        assert_eq!(written, len, "conv: epilogue coverage");
        // SAFETY: `map` writes every element of each block it gets (its contract), and
        // the blocks cover all `len` elements (counted above).
        unsafe { z.set_len(len) };
        let z = ArrayD::from_shape_vec(y.raw_dim(), z).expect("size");
        Some((y, z, ()))
    }

    fn r_backward_reads_gy(&self) -> bool {
        true
    }

    fn backward<T: Scalar>(&self, a: &Taped<T>, c: &(), gy: ArrayD<T>) -> Grads<T> {
        self.backward_ref(a, c, &gy).expect("conv reads dy only")
    }

    fn backward_ref<T: Scalar>(&self, a: &Taped<T>, c: &(), gy: &ArrayD<T>) -> Option<Grads<T>> {
        self.backward_adding(a, c, gy, &mut None)
    }

    /// Takes `acc` where dx runs the direct kernels or Winograd (f32; stride 1, and 3×3
    /// stride 2 by phases): the sums are added as each image's outputs are stored.
    fn backward_adding<T: Scalar>(
        &self,
        a: &Taped<T>,
        _c: &(),
        gy: &ArrayD<T>,
        acc: &mut Option<ArrayD<T>>,
    ) -> Option<Grads<T>> {
        let (x, w, need_dx) = (a.x[0], &a.p[0], a.need_dx(0));
        let (dx, dw, db) = if self.groups != 1 {
            self.grouped_backward(a.options, x, w, gy, need_dx, a.want_dp)
        } else {
            let plan = self.plan::<T>(a.options, shape4(x.shape()));
            plan.backward(x, w, gy, (need_dx, a.want_dp), acc)
        };
        Some(Grads {
            dx: vec![dx],
            dp: vec![dw, db],
        })
    }

    fn r_forward<T: Scalar>(&self, a: &Taped<T>, _c: &()) -> (Option<ArrayD<T>>, ()) {
        if self.groups != 1 {
            let w = (&a.p[0], &a.v[0], a.v.get(1));
            return (
                Some(self.grouped_r_forward(a.options, a.x[0], w, a.rx(0))),
                (),
            );
        }
        let plan = self.plan::<T>(a.options, shape4(a.x[0].shape()));
        let ry = plan.r_forward(a.x[0], &a.p[0], &a.v[0], a.v.get(1), a.rx(0));
        (Some(ry), ())
    }

    fn r_backward<T: Scalar>(
        &self,
        a: &Taped<T>,
        _c: &(),
        _rc: &(),
        gy: &ArrayD<T>,
        rgy: ArrayD<T>,
    ) -> Grads<T> {
        let ops = (&a.p[0], &a.v[0], gy, &rgy);
        let (rdx, rdw, rdb) = if self.groups != 1 {
            self.grouped_r_backward(a.options, a.x[0], a.rx(0), ops, a.need_dx(0))
        } else {
            let plan = self.plan::<T>(a.options, shape4(a.x[0].shape()));
            plan.r_backward(a.x[0], a.rx(0), ops, a.need_dx(0))
        };
        Grads {
            dx: vec![rdx],
            dp: vec![Some(rdw), rdb],
        }
    }
}

/// An array's elements in standard order: borrowed when it already is contiguous in that
/// order, copied once otherwise.
fn dense<'a, T: Scalar, S: ndarray::Data<Elem = T>>(
    a: &'a ndarray::ArrayBase<S, IxDyn>,
) -> Cow<'a, [T]> {
    match a.as_slice() {
        Some(s) => Cow::Borrowed(s),
        None => Cow::Owned(a.iter().copied().collect()),
    }
}

impl Plan<'_> {
    /// The layer input `[C, N, H, W]` as a slice, checked against the plan.
    fn input<'a, T: Scalar>(&self, x: &'a ArrayD<T>) -> Cow<'a, [T]> {
        let g = &self.g;
        assert_eq!(x.shape(), [g.c, g.n, g.h, g.w], "conv: input shape");
        dense(x)
    }

    /// A weight tensor `[O, C, k, k]` (W or V) as a slice, row-major `[O, C·k·k]`.
    fn weights<'a, T: Scalar>(&self, w: &'a ArrayViewD<'a, T>) -> Cow<'a, [T]> {
        assert_eq!(
            w.len(),
            self.conv.out_channels * self.g.kk,
            "conv: weight size"
        );
        dense(w)
    }

    /// An output-shaped tensor `[O, N, Ho, Wo]` (dy, R{dy}) as a slice `[O, N·Ho·Wo]`.
    fn output<'a, T: Scalar>(&self, y: &'a ArrayD<T>) -> Cow<'a, [T]> {
        assert_eq!(
            y.len(),
            self.conv.out_channels * self.g.cols,
            "conv: gradient shape"
        );
        dense(y)
    }

    /// y = W ⋆ x + b, with `epilogue(channel, offset, values)` applied to each block of each output
    /// channel right after its GEMM, while the block is still in cache (the graph fuses
    /// eval-mode batch norm and ReLU this way; only without bias).
    fn forward<T: Scalar>(
        &self,
        x: &ArrayD<T>,
        w: &ArrayViewD<T>,
        b: Option<&ArrayViewD<T>>,
        epilogue: Option<&ChannelMap<T>>,
    ) -> ArrayD<T> {
        self.forward_with(x, w, b, |ch, off, y| {
            if let Some(epilogue) = epilogue {
                epilogue(ch, off, y);
            }
        })
    }

    /// [`Plan::forward`] with `after(channel, offset, values)` on each block of each output
    /// channel (at `offset` in `[O, N·Ho·Wo]`) right after it is computed.
    fn forward_with<T: Scalar>(
        &self,
        x: &ArrayD<T>,
        w: &ArrayViewD<T>,
        b: Option<&ArrayViewD<T>>,
        mut after: impl FnMut(usize, usize, &mut [T]),
    ) -> ArrayD<T> {
        let (g, o) = (&self.g, self.conv.out_channels);
        let (xs, ws) = (self.input(x), self.weights(w));
        let direct = self.forward_direct(&[(&ws[..], &xs[..])], &mut after);
        if let Some(y) = direct {
            return self.finish_output(y, b);
        }
        let w2 = Mat::new(&ws[..], g.kk);
        let mut y = vec![T::zero(); o * g.cols];
        let mut buf = self.block_buf(1);
        self.for_blocks(|r0, r1| {
            let (c0, nb) = self.cols_of(r0, r1);
            let bx = self.lower(&xs, r0, r1, &mut buf);
            let (one, zero) = (T::one(), T::zero());
            let yb = &mut y[c0..];
            self.gemm
                .gemm_slices(o, nb, g.kk, one, w2, bx, zero, yb, g.cols);
            for ch in 0..o {
                let off = ch * g.cols + c0;
                after(ch, off, &mut y[off..][..nb]);
            }
        });
        self.finish_output(y, b)
    }

    /// dx (when `need_dx`), dW and db (when `want_dw`). `x` is the layer input. Where dx
    /// takes the direct kernels or Winograd (see [`Plan::dx_direct`]) and `acc`
    /// (laid out as x) is given, dx is `acc + dx`, added as the outputs are stored (the
    /// bits of adding afterwards), and `acc` is taken.
    #[allow(clippy::type_complexity)]
    fn backward<T: Scalar>(
        &self,
        x: &ArrayD<T>,
        w: &ArrayViewD<T>,
        gy: &ArrayD<T>,
        (need_dx, want_dw): (bool, bool),
        acc: &mut Option<ArrayD<T>>,
    ) -> (Option<ArrayD<T>>, Option<ArrayD<T>>, Option<ArrayD<T>>) {
        let (g, o) = (&self.g, self.conv.out_channels);
        let (xs, ws, gys) = (self.input(x), self.weights(w), self.output(gy));
        let mut dw = vec![T::zero(); if want_dw { o * g.kk } else { 0 }];
        // without dW, the sweep below only unfolds what dx needs
        let direct_dw = !want_dw || self.dw_direct(&[(&gys[..], &xs[..])], &mut dw);
        // the sum to add into dx, where it covers dx in standard layout
        let add = acc
            .as_ref()
            .filter(|a| a.shape() == x.shape())
            .and_then(|a| a.as_slice());
        let direct_dx = need_dx
            .then(|| self.dx_direct(&[(&ws[..], &gys[..])], add))
            .flatten();
        if add.is_some() && direct_dx.is_some() {
            // taken: dx is acc + dx
            *acc = None;
        }
        let need_dx = need_dx && direct_dx.is_none();
        let mut dx = need_dx.then(|| vec![T::zero(); g.c * g.n * g.h * g.w]);
        let mut buf = self.block_buf(usize::from(!direct_dw));
        let mut dbuf = self.block_buf(usize::from(need_dx));
        let w2 = Mat::new(&ws[..], g.kk);
        self.for_blocks(|r0, r1| {
            let (c0, nb) = self.cols_of(r0, r1);
            let gyb = Mat::new(&gys[c0..], g.cols);
            if !direct_dw {
                let bx = self.lower(&xs, r0, r1, &mut buf);
                let one = T::one();
                self.gemm
                    .gemm_slices(o, g.kk, nb, one, gyb, bx.t(), one, &mut dw, g.kk);
            }
            if let Some(dx) = dx.as_mut() {
                self.col_grad(r0, r1, o, (w2, gyb), &mut dbuf, dx);
            }
        });
        let dx = direct_dx.or(dx).map(|v| self.input_shaped(v));
        let db = (want_dw && self.conv.bias).then(|| row_sums(&gys, o));
        (dx, want_dw.then(|| self.weight_shaped(dw)), db)
    }

    /// R{y} = W ⋆ R{x} + V ⋆ x + v_b (`rx` = None: R{x} = 0).
    fn r_forward<T: Scalar>(
        &self,
        x: &ArrayD<T>,
        w: &ArrayViewD<T>,
        vw: &ArrayViewD<T>,
        vb: Option<&ArrayViewD<T>>,
        rx: Option<&ArrayD<T>>,
    ) -> ArrayD<T> {
        let (g, o) = (&self.g, self.conv.out_channels);
        let xs = self.input(x);
        let rxs = rx.map(|r| self.input(r));
        let (ws, vs) = (self.weights(w), self.weights(vw));
        let terms: Vec<(&[T], &[T])> = std::iter::once((&vs[..], &xs[..]))
            .chain(rxs.as_deref().map(|r| (&ws[..], r)))
            .collect();
        if let Some(ry) = self.forward_direct(&terms, |_, _, _| {}) {
            return self.finish_output(ry, vb);
        }
        let (w2, v2) = (Mat::new(&ws[..], g.kk), Mat::new(&vs[..], g.kk));
        let (zero, one) = (T::zero(), T::one());
        let mut ry = vec![T::zero(); o * g.cols];
        if let (Some(rxs), false) = (rxs.as_deref(), self.pointwise()) {
            // One GEMM per block: [V₂ W₂] · [cols; R{cols}].
            let vw2: Vec<T> = (0..o)
                .flat_map(|i| {
                    let row = i * g.kk..(i + 1) * g.kk;
                    v2.data[row.clone()].iter().chain(&w2.data[row]).copied()
                })
                .collect();
            let mut buf2 = self.block_buf(2);
            self.for_blocks(|r0, r1| {
                let (c0, nb) = self.cols_of(r0, r1);
                let (bx, brx) = buf2[..2 * g.kk * nb].split_at_mut(g.kk * nb);
                self.lower(&xs, r0, r1, bx);
                self.lower(rxs, r0, r1, brx);
                let b = Mat::new(&buf2[..2 * g.kk * nb], nb);
                let a = Mat::new(&vw2[..], 2 * g.kk);
                let ryb = &mut ry[c0..];
                self.gemm
                    .gemm_slices(o, nb, 2 * g.kk, one, a, b, zero, ryb, g.cols);
            });
            return self.finish_output(ry, vb);
        }
        let mut buf = self.block_buf(1);
        let mut rbuf = self.block_buf(usize::from(rxs.is_some()));
        self.for_blocks(|r0, r1| {
            let (c0, nb) = self.cols_of(r0, r1);
            let bx = self.lower(&xs, r0, r1, &mut buf);
            let ryb = &mut ry[c0..];
            self.gemm
                .gemm_slices(o, nb, g.kk, one, v2, bx, zero, ryb, g.cols);
            if let Some(rxs) = rxs.as_deref() {
                let brx = self.lower(rxs, r0, r1, &mut rbuf);
                let ryb = &mut ry[c0..];
                self.gemm
                    .gemm_slices(o, nb, g.kk, one, w2, brx, one, ryb, g.cols);
            }
        });
        self.finish_output(ry, vb)
    }

    /// R{dx} (when `need_dx`), R{dW}, R{db} in one sweep over the blocks, each block of x
    /// and R{x} unfolded once. `x`, `rx` are the layer input and its R-value (None = 0);
    /// `(w, vw, gy, rgy)` are W, V, dy and R{dy}.
    #[allow(clippy::type_complexity)]
    fn r_backward<T: Scalar>(
        &self,
        x: &ArrayD<T>,
        rx: Option<&ArrayD<T>>,
        (w, vw, gy, rgy): (&ArrayViewD<T>, &ArrayViewD<T>, &ArrayD<T>, &ArrayD<T>),
        need_dx: bool,
    ) -> (Option<ArrayD<T>>, ArrayD<T>, Option<ArrayD<T>>) {
        let (g, o) = (&self.g, self.conv.out_channels);
        let xs = self.input(x);
        let rxs = rx.map(|r| self.input(r));
        let (ws, vs) = (self.weights(w), self.weights(vw));
        let (gys, rgys) = (self.output(gy), self.output(rgy));
        let mut rdw = vec![T::zero(); o * g.kk];
        // R{dW} = R{dy} ⋆ x + dy ⋆ R{x} by the direct kernel where it applies.
        let rdw_terms: Vec<(&[T], &[T])> = std::iter::once((&rgys[..], &xs[..]))
            .chain(rxs.as_deref().map(|r| (&gys[..], r)))
            .collect();
        let direct_dw = self.dw_direct(&rdw_terms, &mut rdw);
        // R{dx} = W'⋆R{dy} + V'⋆dy by the direct kernel where it applies.
        let direct_dx = need_dx
            .then(|| self.dx_direct(&[(&ws[..], &rgys[..]), (&vs[..], &gys[..])], None))
            .flatten();
        let need_dx = need_dx && direct_dx.is_none();
        let mut rdx = need_dx.then(|| vec![T::zero(); g.c * g.n * g.h * g.w]);
        let mut buf = self.block_buf(usize::from(!direct_dw));
        let mut rbuf = self.block_buf(usize::from(rxs.is_some() && !direct_dw));
        let mut dbuf = self.block_buf(usize::from(need_dx));
        // R{dx} = Wᵀ·R{dy} + Vᵀ·dy as one GEMM with K = 2·O: [W; V]ᵀ · [R{dy}; dy]
        let wv2: Vec<T> = if need_dx {
            ws[..o * g.kk]
                .iter()
                .chain(&vs[..o * g.kk])
                .copied()
                .collect()
        } else {
            Vec::new()
        };
        let mut stacked = if need_dx {
            vec![T::zero(); 2 * o * self.rb.min(g.n * g.ho) * g.wo]
        } else {
            Vec::new()
        };
        let one = T::one();
        self.for_blocks(|r0, r1| {
            let (c0, nb) = self.cols_of(r0, r1);
            let gyb = Mat::new(&gys[c0..], g.cols);
            let rgyb = Mat::new(&rgys[c0..], g.cols);
            if !direct_dw {
                let bx = self.lower(&xs, r0, r1, &mut buf);
                let rdw = &mut rdw[..];
                self.gemm
                    .gemm_slices(o, g.kk, nb, one, rgyb, bx.t(), one, rdw, g.kk);
                if let Some(rxs) = rxs.as_deref() {
                    let brx = self.lower(rxs, r0, r1, &mut rbuf);
                    self.gemm
                        .gemm_slices(o, g.kk, nb, one, gyb, brx.t(), one, rdw, g.kk);
                }
            }
            if let Some(rdx) = rdx.as_mut() {
                let st = &mut stacked[..2 * o * nb];
                for ch in 0..o {
                    let src = ch * g.cols + c0..ch * g.cols + c0 + nb;
                    st[ch * nb..(ch + 1) * nb].copy_from_slice(&rgys[src.clone()]);
                    st[(o + ch) * nb..(o + ch + 1) * nb].copy_from_slice(&gys[src]);
                }
                let a = Mat::new(&wv2[..], g.kk);
                let b = Mat::new(&stacked[..2 * o * nb], nb);
                self.col_grad(r0, r1, 2 * o, (a, b), &mut dbuf, rdx);
            }
        });
        let rdx = direct_dx.or(rdx).map(|v| self.input_shaped(v));
        let rdb = self.conv.bias.then(|| row_sums(&rgys, o));
        (rdx, self.weight_shaped(rdw), rdb)
    }

    /// `[O, N·Ho·Wo]` + bias → `[O, N, Ho, Wo]`.
    fn finish_output<T: Scalar>(&self, mut y: Vec<T>, b: Option<&ArrayViewD<T>>) -> ArrayD<T> {
        let g = &self.g;
        if let Some(b) = b {
            for (row, &bi) in y.chunks_exact_mut(g.cols.max(1)).zip(b.iter()) {
                row.iter_mut().for_each(|v| *v += bi);
            }
        }
        let shape = [self.conv.out_channels, g.n, g.ho, g.wo];
        ArrayD::from_shape_vec(IxDyn(&shape), y).expect("size")
    }

    /// `[C·N·H·W]` → `[C, N, H, W]`.
    fn input_shaped<T: Scalar>(&self, v: Vec<T>) -> ArrayD<T> {
        let g = &self.g;
        ArrayD::from_shape_vec(IxDyn(&[g.c, g.n, g.h, g.w]), v).expect("size")
    }

    /// `[O·C·k·k]` → `[O, C, k, k]`.
    fn weight_shaped<T: Scalar>(&self, w2: Vec<T>) -> ArrayD<T> {
        let c = self.conv;
        let shape = [c.out_channels, c.in_channels, c.kernel, c.kernel];
        ArrayD::from_shape_vec(IxDyn(&shape), w2).expect("size")
    }
}

/// Σ over each of the `o` rows of `a` (bias gradients).
fn row_sums<T: Scalar>(a: &[T], o: usize) -> ArrayD<T> {
    let m = a.len() / o.max(1);
    let sums: Vec<T> = (0..o)
        .map(|i| ArrayView1::from(&a[i * m..(i + 1) * m]).sum())
        .collect();
    ndarray::Array1::from(sums).into_dyn()
}
