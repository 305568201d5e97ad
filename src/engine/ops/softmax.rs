//! Softmax and log-softmax along one axis of a torch-layout value (ONNX `Softmax` /
//! `LogSoftmax` of opset ≥ 13, `torch.softmax(x, dim)`), e.g. attention weights over the
//! last axis of `[N, H, T, T]` scores.
//!
//! Per row along the axis, with ⟨a, b⟩ = Σ_k a_k b_k over the row:
//!
//! ```text
//! softmax:     y = e^(x − max x) / Σ e^(x − max x)
//!   backward:   dx = y ⊙ (dy − ⟨dy, y⟩)
//!   R-forward:  R{y} = y ⊙ (R{x} − ⟨y, R{x}⟩)
//!   R-backward: R{dx} = R{y} ⊙ (dy − ⟨dy, y⟩) + y ⊙ (R{dy} − ⟨R{dy}, y⟩ − ⟨dy, R{y}⟩)
//! log-softmax: y = x − max x − ln Σ e^(x − max x),   p = e^y
//!   backward:   dx = dy − p Σ dy
//!   R-forward:  R{y} = R{x} − ⟨p, R{x}⟩
//!   R-backward: R{dx} = R{dy} − p Σ R{dy} − p ⊙ R{y} Σ dy
//! ```
//! (Pearlmutter 1994.) Nothing is cached: the passes read y from the tape and form R{y}
//! again from R{x} (one dot product a row) rather than keep a second `[N, H, T, T]` array.
//! Rows along the last axis are contiguous and used in place, and the reverse passes write
//! dx (R{dx}) over dy's (R{dy}'s) buffer; another axis is first moved last (one copy).
//! Each row takes a few passes over contiguous memory with vectorizable sums
//! (`super::lanes`) and, in f32, a vectorizable exp (`super::vmath`); nothing is
//! allocated per row.

use std::borrow::Cow;
use std::ops::Range;

use ndarray::{ArrayD, IxDyn};

use super::lanes::{dot, max, sum};
use super::layer_norm::standard;
use super::vmath::{exp, wide};
use super::{EngineOp, Fwd, Grads, Taped};
use crate::engine::error::ShapeError;
use crate::engine::Scalar;

/// Softmax (`log == false`) or log-softmax along torch-layout axis `axis`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Softmax {
    pub axis: usize,
    pub log: bool,
}

/// The permutation that moves `axis` last.
fn axis_last(ndim: usize, axis: usize) -> Vec<usize> {
    (0..ndim).filter(|&i| i != axis).chain([axis]).collect()
}

impl Softmax {
    /// Whether rows are already contiguous (the axis is last).
    fn is_last(&self, ndim: usize) -> bool {
        self.axis + 1 == ndim
    }

    /// `x`'s values as rows along the axis, row-major: borrowed when the axis is last.
    fn rows<'a, T: Scalar>(&self, x: &'a ArrayD<T>) -> Cow<'a, [T]> {
        if self.is_last(x.ndim()) {
            if let Some(s) = x.as_slice() {
                return Cow::Borrowed(s);
            }
        }
        let p = axis_last(x.ndim(), self.axis);
        Cow::Owned(x.view().permuted_axes(IxDyn(&p)).iter().copied().collect())
    }

    /// The array of shape `shape` whose rows along the axis are `data` (row-major).
    fn unrows<T: Scalar>(&self, data: Vec<T>, shape: &[usize]) -> ArrayD<T> {
        if self.is_last(shape.len()) {
            return ArrayD::from_shape_vec(IxDyn(shape), data).expect("size");
        }
        let p = axis_last(shape.len(), self.axis);
        let moved: Vec<usize> = p.iter().map(|&i| shape[i]).collect();
        let mut inv = vec![0; p.len()];
        for (i, &a) in p.iter().enumerate() {
            inv[a] = i;
        }
        ArrayD::from_shape_vec(IxDyn(&moved), data)
            .expect("size")
            .permuted_axes(IxDyn(&inv))
            .as_standard_layout()
            .into_owned()
    }

    /// Runs `row(r, o)` on each row `o` of `data` (rows of `len` values, row-major),
    /// compiled [`wide!`]; `r` is the row's range in the inputs' rows.
    #[inline(always)]
    fn each<T: Scalar>(len: usize, data: &mut [T], mut row: impl FnMut(Range<usize>, &mut [T])) {
        if len == 0 {
            return;
        }
        wide!({
            for (r, o) in data.chunks_exact_mut(len).enumerate() {
                row(r * len..(r + 1) * len, o);
            }
        },)
    }

    /// An array shaped like `shape` whose rows along the axis `row(r, o)` fills.
    #[inline(always)]
    fn fill<T: Scalar>(
        &self,
        shape: &[usize],
        row: impl FnMut(Range<usize>, &mut [T]),
    ) -> ArrayD<T> {
        let mut out = vec![T::zero(); shape.iter().product()];
        Self::each(shape[self.axis], &mut out, row);
        self.unrows(out, shape)
    }

    /// `g` with each of its rows along the axis rewritten by `row(r, o)`: in its own
    /// buffer when the axis is last.
    #[inline(always)]
    fn rewrite<T: Scalar>(
        &self,
        g: ArrayD<T>,
        row: impl FnMut(Range<usize>, &mut [T]),
    ) -> ArrayD<T> {
        let len = g.shape()[self.axis];
        if self.is_last(g.ndim()) {
            let mut g = standard(g);
            Self::each(len, g.as_slice_mut().expect("standard layout"), row);
            g
        } else {
            let mut data = self.rows(&g).into_owned();
            Self::each(len, &mut data, row);
            self.unrows(data, g.shape())
        }
    }
}

impl EngineOp for Softmax {
    const KIND: &'static str = "softmax";
    type Cache<T: Scalar> = ();
    type RCache<T: Scalar> = ();

    fn infer_shape(&self, x: &[&[usize]]) -> Result<Vec<usize>, ShapeError> {
        let x = x[0];
        if self.axis >= x.len() {
            return Err(ShapeError::AxisRange {
                axis: self.axis,
                rank: x.len(),
            });
        }
        Ok(x.to_vec())
    }

    fn forward<T: Scalar>(&self, a: &Fwd<T>) -> (ArrayD<T>, ()) {
        let x = self.rows(a.x[0]);
        let log = self.log;
        let y = self.fill(a.x[0].shape(), |r, o| {
            let x = &x[r];
            let m = max(x);
            for (o, &v) in o.iter_mut().zip(x) {
                *o = exp(v - m);
            }
            let s = sum(o);
            if log {
                let ls = s.ln();
                for (o, &v) in o.iter_mut().zip(x) {
                    *o = (v - m) - ls;
                }
            } else {
                let inv = T::one() / s;
                o.iter_mut().for_each(|o| *o *= inv);
            }
        });
        (y, ())
    }

    fn r_backward_reads_gy(&self) -> bool {
        true
    }

    fn backward<T: Scalar>(&self, a: &Taped<T>, _c: &(), gy: ArrayD<T>) -> Grads<T> {
        if !a.need_dx(0) {
            return Grads::none();
        }
        let y = self.rows(a.y);
        let log = self.log;
        let dx = self.rewrite(gy, |r, g| {
            let y = &y[r];
            if log {
                let sg = sum(g);
                for (g, &y) in g.iter_mut().zip(y) {
                    *g -= exp(y) * sg;
                }
            } else {
                let sg = dot(g, y);
                for (g, &y) in g.iter_mut().zip(y) {
                    *g = y * (*g - sg);
                }
            }
        });
        Grads::input(dx)
    }

    fn r_forward<T: Scalar>(&self, a: &Taped<T>, _c: &()) -> (Option<ArrayD<T>>, ()) {
        let Some(rx) = a.rx(0) else {
            return (None, ());
        };
        let (y, rx) = (self.rows(a.y), self.rows(rx));
        let log = self.log;
        let ry = self.fill(a.y.shape(), |r, o| {
            let (y, rx) = (&y[r.clone()], &rx[r]);
            if log {
                // p first, then R{y} = R{x} − ⟨p, R{x}⟩
                for (o, &y) in o.iter_mut().zip(y) {
                    *o = exp(y);
                }
                let sr = dot(o, rx);
                for (o, &rx) in o.iter_mut().zip(rx) {
                    *o = rx - sr;
                }
            } else {
                let sr = dot(y, rx);
                for ((o, &y), &rx) in o.iter_mut().zip(y).zip(rx) {
                    *o = y * (rx - sr);
                }
            }
        });
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
        if !a.need_dx(0) {
            return Grads::none();
        }
        let (y, g) = (self.rows(a.y), self.rows(gy));
        let rx = a.rx(0).map(|rx| self.rows(rx));
        let log = self.log;
        // row scratch: p (log-softmax) or dy ⊙ y (softmax)
        let mut t = vec![T::zero(); a.y.shape()[self.axis]];
        let rdx = self.rewrite(rgy, |r, rg| {
            let (y, g) = (&y[r.clone()], &g[r.clone()]);
            let rx = rx.as_ref().map(|rx| &rx[r]);
            if log {
                // R{dx} = R{dy} − p (Σ R{dy} + (R{x} − ⟨p, R{x}⟩) Σ dy)
                for (t, &y) in t.iter_mut().zip(y) {
                    *t = exp(y);
                }
                let srg = sum(rg);
                match rx {
                    Some(rx) => {
                        let (sr, sg) = (dot(&t, rx), sum(g));
                        for ((rg, &p), &rx) in rg.iter_mut().zip(&t).zip(rx) {
                            *rg -= p * (srg + (rx - sr) * sg);
                        }
                    }
                    None => {
                        for (rg, &p) in rg.iter_mut().zip(&t) {
                            *rg -= p * srg;
                        }
                    }
                }
            } else {
                let srg = dot(rg, y);
                match rx {
                    Some(rx) => {
                        // ⟨dy, R{y}⟩ = ⟨dy ⊙ y, R{x}⟩ − ⟨y, R{x}⟩⟨dy, y⟩
                        for ((t, &g), &y) in t.iter_mut().zip(g).zip(y) {
                            *t = g * y;
                        }
                        let (sg, sr) = (sum(&t), dot(y, rx));
                        let sgry = dot(&t, rx) - sr * sg;
                        for (((rg, &y), &g), &rx) in rg.iter_mut().zip(y).zip(g).zip(rx) {
                            *rg = y * ((rx - sr) * (g - sg) + *rg - srg - sgry);
                        }
                    }
                    None => {
                        for (rg, &y) in rg.iter_mut().zip(y) {
                            *rg = y * (*rg - srg);
                        }
                    }
                }
            }
        });
        Grads::input(rdx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::ops::testing::{check_op, randn, rng, At};

    #[test]
    fn passes_along_each_axis() {
        let mut r = rng(1);
        let x = randn(&[2, 3, 4, 5], &mut r) * 2.0;
        for log in [false, true] {
            for axis in 0..4 {
                let op = Softmax { axis, log };
                eprintln!("{op:?}");
                check_op(&op, std::slice::from_ref(&x), &[], 1e-6);
            }
        }
        // a length-1 axis and a 1-D input
        check_op(
            &Softmax {
                axis: 1,
                log: false,
            },
            &[randn(&[3, 1], &mut r)],
            &[],
            1e-6,
        );
        check_op(
            &Softmax { axis: 0, log: true },
            &[randn(&[7], &mut r)],
            &[],
            1e-6,
        );
    }

    #[test]
    fn values_are_stable_for_large_inputs() {
        let x = ArrayD::from_shape_vec(IxDyn(&[1, 3]), vec![1000.0, 1001.0, 999.0]).unwrap();
        let p = At::<_, f64>::new(
            &Softmax {
                axis: 1,
                log: false,
            },
            std::slice::from_ref(&x),
            &[],
        )
        .forward()
        .0;
        let e = [1.0f64, 1f64.exp(), (-1f64).exp()];
        let s: f64 = e.iter().sum();
        for (got, e) in p.iter().zip(e) {
            assert!((got - e / s).abs() < 1e-15);
        }
        let l = At::<_, f64>::new(&Softmax { axis: 1, log: true }, &[x], &[])
            .forward()
            .0;
        for (got, e) in l.iter().zip(e) {
            assert!((got - (e / s).ln()).abs() < 1e-13);
        }
    }

    #[test]
    fn shape_rule() {
        let op = Softmax {
            axis: 2,
            log: false,
        };
        assert_eq!(op.infer_shape(&[&[2, 3, 4]]).unwrap(), vec![2, 3, 4]);
        assert!(op.infer_shape(&[&[2, 3]]).is_err());
    }
}
