//! Batch normalization (Ioffe & Szegedy 2015, arXiv:1502.03167): PyTorch `BatchNorm2d` on
//! `[C, N, H, W]` and `BatchNorm1d` on `[N, C]`, both handled as a per-channel view
//! `[C, M]` (M = N·H·W or N).
//!
//! **Eval mode (the default)** uses the running statistics, so the layer is affine in x and
//! every sample is independent; surfaces and Hessians are taken in eval mode, as
//! loss-landscape and PyHessian do, because batch statistics would make the loss of a
//! sample depend on which other samples share its mini-batch.
//!
//! ```text
//! eval:   s = 1/√(rv + ε),  x̂ = (x − rm)·s,  y = γ x̂ + β
//!         dx = dy γ s,  dγ = Σ dy x̂,  dβ = Σ dy
//!         R{y} = γ s R{x} + v_γ x̂ + v_β
//!         R{dx} = s (R{dy} γ + dy v_γ),  R{dγ} = Σ (R{dy} x̂ + dy s R{x}),  R{dβ} = Σ R{dy}
//! train:  μ = mean x,  σ² = mean (x − μ)²  (biased, as PyTorch normalizes),  s = 1/√(σ² + ε)
//!         x̂ = (x − μ) s,  y = γ x̂ + β;  with ⟨·⟩ the mean over M:
//!         dx̂ = dy γ,  dx = s (dx̂ − ⟨dx̂⟩ − x̂ ⟨dx̂ x̂⟩)
//!         R{x̂} = s (R{x} − ⟨R{x}⟩ − x̂ ⟨x̂ R{x}⟩),  R{s} = −s² ⟨x̂ R{x}⟩
//!         R{y} = γ R{x̂} + v_γ x̂ + v_β
//!         A = dx̂ − ⟨dx̂⟩ − x̂ ⟨dx̂ x̂⟩,  R{dx̂} = R{dy} γ + dy v_γ
//!         R{dx} = R{s} A + s (R{dx̂} − ⟨R{dx̂}⟩ − R{x̂} ⟨dx̂ x̂⟩ − x̂ ⟨R{dx̂} x̂ + dx̂ R{x̂}⟩)
//!         R{dγ} = Σ (R{dy} x̂ + dy R{x̂}),  R{dβ} = Σ R{dy}
//! ```
//! Running statistics are buffers: they receive no gradient, and the R-operator ignores
//! direction components on them (Hessians are over trainable parameters). R-operator:
//! Pearlmutter (1994).
//!
//! Inference in eval mode runs in place, or as the per-channel epilogue of the convolution
//! before it (with a following ReLU), with the same arithmetic. For the reverse and
//! R-passes eval mode keeps no x̂: each channel's row is formed again from the layer's
//! input, which is on the tape anyway. Channel sums (dγ, dβ, R{dγ}) run in 8 interleaved
//! lanes in a fixed order (`super::lanes`). Each pass runs inside `super::vmath::wide!`
//! (AVX2 vectors, same bits); its helpers are `#[inline(always)]` so that their loops are
//! compiled into that AVX2 copy.

use std::borrow::Cow;
use std::mem::MaybeUninit;

use ndarray::{Array1, ArrayD, ArrayView2, ArrayViewD};

use super::vmath::wide;
use super::{lanes, Activation, EngineOp, Epilogue, Fwd, Grads, Taped, TapedEpilogue};
use crate::engine::error::ShapeError;
use crate::engine::Scalar;

/// Which statistics normalize the batch.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Mode {
    /// Running statistics (PyTorch `model.eval()`); samples are independent.
    #[default]
    Eval,
    /// Statistics of the mini-batch (PyTorch `model.train()`). The passes never write the
    /// running statistics; the trainer updates them from [`BatchStats`] (see
    /// `Graph::grad_batch_stats`).
    Train,
}

/// Batch statistics of one batch-norm node in a forward pass.
#[derive(Clone, Debug)]
pub struct BatchStats<T> {
    /// Layout index of the node's running mean.
    pub running_mean: usize,
    /// Layout index of the node's running variance.
    pub running_var: usize,
    /// Per-channel mean over the batch (and the spatial positions).
    pub mean: Array1<T>,
    /// Per-channel biased variance (what normalizes the batch).
    pub var: Array1<T>,
    /// Values per channel behind the statistics (N·H·W).
    pub count: usize,
}

#[derive(Clone, Debug, PartialEq)]
pub struct BatchNorm {
    pub channels: usize,
    pub eps: f64,
}

/// The largest |β/γ| of a layer whose tape may be lean (see [`BatchNorm::lean_applies`]).
const LEAN_RATIO: f64 = 16.0;

pub struct BnCache<T> {
    /// Normalized input x̂, same layout as x: kept in train mode only. Eval mode forms each
    /// row (x − μ)·s from the layer's input when a reverse or R-pass needs it (the same
    /// expression, so the same bits), which saves an activation-sized array per layer on
    /// the tape and its write and read (see `xhat_row`).
    pub xhat: Option<ArrayD<T>>,
    /// Values per channel (N·H·W, or N).
    pub count: usize,
    /// Per-channel 1/√(var + ε) (running or batch variance).
    pub s: Array1<T>,
    pub mode: Mode,
    /// Per-channel batch mean (train mode; the running mean in eval mode).
    pub batch_mean: Array1<T>,
    /// Per-channel biased batch variance (train mode; the running variance in eval mode).
    pub batch_var: Array1<T>,
    /// Eval mode on a lean tape (see [`crate::engine::TapeLayout::Lean`]): the layer's
    /// input was never kept, and x̂ = (y − β)·(1/γ) is formed from its output y (or the
    /// ReLU's, exact wherever the ReLU passes; elsewhere its mask zeroes what x̂ meets)
    /// with these per-channel (β, 1/γ). `None`: x̂ = (x − μ)·s from the input.
    pub from_output: Option<(Array1<T>, Array1<T>)>,
}

pub struct BnRCache<T> {
    /// R{x̂}, same layout as x (train mode with R{x} ≠ 0; eval mode recomputes s·R{x}).
    pub rxhat: Option<ArrayD<T>>,
    /// Per-channel R{s} (zero in eval mode).
    pub rs: Array1<T>,
}

impl<T: Scalar> BnCache<T> {
    /// x ↦ x̂ = (x − μ)·s for channel `ch`: the forward pass's expression, with which eval
    /// mode forms x̂ again wherever it is needed (so the bits are those of a stored x̂); on
    /// a lean tape y ↦ (y − β)·(1/γ) from the output instead (see `from_output`).
    fn to_xhat(&self, ch: usize) -> impl Fn(T) -> T {
        let (mu, s) = self.xhat_coeffs(ch);
        move |v| (v - mu) * s
    }

    /// (μ, s) of [`BnCache::to_xhat`]'s x̂ = (v − μ)·s for channel `ch`.
    fn xhat_coeffs(&self, ch: usize) -> (T, T) {
        match &self.from_output {
            Some((beta, inv_gamma)) => (beta[ch], inv_gamma[ch]),
            None => (self.batch_mean[ch], self.s[ch]),
        }
    }

    /// What x̂ is formed from ([`BnCache::to_xhat`]): the layer's input, or on a lean tape
    /// its output (or its ReLU's), less `Taped::y_less` where given (a residual block's
    /// end keeps only relu(y + r): y = z − r).
    fn xhat_source<'a>(&self, a: &Taped<'a, T>) -> Source<'a, T> {
        match self.from_output {
            Some(_) => (a.y, a.y_less),
            None => (a.x[0], None),
        }
    }
}

#[path = "batchnorm_rows.rs"]
mod rows;
use rows::{cview, cview_mut, extend_map2, from_rows, row_slice, shaped, Rows, Source};

/// Channel `ch`'s row of x̂: the stored one (`xh`, train mode) or (x − μ)·s from the layer
/// input's view `xc` (eval mode), with the forward pass's arithmetic.
#[inline(always)]
fn xhat_row<'a, T: Scalar>(
    c: &BnCache<T>,
    xc: &'a Rows<'a, T>,
    xh: Option<&'a ArrayView2<'a, T>>,
    ch: usize,
) -> Cow<'a, [T]> {
    match xh {
        Some(xh) => row_slice(xh, ch),
        None => {
            let h = c.to_xhat(ch);
            Cow::Owned(xc.row(ch).iter().map(|&v| h(v)).collect())
        }
    }
}

/// R{dγ} = Σ R{dy} x̂ + dy R{x̂} over one channel: `first` = (R{dy}, x̂'s source row, map
/// to x̂), `gr` = dy, and R{x̂} stored, or s·R{x} from `rx` (eval), or zero where neither
/// is given.
#[inline(always)]
fn r_dgamma<T: Scalar>(
    first: (&[T], &[T], impl Fn(T) -> T),
    gr: &[T],
    stored: Option<&[T]>,
    rx: Option<&[T]>,
    s: T,
) -> T {
    match (stored, rx) {
        (Some(st), _) => lanes::dot2(first, (gr, st, |r| r)),
        (None, Some(rr)) => lanes::dot2(first, (gr, rr, |r| s * r)),
        (None, None) => lanes::dot2(first, (gr, gr, |_| s * T::zero())),
    }
}

/// Eval mode's map of channel `c` as numbers `[μ, s, γ, β]` (`y ↦ γ·((y − μ)·s) + β`,
/// `s` = [`inv_std`]), from the parameters `[γ, β, running mean, running variance]`.
#[inline(always)]
fn eval_numbers<T: Scalar>(p: &[ArrayViewD<T>], eps: T, c: usize) -> [T; 4] {
    [p[2][c], inv_std(p[3][c], eps), p[0][c], p[1][c]]
}

/// s = 1/√(var + ε), the one expression every pass forms it with (so the same bits).
#[inline(always)]
fn inv_std<T: Scalar>(var: T, eps: T) -> T {
    T::one() / (var + eps).sqrt()
}

#[inline(always)]
fn mean<T: Scalar>(a: impl IntoIterator<Item = T>, m: usize) -> T {
    a.into_iter().fold(T::zero(), |acc, v| acc + v) / T::from_usize(m).unwrap()
}

impl BatchNorm {
    /// `p` = [γ, β, running_mean, running_var].
    #[inline(always)]
    fn normalize<T: Scalar>(
        &self,
        x: &ArrayD<T>,
        p: &[ArrayViewD<T>],
        mode: Mode,
    ) -> (ArrayD<T>, BnCache<T>) {
        let (gamma, beta, rm, rv) = (&p[0], &p[1], &p[2], &p[3]);
        let eps = T::from_f(self.eps);
        let xc = cview(x);
        let m = xc.ncols();
        let mut s = Array1::zeros(self.channels);
        let mut batch_mean = Array1::zeros(self.channels);
        let mut batch_var = Array1::zeros(self.channels);
        // x̂ (train mode) and y in one pass over each channel, while its row is in cache
        let mut xhat = Vec::with_capacity(if mode == Mode::Train { x.len() } else { 0 });
        let y = from_rows(
            x,
            self.channels,
            #[inline(always)]
            |c, yout| {
                let row = row_slice(&xc, c);
                let (mu, var) = match mode {
                    Mode::Eval => (rm[c], rv[c]),
                    Mode::Train => {
                        let mu = mean(row.iter().copied(), m);
                        let var = mean(row.iter().map(|&v| (v - mu) * (v - mu)), m);
                        (mu, var)
                    }
                };
                let sc = inv_std(var, eps);
                s[c] = sc;
                batch_mean[c] = mu;
                batch_var[c] = var;
                let (g, b) = (gamma[c], beta[c]);
                match mode {
                    Mode::Eval => yout.extend(row.iter().map(|&v| g * ((v - mu) * sc) + b)),
                    Mode::Train => {
                        let start = xhat.len();
                        xhat.extend(row.iter().map(|&v| (v - mu) * sc));
                        yout.extend(xhat[start..].iter().map(|&h| g * h + b));
                    }
                }
            },
        );
        let xhat = (mode == Mode::Train).then(|| shaped(x, self.channels, xhat));
        (
            y,
            BnCache {
                xhat,
                count: m,
                s,
                mode,
                batch_mean,
                batch_var,
                from_output: None,
            },
        )
    }

    /// Eval-mode forward in place, for inference (nothing is kept for the reverse passes);
    /// the same arithmetic as [`BatchNorm::normalize`], so the same bits.
    #[inline(always)]
    fn forward_eval_inplace<T: Scalar>(&self, x: &mut ArrayD<T>, p: &[ArrayViewD<T>]) {
        let eps = T::from_f(self.eps);
        let mut v = cview_mut(x);
        for c in 0..self.channels {
            let [mu, sc, g, b] = eval_numbers(p, eps, c);
            v.row_mut(c).mapv_inplace(|t| g * ((t - mu) * sc) + b);
        }
    }

    /// The per-channel map of eval-mode batch norm (optionally followed by ReLU) as a
    /// closure over `(channel, offset, values)`, with [`BatchNorm::normalize`]'s arithmetic
    /// (same bits).
    fn eval_epilogue<'a, T: Scalar>(
        &self,
        p: &'a [ArrayViewD<'a, T>],
        relu: bool,
    ) -> impl Fn(usize, usize, &mut [T]) + 'a {
        let eps = T::from_f(self.eps);
        move |c: usize, _: usize, row: &mut [T]| {
            let [mu, sc, g, b] = eval_numbers(p, eps, c);
            wide!({
                if relu {
                    for t in row.iter_mut() {
                        let v = g * ((*t - mu) * sc) + b;
                        *t = super::relu::relu(v);
                    }
                } else {
                    for t in row.iter_mut() {
                        *t = g * ((*t - mu) * sc) + b;
                    }
                }
            },)
        }
    }

    /// Eval mode, for the tape: y (then ReLU where `relu`) from each block of the layer's
    /// input while in cache, into a second array, with [`BatchNorm::normalize`]'s
    /// arithmetic (same bits).
    fn taped_map<'a, T: Scalar>(
        &self,
        p: &'a [ArrayViewD<'a, T>],
        relu: bool,
    ) -> impl Fn(usize, &[T], &mut [MaybeUninit<T>]) + 'a {
        let eps = T::from_f(self.eps);
        move |c: usize, src: &[T], dst: &mut [MaybeUninit<T>]| {
            let [mu, sc, g, b] = eval_numbers(p, eps, c);
            wide!({
                let pairs = dst.iter_mut().zip(src);
                if relu {
                    for (d, &t) in pairs {
                        let v = g * ((t - mu) * sc) + b;
                        d.write(super::relu::relu(v));
                    }
                } else {
                    for (d, &t) in pairs {
                        d.write(g * ((t - mu) * sc) + b);
                    }
                }
            },)
        }
    }

    /// What [`BatchNorm::normalize`] keeps in eval mode for an input of `count` values per
    /// channel (the same values).
    fn eval_cache<T: Scalar>(&self, p: &[ArrayViewD<T>], count: usize) -> BnCache<T> {
        let eps = T::from_f(self.eps);
        let (rm, rv) = (&p[2], &p[3]);
        let ch = self.channels;
        BnCache {
            xhat: None,
            count,
            s: Array1::from_shape_fn(ch, |c| inv_std(rv[c], eps)),
            mode: Mode::Eval,
            batch_mean: Array1::from_shape_fn(ch, |c| rm[c]),
            batch_var: Array1::from_shape_fn(ch, |c| rv[c]),
            from_output: None,
        }
    }

    /// Values per channel of an eval-mode input of shape `x` = `[C, N, H, W]`, where the
    /// tape's fused forms apply; `None` otherwise.
    fn eval_count(&self, mode: Mode, x: &[usize]) -> Option<usize> {
        (mode == Mode::Eval && x.len() == 4 && x[0] == self.channels)
            .then(|| x[1..].iter().product())
    }

    /// Whether x̂ = (y − β)·(1/γ) recovers x̂ from the output closely enough for a lean
    /// tape: every γ nonzero with a finite 1/γ and |β| ≤ 16|γ| (all finite). The error on
    /// x̂ is then within ~(5|x̂| + |β/γ|)·2⁻²⁴ in f32 (each of the five roundings between
    /// x̂ and the recomputed value, and β's in the output). At a residual block's end,
    /// where the output is read as z − r (`Taped::y_less`), the two more roundings add
    /// ~(2|x̂| + 2|β/γ| + |r/γ|)·2⁻²⁴.
    fn lean_applies<T: Scalar>(&self, p: &[ArrayViewD<T>]) -> bool {
        let (gamma, beta) = (&p[0], &p[1]);
        (0..self.channels).all(|c| {
            let (g, b) = (gamma[c].as_f64(), beta[c].as_f64());
            let finite = g.is_finite() && b.is_finite() && (T::one() / gamma[c]).is_finite();
            g != 0.0 && finite && b.abs() <= LEAN_RATIO * g.abs()
        })
    }

    /// dx, dγ, dβ; `x` is what x̂ is formed from ([`BnCache::xhat_source`]). Eval mode
    /// writes dx over `gy`, and leaves dγ and dβ zero unless `want_dp` (dx does not need
    /// them there).
    #[inline(always)]
    fn grads<T: Scalar>(
        &self,
        c: &BnCache<T>,
        p: &[ArrayViewD<T>],
        x: Source<T>,
        mut gy: ArrayD<T>,
        want_dp: bool,
    ) -> (ArrayD<T>, ArrayD<T>, ArrayD<T>) {
        let gamma = &p[0];
        let xc = Rows::new(x);
        let m = xc.ncols();
        let mut dgamma = Array1::zeros(self.channels);
        let mut dbeta = Array1::zeros(self.channels);
        let Some(xhat) = &c.xhat else {
            // eval: dγ = Σ dy x̂, dβ = Σ dy, then dx = dy γ s in place, channel by channel
            // while the row is in cache
            let mut gv = cview_mut(&mut gy);
            for ch in 0..self.channels {
                let mut row = gv.row_mut(ch);
                let (s, gm) = (c.s[ch], gamma[ch]);
                if let Some(gs) = row.as_slice_mut() {
                    let (xs, ls) = xc.parts(ch);
                    let xh = c.xhat_coeffs(ch);
                    let src = (&xs[..], ls.as_deref());
                    (dgamma[ch], dbeta[ch]) =
                        lanes::bn_eval_row((gs, None, src), xh, (gm, s), None, want_dp);
                    continue;
                }
                // a row that is not contiguous (contiguous ones took the pass above)
                if want_dp {
                    let xs = xc.row(ch);
                    (dgamma[ch], dbeta[ch]) = lanes::dot_sum(&row.to_vec(), &xs, c.to_xhat(ch));
                }
                row.mapv_inplace(|v| v * gm * s);
            }
            return (gy, dgamma.into_dyn(), dbeta.into_dyn());
        };
        let (xh, g) = (cview(xhat), cview(&gy));
        let mf = T::from_usize(m).unwrap();
        let dx = from_rows(
            &gy,
            self.channels,
            #[inline(always)]
            |ch, out| {
                let (gs, hs) = (row_slice(&g, ch), row_slice(&xh, ch));
                (dgamma[ch], dbeta[ch]) = lanes::dot_sum(&gs, &hs, |h| h);
                let (gm, s) = (gamma[ch], c.s[ch]);
                let mg = dbeta[ch] * gm / mf;
                let mgh = dgamma[ch] * gm / mf;
                out.extend(
                    gs.iter()
                        .zip(hs.iter())
                        .map(|(&gv, &hv)| s * (gv * gm - mg - hv * mgh)),
                );
            },
        );
        (dx, dgamma.into_dyn(), dbeta.into_dyn())
    }

    /// Eval mode on `[C, N, H, W]` only, through the ReLU that alone reads this node
    /// (`y` its output): the ReLU's mask, then [`BatchNorm::grads`] (dx over `gy`, dγ, dβ),
    /// in one pass over each channel's row, with the same arithmetic as the two passes
    /// (so the same bits); with `keep_gy` also the masked dy (what the R-passes read). dγ
    /// and dβ are zero unless `want_dp`. `Err(gy)` where it does not apply.
    #[allow(clippy::type_complexity)]
    #[inline(always)]
    fn grads_relu<T: Scalar>(
        &self,
        c: &BnCache<T>,
        p: &[ArrayViewD<T>],
        ((x, less), y): (Source<T>, &ArrayD<T>),
        mut gy: ArrayD<T>,
        (want_dp, keep_gy): (bool, bool),
    ) -> Result<(ArrayD<T>, ArrayD<T>, ArrayD<T>, Option<ArrayD<T>>), ArrayD<T>> {
        let applies = c.xhat.is_none()
            && x.ndim() == 4
            && x.shape() == gy.shape()
            && y.shape() == gy.shape()
            && less.is_none_or(|l| l.shape() == gy.shape() && l.is_standard_layout())
            && x.is_standard_layout()
            && y.is_standard_layout()
            && gy.is_standard_layout()
            // one row per channel, covering x (the kept copy is written row by row)
            && x.len() == self.channels * (x.len() / self.channels.max(1));
        if !applies {
            return Err(gy);
        }
        let gamma = &p[0];
        let m = x.len() / self.channels.max(1);
        let mut dgamma = Array1::zeros(self.channels);
        let mut dbeta = Array1::zeros(self.channels);
        // the copy is written once, into the spare capacity (no zeroing pass first)
        let mut kept = keep_gy.then(|| Vec::<T>::with_capacity(x.len()));
        let (xs, ys) = (x.as_slice().unwrap(), y.as_slice().unwrap());
        let less = less.map(|l| l.as_slice().unwrap());
        let gs = gy.as_slice_mut().unwrap();
        for ch in 0..self.channels {
            let r = ch * m..(ch + 1) * m;
            let (s, gm) = (c.s[ch], gamma[ch]);
            let copy = kept
                .as_mut()
                .map(|k| &mut k.spare_capacity_mut()[r.clone()]);
            let src = (&xs[r.clone()], less.map(|l| &l[r.clone()]));
            (dgamma[ch], dbeta[ch]) = lanes::bn_eval_row(
                (&mut gs[r.clone()], Some(&ys[r.clone()]), src),
                c.xhat_coeffs(ch),
                (gm, s),
                copy,
                want_dp,
            );
        }
        let kept = kept.map(|mut k| {
            // SAFETY: bn_eval_row wrote every element of each channel's row (its whole
            // chunks and its tail), and the rows cover 0..m·channels = x.len() (`applies`).
            unsafe { k.set_len(x.len()) };
            ArrayD::from_shape_vec(gy.raw_dim(), k).expect("size")
        });
        Ok((gy, dgamma.into_dyn(), dbeta.into_dyn(), kept))
    }

    /// R{y}; `v` = [v_γ, v_β, …]; `rx` None means R{x} = 0.
    #[inline(always)]
    fn r_normalize<T: Scalar>(
        &self,
        c: &BnCache<T>,
        p: &[ArrayViewD<T>],
        v: &[ArrayViewD<T>],
        src: Source<T>,
        rx: Option<&ArrayD<T>>,
    ) -> (ArrayD<T>, BnRCache<T>) {
        let (gamma, vg, vb) = (&p[0], &v[0], &v[1]);
        let x = src.0;
        let xc = Rows::new(src);
        let xh = c.xhat.as_ref().map(cview);
        let rxv = rx.map(cview);
        let m = xc.ncols();
        let mut rs = Array1::zeros(self.channels);
        // R{x̂} = s (R{x} − ⟨R{x}⟩ − x̂ ⟨x̂ R{x}⟩), kept for the reverse pass in train mode.
        // Eval mode's R{x̂} = s·R{x} is not stored: the reverse pass recomputes it from R{x}.
        let rxhat = match (c.mode, &rxv) {
            (Mode::Train, Some(rxv)) => Some(from_rows(
                x,
                self.channels,
                #[inline(always)]
                |ch, out| {
                    let s = c.s[ch];
                    let (rr, hr) = (row_slice(rxv, ch), xhat_row(c, &xc, xh.as_ref(), ch));
                    let mr = mean(rr.iter().copied(), m);
                    let mhr = rr
                        .iter()
                        .zip(hr.iter())
                        .fold(T::zero(), |a, (&r, &h)| a + r * h)
                        / T::from_usize(m).unwrap();
                    rs[ch] = -s * s * mhr;
                    out.extend(
                        rr.iter()
                            .zip(hr.iter())
                            .map(|(&r, &h)| s * (r - mr - h * mhr)),
                    );
                },
            )),
            _ => None,
        };
        let rhv = rxhat.as_ref().map(cview);
        let ry = from_rows(
            x,
            self.channels,
            #[inline(always)]
            |ch, out| {
                let (g, a, b, s) = (gamma[ch], vg[ch], vb[ch], c.s[ch]);
                // R{x̂} row: stored (train), s·R{x} (eval), or zero (R{x} = 0).
                match (&rhv, &rxv, c.mode) {
                    (Some(rhv), _, _) => out.extend(
                        row_slice(rhv, ch)
                            .iter()
                            .zip(xhat_row(c, &xc, xh.as_ref(), ch).iter())
                            .map(|(&r, &h)| g * r + a * h + b),
                    ),
                    (None, Some(rxv), Mode::Eval) => {
                        // x̂ formed on the fly, as in `xhat_row`
                        let h = c.to_xhat(ch);
                        let (rr, xr) = (row_slice(rxv, ch), xc.row(ch));
                        extend_map2(out, &rr, &xr, |r, xv| g * (s * r) + a * h(xv) + b)
                    }
                    _ => {
                        let hr = xhat_row(c, &xc, xh.as_ref(), ch);
                        out.extend(hr.iter().map(|&h| g * (s * T::zero()) + a * h + b))
                    }
                }
            },
        );
        (ry, BnRCache { rxhat, rs })
    }

    /// R{dx}, R{dγ}, R{dβ}. `rx` is R{x} of the layer's input (None = 0): eval mode
    /// forms R{x̂} = s·R{x} from it rather than storing it in the R-forward pass.
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    fn r_grads<T: Scalar>(
        &self,
        c: &BnCache<T>,
        rc: &BnRCache<T>,
        p: &[ArrayViewD<T>],
        v: &[ArrayViewD<T>],
        x: Source<T>,
        rx: Option<&ArrayD<T>>,
        gy: &ArrayD<T>,
        rgy: &ArrayD<T>,
    ) -> (ArrayD<T>, ArrayD<T>, ArrayD<T>) {
        let (gamma, vg) = (&p[0], &v[0]);
        let (xc, g, rg) = (Rows::new(x), cview(gy), cview(rgy));
        let xh = c.xhat.as_ref().map(cview);
        let rh = rc.rxhat.as_ref().map(cview);
        let rxv = rx.map(cview);
        let m = xc.ncols();
        let mf = T::from_usize(m).unwrap();
        let mut rdgamma = Array1::zeros(self.channels);
        let mut rdbeta = Array1::zeros(self.channels);
        let rdx = from_rows(
            gy,
            self.channels,
            #[inline(always)]
            |ch, out| {
                let (gr, rgr) = (row_slice(&g, ch), row_slice(&rg, ch));
                let (gm, a, s) = (gamma[ch], vg[ch], c.s[ch]);
                // The R{x̂} row: stored (train mode), s·R{x} formed on the fly (eval mode), or
                // zero (R{x} = 0). R{dγ} = Σ R{dy} x̂ + dy R{x̂}.
                let stored: Option<Cow<[T]>> = match (&rh, c.mode) {
                    (Some(rh), _) => Some(row_slice(rh, ch)),
                    (None, Mode::Train) => Some(Cow::Owned(vec![s * T::zero(); m])),
                    (None, Mode::Eval) => None,
                };
                let rr = rxv.as_ref().map(|rxv| row_slice(rxv, ch));
                let (st, rr) = (stored.as_deref(), rr.as_deref());
                if let (None, None, Some(rr)) = (&xh, st, rr) {
                    // eval mode, R{x̂} = s·R{x} and x̂ formed from x: one pass for all three
                    let xr = xc.row(ch);
                    let rows = (&rgr[..], &xr[..], &gr[..], rr);
                    (rdgamma[ch], rdbeta[ch]) =
                        lanes::bn_eval_r_row(out, rows, c.xhat_coeffs(ch), (gm, a, s));
                    return;
                }
                // x̂ stored (train) or formed from x in the sum (eval)
                rdgamma[ch] = match &xh {
                    Some(xh) => r_dgamma((&rgr, &row_slice(xh, ch), |h| h), &gr, st, rr, s),
                    None => r_dgamma((&rgr, &xc.row(ch), c.to_xhat(ch)), &gr, st, rr, s),
                };
                rdbeta[ch] = lanes::sum(&rgr);
                match c.mode {
                    Mode::Eval => extend_map2(out, &gr, &rgr, |gv, rgv| s * (rgv * gm + gv * a)),
                    Mode::Train => {
                        let rhr = stored.as_deref().expect("train mode keeps R{x̂}");
                        let hr = xhat_row(c, &xc, xh.as_ref(), ch);
                        // dx̂ = dy γ; R{dx̂} = R{dy} γ + dy v_γ
                        let m_dxh = g.row(ch).sum() * gm / mf;
                        let m_dxh_xh = gr
                            .iter()
                            .zip(hr.iter())
                            .fold(T::zero(), |acc, (&gv, &hv)| acc + gv * hv)
                            * gm
                            / mf;
                        let m_rdxh = rgr
                            .iter()
                            .zip(gr.iter())
                            .fold(T::zero(), |acc, (&rgv, &gv)| acc + rgv * gm + gv * a)
                            / mf;
                        let m_cross = rgr
                            .iter()
                            .zip(gr.iter())
                            .zip(hr.iter())
                            .zip(rhr.iter())
                            .fold(T::zero(), |acc, (((&rgv, &gv), &hv), &rv)| {
                                acc + (rgv * gm + gv * a) * hv + gv * gm * rv
                            })
                            / mf;
                        let rs = rc.rs[ch];
                        out.extend(
                            gr.iter()
                                .zip(rgr.iter())
                                .zip(hr.iter())
                                .zip(rhr.iter())
                                .map(|(((&gv, &rgv), &hv), &rv)| {
                                    let dxh = gv * gm;
                                    let rdxh = rgv * gm + gv * a;
                                    let big_a = dxh - m_dxh - hv * m_dxh_xh;
                                    rs * big_a + s * (rdxh - m_rdxh - rv * m_dxh_xh - hv * m_cross)
                                }),
                        );
                    }
                }
            },
        );
        (rdx, rdgamma.into_dyn(), rdbeta.into_dyn())
    }
}

/// `[Some(dγ), Some(dβ)]` and dx where wanted.
fn grads_of<T>(a: &Taped<T>, (dx, dgamma, dbeta): (ArrayD<T>, ArrayD<T>, ArrayD<T>)) -> Grads<T> {
    Grads {
        dx: vec![a.need_dx(0).then_some(dx)],
        dp: vec![Some(dgamma), Some(dbeta)],
    }
}

impl EngineOp for BatchNorm {
    const KIND: &'static str = "batchnorm";
    type Cache<T: Scalar> = BnCache<T>;
    type RCache<T: Scalar> = BnRCache<T>;

    fn infer_shape(&self, x: &[&[usize]]) -> Result<Vec<usize>, ShapeError> {
        let x = x[0];
        let c = if x.len() == 2 { x[1] } else { x[0] };
        if c != self.channels {
            return Err(ShapeError::Channels {
                channels: self.channels,
            });
        }
        Ok(x.to_vec())
    }

    fn forward<T: Scalar>(&self, a: &Fwd<T>) -> (ArrayD<T>, BnCache<T>) {
        wide!(self.normalize(a.x[0], a.p, a.mode),)
    }

    fn in_place(&self, mode: Mode) -> bool {
        mode == Mode::Eval
    }

    fn forward_in_place<T: Scalar>(&self, a: &Fwd<T>, x0: &mut ArrayD<T>) {
        wide!(self.forward_eval_inplace(x0, a.p),);
    }

    /// `BatchNorm::eval_epilogue`'s numbers.
    fn affine<T: Scalar>(&self, p: &[ArrayViewD<T>], mode: Mode) -> Option<Vec<[T; 4]>> {
        let eps = T::from_f(self.eps);
        (mode == Mode::Eval).then(|| {
            (0..self.channels)
                .map(|c| eval_numbers(p, eps, c))
                .collect()
        })
    }

    fn epilogue<'a, T: Scalar>(
        &self,
        p: &'a [ArrayViewD<'a, T>],
        mode: Mode,
        then: Option<Activation>,
    ) -> Option<Epilogue<'a, T>> {
        let relu = then == Some(Activation::Relu);
        (mode == Mode::Eval).then(|| Box::new(self.eval_epilogue(p, relu)) as Epilogue<'a, T>)
    }

    fn taped_epilogue<'a, T: Scalar>(
        &self,
        p: &'a [ArrayViewD<'a, T>],
        mode: Mode,
        then: Option<Activation>,
        x: &[usize],
    ) -> Option<(TapedEpilogue<'a, T>, BnCache<T>)> {
        let count = self.eval_count(mode, x)?;
        let relu = then == Some(Activation::Relu);
        let map = Box::new(self.taped_map(p, relu)) as TapedEpilogue<'a, T>;
        Some((map, self.eval_cache(p, count)))
    }

    fn lean_epilogue<'a, T: Scalar>(
        &self,
        p: &'a [ArrayViewD<'a, T>],
        mode: Mode,
        then: Option<Activation>,
        x: &[usize],
    ) -> Option<(Epilogue<'a, T>, BnCache<T>)> {
        let count = self.eval_count(mode, x).filter(|_| self.lean_applies(p))?;
        let mut cache = self.eval_cache(p, count);
        let (gamma, beta) = (&p[0], &p[1]);
        let ch = self.channels;
        cache.from_output = Some((
            Array1::from_shape_fn(ch, |c| beta[c]),
            Array1::from_shape_fn(ch, |c| T::one() / gamma[c]),
        ));
        Some((self.epilogue(p, mode, then)?, cache))
    }

    fn cache_bytes<T: Scalar>(c: &BnCache<T>) -> usize {
        let xhat = c.xhat.as_ref().map_or(0, |x| x.len());
        let lean = c.from_output.as_ref().map_or(0, |_| 2 * c.s.len());
        (xhat + lean + 4 * c.s.len()) * std::mem::size_of::<T>()
    }

    fn batch_stats<T: Scalar>(&self, c: &BnCache<T>, params: &[usize]) -> Option<BatchStats<T>> {
        Some(BatchStats {
            running_mean: params[2],
            running_var: params[3],
            mean: c.batch_mean.clone(),
            var: c.batch_var.clone(),
            count: c.count,
        })
    }

    fn r_backward_reads_gy(&self) -> bool {
        true
    }

    fn backward<T: Scalar>(&self, a: &Taped<T>, c: &BnCache<T>, gy: ArrayD<T>) -> Grads<T> {
        let x = c.xhat_source(a);
        grads_of(a, wide!(self.grads(c, a.p, x, gy, a.want_dp),))
    }

    fn backward_relu<T: Scalar>(
        &self,
        a: &Taped<T>,
        c: &BnCache<T>,
        y: &ArrayD<T>,
        gy: ArrayD<T>,
        keep_gy: bool,
    ) -> Result<(Grads<T>, Option<ArrayD<T>>), ArrayD<T>> {
        let flags = (a.want_dp, keep_gy);
        let x = c.xhat_source(a);
        let (dx, dg, db, kept) = wide!(self.grads_relu(c, a.p, (x, y), gy, flags))?;
        Ok((grads_of(a, (dx, dg, db)), kept))
    }

    fn r_forward<T: Scalar>(
        &self,
        a: &Taped<T>,
        c: &BnCache<T>,
    ) -> (Option<ArrayD<T>>, BnRCache<T>) {
        let x = c.xhat_source(a);
        let (r, rc) = wide!(self.r_normalize(c, a.p, a.v, x, a.rx(0)),);
        (Some(r), rc)
    }

    fn r_backward<T: Scalar>(
        &self,
        a: &Taped<T>,
        c: &BnCache<T>,
        rc: &BnRCache<T>,
        gy: &ArrayD<T>,
        rgy: ArrayD<T>,
    ) -> Grads<T> {
        grads_of(
            a,
            wide!(self.r_grads(c, rc, a.p, a.v, c.xhat_source(a), a.rx(0), gy, &rgy),),
        )
    }
}

#[cfg(test)]
#[path = "batchnorm_tests.rs"]
mod tests;
