//! Fully connected layer (PyTorch `nn.Linear`).
//!
//! ```text
//! x [N, in]   W [out, in]   b [out]   y = x Wᵀ + b   [N, out]
//! backward:   dx = dy W,   dW = dyᵀ x,   db = Σₙ dy
//! R-forward:  R{y} = R{x} Wᵀ + x Vᵀ + v_b
//! R-backward: R{dx} = R{dy} W + dy V,   R{dW} = R{dy}ᵀ x + dyᵀ R{x},   R{db} = Σₙ R{dy}
//! ```
//! R-operator: Pearlmutter (1994), "Fast exact multiplication by the Hessian".

use ndarray::{Array2, ArrayD, ArrayView2, ArrayViewD, Axis, Ix2};

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

fn d2<T: Scalar>(a: &ArrayD<T>) -> ArrayView2<'_, T> {
    a.view()
        .into_dimensionality::<Ix2>()
        .expect("2-D activation [N, F]")
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
        gemm.gemm(T::one(), x, m2(w).t(), T::zero(), &mut y.view_mut());
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
        if x.len() != 2 || x[1] != self.in_features {
            return Err(ShapeError::Features {
                features: self.in_features,
            });
        }
        Ok(vec![x[0], self.out_features])
    }

    fn forward<T: Scalar>(&self, a: &Fwd<T>) -> (ArrayD<T>, ()) {
        let y = self.affine(a.options.gemm, a.x[0], &a.p[0], a.p.get(1));
        (y.into_dyn(), ())
    }

    fn r_backward_reads_gy(&self) -> bool {
        true
    }

    fn backward<T: Scalar>(&self, a: &Taped<T>, _c: &(), gy: ArrayD<T>) -> Grads<T> {
        let gemm = a.options.gemm;
        let (x, gy) = (d2(a.x[0]), d2(&gy));
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
            dx.into_dyn()
        });
        Grads { dx: vec![dx], dp }
    }

    fn r_forward<T: Scalar>(&self, a: &Taped<T>, _c: &()) -> (Option<ArrayD<T>>, ()) {
        let gemm = a.options.gemm;
        let mut ry = self.affine(gemm, a.x[0], &a.v[0], a.v.get(1));
        if let Some(rx) = a.rx(0) {
            gemm.gemm(
                T::one(),
                d2(rx),
                m2(&a.p[0]).t(),
                T::one(),
                &mut ry.view_mut(),
            );
        }
        (Some(ry.into_dyn()), ())
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
        let mut rdw = Array2::zeros((self.out_features, self.in_features));
        gemm.gemm(T::one(), rgy.t(), x, T::zero(), &mut rdw.view_mut());
        if let Some(rx) = a.rx(0) {
            gemm.gemm(T::one(), gy.t(), d2(rx), T::one(), &mut rdw.view_mut());
        }
        let rdx = a.need_dx(0).then(|| {
            let mut rdx = Array2::zeros((x.nrows(), self.in_features));
            gemm.gemm(T::one(), rgy, m2(&a.p[0]), T::zero(), &mut rdx.view_mut());
            gemm.gemm(T::one(), gy, m2(&a.v[0]), T::one(), &mut rdx.view_mut());
            rdx.into_dyn()
        });
        Grads {
            dx: vec![rdx],
            dp: self.param_grads(rdw, rgy),
        }
    }
}
