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

use crate::engine::gemm::gemm;
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

fn add_bias<T: Scalar>(y: &mut Array2<T>, b: &ArrayViewD<T>) {
    for mut row in y.axis_iter_mut(Axis(0)) {
        row.zip_mut_with(b, |v, &bi| *v += bi);
    }
}

impl Linear {
    pub fn forward<T: Scalar>(
        &self,
        x: &ArrayD<T>,
        w: &ArrayViewD<T>,
        b: Option<&ArrayViewD<T>>,
    ) -> ArrayD<T> {
        let x = d2(x);
        let mut y = Array2::zeros((x.nrows(), self.out_features));
        gemm(T::one(), x, m2(w).t(), T::zero(), &mut y.view_mut());
        if let Some(b) = b {
            add_bias(&mut y, b);
        }
        y.into_dyn()
    }

    /// dx (when `need_dx`), dW, db.
    pub fn backward<T: Scalar>(
        &self,
        x: &ArrayD<T>,
        w: &ArrayViewD<T>,
        gy: &ArrayD<T>,
        need_dx: bool,
    ) -> (Option<ArrayD<T>>, ArrayD<T>, Option<ArrayD<T>>) {
        let (x, gy) = (d2(x), d2(gy));
        let mut dw = Array2::zeros((self.out_features, self.in_features));
        gemm(T::one(), gy.t(), x, T::zero(), &mut dw.view_mut());
        let dx = need_dx.then(|| {
            let mut dx = Array2::zeros((x.nrows(), self.in_features));
            gemm(T::one(), gy, m2(w), T::zero(), &mut dx.view_mut());
            dx.into_dyn()
        });
        let db = self.bias.then(|| gy.sum_axis(Axis(0)).into_dyn());
        (dx, dw.into_dyn(), db)
    }

    pub fn r_forward<T: Scalar>(
        &self,
        x: &ArrayD<T>,
        w: &ArrayViewD<T>,
        vw: &ArrayViewD<T>,
        vb: Option<&ArrayViewD<T>>,
        rx: Option<&ArrayD<T>>,
    ) -> ArrayD<T> {
        let mut ry = self
            .forward(x, vw, vb)
            .into_dimensionality::<Ix2>()
            .unwrap();
        if let Some(rx) = rx {
            gemm(T::one(), d2(rx), m2(w).t(), T::one(), &mut ry.view_mut());
        }
        ry.into_dyn()
    }

    /// R{dx} (when `need_dx`), R{dW}, R{db}.
    #[allow(clippy::too_many_arguments)]
    pub fn r_backward<T: Scalar>(
        &self,
        x: &ArrayD<T>,
        rx: Option<&ArrayD<T>>,
        w: &ArrayViewD<T>,
        vw: &ArrayViewD<T>,
        gy: &ArrayD<T>,
        rgy: &ArrayD<T>,
        need_dx: bool,
    ) -> (Option<ArrayD<T>>, ArrayD<T>, Option<ArrayD<T>>) {
        let (x, gy, rgy) = (d2(x), d2(gy), d2(rgy));
        let mut rdw = Array2::zeros((self.out_features, self.in_features));
        gemm(T::one(), rgy.t(), x, T::zero(), &mut rdw.view_mut());
        if let Some(rx) = rx {
            gemm(T::one(), gy.t(), d2(rx), T::one(), &mut rdw.view_mut());
        }
        let rdx = need_dx.then(|| {
            let mut rdx = Array2::zeros((x.nrows(), self.in_features));
            gemm(T::one(), rgy, m2(w), T::zero(), &mut rdx.view_mut());
            gemm(T::one(), gy, m2(vw), T::one(), &mut rdx.view_mut());
            rdx.into_dyn()
        });
        let rdb = self.bias.then(|| rgy.sum_axis(Axis(0)).into_dyn());
        (rdx, rdw.into_dyn(), rdb)
    }
}
