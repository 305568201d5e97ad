//! A permutation of axes (ONNX `Transpose`, `torch.permute`), any rank, the batch axis
//! included: `perm = [1, 0, 2, 3]` converts images between the internal `[C, N, H, W]`
//! and the PyTorch `[N, C, H, W]` layout.
//!
//! ```text
//! y[i_perm[0], …, i_perm[r−1]] = x[i_0, …, i_{r−1}]          (y axis a = x axis perm[a])
//! backward:   dx = permute(dy, perm⁻¹)     R-forward: R{y} = permute(R{x}, perm)
//! R-backward: R{dx} = permute(R{dy}, perm⁻¹)
//! ```

use ndarray::{ArrayD, IxDyn};

use super::FixedMap;
use crate::engine::error::ShapeError;
use crate::engine::Scalar;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transpose {
    /// Output axis a is input axis `perm[a]`.
    pub perm: Vec<usize>,
}

impl Transpose {
    /// perm⁻¹.
    fn inverse(&self) -> Vec<usize> {
        let mut inv = vec![0; self.perm.len()];
        for (a, &p) in self.perm.iter().enumerate() {
            inv[p] = a;
        }
        inv
    }
}

impl FixedMap for Transpose {
    const KIND: &'static str = "transpose";

    fn shape(&self, x: &[usize]) -> Result<Vec<usize>, ShapeError> {
        let mut seen = vec![false; x.len()];
        let ok = self.perm.len() == x.len()
            && self
                .perm
                .iter()
                .all(|&p| p < x.len() && !std::mem::replace(&mut seen[p], true));
        if !ok {
            return Err(ShapeError::Permutation {
                perm: self.perm.clone().into(),
                rank: x.len(),
            });
        }
        Ok(self.perm.iter().map(|&p| x[p]).collect())
    }

    fn forward<T: Scalar>(&self, x: &ArrayD<T>) -> ArrayD<T> {
        permute(x, &self.perm)
    }

    fn transpose<T: Scalar>(&self, gy: &ArrayD<T>, _in_shape: &[usize]) -> ArrayD<T> {
        permute(gy, &self.inverse())
    }
}

/// `x` with its axes permuted (output axis a = input axis `perm[a]`), in standard layout.
/// Where the permutation keeps the last axis (attention's head split `[N, T, H, D] →
/// [N, H, T, D]`) each output row is one `memcpy`; otherwise the two axes that trade
/// places with the last (`[N, H, T, D] → [N, H, D, T]`) are transposed in square tiles,
/// so that both the reads and the writes stay in cache.
pub(crate) fn permute<T: Scalar>(x: &ArrayD<T>, perm: &[usize]) -> ArrayD<T> {
    let shape = x.shape();
    let r = shape.len();
    let out_shape: Vec<usize> = perm.iter().map(|&p| shape[p]).collect();
    if r == 0 || x.is_empty() || perm.iter().enumerate().all(|(a, &p)| a == p) {
        return x.as_standard_layout().into_owned();
    }
    let xs = x.as_standard_layout();
    let src = xs.as_slice().expect("standard layout");
    let strides = |s: &[usize]| {
        let mut st = vec![1usize; r];
        for a in (0..r - 1).rev() {
            st[a] = st[a + 1] * s[a + 1];
        }
        st
    };
    let (in_stride, out_stride) = (strides(shape), strides(&out_shape));
    // the input stride of each output axis
    let step: Vec<usize> = perm.iter().map(|&p| in_stride[p]).collect();
    let last = r - 1;
    // j: the output axis that walks the input's last (contiguous) axis
    let j = perm.iter().position(|&p| p == last).expect("a permutation");
    let mut out = vec![T::zero(); x.len()];
    // the 2-D block of axes (j, last) at each index of the other axes
    let others: Vec<usize> = (0..r).filter(|&a| a != j && a != last).collect();
    let mut idx = vec![0usize; others.len()];
    let (mut ib, mut ob) = (0usize, 0usize);
    let (nj, nl) = (out_shape[j], out_shape[last]);
    let (oj, sl) = (out_stride[j], step[last]);
    const TILE: usize = 16;
    loop {
        if j == last {
            out[ob..ob + nl].copy_from_slice(&src[ib..ib + nl]);
        } else {
            for l0 in (0..nl).step_by(TILE) {
                let l1 = (l0 + TILE).min(nl);
                for j0 in (0..nj).step_by(TILE) {
                    let j1 = (j0 + TILE).min(nj);
                    for l in l0..l1 {
                        let row = &src[ib + l * sl + j0..ib + l * sl + j1];
                        let mut o = ob + j0 * oj + l;
                        for &v in row {
                            out[o] = v;
                            o += oj;
                        }
                    }
                }
            }
        }
        // odometer over the other axes
        let mut k = others.len();
        loop {
            if k == 0 {
                return ArrayD::from_shape_vec(IxDyn(&out_shape), out).expect("size");
            }
            k -= 1;
            let a = others[k];
            idx[k] += 1;
            ib += step[a];
            ob += out_stride[a];
            if idx[k] < out_shape[a] {
                break;
            }
            ib -= idx[k] * step[a];
            ob -= idx[k] * out_stride[a];
            idx[k] = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::ops::oracle::{check, random, Case};
    use ndarray::ShapeBuilder;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    #[test]
    fn permute_matches_ndarray() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let x = random(&[2, 3, 4, 5], &mut rng);
        for perm in [
            vec![1, 0, 2, 3],
            vec![0, 2, 1, 3],
            vec![3, 2, 1, 0],
            vec![0, 1, 3, 2],
            vec![0, 1, 2, 3],
            vec![2, 0, 3, 1],
            vec![1, 3, 0, 2],
        ] {
            let want = x
                .view()
                .permuted_axes(IxDyn(&perm))
                .as_standard_layout()
                .into_owned();
            let op = Transpose { perm: perm.clone() };
            assert_eq!(op.shape(x.shape()).unwrap(), want.shape());
            assert_eq!(permute(&x, &perm), want, "{perm:?}");
        }
        // tiles cut at the edges: sizes around the tile
        let y = random(&[2, 17, 33], &mut rng);
        for perm in [[0, 2, 1], [2, 1, 0], [1, 2, 0], [2, 0, 1]] {
            let want = y.view().permuted_axes(IxDyn(&perm));
            assert_eq!(permute(&y, &perm), want, "{perm:?}");
        }
        // a non-standard (column-major) input
        let mut xf = ArrayD::zeros(IxDyn(x.shape()).f());
        xf.assign(&x);
        assert!(!xf.is_standard_layout());
        let want = x.view().permuted_axes(IxDyn(&[0, 2, 1, 3]));
        assert_eq!(permute(&xf, &[0, 2, 1, 3]), want);
        let bad = Transpose {
            perm: vec![0, 0, 1],
        };
        assert!(bad.shape(&[2, 3, 4]).is_err());
        assert!(Transpose { perm: vec![1, 0] }.shape(&[2, 3, 4]).is_err());
    }

    #[test]
    fn passes_match_central_differences() {
        let mut rng = ChaCha8Rng::seed_from_u64(2);
        for (shape, perm) in [
            (vec![2, 3, 4, 2], vec![1, 0, 2, 3]),
            (vec![2, 3, 4], vec![0, 2, 1]),
            (vec![3, 2, 2, 3], vec![2, 3, 0, 1]),
        ] {
            let case = Case::new(vec![random(&shape, &mut rng)], vec![]);
            check(
                &format!("transpose {perm:?}"),
                &Transpose { perm },
                &case,
                3,
            );
        }
    }
}
