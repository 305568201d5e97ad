//! Layer normalization (Ba, Kiros & Hinton 2016, arXiv:1607.06450): PyTorch
//! `nn.LayerNorm` / ONNX `LayerNormalization` on a torch-layout value, normalizing over
//! the trailing axes `axes_from..rank` (a "row" of D values; biased variance).
//!
//! With ⟨·⟩ the mean over a row's D values, w and b the affine weight and bias (w = 1,
//! b = 0 without them; v_w, v_b their directions):
//!
//! ```text
//! μ = ⟨x⟩,  σ² = ⟨(x − μ)²⟩,  s = 1/√(σ² + ε),  x̂ = (x − μ) s,  y = w x̂ + b
//! backward:   dx̂ = w dy,   dx = s (dx̂ − ⟨dx̂⟩ − x̂ ⟨dx̂ x̂⟩),   dw = Σ_rows dy x̂,   db = Σ_rows dy
//! R-forward:  R{x̂} = s (R{x} − ⟨R{x}⟩ − x̂ ⟨x̂ R{x}⟩),   R{s} = −s² ⟨x̂ R{x}⟩
//!             R{y} = w R{x̂} + v_w x̂ + v_b
//! R-backward: R{dx̂} = w R{dy} + v_w dy,   A = dx̂ − ⟨dx̂⟩ − x̂ ⟨dx̂ x̂⟩
//!             R{dx} = R{s} A + s (R{dx̂} − ⟨R{dx̂}⟩ − R{x̂} ⟨dx̂ x̂⟩ − x̂ ⟨R{dx̂} x̂ + dx̂ R{x̂}⟩)
//!             R{dw} = Σ_rows (R{dy} x̂ + dy R{x̂}),   R{db} = Σ_rows R{dy}
//! ```
//! (Pearlmutter 1994; the same algebra as batch norm's train mode, over rows instead of
//! channels.) The cache is μ and s per row, not x̂: each pass forms x̂ of a row again from
//! the taped x while the row is in cache, as PyTorch keeps only mean and rstd. Each pass is
//! one loop over the contiguous rows, with row-sized scratch allocated once per call and
//! vectorizable row sums (`super::lanes`); the reverse passes write dx (R{dx}) over
//! dy's (R{dy}'s) buffer.
//!
//! The row kernels (`NormRows`) serve group norm too: there a row is one (sample, group)
//! block and the affine coefficients repeat per channel (see [`super::group_norm`]).

use std::borrow::Cow;

use ndarray::{ArrayD, ArrayViewD};

use super::lanes::{dot, sq_dev, sum};
use super::vmath::wide;
use super::{EngineOp, Fwd, Grads, Taped};
use crate::engine::error::ShapeError;
use crate::engine::Scalar;

/// Layer norm over torch-layout axes `axes_from..rank`. Parameters: `[weight, bias]` with
/// `affine && bias`, `[weight]` with `affine` alone, none without `affine`; each holds as
/// many values as the normalized trailing axes (shaped like them, as in PyTorch).
#[derive(Clone, Debug, PartialEq)]
pub struct LayerNorm {
    pub axes_from: usize,
    pub eps: f64,
    pub affine: bool,
    pub bias: bool,
}

/// Per-row statistics of the forward pass.
pub struct NormCache<T> {
    pub mean: Vec<T>,
    /// s = 1/√(σ² + ε).
    pub rstd: Vec<T>,
}

/// Per-row means of R{x} and of x̂ R{x} (empty where R{x} is zero).
pub struct NormRCache<T> {
    mean_r: Vec<T>,
    mean_hr: Vec<T>,
}

/// A contiguous buffer's values as a slice (copied only if not in standard layout).
pub(super) fn flat<'a, T: Scalar>(a: &'a ArrayD<T>) -> Cow<'a, [T]> {
    match a.as_slice() {
        Some(s) => Cow::Borrowed(s),
        None => Cow::Owned(a.iter().copied().collect()),
    }
}

/// A parameter view's values as a slice (θ's views are contiguous).
pub(super) fn pflat<'a, T: Scalar>(a: &'a ArrayViewD<'a, T>) -> Cow<'a, [T]> {
    match a.as_slice() {
        Some(s) => Cow::Borrowed(s),
        None => Cow::Owned(a.iter().copied().collect()),
    }
}

/// `a` in standard layout, so its buffer can be overwritten row by row.
pub(super) fn standard<T: Scalar>(a: ArrayD<T>) -> ArrayD<T> {
    match a.is_standard_layout() {
        true => a,
        false => a.as_standard_layout().into_owned(),
    }
}

/// The row kernels of layer and group norm: `m` rows of `len` contiguous values; row r
/// takes its affine coefficients from offset (r mod `period`)·len of the expanded weight
/// and bias vectors (`period·len` values), into which the parameter gradients also go.
pub(super) struct NormRows {
    pub m: usize,
    pub len: usize,
    pub period: usize,
    pub eps: f64,
}

/// Where the reverse passes write: dx over the incoming gradient's buffer (when
/// `dx`), and the expanded dw and db to add into (when given).
pub(super) struct NormGrads<'a, T> {
    pub dx: bool,
    pub dw: Option<&'a mut [T]>,
    pub db: Option<&'a mut [T]>,
}

impl NormRows {
    fn n<T: Scalar>(&self) -> T {
        T::from_usize(self.len).expect("row length")
    }

    /// Row r's values.
    fn row(&self, r: usize) -> std::ops::Range<usize> {
        r * self.len..(r + 1) * self.len
    }

    /// Row r's coefficients in the expanded affine vectors.
    fn at(&self, r: usize) -> std::ops::Range<usize> {
        self.row(r % self.period)
    }

    /// x̂ of row r into `h`.
    #[inline(always)]
    fn xhat<T: Scalar>(&self, x: &[T], c: &NormCache<T>, r: usize, h: &mut [T]) {
        let (mu, s) = (c.mean[r], c.rstd[r]);
        for (h, &x) in h.iter_mut().zip(&x[self.row(r)]) {
            *h = (x - mu) * s;
        }
    }

    /// y = w x̂ + b for every row; `w` and `b` expanded.
    pub fn forward<T: Scalar>(&self, x: &[T], w: &[T], b: &[T]) -> (Vec<T>, NormCache<T>) {
        let n = self.n::<T>();
        let eps = T::from_f(self.eps);
        let mut y = vec![T::zero(); x.len()];
        let mut c = NormCache {
            mean: Vec::with_capacity(self.m),
            rstd: Vec::with_capacity(self.m),
        };
        wide!({
            for r in 0..self.m {
                let (xr, yr) = (&x[self.row(r)], &mut y[self.row(r)]);
                let mu = sum(xr) / n;
                let s = T::one() / (sq_dev(xr, mu) / n + eps).sqrt();
                c.mean.push(mu);
                c.rstd.push(s);
                let (wr, br) = (&w[self.at(r)], &b[self.at(r)]);
                for (((y, &x), &w), &b) in yr.iter_mut().zip(xr).zip(wr).zip(br) {
                    *y = (x - mu) * s * w + b;
                }
            }
        },);
        (y, c)
    }

    /// With `g` = dy in: dw, db added into the expanded vectors, and dx written over `g`
    /// (where asked).
    pub fn backward<T: Scalar>(
        &self,
        x: &[T],
        c: &NormCache<T>,
        w: &[T],
        g: &mut [T],
        mut out: NormGrads<T>,
    ) {
        let n = self.n::<T>();
        let (mut h, mut d) = (vec![T::zero(); self.len], vec![T::zero(); self.len]);
        wide!({
            for r in 0..self.m {
                let (gr, at) = (&mut g[self.row(r)], self.at(r));
                self.xhat(x, c, r, &mut h);
                if let Some(dw) = out.dw.as_deref_mut() {
                    for ((dw, &g), &h) in dw[at.clone()].iter_mut().zip(&*gr).zip(&h) {
                        *dw += g * h;
                    }
                }
                if let Some(db) = out.db.as_deref_mut() {
                    for (db, &g) in db[at.clone()].iter_mut().zip(&*gr) {
                        *db += g;
                    }
                }
                if !out.dx {
                    continue;
                }
                for ((d, &g), &w) in d.iter_mut().zip(&*gr).zip(&w[at]) {
                    *d = g * w;
                }
                let (a1, a2) = (sum(&d) / n, dot(&d, &h) / n);
                let s = c.rstd[r];
                for ((dx, &d), &h) in gr.iter_mut().zip(&d).zip(&h) {
                    *dx = s * (d - a1 - h * a2);
                }
            }
        },);
    }

    /// R{y} and the per-row means R{x̂} is formed from; `vw`, `vb` (expanded) and `rx`
    /// are `None` where zero, and R{y} is `None` where all are.
    pub fn r_forward<T: Scalar>(
        &self,
        x: &[T],
        (c, w): (&NormCache<T>, &[T]),
        (vw, vb): (Option<&[T]>, Option<&[T]>),
        rx: Option<&[T]>,
    ) -> (Option<Vec<T>>, NormRCache<T>) {
        let mut rc = NormRCache {
            mean_r: vec![],
            mean_hr: vec![],
        };
        if rx.is_none() && vw.is_none() && vb.is_none() {
            return (None, rc);
        }
        let n = self.n::<T>();
        let zeros = vec![T::zero(); self.len];
        let mut ry = vec![T::zero(); x.len()];
        let mut h = vec![T::zero(); self.len];
        wide!({
            for r in 0..self.m {
                let at = self.at(r);
                self.xhat(x, c, r, &mut h);
                let rxr = rx.map_or(&zeros[..], |rx| &rx[self.row(r)]);
                let (mr, mhr) = match rx {
                    Some(_) => (sum(rxr) / n, dot(&h, rxr) / n),
                    None => (T::zero(), T::zero()),
                };
                if rx.is_some() {
                    rc.mean_r.push(mr);
                    rc.mean_hr.push(mhr);
                }
                let s = c.rstd[r];
                let vwr = vw.map_or(&zeros[..], |v| &v[at.clone()]);
                let vbr = vb.map_or(&zeros[..], |v| &v[at.clone()]);
                let yr = &mut ry[self.row(r)];
                let it = yr.iter_mut().zip(rxr).zip(&h).zip(&w[at]).zip(vwr).zip(vbr);
                for (((((y, &rx), &h), &w), &vw), &vb) in it {
                    *y = w * (s * (rx - mr - h * mhr)) + vw * h + vb;
                }
            }
        },);
        (Some(ry), rc)
    }

    /// With `rg` = R{dy} in: R{dw}, R{db} added into the expanded vectors, and R{dx}
    /// written over `rg` (where asked). `vw` and `rx` are `None` where zero.
    pub fn r_backward<T: Scalar>(
        &self,
        x: &[T],
        (c, rc, w): (&NormCache<T>, &NormRCache<T>, &[T]),
        (vw, rx): (Option<&[T]>, Option<&[T]>),
        (gy, rg): (&[T], &mut [T]),
        mut out: NormGrads<T>,
    ) {
        let n = self.n::<T>();
        let zero = T::zero();
        let zeros = vec![zero; self.len];
        let (mut h, mut d, mut rd, mut rh) =
            (zeros.clone(), zeros.clone(), zeros.clone(), zeros.clone());
        wide!({
            for r in 0..self.m {
                let at = self.at(r);
                let (gr, rgr) = (&gy[self.row(r)], &mut rg[self.row(r)]);
                let s = c.rstd[r];
                self.xhat(x, c, r, &mut h);
                // R{x̂} and R{s} (zero without R{x})
                let rs = match rx {
                    Some(rx) => {
                        let (mr, mhr) = (rc.mean_r[r], rc.mean_hr[r]);
                        for ((rh, &rx), &h) in rh.iter_mut().zip(&rx[self.row(r)]).zip(&h) {
                            *rh = s * (rx - mr - h * mhr);
                        }
                        -s * s * mhr
                    }
                    None => zero,
                };
                if let Some(dw) = out.dw.as_deref_mut() {
                    let it = dw[at.clone()]
                        .iter_mut()
                        .zip(&*rgr)
                        .zip(gr)
                        .zip(&h)
                        .zip(&rh);
                    for ((((dw, &rg), &g), &h), &rh) in it {
                        *dw += rg * h + g * rh;
                    }
                }
                if let Some(db) = out.db.as_deref_mut() {
                    for (db, &rg) in db[at.clone()].iter_mut().zip(&*rgr) {
                        *db += rg;
                    }
                }
                if !out.dx {
                    continue;
                }
                let wr = &w[at.clone()];
                let vwr = vw.map_or(&zeros[..], |v| &v[at]);
                for ((d, &g), &w) in d.iter_mut().zip(gr).zip(wr) {
                    *d = g * w;
                }
                let it = rd.iter_mut().zip(&*rgr).zip(wr).zip(gr).zip(vwr);
                for ((((rd, &rg), &w), &g), &v) in it {
                    *rd = rg * w + g * v;
                }
                let (a1, a2) = (sum(&d) / n, dot(&d, &h) / n);
                let b1 = sum(&rd) / n;
                let b2 = (dot(&rd, &h) + dot(&d, &rh)) / n;
                let it = rgr.iter_mut().zip(&d).zip(&h).zip(&rd).zip(&rh);
                for ((((dx, &d), &h), &rd), &rh) in it {
                    *dx = rs * (d - a1 - h * a2) + s * (rd - b1 - rh * a2 - h * b2);
                }
            }
        },);
    }
}

impl LayerNorm {
    fn rows(&self, shape: &[usize]) -> NormRows {
        let len: usize = shape[self.axes_from..].iter().product();
        NormRows {
            m: shape.iter().product::<usize>() / len.max(1),
            len,
            period: 1,
            eps: self.eps,
        }
    }

    fn has_bias(&self) -> bool {
        self.affine && self.bias
    }

    /// Parameter (or direction) tensor `k` as a slice, `fill` repeated where the op has
    /// no such tensor.
    fn coef<'a, T: Scalar>(
        &self,
        p: &'a [ArrayViewD<'a, T>],
        k: usize,
        len: usize,
        fill: T,
    ) -> Cow<'a, [T]> {
        let has = match k {
            0 => self.affine,
            _ => self.has_bias(),
        };
        match has {
            true => {
                assert_eq!(p[k].len(), len, "layer norm: parameter size");
                pflat(&p[k])
            }
            false => Cow::Owned(vec![fill; len]),
        }
    }

    /// Runs a reverse kernel over the incoming (R-)gradient `g` (dx written over it when
    /// wanted) with dw, db accumulators where wanted, and shapes the results.
    fn grads<T: Scalar>(
        &self,
        a: &Taped<T>,
        g: ArrayD<T>,
        run: impl FnOnce(&NormRows, &mut [T], NormGrads<T>),
    ) -> Grads<T> {
        let rows = self.rows(a.x[0].shape());
        let want_dp = a.want_dp && self.affine;
        let (mut dw, mut db) = (vec![], vec![]);
        if want_dp {
            dw = vec![T::zero(); rows.len];
            db = vec![T::zero(); if self.has_bias() { rows.len } else { 0 }];
        }
        let mut g = standard(g);
        run(
            &rows,
            g.as_slice_mut().expect("standard layout"),
            NormGrads {
                dx: a.need_dx(0),
                dw: want_dp.then_some(&mut dw[..]),
                db: (want_dp && self.has_bias()).then_some(&mut db[..]),
            },
        );
        let shaped = |v: Vec<T>, k: usize| ArrayD::from_shape_vec(a.p[k].raw_dim(), v).ok();
        let dp = match (want_dp, self.has_bias()) {
            (false, _) => vec![],
            (true, false) => vec![shaped(dw, 0)],
            (true, true) => vec![shaped(dw, 0), shaped(db, 1)],
        };
        Grads {
            dx: vec![a.need_dx(0).then_some(g)],
            dp,
        }
    }
}

impl EngineOp for LayerNorm {
    const KIND: &'static str = "layer-norm";
    type Cache<T: Scalar> = NormCache<T>;
    type RCache<T: Scalar> = NormRCache<T>;

    fn infer_shape(&self, x: &[&[usize]]) -> Result<Vec<usize>, ShapeError> {
        let x = x[0];
        if self.axes_from >= x.len() {
            return Err(ShapeError::AxisRange {
                axis: self.axes_from,
                rank: x.len(),
            });
        }
        Ok(x.to_vec())
    }

    fn forward<T: Scalar>(&self, a: &Fwd<T>) -> (ArrayD<T>, NormCache<T>) {
        let x = a.x[0];
        let rows = self.rows(x.shape());
        let w = self.coef(a.p, 0, rows.len, T::one());
        let b = self.coef(a.p, 1, rows.len, T::zero());
        let (y, c) = rows.forward(&flat(x), &w, &b);
        (ArrayD::from_shape_vec(x.raw_dim(), y).expect("size"), c)
    }

    fn cache_bytes<T: Scalar>(c: &NormCache<T>) -> usize {
        (c.mean.len() + c.rstd.len()) * std::mem::size_of::<T>()
    }

    fn r_backward_reads_gy(&self) -> bool {
        true
    }

    fn backward<T: Scalar>(&self, a: &Taped<T>, c: &NormCache<T>, gy: ArrayD<T>) -> Grads<T> {
        let x = flat(a.x[0]);
        let len = self.rows(a.x[0].shape()).len;
        let w = self.coef(a.p, 0, len, T::one());
        self.grads(a, gy, |rows, g, out| rows.backward(&x, c, &w, g, out))
    }

    fn r_forward<T: Scalar>(
        &self,
        a: &Taped<T>,
        c: &NormCache<T>,
    ) -> (Option<ArrayD<T>>, NormRCache<T>) {
        let x = a.x[0];
        let rows = self.rows(x.shape());
        let w = self.coef(a.p, 0, rows.len, T::one());
        let vw = self.affine.then(|| pflat(&a.v[0]));
        let vb = self.has_bias().then(|| pflat(&a.v[1]));
        let rx = a.rx(0).map(flat);
        let (ry, rc) = rows.r_forward(
            &flat(x),
            (c, &w),
            (vw.as_deref(), vb.as_deref()),
            rx.as_deref(),
        );
        let ry = ry.map(|v| ArrayD::from_shape_vec(x.raw_dim(), v).expect("size"));
        (ry, rc)
    }

    fn r_backward<T: Scalar>(
        &self,
        a: &Taped<T>,
        c: &NormCache<T>,
        rc: &NormRCache<T>,
        gy: &ArrayD<T>,
        rgy: ArrayD<T>,
    ) -> Grads<T> {
        let x = flat(a.x[0]);
        let len = self.rows(a.x[0].shape()).len;
        let w = self.coef(a.p, 0, len, T::one());
        let vw = self.affine.then(|| pflat(&a.v[0]));
        let rx = a.rx(0).map(flat);
        let gy = flat(gy);
        self.grads(a, rgy, |rows, rg, out| {
            rows.r_backward(
                &x,
                (c, rc, &w),
                (vw.as_deref(), rx.as_deref()),
                (&gy, rg),
                out,
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::ops::testing::{check_op, randn, rng, At};

    #[test]
    fn passes_with_and_without_affine() {
        let mut r = rng(1);
        let x = randn(&[2, 3, 5], &mut r) * 2.0 + 0.5;
        for (affine, bias) in [(true, true), (true, false), (false, false)] {
            for axes_from in [1, 2] {
                let op = LayerNorm {
                    axes_from,
                    eps: 1e-5,
                    affine,
                    bias,
                };
                eprintln!("{op:?}");
                let norm = &x.shape()[axes_from..];
                let mut p = vec![];
                if affine {
                    p.push(randn(norm, &mut r) + 1.0);
                }
                if affine && bias {
                    p.push(randn(norm, &mut r));
                }
                check_op(&op, std::slice::from_ref(&x), &p, 1e-6);
            }
        }
        // rows longer than the lanes of the row sums, with a tail
        let op = LayerNorm {
            axes_from: 1,
            eps: 1e-6,
            affine: true,
            bias: true,
        };
        let x = randn(&[3, 37], &mut r);
        let p = [randn(&[37], &mut r), randn(&[37], &mut r)];
        check_op(&op, &[x], &p, 1e-6);
    }

    /// Each row normalized: mean 0, biased variance 1/(1 + ε/σ²) of the weights' scale.
    #[test]
    fn rows_are_normalized() {
        let mut r = rng(2);
        let x = randn(&[4, 16], &mut r) * 3.0 + 7.0;
        let op = LayerNorm {
            axes_from: 1,
            eps: 0.0,
            affine: false,
            bias: false,
        };
        let y = At::<_, f64>::new(&op, &[x], &[]).forward().0;
        for row in y.outer_iter() {
            let m = row.sum() / 16.0;
            let v = row.iter().map(|a| (a - m) * (a - m)).sum::<f64>() / 16.0;
            assert!(m.abs() < 1e-14 && (v - 1.0).abs() < 1e-13, "{m} {v}");
        }
    }
}
