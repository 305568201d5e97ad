//! Fully connected layer (PyTorch `nn.Linear`), on the last axis of an input of any rank
//! ≥ 2: `[N, in] → [N, out]`, `[N, T, in] → [N, T, out]` (the leading axes are M rows).
//!
//! ```text
//! x [M, in]   W [out, in]   b [out]   y = x Wᵀ + b   [M, out]
//! backward:   dx = dy W,   dW = dyᵀ x,   db = Σₘ dy
//! R-forward:  R{y} = R{x} Wᵀ + x Vᵀ + v_b
//! R-backward: R{dx} = R{dy} W + dy V,   R{dW} = R{dy}ᵀ x + dyᵀ R{x},   R{db} = Σₘ R{dy}
//! ```
//! R-operator: Pearlmutter (1994), "Fast exact multiplication by the Hessian".

use ndarray::{Array2, ArrayD, ArrayView2, ArrayViewD, Axis, CowArray, Ix2, IxDyn};

use super::{EngineOp, Fwd, Grads, Taped};
use crate::engine::error::ShapeError;
use crate::engine::options::GemmBackend;
use crate::engine::Scalar;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Linear {
    pub in_features: usize,
    pub out_features: usize,
    pub bias: bool,
}

fn m2<'a, T: Scalar>(a: &'a ArrayViewD<'a, T>) -> ArrayView2<'a, T> {
    a.view().into_dimensionality::<Ix2>().expect("2-D tensor")
}

/// An activation `[N, …, F]` as its rows `[M, F]` (a view; a copy only for a
/// non-standard layout of rank > 2).
fn d2<T: Scalar>(a: &ArrayD<T>) -> CowArray<'_, T, Ix2> {
    if a.ndim() == 2 {
        return a
            .view()
            .into_dimensionality::<Ix2>()
            .expect("2-D activation [N, F]")
            .into();
    }
    let f = a.shape()[a.ndim() - 1];
    let m = a.len() / f.max(1);
    match a.view().into_shape_with_order((m, f)) {
        Ok(v) => v.into(),
        Err(_) => a
            .as_standard_layout()
            .into_owned()
            .into_shape_with_order((m, f))
            .expect("standard layout")
            .into(),
    }
}

/// Rows `[M, F]` back to `like`'s leading axes with `F` last.
fn shaped<T: Scalar>(y: Array2<T>, like: &[usize]) -> ArrayD<T> {
    if like.len() == 2 {
        return y.into_dyn();
    }
    let f = y.ncols();
    let shape: Vec<usize> = like[..like.len() - 1].iter().copied().chain([f]).collect();
    y.into_shape_with_order(IxDyn(&shape))
        .expect("standard layout")
}

impl Linear {
    /// x Wᵀ + b.
    fn affine<T: Scalar>(
        &self,
        gemm: GemmBackend,
        x: &ArrayD<T>,
        w: &ArrayViewD<T>,
        b: Option<&ArrayViewD<T>>,
    ) -> Array2<T> {
        let x = d2(x);
        let mut y = Array2::zeros((x.nrows(), self.out_features));
        gemm.gemm(T::one(), x.view(), m2(w).t(), T::zero(), &mut y.view_mut());
        if let Some(b) = b {
            for mut row in y.axis_iter_mut(Axis(0)) {
                row.zip_mut_with(b, |v, &bi| *v += bi);
            }
        }
        y
    }

    /// `[dW, db?]` from `dw` and the bias gradient's source `g` (Σₙ g).
    fn param_grads<T: Scalar>(&self, dw: Array2<T>, g: ArrayView2<T>) -> Vec<Option<ArrayD<T>>> {
        let db = self.bias.then(|| g.sum_axis(Axis(0)).into_dyn());
        vec![Some(dw.into_dyn()), db]
    }
}

impl EngineOp for Linear {
    const KIND: &'static str = "linear";
    type Cache<T: Scalar> = ();
    type RCache<T: Scalar> = ();

    fn infer_shape(&self, x: &[&[usize]]) -> Result<Vec<usize>, ShapeError> {
        let x = x[0];
        if x.len() < 2 || x[x.len() - 1] != self.in_features {
            return Err(ShapeError::Features {
                features: self.in_features,
            });
        }
        let lead = &x[..x.len() - 1];
        Ok(lead.iter().copied().chain([self.out_features]).collect())
    }

    fn forward<T: Scalar>(&self, a: &Fwd<T>) -> (ArrayD<T>, ()) {
        let y = self.affine(a.options.gemm, a.x[0], &a.p[0], a.p.get(1));
        (shaped(y, a.x[0].shape()), ())
    }

    fn r_backward_reads_gy(&self) -> bool {
        true
    }

    fn backward<T: Scalar>(&self, a: &Taped<T>, _c: &(), gy: ArrayD<T>) -> Grads<T> {
        let gemm = a.options.gemm;
        let (x, gy) = (d2(a.x[0]), d2(&gy));
        let (x, gy) = (x.view(), gy.view());
        let dp = if a.want_dp {
            let mut dw = Array2::zeros((self.out_features, self.in_features));
            gemm.gemm(T::one(), gy.t(), x, T::zero(), &mut dw.view_mut());
            self.param_grads(dw, gy)
        } else {
            vec![]
        };
        let dx = a.need_dx(0).then(|| {
            let mut dx = Array2::zeros((x.nrows(), self.in_features));
            gemm.gemm(T::one(), gy, m2(&a.p[0]), T::zero(), &mut dx.view_mut());
            shaped(dx, a.x[0].shape())
        });
        Grads { dx: vec![dx], dp }
    }

    fn r_forward<T: Scalar>(&self, a: &Taped<T>, _c: &()) -> (Option<ArrayD<T>>, ()) {
        let gemm = a.options.gemm;
        let mut ry = self.affine(gemm, a.x[0], &a.v[0], a.v.get(1));
        if let Some(rx) = a.rx(0) {
            gemm.gemm(
                T::one(),
                d2(rx).view(),
                m2(&a.p[0]).t(),
                T::one(),
                &mut ry.view_mut(),
            );
        }
        (Some(shaped(ry, a.x[0].shape())), ())
    }

    fn r_backward<T: Scalar>(
        &self,
        a: &Taped<T>,
        _c: &(),
        _rc: &(),
        gy: &ArrayD<T>,
        rgy: ArrayD<T>,
    ) -> Grads<T> {
        let gemm = a.options.gemm;
        let (x, gy, rgy) = (d2(a.x[0]), d2(gy), d2(&rgy));
        let (x, gy, rgy) = (x.view(), gy.view(), rgy.view());
        let mut rdw = Array2::zeros((self.out_features, self.in_features));
        gemm.gemm(T::one(), rgy.t(), x, T::zero(), &mut rdw.view_mut());
        if let Some(rx) = a.rx(0) {
            let rx = d2(rx);
            gemm.gemm(T::one(), gy.t(), rx.view(), T::one(), &mut rdw.view_mut());
        }
        let rdx = a.need_dx(0).then(|| {
            let mut rdx = Array2::zeros((x.nrows(), self.in_features));
            gemm.gemm(T::one(), rgy, m2(&a.p[0]), T::zero(), &mut rdx.view_mut());
            gemm.gemm(T::one(), gy, m2(&a.v[0]), T::one(), &mut rdx.view_mut());
            shaped(rdx, a.x[0].shape())
        });
        Grads {
            dx: vec![rdx],
            dp: self.param_grads(rdw, rgy),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::ops::oracle::{check, random, Case};
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    #[test]
    fn passes_match_central_differences_at_any_rank() {
        let mut rng = ChaCha8Rng::seed_from_u64(20);
        for (shape, bias) in [
            (vec![3, 4], true),
            (vec![2, 3, 4], true),
            (vec![2, 2, 3, 4], false),
        ] {
            let op = Linear {
                in_features: 4,
                out_features: 3,
                bias,
            };
            let mut p = vec![random(&[3, 4], &mut rng)];
            if bias {
                p.push(random(&[3], &mut rng));
            }
            let case = Case::new(vec![random(&shape, &mut rng)], p);
            check(&format!("linear {shape:?}"), &op, &case, 21);
        }
    }

    /// `[N, T, in]` gives, row for row, what `[N·T, in]` gives.
    #[test]
    fn rank_three_is_rows_of_rank_two() {
        let mut rng = ChaCha8Rng::seed_from_u64(22);
        let op = Linear {
            in_features: 4,
            out_features: 3,
            bias: true,
        };
        assert_eq!(op.infer_shape(&[&[2, 5, 4]]).unwrap(), [2, 5, 3]);
        assert!(op.infer_shape(&[&[2, 4, 5]]).is_err());
        let x = random(&[2, 5, 4], &mut rng);
        let (w, b) = (random(&[3, 4], &mut rng), random(&[3], &mut rng));
        let gemm = GemmBackend::Blas;
        let y3 = shaped(op.affine(gemm, &x, &w.view(), Some(&b.view())), x.shape());
        let x2 = x.clone().into_shape_with_order(IxDyn(&[10, 4])).unwrap();
        let y2 = op.affine(gemm, &x2, &w.view(), Some(&b.view()));
        assert_eq!(
            y3.into_shape_with_order(IxDyn(&[10, 3])).unwrap(),
            y2.into_dyn()
        );
    }
}
