//! Grouped convolution (PyTorch `groups` > 1; Krizhevsky et al. 2012, ResNeXt, MobileNet):
//! the C input and O output channels split into `groups` equal parts, output part g seeing
//! only input part g, weight `[O, C/groups, k, k]`. The four passes are the module's, per
//! group:
//!
//! ```text
//! y_g = W_g ⋆ x_g + b_g        dx_g = W_gᵀ ⋆ dy_g,   dW_g = dy_g ⋆ x_g
//! R{y_g} = W_g ⋆ R{x_g} + V_g ⋆ x_g + v_b,g
//! R{dx_g} = W_gᵀ ⋆ R{dy_g} + V_gᵀ ⋆ dy_g,   R{dW_g} = R{dy_g} ⋆ x_g + dy_g ⋆ R{x_g}
//! ```
//! In the internal layout `[C, N, H, W]` a group's channels are one contiguous block, so
//! each group runs the blocked im2col + GEMM [`Plan`] of a `groups = 1` convolution on its
//! block. Depthwise convolutions (one input channel per group, any channel multiplier)
//! take direct loops over each k×k tap instead: their GEMMs would have one row.

use ndarray::{concatenate, ArrayD, ArrayView, ArrayViewD, Axis, IxDyn, Slice};

use super::{dense, row_sums, shape4, ChannelMap, Conv2d};
use crate::engine::options::EngineOptions;
use crate::engine::Scalar;

/// Channels `[g·len, (g+1)·len)` (axis 0) of an array.
fn part<T: Scalar>(a: &ArrayD<T>, g: usize, len: usize) -> ArrayD<T> {
    a.slice_axis(Axis(0), Slice::from(g * len..(g + 1) * len))
        .to_owned()
}

fn part_view<'a, T: Scalar>(a: &ArrayViewD<'a, T>, g: usize, len: usize) -> ArrayViewD<'a, T> {
    a.clone()
        .slice_axis_move(Axis(0), Slice::from(g * len..(g + 1) * len))
}

/// The groups' results stacked along axis 0.
fn stack<T: Scalar>(parts: Vec<ArrayD<T>>) -> ArrayD<T> {
    let views: Vec<ArrayView<T, IxDyn>> = parts.iter().map(|p| p.view()).collect();
    concatenate(Axis(0), &views).expect("equal groups")
}

fn stack_opt<T: Scalar>(parts: Vec<Option<ArrayD<T>>>) -> Option<ArrayD<T>> {
    parts.into_iter().collect::<Option<Vec<_>>>().map(stack)
}

/// `(W, V, dy, R{dy})` of the R-backward pass.
pub(super) type RBackOperands<'a, 'b, T> = (
    &'a ArrayViewD<'b, T>,
    &'a ArrayViewD<'b, T>,
    &'a ArrayD<T>,
    &'a ArrayD<T>,
);

impl Conv2d {
    /// One group's convolution.
    fn group_conv(&self) -> Conv2d {
        Conv2d {
            in_channels: self.in_channels / self.groups,
            out_channels: self.out_channels / self.groups,
            groups: 1,
            ..self.clone()
        }
    }

    /// The geometry of the direct depthwise loops, where they apply.
    fn depthwise(&self, x: &[usize]) -> Option<Depthwise> {
        (self.in_channels == self.groups).then(|| Depthwise::new(self, shape4(x)))
    }

    /// y = W ⋆ x + b (`epilogue(channel, values)` applied to each output channel).
    pub(super) fn grouped_forward<T: Scalar>(
        &self,
        options: &EngineOptions,
        x: &ArrayD<T>,
        w: &ArrayViewD<T>,
        b: Option<&ArrayViewD<T>>,
        epilogue: Option<&ChannelMap<T>>,
    ) -> ArrayD<T> {
        if let Some(d) = self.depthwise(x.shape()) {
            let (xs, ws) = (dense(x), dense(w));
            let mut y = vec![T::zero(); d.out_len()];
            d.conv(&[(&ws, &xs)], &mut y);
            return d.finish(y, b, epilogue);
        }
        let sub = self.group_conv();
        let (ci, co) = (sub.in_channels, sub.out_channels);
        let mut s = shape4(x.shape());
        s[0] = ci;
        let plan = sub.plan::<T>(options, s);
        let parts = (0..self.groups)
            .map(|g| {
                let (xg, wg) = (part(x, g, ci), part_view(w, g, co));
                let bg = b.map(|b| part_view(b, g, co));
                // group g's channels and values lie g·co channels on in the whole output
                let at = g * co * plan.g.cols;
                let shifted = epilogue
                    .map(|e| move |ch: usize, off: usize, v: &mut [T]| e(ch + g * co, off + at, v));
                let ep = shifted.as_ref().map(|f| f as &ChannelMap<T>);
                plan.forward(&xg, &wg, bg.as_ref(), ep)
            })
            .collect();
        stack(parts)
    }

    /// dx (when `need_dx`), dW and db (when `want_dw`).
    #[allow(clippy::type_complexity)]
    pub(super) fn grouped_backward<T: Scalar>(
        &self,
        options: &EngineOptions,
        x: &ArrayD<T>,
        w: &ArrayViewD<T>,
        gy: &ArrayD<T>,
        need_dx: bool,
        want_dw: bool,
    ) -> (Option<ArrayD<T>>, Option<ArrayD<T>>, Option<ArrayD<T>>) {
        if let Some(d) = self.depthwise(x.shape()) {
            let (xs, ws, gys) = (dense(x), dense(w), dense(gy));
            let dx = need_dx.then(|| {
                let mut dx = vec![T::zero(); x.len()];
                d.conv_t(&[(&ws, &gys)], &mut dx);
                d.input_shaped(dx)
            });
            let dw = want_dw.then(|| {
                let mut dw = vec![T::zero(); w.len()];
                d.wgrad(&[(&gys, &xs)], &mut dw);
                d.weight_shaped(dw)
            });
            let db = (want_dw && self.bias).then(|| row_sums(&gys, self.out_channels));
            return (dx, dw, db);
        }
        let sub = self.group_conv();
        let (ci, co) = (sub.in_channels, sub.out_channels);
        let mut s = shape4(x.shape());
        s[0] = ci;
        let plan = sub.plan::<T>(options, s);
        let (mut dx, mut dw, mut db) = (vec![], vec![], vec![]);
        for g in 0..self.groups {
            let (xg, wg, gyg) = (part(x, g, ci), part_view(w, g, co), part(gy, g, co));
            let (a, b, c) = plan.backward(&xg, &wg, &gyg, (need_dx, want_dw), &mut None);
            dx.push(a);
            dw.push(b);
            db.push(c);
        }
        (stack_opt(dx), stack_opt(dw), stack_opt(db))
    }

    /// R{y} = W ⋆ R{x} + V ⋆ x + v_b (`rx` = None: R{x} = 0).
    pub(super) fn grouped_r_forward<T: Scalar>(
        &self,
        options: &EngineOptions,
        x: &ArrayD<T>,
        (w, vw, vb): (&ArrayViewD<T>, &ArrayViewD<T>, Option<&ArrayViewD<T>>),
        rx: Option<&ArrayD<T>>,
    ) -> ArrayD<T> {
        if let Some(d) = self.depthwise(x.shape()) {
            let (xs, ws, vs) = (dense(x), dense(w), dense(vw));
            let rxs = rx.map(dense);
            let mut ry = vec![T::zero(); d.out_len()];
            let terms: Vec<(&[T], &[T])> = std::iter::once((&vs[..], &xs[..]))
                .chain(rxs.as_deref().map(|r| (&ws[..], r)))
                .collect();
            d.conv(&terms, &mut ry);
            return d.finish(ry, vb, None);
        }
        let sub = self.group_conv();
        let (ci, co) = (sub.in_channels, sub.out_channels);
        let mut s = shape4(x.shape());
        s[0] = ci;
        let plan = sub.plan::<T>(options, s);
        let parts = (0..self.groups)
            .map(|g| {
                let (xg, wg, vg) = (part(x, g, ci), part_view(w, g, co), part_view(vw, g, co));
                let vbg = vb.map(|b| part_view(b, g, co));
                let rxg = rx.map(|r| part(r, g, ci));
                plan.r_forward(&xg, &wg, &vg, vbg.as_ref(), rxg.as_ref())
            })
            .collect();
        stack(parts)
    }

    /// R{dx} (when `need_dx`), R{dW}, R{db}.
    #[allow(clippy::type_complexity)]
    pub(super) fn grouped_r_backward<T: Scalar>(
        &self,
        options: &EngineOptions,
        x: &ArrayD<T>,
        rx: Option<&ArrayD<T>>,
        (w, vw, gy, rgy): RBackOperands<T>,
        need_dx: bool,
    ) -> (Option<ArrayD<T>>, ArrayD<T>, Option<ArrayD<T>>) {
        if let Some(d) = self.depthwise(x.shape()) {
            let (xs, ws, vs) = (dense(x), dense(w), dense(vw));
            let (gys, rgys, rxs) = (dense(gy), dense(rgy), rx.map(dense));
            let rdx = need_dx.then(|| {
                let mut rdx = vec![T::zero(); x.len()];
                d.conv_t(&[(&ws, &rgys), (&vs, &gys)], &mut rdx);
                d.input_shaped(rdx)
            });
            let mut rdw = vec![T::zero(); w.len()];
            let terms: Vec<(&[T], &[T])> = std::iter::once((&rgys[..], &xs[..]))
                .chain(rxs.as_deref().map(|r| (&gys[..], r)))
                .collect();
            d.wgrad(&terms, &mut rdw);
            let rdb = self.bias.then(|| row_sums(&rgys, self.out_channels));
            return (rdx, d.weight_shaped(rdw), rdb);
        }
        let sub = self.group_conv();
        let (ci, co) = (sub.in_channels, sub.out_channels);
        let mut s = shape4(x.shape());
        s[0] = ci;
        let plan = sub.plan::<T>(options, s);
        let (mut rdx, mut rdw, mut rdb) = (vec![], vec![], vec![]);
        for g in 0..self.groups {
            let xg = part(x, g, ci);
            let rxg = rx.map(|r| part(r, g, ci));
            let (wg, vg) = (part_view(w, g, co), part_view(vw, g, co));
            let (gyg, rgyg) = (part(gy, g, co), part(rgy, g, co));
            let (a, b, c) = plan.r_backward(&xg, rxg.as_ref(), (&wg, &vg, &gyg, &rgyg), need_dx);
            rdx.push(a);
            rdw.push(b);
            rdb.push(c);
        }
        (stack_opt(rdx), stack(rdw), stack_opt(rdb))
    }
}

/// The geometry of a depthwise convolution: output channel o reads input channel o / m.
struct Depthwise {
    c: usize,
    n: usize,
    h: usize,
    w: usize,
    ho: usize,
    wo: usize,
    k: usize,
    /// Output channels per input channel.
    m: usize,
    /// Per kernel tap (i, j) and output row: (tap i·k + j, oh, ih, ow₀, ow₁, iw at ow₀),
    /// with the stride; only in-bounds pairs.
    taps: Vec<[usize; 6]>,
    s: usize,
}

/// Output indices o in `[lo, hi)` with `0 ≤ o·s + off < len_in`, `o < len_out`.
fn valid(len_in: usize, len_out: usize, s: usize, off: isize) -> (usize, usize) {
    let lo = if off >= 0 {
        0
    } else {
        (off.unsigned_abs()).div_ceil(s)
    };
    let top = len_in as isize - 1 - off;
    let hi = if top < 0 {
        0
    } else {
        (top as usize / s + 1).min(len_out)
    };
    (lo, hi.max(lo))
}

impl Depthwise {
    fn new(conv: &Conv2d, x: [usize; 4]) -> Self {
        let [c, n, h, w] = x;
        let (ho, wo) = conv.out_hw(h, w).expect("checked at build");
        let (k, s, p) = (conv.kernel, conv.stride, conv.padding as isize);
        let mut taps = Vec::new();
        for i in 0..k {
            let (oh0, oh1) = valid(h, ho, s, i as isize - p);
            for j in 0..k {
                let (ow0, ow1) = valid(w, wo, s, j as isize - p);
                if ow0 >= ow1 {
                    continue;
                }
                let iw0 = (ow0 * s + j) as isize - p;
                for oh in oh0..oh1 {
                    let ih = (oh * s + i) as isize - p;
                    taps.push([i * k + j, oh, ih as usize, ow0, ow1, iw0 as usize]);
                }
            }
        }
        Depthwise {
            c,
            n,
            h,
            w,
            ho,
            wo,
            k,
            m: conv.out_channels / c.max(1),
            taps,
            s,
        }
    }

    fn out_len(&self) -> usize {
        self.c * self.m * self.n * self.ho * self.wo
    }

    /// Calls `f(o, ci, plane)` for every output channel o, its input channel and image n:
    /// `plane` = (offset of the input plane, offset of the output plane, offset of o's
    /// kernel).
    fn planes(&self, mut f: impl FnMut(usize, usize, usize)) {
        let (hw, howo, kk) = (self.h * self.w, self.ho * self.wo, self.k * self.k);
        for o in 0..self.c * self.m {
            let ci = o / self.m;
            for ni in 0..self.n {
                f((ci * self.n + ni) * hw, (o * self.n + ni) * howo, o * kk);
            }
        }
    }

    /// y += Σ_terms W ⋆ x over `(W, x)` terms.
    fn conv<T: Scalar>(&self, terms: &[(&[T], &[T])], y: &mut [T]) {
        let (s, w, wo) = (self.s, self.w, self.wo);
        self.planes(|xo, yo, ko| {
            for &(wt, x) in terms {
                for &[t, oh, ih, ow0, ow1, iw0] in &self.taps {
                    let wv = wt[ko + t];
                    let yr = &mut y[yo + oh * wo + ow0..yo + oh * wo + ow1];
                    let xr = &x[xo + ih * w + iw0..];
                    for (q, yv) in yr.iter_mut().enumerate() {
                        *yv += wv * xr[q * s];
                    }
                }
            }
        });
    }

    /// dx += Σ_terms Wᵀ ⋆ dy over `(W, dy)` terms (the adjoint of [`Depthwise::conv`]).
    fn conv_t<T: Scalar>(&self, terms: &[(&[T], &[T])], dx: &mut [T]) {
        let (s, w, wo) = (self.s, self.w, self.wo);
        self.planes(|xo, yo, ko| {
            for &(wt, gy) in terms {
                for &[t, oh, ih, ow0, ow1, iw0] in &self.taps {
                    let wv = wt[ko + t];
                    let gr = &gy[yo + oh * wo + ow0..yo + oh * wo + ow1];
                    let dr = &mut dx[xo + ih * w + iw0..];
                    for (q, &g) in gr.iter().enumerate() {
                        dr[q * s] += wv * g;
                    }
                }
            }
        });
    }

    /// dW += Σ_terms dy ⋆ x over `(dy, x)` terms (the weight gradient).
    fn wgrad<T: Scalar>(&self, terms: &[(&[T], &[T])], dw: &mut [T]) {
        let (s, w, wo) = (self.s, self.w, self.wo);
        self.planes(|xo, yo, ko| {
            for &(gy, x) in terms {
                for &[t, oh, ih, ow0, ow1, iw0] in &self.taps {
                    let gr = &gy[yo + oh * wo + ow0..yo + oh * wo + ow1];
                    let xr = &x[xo + ih * w + iw0..];
                    let acc = gr
                        .iter()
                        .enumerate()
                        .fold(T::zero(), |acc, (q, &g)| acc + g * xr[q * s]);
                    dw[ko + t] += acc;
                }
            }
        });
    }

    /// `[O, N, Ho, Wo]` from `y`, plus bias, then `epilogue` per output channel.
    fn finish<T: Scalar>(
        &self,
        mut y: Vec<T>,
        b: Option<&ArrayViewD<T>>,
        epilogue: Option<&ChannelMap<T>>,
    ) -> ArrayD<T> {
        let plane = self.n * self.ho * self.wo;
        for (o, row) in y.chunks_exact_mut(plane.max(1)).enumerate() {
            if let Some(b) = b {
                let bo = b[[o]];
                row.iter_mut().for_each(|v| *v += bo);
            }
            if let Some(e) = epilogue {
                e(o, o * plane, row);
            }
        }
        let shape = [self.c * self.m, self.n, self.ho, self.wo];
        ArrayD::from_shape_vec(IxDyn(&shape), y).expect("size")
    }

    fn input_shaped<T: Scalar>(&self, v: Vec<T>) -> ArrayD<T> {
        ArrayD::from_shape_vec(IxDyn(&[self.c, self.n, self.h, self.w]), v).expect("size")
    }

    fn weight_shaped<T: Scalar>(&self, v: Vec<T>) -> ArrayD<T> {
        let shape = [self.c * self.m, 1, self.k, self.k];
        ArrayD::from_shape_vec(IxDyn(&shape), v).expect("size")
    }
}
