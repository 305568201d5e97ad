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
//! vectorizable row sums ([`super::lanes`]).
//!
//! The row kernels ([`NormRows`]) serve group norm too: there a row is one (sample, group)
//! block and the affine coefficients repeat per channel (see [`super::group_norm`]).

use std::borrow::Cow;

use ndarray::{ArrayD, ArrayViewD};

use super::lanes::{dot, sq_dev, sum};
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

/// The row kernels of layer and group norm: `m` rows of `len` contiguous values; row r
/// takes its affine coefficients from offset (r mod `period`)·len of the expanded weight
/// and bias vectors (`period·len` values), into which the parameter gradients also go.
pub(super) struct NormRows {
    pub m: usize,
    pub len: usize,
    pub period: usize,
    pub eps: f64,
}

/// What the reverse pass asks for: dx, and the expanded dw and db to add into.
pub(super) struct NormGrads<'a, T> {
    pub dx: Option<&'a mut [T]>,
    pub dw: Option<&'a mut [T]>,
    pub db: Option<&'a mut [T]>,
}

impl NormRows {
    fn n<T: Scalar>(&self) -> T {
        T::from_usize(self.len).expect("row length")
    }

    /// Offset of row r's coefficients in the expanded affine vectors.
    fn at(&self, r: usize) -> std::ops::Range<usize> {
        let o = (r % self.period) * self.len;
        o..o + self.len
    }

    /// x̂ of row r into `h`.
    fn xhat<T: Scalar>(&self, x: &[T], c: &NormCache<T>, r: usize, h: &mut [T]) {
        let (mu, s) = (c.mean[r], c.rstd[r]);
        for (h, &x) in h.iter_mut().zip(x) {
            *h = (x - mu) * s;
        }
    }

    /// y = w x̂ + b for every row; `w` expanded, `b` expanded or none.
    pub fn forward<T: Scalar>(&self, x: &[T], w: &[T], b: Option<&[T]>) -> (Vec<T>, NormCache<T>) {
        let n = self.n::<T>();
        let eps = T::from_f(self.eps);
        let mut y = vec![T::zero(); x.len()];
        let mut c = NormCache {
            mean: Vec::with_capacity(self.m),
            rstd: Vec::with_capacity(self.m),
        };
        for r in 0..self.m {
            let rows = r * self.len..(r + 1) * self.len;
            let (xr, yr) = (&x[rows.clone()], &mut y[rows]);
            let mu = sum(xr) / n;
            let s = T::one() / (sq_dev(xr, mu) / n + eps).sqrt();
            c.mean.push(mu);
            c.rstd.push(s);
            let wr = &w[self.at(r)];
            match b {
                Some(b) => {
                    let br = &b[self.at(r)];
                    for (((y, &x), &w), &b) in yr.iter_mut().zip(xr).zip(wr).zip(br) {
                        *y = (x - mu) * s * w + b;
                    }
                }
                None => {
                    for ((y, &x), &w) in yr.iter_mut().zip(xr).zip(wr) {
                        *y = (x - mu) * s * w;
                    }
                }
            }
        }
        (y, c)
    }

    /// dx (overwriting nothing else) and dw, db added into the expanded vectors.
    pub fn backward<T: Scalar>(
        &self,
        x: &[T],
        c: &NormCache<T>,
        w: &[T],
        gy: &[T],
        mut out: NormGrads<T>,
    ) {
        let n = self.n::<T>();
        let (mut h, mut d) = (vec![T::zero(); self.len], vec![T::zero(); self.len]);
        for r in 0..self.m {
            let rows = r * self.len..(r + 1) * self.len;
            let (xr, gr) = (&x[rows.clone()], &gy[rows.clone()]);
            let at = self.at(r);
            self.xhat(xr, c, r, &mut h);
            if let Some(dw) = out.dw.as_deref_mut() {
                for ((dw, &g), &h) in dw[at.clone()].iter_mut().zip(gr).zip(&h) {
                    *dw += g * h;
                }
            }
            if let Some(db) = out.db.as_deref_mut() {
                for (db, &g) in db[at.clone()].iter_mut().zip(gr) {
                    *db += g;
                }
            }
            let Some(dx) = out.dx.as_deref_mut() else {
                continue;
            };
            for ((d, &g), &w) in d.iter_mut().zip(gr).zip(&w[at]) {
                *d = g * w;
            }
            let (a1, a2) = (sum(&d) / n, dot(&d, &h) / n);
            let s = c.rstd[r];
            for ((dx, &d), &h) in dx[rows].iter_mut().zip(&d).zip(&h) {
                *dx = s * (d - a1 - h * a2);
            }
        }
    }

    /// R{y} (`None` where identically zero) and the per-row means R{x̂} is formed from.
    #[allow(clippy::too_many_arguments)]
    pub fn r_forward<T: Scalar>(
        &self,
        x: &[T],
        c: &NormCache<T>,
        w: &[T],
        vw: Option<&[T]>,
        vb: Option<&[T]>,
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
        let mut ry = vec![T::zero(); x.len()];
        let mut h = vec![T::zero(); self.len];
        for r in 0..self.m {
            let rows = r * self.len..(r + 1) * self.len;
            let at = self.at(r);
            let yr = &mut ry[rows.clone()];
            self.xhat(&x[rows.clone()], c, r, &mut h);
            if let Some(rx) = rx {
                let rxr = &rx[rows];
                let (mr, mhr) = (sum(rxr) / n, dot(&h, rxr) / n);
                rc.mean_r.push(mr);
                rc.mean_hr.push(mhr);
                let s = c.rstd[r];
                for (((y, &rx), &h), &w) in yr.iter_mut().zip(rxr).zip(&h).zip(&w[at.clone()]) {
                    *y = w * (s * (rx - mr - h * mhr));
                }
            }
            if let Some(vw) = vw {
                for ((y, &h), &v) in yr.iter_mut().zip(&h).zip(&vw[at.clone()]) {
                    *y += v * h;
                }
            }
            if let Some(vb) = vb {
                for (y, &v) in yr.iter_mut().zip(&vb[at]) {
                    *y += v;
                }
            }
        }
        (Some(ry), rc)
    }

    /// R{dx} and R{dw}, R{db} added into the expanded vectors.
    #[allow(clippy::too_many_arguments)]
    pub fn r_backward<T: Scalar>(
        &self,
        x: &[T],
        (c, rc): (&NormCache<T>, &NormRCache<T>),
        w: &[T],
        vw: Option<&[T]>,
        rx: Option<&[T]>,
        (gy, rgy): (&[T], &[T]),
        mut out: NormGrads<T>,
    ) {
        let n = self.n::<T>();
        let zero = T::zero();
        let buf = || vec![zero; self.len];
        let (mut h, mut d, mut rd, mut rh) = (buf(), buf(), buf(), buf());
        for r in 0..self.m {
            let rows = r * self.len..(r + 1) * self.len;
            let at = self.at(r);
            let (gr, rgr) = (&gy[rows.clone()], &rgy[rows.clone()]);
            let s = c.rstd[r];
            self.xhat(&x[rows.clone()], c, r, &mut h);
            // R{x̂} and R{s} (zero without R{x})
            let rs = match rx {
                Some(rx) => {
                    let (mr, mhr) = (rc.mean_r[r], rc.mean_hr[r]);
                    for ((rh, &rx), &h) in rh.iter_mut().zip(&rx[rows.clone()]).zip(&h) {
                        *rh = s * (rx - mr - h * mhr);
                    }
                    -s * s * mhr
                }
                None => zero,
            };
            if let Some(dw) = out.dw.as_deref_mut() {
                let it = dw[at.clone()].iter_mut().zip(rgr).zip(gr).zip(&h).zip(&rh);
                for ((((dw, &rg), &g), &h), &rh) in it {
                    *dw += rg * h + g * rh;
                }
            }
            if let Some(db) = out.db.as_deref_mut() {
                for (db, &rg) in db[at.clone()].iter_mut().zip(rgr) {
                    *db += rg;
                }
            }
            let Some(dx) = out.dx.as_deref_mut() else {
                continue;
            };
            let wr = &w[at.clone()];
            for ((d, &g), &w) in d.iter_mut().zip(gr).zip(wr) {
                *d = g * w;
            }
            match vw {
                Some(vw) => {
                    let it = rd.iter_mut().zip(rgr).zip(wr).zip(gr).zip(&vw[at]);
                    for ((((rd, &rg), &w), &g), &v) in it {
                        *rd = rg * w + g * v;
                    }
                }
                None => {
                    for ((rd, &rg), &w) in rd.iter_mut().zip(rgr).zip(wr) {
                        *rd = rg * w;
                    }
                }
            }
            let (a1, a2) = (sum(&d) / n, dot(&d, &h) / n);
            let b1 = sum(&rd) / n;
            let b2 = (dot(&rd, &h) + dot(&d, &rh)) / n;
            let it = dx[rows].iter_mut().zip(&d).zip(&h).zip(&rd).zip(&rh);
            for ((((dx, &d), &h), &rd), &rh) in it {
                *dx = rs * (d - a1 - h * a2) + s * (rd - b1 - rh * a2 - h * b2);
            }
        }
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

    /// The weight as a slice (ones without `affine`).
    fn weight<'a, T: Scalar>(&self, p: &'a [ArrayViewD<'a, T>], len: usize) -> Cow<'a, [T]> {
        match self.affine {
            true => {
                assert_eq!(p[0].len(), len, "layer norm: weight size");
                pflat(&p[0])
            }
            false => Cow::Owned(vec![T::one(); len]),
        }
    }

    /// The parameter gradients `[dw, db?]` shaped like the parameters.
    fn param_grads<T: Scalar>(
        &self,
        p: &[ArrayViewD<T>],
        dw: Vec<T>,
        db: Vec<T>,
    ) -> Vec<Option<ArrayD<T>>> {
        let shaped = |v: Vec<T>, k: usize| ArrayD::from_shape_vec(p[k].raw_dim(), v).ok();
        match (self.affine, self.has_bias()) {
            (false, _) => vec![],
            (true, false) => vec![shaped(dw, 0)],
            (true, true) => vec![shaped(dw, 0), shaped(db, 1)],
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
        let w = self.weight(a.p, rows.len);
        let b = self.has_bias().then(|| pflat(&a.p[1]));
        let (y, c) = rows.forward(&flat(x), &w, b.as_deref());
        (ArrayD::from_shape_vec(x.raw_dim(), y).expect("size"), c)
    }

    fn cache_bytes<T: Scalar>(c: &NormCache<T>) -> usize {
        (c.mean.len() + c.rstd.len()) * std::mem::size_of::<T>()
    }

    fn r_backward_reads_gy(&self) -> bool {
        true
    }

    fn backward<T: Scalar>(&self, a: &Taped<T>, c: &NormCache<T>, gy: ArrayD<T>) -> Grads<T> {
        let x = a.x[0];
        let rows = self.rows(x.shape());
        let w = self.weight(a.p, rows.len);
        let want_dp = a.want_dp && self.affine;
        let mut dw = vec![T::zero(); if want_dp { rows.len } else { 0 }];
        let mut db = vec![
            T::zero();
            if want_dp && self.has_bias() {
                rows.len
            } else {
                0
            }
        ];
        let mut dx = a.need_dx(0).then(|| vec![T::zero(); x.len()]);
        rows.backward(
            &flat(x),
            c,
            &w,
            &flat(&gy),
            NormGrads {
                dx: dx.as_deref_mut(),
                dw: want_dp.then_some(&mut dw[..]),
                db: (want_dp && self.has_bias()).then_some(&mut db[..]),
            },
        );
        Grads {
            dx: vec![dx.map(|v| ArrayD::from_shape_vec(x.raw_dim(), v).expect("size"))],
            dp: match want_dp {
                true => self.param_grads(a.p, dw, db),
                false => vec![],
            },
        }
    }

    fn r_forward<T: Scalar>(
        &self,
        a: &Taped<T>,
        c: &NormCache<T>,
    ) -> (Option<ArrayD<T>>, NormRCache<T>) {
        let x = a.x[0];
        let rows = self.rows(x.shape());
        let w = self.weight(a.p, rows.len);
        let vw = self.affine.then(|| pflat(&a.v[0]));
        let vb = self.has_bias().then(|| pflat(&a.v[1]));
        let rx = a.rx(0).map(flat);
        let (ry, rc) = rows.r_forward(&flat(x), c, &w, vw.as_deref(), vb.as_deref(), rx.as_deref());
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
        let x = a.x[0];
        let rows = self.rows(x.shape());
        let w = self.weight(a.p, rows.len);
        let vw = self.affine.then(|| pflat(&a.v[0]));
        let rx = a.rx(0).map(flat);
        let want_dp = a.want_dp && self.affine;
        let mut dw = vec![T::zero(); if want_dp { rows.len } else { 0 }];
        let mut db = vec![
            T::zero();
            if want_dp && self.has_bias() {
                rows.len
            } else {
                0
            }
        ];
        let mut dx = a.need_dx(0).then(|| vec![T::zero(); x.len()]);
        rows.r_backward(
            &flat(x),
            (c, rc),
            &w,
            vw.as_deref(),
            rx.as_deref(),
            (&flat(gy), &flat(&rgy)),
            NormGrads {
                dx: dx.as_deref_mut(),
                dw: want_dp.then_some(&mut dw[..]),
                db: (want_dp && self.has_bias()).then_some(&mut db[..]),
            },
        );
        Grads {
            dx: vec![dx.map(|v| ArrayD::from_shape_vec(x.raw_dim(), v).expect("size"))],
            dp: match want_dp {
                true => self.param_grads(a.p, dw, db),
                false => vec![],
            },
        }
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
                check_op(&op, &[x.clone()], &p, 1e-6);
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
