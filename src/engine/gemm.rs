//! Matrix products for the engine.
//!
//! `f32`/`f64` products whose operands have a unit stride along one axis go to OpenBLAS's
//! `cblas_sgemm`/`cblas_dgemm` (libopenblas is linked anyway, through ndarray-linalg),
//! which is 1.2–2× faster than the `matrixmultiply` crate on the engine's short-and-wide
//! shapes. OpenBLAS is pinned to one thread (once, process-wide) so that results do not
//! depend on the thread count: parallelism lives one level up, across mini-batches, so
//! each worker runs its GEMMs on one core. Any other layout or scalar type falls back to
//! ndarray's `general_mat_mul` (`matrixmultiply`: any strides, transposed views are free).
//! [`GemmBackend::MatrixMultiply`] (an [`EngineOptions`](super::EngineOptions) field) forces
//! the fallback everywhere (for comparisons); every product takes the backend explicitly.
//! Alternatives considered: faer (faster on tall-skinny shapes, an extra heavy
//! dependency); see DESIGN.md.

use std::any::TypeId;
use std::os::raw::c_int;
use std::sync::Once;

use ndarray::{linalg::general_mat_mul, Array2, ArrayView2, ArrayViewMut2, ShapeBuilder};

use super::options::GemmBackend;
use super::Scalar;

#[link(name = "openblas")]
extern "C" {
    #[allow(clippy::too_many_arguments)]
    fn cblas_sgemm(
        layout: c_int,
        ta: c_int,
        tb: c_int,
        m: c_int,
        n: c_int,
        k: c_int,
        alpha: f32,
        a: *const f32,
        lda: c_int,
        b: *const f32,
        ldb: c_int,
        beta: f32,
        c: *mut f32,
        ldc: c_int,
    );
    #[allow(clippy::too_many_arguments)]
    fn cblas_dgemm(
        layout: c_int,
        ta: c_int,
        tb: c_int,
        m: c_int,
        n: c_int,
        k: c_int,
        alpha: f64,
        a: *const f64,
        lda: c_int,
        b: *const f64,
        ldb: c_int,
        beta: f64,
        c: *mut f64,
        ldc: c_int,
    );
    fn openblas_set_num_threads(n: c_int);
}

const ROW_MAJOR: c_int = 101;
const NO_TRANS: c_int = 111;
const TRANS: c_int = 112;

/// Whether `backend` lets OpenBLAS multiply; pins OpenBLAS to one thread on first use.
fn blas_enabled(backend: GemmBackend) -> bool {
    static ONE_THREAD: Once = Once::new();
    let on = backend == GemmBackend::Blas;
    if on {
        ONE_THREAD.call_once(|| unsafe { openblas_set_num_threads(1) });
    }
    on
}

/// A row-major operand: element (i, j) of the stored matrix sits at `data[i·ld + j]`;
/// `trans` means the product uses its transpose.
#[derive(Clone, Copy, Debug)]
pub struct Mat<'a, T> {
    pub data: &'a [T],
    pub ld: usize,
    pub trans: bool,
}

impl<'a, T> Mat<'a, T> {
    /// `data` as a matrix with leading dimension `ld`.
    pub fn new(data: &'a [T], ld: usize) -> Self {
        Mat {
            data,
            ld,
            trans: false,
        }
    }

    /// The transpose (no data moves).
    pub fn t(self) -> Self {
        Mat {
            trans: !self.trans,
            ..self
        }
    }

    /// Stored (rows, columns) when the product needs `rows_op × cols_op` of op(self).
    fn stored(&self, rows_op: usize, cols_op: usize) -> (usize, usize) {
        if self.trans {
            (cols_op, rows_op)
        } else {
            (rows_op, cols_op)
        }
    }

    fn check(&self, rows_op: usize, cols_op: usize, what: &str) {
        let (r, c) = self.stored(rows_op, cols_op);
        assert!(
            r == 0 || c == 0 || (self.ld >= c && self.data.len() >= (r - 1) * self.ld + c),
            "gemm: operand {what} too small for {r}×{c} with ld {}",
            self.ld
        );
    }

    fn view(&self, rows_op: usize, cols_op: usize) -> ArrayView2<'a, T> {
        let (r, c) = self.stored(rows_op, cols_op);
        let v = ArrayView2::from_shape(
            (r, c).strides((self.ld, 1)),
            &self.data[..span(r, c, self.ld)],
        )
        .expect("checked");
        if self.trans {
            v.reversed_axes()
        } else {
            v
        }
    }
}

fn span(r: usize, c: usize, ld: usize) -> usize {
    if r == 0 || c == 0 {
        0
    } else {
        (r - 1) * ld + c
    }
}

impl GemmBackend {
    /// `c[m×n] ← alpha · op(a)·op(b) + beta · c`, `op(a)` being `m×k` and `op(b)` `k×n`; `c` is
    /// row-major with leading dimension `ldc`. With `beta = 0` the old contents of `c` are
    /// never read (they may be anything, NaN included).
    #[allow(clippy::too_many_arguments)]
    pub fn gemm_slices<T: Scalar>(
        self,
        m: usize,
        n: usize,
        k: usize,
        alpha: T,
        a: Mat<T>,
        b: Mat<T>,
        beta: T,
        c: &mut [T],
        ldc: usize,
    ) {
        a.check(m, k, "a");
        b.check(k, n, "b");
        assert!(
            m == 0 || n == 0 || (ldc >= n && c.len() >= (m - 1) * ldc + n),
            "gemm: output too small"
        );
        if m == 0 || n == 0 {
            return;
        }
        if k == 0 {
            // c ← beta·c without reading c when beta = 0.
            for row in c.chunks_mut(ldc).take(m) {
                for v in &mut row[..n] {
                    *v = if beta == T::zero() {
                        T::zero()
                    } else {
                        beta * *v
                    };
                }
            }
            return;
        }
        let fits = [m, n, k, a.ld, b.ld, ldc]
            .iter()
            .all(|&d| d <= c_int::MAX as usize);
        if fits && blas_enabled(self) && blas_call(m, n, k, alpha, a, b, beta, c, ldc) {
            return;
        }
        let mut cv = ArrayViewMut2::from_shape((m, n).strides((ldc, 1)), &mut c[..span(m, n, ldc)])
            .expect("checked");
        if beta == T::zero() {
            cv.fill(T::zero()); // general_mat_mul reads c even when beta = 0
        }
        general_mat_mul(alpha, &a.view(m, k), &b.view(k, n), beta, &mut cv);
    }
}

/// cblas for f32/f64; false (nothing done) for any other scalar type.
#[allow(clippy::too_many_arguments)]
fn blas_call<T: Scalar>(
    m: usize,
    n: usize,
    k: usize,
    alpha: T,
    a: Mat<T>,
    b: Mat<T>,
    beta: T,
    c: &mut [T],
    ldc: usize,
) -> bool {
    let tr = |t: bool| if t { TRANS } else { NO_TRANS };
    let (ta, tb) = (tr(a.trans), tr(b.trans));
    let (m, n, k) = (m as c_int, n as c_int, k as c_int);
    let (lda, ldb, ldc) = (a.ld.max(1) as c_int, b.ld.max(1) as c_int, ldc as c_int);
    let id = TypeId::of::<T>();
    // SAFETY: T is f32 (resp. f64) when the TypeIds match, so the casts are identities;
    // the operand extents were checked above.
    unsafe {
        if id == TypeId::of::<f32>() {
            cblas_sgemm(
                ROW_MAJOR,
                ta,
                tb,
                m,
                n,
                k,
                alpha.to_f32().unwrap_or(0.0),
                a.data.as_ptr() as *const f32,
                lda,
                b.data.as_ptr() as *const f32,
                ldb,
                beta.to_f32().unwrap_or(0.0),
                c.as_mut_ptr() as *mut f32,
                ldc,
            );
            true
        } else if id == TypeId::of::<f64>() {
            cblas_dgemm(
                ROW_MAJOR,
                ta,
                tb,
                m,
                n,
                k,
                alpha.as_f64(),
                a.data.as_ptr() as *const f64,
                lda,
                b.data.as_ptr() as *const f64,
                ldb,
                beta.as_f64(),
                c.as_mut_ptr() as *mut f64,
                ldc,
            );
            true
        } else {
            false
        }
    }
}

/// A 2-D view as a BLAS operand: unit stride along one axis, non-negative strides.
fn as_mat<'a, T>(v: &ArrayView2<'a, T>) -> Option<Mat<'a, T>> {
    let (r, c) = v.dim();
    let s = v.strides();
    let (s0, s1) = (s[0], s[1]);
    if r == 0 || c == 0 || s0 < 0 || s1 < 0 {
        return None;
    }
    let (s0, s1) = (s0 as usize, s1 as usize);
    let len_from = |ld: usize, rows: usize, cols: usize| span(rows, cols, ld);
    // SAFETY: the view's elements all lie within [ptr, ptr + span) for non-negative strides.
    let slice = |len: usize| unsafe { std::slice::from_raw_parts(v.as_ptr(), len) };
    if (s1 == 1 || c == 1) && (s0 >= c || r == 1) {
        let ld = if r == 1 { c } else { s0 };
        Some(Mat::new(slice(len_from(ld, r, c)), ld))
    } else if (s0 == 1 || r == 1) && (s1 >= r || c == 1) {
        let ld = if c == 1 { r } else { s1 };
        Some(Mat::new(slice(len_from(ld, c, r)), ld).t())
    } else {
        None
    }
}

impl GemmBackend {
    /// c ← alpha · a·b + beta · c
    pub fn gemm<T: Scalar>(
        self,
        alpha: T,
        a: ArrayView2<T>,
        b: ArrayView2<T>,
        beta: T,
        c: &mut ArrayViewMut2<T>,
    ) {
        let (m, n) = c.dim();
        let k = a.ncols();
        assert!(
            a.nrows() == m && b.nrows() == k && b.ncols() == n,
            "gemm: shapes"
        );
        let cs = c.strides();
        let c_ok = m > 0
            && n > 0
            && cs[0] >= 0
            && (cs[1] == 1 || n == 1)
            && (cs[0] as usize >= n || m == 1);
        if c_ok && k > 0 {
            if let (Some(am), Some(bm)) = (as_mat(&a), as_mat(&b)) {
                let ldc = if m == 1 { n } else { cs[0] as usize };
                let len = span(m, n, ldc);
                // SAFETY: c's elements lie within [ptr, ptr + len) and the view is borrowed mutably.
                let cslice = unsafe { std::slice::from_raw_parts_mut(c.as_mut_ptr(), len) };
                self.gemm_slices(m, n, k, alpha, am, bm, beta, cslice, ldc);
                return;
            }
        }
        general_mat_mul(alpha, &a, &b, beta, c);
    }

    /// a·b into a fresh array.
    pub fn matmul<T: Scalar>(self, a: ArrayView2<T>, b: ArrayView2<T>) -> Array2<T> {
        let mut c = Array2::zeros((a.nrows(), b.ncols()));
        self.gemm(T::one(), a, b, T::zero(), &mut c.view_mut());
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{s, Array2};

    fn naive(a: &ArrayView2<f64>, b: &ArrayView2<f64>) -> Array2<f64> {
        Array2::from_shape_fn((a.nrows(), b.ncols()), |(i, j)| {
            (0..a.ncols()).map(|p| a[[i, p]] * b[[p, j]]).sum()
        })
    }

    #[test]
    fn strided_and_transposed_views_match_naive() {
        for be in [GemmBackend::Blas, GemmBackend::MatrixMultiply] {
            check_views(be);
        }
    }

    fn check_views(be: GemmBackend) {
        let big = Array2::from_shape_fn((9, 11), |(i, j)| ((i * 7 + j * 3) % 13) as f64 - 6.0);
        let a = big.slice(s![1..6, 2..9]); // 5×7, ld 11
        let bt = big.slice(s![0..4, 1..8]); // 4×7 → b = btᵀ 7×4
        let b = bt.t();
        let want = naive(&a, &b);
        let mut c = Array2::from_elem((5, 6), f64::NAN);
        be.gemm(1.0, a, b, 0.0, &mut c.slice_mut(s![.., 1..5]));
        assert!(c
            .slice(s![.., 1..5])
            .iter()
            .zip(want.iter())
            .all(|(x, y)| x == y));
        be.gemm(2.0, a, b, 1.0, &mut c.slice_mut(s![.., 1..5]));
        assert!(c
            .slice(s![.., 1..5])
            .iter()
            .zip(want.iter())
            .all(|(x, y)| *x == 3.0 * y));
        // Row vector, column vector, a column-major output (fallback path).
        let row = big.slice(s![3..4, 0..9]);
        let col = big.slice(s![.., 5..6]);
        let got = be.matmul(row, col);
        assert_eq!(got, naive(&row, &col));
        let mut cf = Array2::zeros((5, 4).f());
        be.gemm(1.0, a, b, 0.0, &mut cf.view_mut());
        assert_eq!(cf, want);
        let a32 = a.mapv(|v| v as f32);
        let b32 = b.mapv(|v| v as f32);
        let got32 = be.matmul(a32.view(), b32.t().t());
        assert!(got32.iter().zip(want.iter()).all(|(x, y)| *x as f64 == *y));
    }
}
