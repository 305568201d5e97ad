//! Matrix products for the engine.
//!
//! All products go through ndarray's `general_mat_mul` (the `matrixmultiply` crate:
//! single-threaded, any strides, so transposed views cost nothing). Parallelism lives one
//! level up, across mini-batches, so each worker runs its GEMMs on one core.
//! Alternatives considered: OpenBLAS through ndarray's `blas` feature (slower here under
//! `OPENBLAS_CORETYPE=Haswell`, and threads of its own fight rayon's), faer (faster on
//! tall-skinny shapes, an extra heavy dependency); see DESIGN.md.

use ndarray::{linalg::general_mat_mul, Array2, ArrayView2, ArrayViewMut2};

use super::Scalar;

/// c ← alpha · a·b + beta · c
pub fn gemm<T: Scalar>(
    alpha: T,
    a: ArrayView2<T>,
    b: ArrayView2<T>,
    beta: T,
    c: &mut ArrayViewMut2<T>,
) {
    general_mat_mul(alpha, &a, &b, beta, c);
}

/// a·b into a fresh array.
pub fn matmul<T: Scalar>(a: ArrayView2<T>, b: ArrayView2<T>) -> Array2<T> {
    let mut c = Array2::zeros((a.nrows(), b.ncols()));
    general_mat_mul(T::one(), &a, &b, T::zero(), &mut c.view_mut());
    c
}
