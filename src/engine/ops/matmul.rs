//! Matrix product of two graph values with numpy `matmul` semantics (ONNX `MatMul`,
//! `torch.matmul`): operands of rank ≥ 2, `a [… , M, K] × b [… , K, N] → [… , M, N]`,
//! the leading (batch) axes broadcast, e.g. attention's `[N, H, T, D] × [N, H, D, T]`.
//!
//! ```text
//! y = a b                           (per batch index; bilinear)
//! backward:   da = dy bᵀ,  db = aᵀ dy            (summed over the axes each was broadcast on)
//! R-forward:  R{y} = R{a} b + a R{b}
//! R-backward: R{da} = R{dy} bᵀ + dy R{b}ᵀ,   R{db} = R{a}ᵀ dy + aᵀ R{dy}
//! ```
//! R-operator: Pearlmutter (1994). Each product is one GEMM per matrix on the operands'
//! own memory (the crate's [`GemmBackend`]), no copies of standard-layout inputs; when b
//! is one matrix for the whole batch (a `[N, T, K] × [K, N]` projection), the batch is
//! folded into M and each pass is a single GEMM.

use std::borrow::Cow;

use ndarray::{ArrayD, IxDyn};

use super::expand::broadcast_shapes;
use super::{EngineOp, Fwd, Grads, Taped};
use crate::engine::error::ShapeError;
use crate::engine::gemm::Mat;
use crate::engine::options::GemmBackend;
use crate::engine::Scalar;

pub struct MatMul;

/// Sizes and batch routing of one product.
struct Geom {
    m: usize,
    k: usize,
    n: usize,
    /// Per output matrix: the matrix of a and of b it multiplies.
    ia: Vec<usize>,
    ib: Vec<usize>,
    /// Matrices in a and in b.
    na: usize,
    nb: usize,
    out_shape: Vec<usize>,
}

/// One operand of a batch of products: matrix `idx[i]` of `data` (stored `rows × cols`,
/// row-major), transposed when `trans`.
#[derive(Clone, Copy)]
struct Operand<'a, T> {
    data: &'a [T],
    idx: &'a [usize],
    rows: usize,
    cols: usize,
    trans: bool,
}

impl<'a, T> Operand<'a, T> {
    fn mat(&self, i: usize) -> Mat<'a, T> {
        let size = self.rows * self.cols;
        let m = Mat::new(&self.data[self.idx[i] * size..][..size], self.cols);
        if self.trans {
            m.t()
        } else {
            m
        }
    }

    fn t(self) -> Self {
        Operand {
            trans: !self.trans,
            ..self
        }
    }
}

/// `c[ic[i]] ← op(a_i)·op(b_i)` for every i, or `+=` where `add` or where an earlier i
/// already wrote that matrix of c (broadcast operands' gradients sum). `c` holds
/// `m × n` matrices.
#[allow(clippy::too_many_arguments)]
fn products<T: Scalar>(
    gemm: GemmBackend,
    (m, n, k): (usize, usize, usize),
    a: Operand<T>,
    b: Operand<T>,
    c: &mut [T],
    ic: &[usize],
    add: bool,
) {
    let size = m * n;
    if size == 0 {
        return;
    }
    let mut written = vec![add; c.len() / size.max(1)];
    for (i, &j) in ic.iter().enumerate() {
        let beta = if written[j] { T::one() } else { T::zero() };
        written[j] = true;
        let cj = &mut c[j * size..(j + 1) * size];
        gemm.gemm_slices(m, n, k, T::one(), a.mat(i), b.mat(i), beta, cj, n);
    }
}

/// Row-major indices into each of `count` matrices of an operand with batch shape
/// `batch` (aligned to the right of `out`), broadcast to the output batch shape `out`.
fn routes(batch: &[usize], out: &[usize]) -> Vec<usize> {
    let r = out.len();
    let lead = r - batch.len();
    // the operand's row-major stride of each output batch axis (0 where broadcast)
    let mut stride = vec![0usize; r];
    let mut s = 1;
    for a in (lead..r).rev() {
        let d = batch[a - lead];
        stride[a] = if d == 1 { 0 } else { s };
        s *= d;
    }
    let total: usize = out.iter().product();
    let mut idx = Vec::with_capacity(total);
    let mut at = vec![0usize; r];
    let mut off = 0;
    for _ in 0..total {
        idx.push(off);
        for a in (0..r).rev() {
            at[a] += 1;
            off += stride[a];
            if at[a] < out[a] {
                break;
            }
            off -= at[a] * stride[a];
            at[a] = 0;
        }
    }
    idx
}

/// An array's elements in standard order: borrowed when already contiguous.
fn dense<T: Scalar>(a: &ArrayD<T>) -> Cow<'_, [T]> {
    match a.as_slice() {
        Some(s) => Cow::Borrowed(s),
        None => Cow::Owned(a.iter().copied().collect()),
    }
}

impl MatMul {
    fn shapes(a: &[usize], b: &[usize]) -> Result<(Vec<usize>, usize, usize, usize), ShapeError> {
        let bad = || ShapeError::MatMul {
            a: a.into(),
            b: b.into(),
        };
        let (ra, rb) = (a.len(), b.len());
        if ra < 2 || rb < 2 || a[ra - 1] != b[rb - 2] {
            return Err(bad());
        }
        let batch = broadcast_shapes(&a[..ra - 2], &b[..rb - 2]).ok_or_else(bad)?;
        Ok((batch, a[ra - 2], a[ra - 1], b[rb - 1]))
    }

    fn geom(a: &[usize], b: &[usize]) -> Geom {
        let (batch, m, k, n) = Self::shapes(a, b).expect("shapes checked at build");
        let (ba, bb) = (&a[..a.len() - 2], &b[..b.len() - 2]);
        let (na, nb) = (ba.iter().product(), bb.iter().product());
        let count: usize = batch.iter().product();
        let out_shape = batch.iter().copied().chain([m, n]).collect();
        if nb == 1 && na == count {
            // b is one matrix: the batch folds into M, [count·M, K] × [K, N]
            return Geom {
                m: count * m,
                k,
                n,
                ia: vec![0],
                ib: vec![0],
                na: 1,
                nb: 1,
                out_shape,
            };
        }
        Geom {
            m,
            k,
            n,
            ia: routes(ba, &batch),
            ib: routes(bb, &batch),
            na,
            nb,
            out_shape,
        }
    }
}

impl Geom {
    fn a<'a, T>(&'a self, data: &'a [T]) -> Operand<'a, T> {
        Operand {
            data,
            idx: &self.ia,
            rows: self.m,
            cols: self.k,
            trans: false,
        }
    }

    fn b<'a, T>(&'a self, data: &'a [T]) -> Operand<'a, T> {
        Operand {
            data,
            idx: &self.ib,
            rows: self.k,
            cols: self.n,
            trans: false,
        }
    }

    /// An output-shaped operand (y, dy, R{dy}): matrix i is the i-th.
    fn out<'a, T>(&self, data: &'a [T], identity: &'a [usize]) -> Operand<'a, T> {
        Operand {
            data,
            idx: identity,
            rows: self.m,
            cols: self.n,
            trans: false,
        }
    }

    fn identity(&self) -> Vec<usize> {
        (0..self.ia.len()).collect()
    }

    fn count(&self) -> usize {
        self.ia.len()
    }

    /// Σ_terms a·b into a fresh output.
    fn product<T: Scalar>(&self, gemm: GemmBackend, terms: &[(&[T], &[T])]) -> ArrayD<T> {
        let id = self.identity();
        let mut y = vec![T::zero(); self.count() * self.m * self.n];
        for (t, &(a, b)) in terms.iter().enumerate() {
            let dims = (self.m, self.n, self.k);
            products(gemm, dims, self.a(a), self.b(b), &mut y, &id, t > 0);
        }
        ArrayD::from_shape_vec(IxDyn(&self.out_shape), y).expect("size")
    }

    /// Σ_terms g·bᵀ, shaped as a (`shape`).
    fn grad_a<T: Scalar>(
        &self,
        gemm: GemmBackend,
        terms: &[(&[T], &[T])],
        shape: &[usize],
    ) -> ArrayD<T> {
        let id = self.identity();
        let mut da = vec![T::zero(); self.na * self.m * self.k];
        for (t, &(g, b)) in terms.iter().enumerate() {
            let dims = (self.m, self.k, self.n);
            let (g, b) = (self.out(g, &id), self.b(b).t());
            products(gemm, dims, g, b, &mut da, &self.ia, t > 0);
        }
        ArrayD::from_shape_vec(IxDyn(shape), da).expect("size")
    }

    /// Σ_terms aᵀ·g, shaped as b (`shape`).
    fn grad_b<T: Scalar>(
        &self,
        gemm: GemmBackend,
        terms: &[(&[T], &[T])],
        shape: &[usize],
    ) -> ArrayD<T> {
        let id = self.identity();
        let mut db = vec![T::zero(); self.nb * self.k * self.n];
        for (t, &(a, g)) in terms.iter().enumerate() {
            let dims = (self.k, self.n, self.m);
            let (a, g) = (self.a(a).t(), self.out(g, &id));
            products(gemm, dims, a, g, &mut db, &self.ib, t > 0);
        }
        ArrayD::from_shape_vec(IxDyn(shape), db).expect("size")
    }
}

impl EngineOp for MatMul {
    const KIND: &'static str = "matmul";
    type Cache<T: Scalar> = ();
    type RCache<T: Scalar> = ();

    fn infer_shape(&self, x: &[&[usize]]) -> Result<Vec<usize>, ShapeError> {
        let (batch, m, _, n) = Self::shapes(x[0], x[1])?;
        Ok(batch.into_iter().chain([m, n]).collect())
    }

    fn forward<T: Scalar>(&self, a: &Fwd<T>) -> (ArrayD<T>, ()) {
        let g = Self::geom(a.x[0].shape(), a.x[1].shape());
        let (x0, x1) = (dense(a.x[0]), dense(a.x[1]));
        (g.product(a.options.gemm, &[(&x0, &x1)]), ())
    }

    fn r_backward_reads_gy(&self) -> bool {
        true
    }

    fn backward<T: Scalar>(&self, a: &Taped<T>, _c: &(), gy: ArrayD<T>) -> Grads<T> {
        let (xa, xb) = (a.x[0], a.x[1]);
        let g = Self::geom(xa.shape(), xb.shape());
        let gemm = a.options.gemm;
        let (da_, db_, gy) = (dense(xa), dense(xb), dense(&gy));
        let da = a
            .need_dx(0)
            .then(|| g.grad_a(gemm, &[(&gy, &db_)], xa.shape()));
        let db = a
            .need_dx(1)
            .then(|| g.grad_b(gemm, &[(&da_, &gy)], xb.shape()));
        Grads {
            dx: vec![da, db],
            dp: vec![],
        }
    }

    fn r_forward<T: Scalar>(&self, a: &Taped<T>, _c: &()) -> (Option<ArrayD<T>>, ()) {
        let (xa, xb) = (a.x[0], a.x[1]);
        let g = Self::geom(xa.shape(), xb.shape());
        let (xa, xb) = (dense(xa), dense(xb));
        let (ra, rb) = (a.rx(0).map(dense), a.rx(1).map(dense));
        let terms: Vec<(&[T], &[T])> = [
            ra.as_deref().map(|ra| (ra, &xb[..])),
            rb.as_deref().map(|rb| (&xa[..], rb)),
        ]
        .into_iter()
        .flatten()
        .collect();
        let ry = (!terms.is_empty()).then(|| g.product(a.options.gemm, &terms));
        (ry, ())
    }

    fn r_backward<T: Scalar>(
        &self,
        a: &Taped<T>,
        _c: &(),
        _rc: &(),
        gy: &ArrayD<T>,
        rgy: ArrayD<T>,
    ) -> Grads<T> {
        let (sa, sb) = (a.x[0].shape(), a.x[1].shape());
        let g = Self::geom(sa, sb);
        let gemm = a.options.gemm;
        let (xa, xb) = (dense(a.x[0]), dense(a.x[1]));
        let (ra, rb) = (a.rx(0).map(dense), a.rx(1).map(dense));
        let (gy, rgy) = (dense(gy), dense(&rgy));
        let rda = a.need_dx(0).then(|| {
            let terms: Vec<(&[T], &[T])> = std::iter::once((&rgy[..], &xb[..]))
                .chain(rb.as_deref().map(|rb| (&gy[..], rb)))
                .collect();
            g.grad_a(gemm, &terms, sa)
        });
        let rdb = a.need_dx(1).then(|| {
            let terms: Vec<(&[T], &[T])> = std::iter::once((&xa[..], &rgy[..]))
                .chain(ra.as_deref().map(|ra| (ra, &gy[..])))
                .collect();
            g.grad_b(gemm, &terms, sb)
        });
        Grads {
            dx: vec![rda, rdb],
            dp: vec![],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::ops::oracle::{check, random, Case};
    use ndarray::Array2;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    /// y[i] = a[i] b[i] by plain loops over broadcast indices (ndarray's broadcast).
    fn slow(a: &ArrayD<f64>, b: &ArrayD<f64>) -> ArrayD<f64> {
        let (batch, m, k, n) = MatMul::shapes(a.shape(), b.shape()).unwrap();
        let full = |x: &ArrayD<f64>, r: usize, c: usize| {
            let s: Vec<usize> = batch.iter().copied().chain([r, c]).collect();
            x.broadcast(IxDyn(&s)).unwrap().to_owned()
        };
        let (a, b) = (full(a, m, k), full(b, k, n));
        let count: usize = batch.iter().product();
        let a = a.into_shape_with_order((count, m, k)).unwrap();
        let b = b.into_shape_with_order((count, k, n)).unwrap();
        let mut y = Vec::new();
        for i in 0..count {
            let p = Array2::from_shape_fn((m, n), |(r, c)| {
                (0..k).map(|t| a[[i, r, t]] * b[[i, t, c]]).sum::<f64>()
            });
            y.extend(p.iter().copied());
        }
        let s: Vec<usize> = batch.iter().copied().chain([m, n]).collect();
        ArrayD::from_shape_vec(IxDyn(&s), y).unwrap()
    }

    const CASES: [(&[usize], &[usize]); 7] = [
        (&[2, 3, 4], &[2, 4, 3]),
        (&[2, 2, 3, 4], &[2, 2, 4, 2]),
        (&[3, 2, 4], &[4, 5]),
        (&[2, 3], &[2, 3, 2]),
        (&[2, 1, 3, 2], &[1, 3, 2, 4]),
        (&[1, 3, 2], &[3, 2, 2]),
        (&[2, 3], &[3, 2]),
    ];

    #[test]
    fn forward_matches_loops_and_shapes_check() {
        let mut rng = ChaCha8Rng::seed_from_u64(17);
        for (sa, sb) in CASES {
            let (a, b) = (random(sa, &mut rng), random(sb, &mut rng));
            let want = slow(&a, &b);
            assert_eq!(MatMul.infer_shape(&[sa, sb]).unwrap(), want.shape());
            let g = MatMul::geom(sa, sb);
            let got = g.product(GemmBackend::Blas, &[(&dense(&a), &dense(&b))]);
            let err = (&got - &want).iter().fold(0.0f64, |m, v| m.max(v.abs()));
            assert!(err < 1e-14, "{sa:?} × {sb:?}: {err}");
        }
        assert!(MatMul.infer_shape(&[&[2, 3, 4], &[2, 3, 4]]).is_err());
        assert!(MatMul.infer_shape(&[&[2, 3, 4], &[3, 4, 2]]).is_err());
        assert!(MatMul.infer_shape(&[&[4], &[4, 2]]).is_err());
        // a folded batch ([N, T, K] × [K, N]) is one GEMM
        let g = MatMul::geom(&[3, 2, 4], &[4, 5]);
        assert_eq!((g.m, g.ia.len()), (6, 1));
    }

    #[test]
    fn passes_match_central_differences() {
        let mut rng = ChaCha8Rng::seed_from_u64(18);
        for (sa, sb) in CASES {
            let case = Case::new(vec![random(sa, &mut rng), random(sb, &mut rng)], vec![]);
            check(&format!("matmul {sa:?} × {sb:?}"), &MatMul, &case, 19);
        }
    }
}
