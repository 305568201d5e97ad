//! Token embedding (PyTorch `nn.Embedding`): rows of a table selected by token ids.
//! The input is the batch `[N, T]` (any shape `[N, …]`) of ids stored as floats (each
//! rounded to the nearest integer); the output is `[N, T, dim]`.
//!
//! ```text
//! y[n, t] = W[id[n, t]]                 W [vocab, dim]
//! backward:   no dx (ids are data),  dW[i] = Σ_{id[n,t] = i} dy[n, t]   (scatter-add)
//! R-forward:  R{y}[n, t] = V[id[n, t]]  R-backward: R{dW} = scatter-add of R{dy}
//! ```
//! Ids must lie in `0..vocab`. Shapes cannot tell, so whoever feeds the batch checks the
//! values first ([`Embedding::check_ids`], [`crate::engine::Graph::check_batch`]); an id
//! out of range reaching the forward pass is a bug of that caller and stops it there with
//! a message naming the id.

use std::borrow::Cow;

use ndarray::{ArrayD, ArrayViewD, IxDyn};

use super::{EngineOp, Fwd, Grads, Taped};
use crate::engine::error::ShapeError;
use crate::engine::Scalar;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Embedding {
    pub vocab: usize,
    pub dim: usize,
}

/// A tensor's elements in standard order (borrowed when contiguous).
fn dense<'a, T: Scalar>(a: &'a ArrayViewD<'a, T>) -> Cow<'a, [T]> {
    match a.as_slice() {
        Some(s) => Cow::Borrowed(s),
        None => Cow::Owned(a.iter().copied().collect()),
    }
}

impl Embedding {
    /// The id a stored value stands for, if it is one of the table's rows.
    pub fn token<T: Scalar>(&self, v: T) -> Option<usize> {
        let r = v.as_f64().round();
        (r >= 0.0 && r < self.vocab as f64).then_some(r as usize)
    }

    /// `Err(v)` with the first value `v` of `x` that is not an id in `0..vocab`.
    pub fn check_ids<T: Scalar>(&self, x: &ArrayD<T>) -> Result<(), f64> {
        match x.iter().find(|&&v| self.token(v).is_none()) {
            Some(&v) => Err(v.as_f64()),
            None => Ok(()),
        }
    }

    /// Rows of `w` for `ids`, shaped `[ids shape…, dim]`.
    fn lookup<T: Scalar>(
        &self,
        w: &ArrayViewD<T>,
        ids: &[usize],
        ids_shape: &[usize],
    ) -> ArrayD<T> {
        let w = dense(w);
        let d = self.dim;
        let mut out = Vec::with_capacity(ids.len() * d);
        for &i in ids {
            out.extend_from_slice(&w[i * d..(i + 1) * d]);
        }
        let shape: Vec<usize> = ids_shape.iter().copied().chain([d]).collect();
        ArrayD::from_shape_vec(IxDyn(&shape), out).expect("size")
    }

    /// Σ of the rows of `g` into the rows of a `[vocab, dim]` table, by id.
    fn scatter<T: Scalar>(&self, g: &ArrayD<T>, ids: &[usize]) -> ArrayD<T> {
        let d = self.dim;
        let g = g.as_standard_layout();
        let g = g.as_slice().expect("standard layout");
        let mut dw = vec![T::zero(); self.vocab * d];
        for (row, &i) in g.chunks_exact(d.max(1)).zip(ids) {
            for (a, &b) in dw[i * d..(i + 1) * d].iter_mut().zip(row) {
                *a += b;
            }
        }
        ArrayD::from_shape_vec(IxDyn(&[self.vocab, d]), dw).expect("size")
    }
}

/// The ids of the forward pass.
pub struct EmbeddingCache {
    ids: Vec<usize>,
    shape: Vec<usize>,
}

impl EngineOp for Embedding {
    const KIND: &'static str = "embedding";
    type Cache<T: Scalar> = EmbeddingCache;
    type RCache<T: Scalar> = ();

    fn infer_shape(&self, x: &[&[usize]]) -> Result<Vec<usize>, ShapeError> {
        if x[0].is_empty() {
            return Err(ShapeError::Rank { rank: 2 });
        }
        Ok(x[0].iter().copied().chain([self.dim]).collect())
    }

    fn forward<T: Scalar>(&self, a: &Fwd<T>) -> (ArrayD<T>, EmbeddingCache) {
        let x = a.x[0];
        let ids: Vec<usize> = x
            .iter()
            .map(|&v| {
                self.token(v).unwrap_or_else(|| {
                    panic!(
                        "embedding: token id {} outside 0..{} reached the forward pass \
                         (the batch must be checked with Graph::check_batch first)",
                        v.as_f64(),
                        self.vocab
                    )
                })
            })
            .collect();
        let y = self.lookup(&a.p[0], &ids, x.shape());
        let shape = x.shape().to_vec();
        (y, EmbeddingCache { ids, shape })
    }

    fn cache_bytes<T: Scalar>(c: &EmbeddingCache) -> usize {
        c.ids.len() * std::mem::size_of::<usize>()
    }

    fn backward<T: Scalar>(&self, a: &Taped<T>, c: &EmbeddingCache, gy: ArrayD<T>) -> Grads<T> {
        Grads {
            dx: vec![None; a.x.len()],
            dp: match a.want_dp {
                true => vec![Some(self.scatter(&gy, &c.ids))],
                false => vec![],
            },
        }
    }

    fn r_forward<T: Scalar>(&self, a: &Taped<T>, c: &EmbeddingCache) -> (Option<ArrayD<T>>, ()) {
        (Some(self.lookup(&a.v[0], &c.ids, &c.shape)), ())
    }

    fn r_backward<T: Scalar>(
        &self,
        a: &Taped<T>,
        c: &EmbeddingCache,
        _rc: &(),
        _gy: &ArrayD<T>,
        rgy: ArrayD<T>,
    ) -> Grads<T> {
        Grads {
            dx: vec![None; a.x.len()],
            dp: vec![Some(self.scatter(&rgy, &c.ids))],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::ops::oracle::{check, random, Case};
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    #[test]
    fn looks_up_rows_and_checks_ids() {
        let op = Embedding { vocab: 4, dim: 2 };
        assert_eq!(op.infer_shape(&[&[3, 5]]).unwrap(), [3, 5, 2]);
        let ids = ArrayD::from_shape_vec(IxDyn(&[1, 3]), vec![2.0, 0.0, 3.2]).unwrap();
        assert!(op.check_ids(&ids).is_ok());
        let w = ArrayD::from_shape_vec(IxDyn(&[4, 2]), (0..8).map(f64::from).collect()).unwrap();
        let y = op.lookup(&w.view(), &[2, 0, 3], &[1, 3]);
        assert_eq!(y.as_slice().unwrap(), [4.0, 5.0, 0.0, 1.0, 6.0, 7.0]);
        for bad in [-1.0, 3.6, 4.0, f64::NAN] {
            let x = ArrayD::from_elem(IxDyn(&[1, 1]), bad);
            assert!(op.check_ids(&x).is_err(), "{bad}");
        }
    }

    #[test]
    fn passes_match_central_differences() {
        let mut rng = ChaCha8Rng::seed_from_u64(15);
        let op = Embedding { vocab: 5, dim: 3 };
        // repeated ids: their gradients add up
        let ids = ArrayD::from_shape_simple_fn(IxDyn(&[3, 4]), || rng.random_range(0..5) as f64);
        let case = Case {
            x: vec![ids],
            diff: vec![false],
            p: vec![random(&[5, 3], &mut rng)],
            source: false,
        };
        check("embedding", &op, &case, 16);
    }
}
