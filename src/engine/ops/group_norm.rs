//! Group normalization (Wu & He 2018, arXiv:1803.08494): PyTorch `nn.GroupNorm`, ONNX
//! `GroupNormalization` and, with one channel per group, `InstanceNormalization`, on a
//! torch-layout `[N, C, *spatial]` value (any rank ≥ 2).
//!
//! The channels split into `groups` consecutive groups; each (sample, group) block of
//! C/groups channels × spatial positions is normalized by its own mean and biased
//! variance, then scaled and shifted per channel:
//!
//! ```text
//! x̂ = (x − μ_{n,g}) s_{n,g},  s = 1/√(σ²_{n,g} + ε),  y_{n,c,·} = w_c x̂_{n,c,·} + b_c
//! ```
//! A block is contiguous in torch layout, so the passes are layer norm's row kernels
//! (`super::layer_norm::NormRows`, whose docs give all four passes) over N·groups rows,
//! with w and b repeated over each channel's spatial positions, and dw_c, db_c (and their
//! R-values) the sums of the expanded gradients over those positions.

use ndarray::{ArrayD, ArrayViewD, IxDyn};

use super::lanes::sum;
use super::layer_norm::{flat, pflat, standard, NormCache, NormGrads, NormRCache, NormRows};
use super::{EngineOp, Fwd, Grads, Taped};
use crate::engine::error::ShapeError;
use crate::engine::Scalar;

/// Group norm of a `[N, C, *spatial]` value; parameters `[weight [C], bias [C]]` with
/// `affine`, none without. InstanceNorm is `groups == C`, LayerNorm over (C, *spatial)
/// with per-channel affine is `groups == 1`.
#[derive(Clone, Debug, PartialEq)]
pub struct GroupNorm {
    pub groups: usize,
    pub eps: f64,
    pub affine: bool,
}

/// (channels, spatial size) of `[N, C, *spatial]`.
fn dims(shape: &[usize]) -> (usize, usize) {
    (shape[1], shape[2..].iter().product())
}

impl GroupNorm {
    fn rows(&self, shape: &[usize]) -> NormRows {
        let (c, s) = dims(shape);
        NormRows {
            m: shape[0] * self.groups,
            len: c / self.groups * s,
            period: self.groups,
            eps: self.eps,
        }
    }

    /// Per-channel tensor `k` of `p` repeated over each channel's positions (`C·s`
    /// values), or `fill` repeated where the op has no parameters.
    fn expanded<T: Scalar>(
        &self,
        p: &[ArrayViewD<T>],
        k: usize,
        shape: &[usize],
        fill: T,
    ) -> Vec<T> {
        let (c, s) = dims(shape);
        match self.affine {
            true => {
                assert_eq!(p[k].len(), c, "group norm: one weight and bias per channel");
                let v = pflat(&p[k]);
                v.iter().flat_map(|&a| std::iter::repeat_n(a, s)).collect()
            }
            false => vec![fill; c * s],
        }
    }

    /// Runs a reverse kernel over the incoming (R-)gradient `g` (dx written over it when
    /// wanted) with expanded dw, db accumulators where wanted, and returns dx and the
    /// per-channel sums `[dw, db]`.
    fn grads<T: Scalar>(
        &self,
        a: &Taped<T>,
        g: ArrayD<T>,
        run: impl FnOnce(&NormRows, &mut [T], NormGrads<T>),
    ) -> Grads<T> {
        let shape = a.x[0].shape();
        let (c, s) = dims(shape);
        let want_dp = a.want_dp && self.affine;
        let n = if want_dp { c * s } else { 0 };
        let (mut dw, mut db) = (vec![T::zero(); n], vec![T::zero(); n]);
        let mut g = standard(g);
        run(
            &self.rows(shape),
            g.as_slice_mut().expect("standard layout"),
            NormGrads {
                dx: a.need_dx(0),
                dw: want_dp.then_some(&mut dw[..]),
                db: want_dp.then_some(&mut db[..]),
            },
        );
        let fold = |v: Vec<T>| {
            let per: Vec<T> = match s {
                0 => vec![T::zero(); c],
                _ => v.chunks_exact(s).map(sum).collect(),
            };
            Some(ArrayD::from_shape_vec(IxDyn(&[c]), per).expect("size"))
        };
        Grads {
            dx: vec![a.need_dx(0).then_some(g)],
            dp: match want_dp {
                true => vec![fold(dw), fold(db)],
                false => vec![],
            },
        }
    }
}

impl EngineOp for GroupNorm {
    const KIND: &'static str = "group-norm";
    type Cache<T: Scalar> = NormCache<T>;
    type RCache<T: Scalar> = NormRCache<T>;

    fn infer_shape(&self, x: &[&[usize]]) -> Result<Vec<usize>, ShapeError> {
        let x = x[0];
        if x.len() < 2 {
            return Err(ShapeError::Rank { rank: 2 });
        }
        if self.groups == 0 || !x[1].is_multiple_of(self.groups) {
            return Err(ShapeError::NormGroups {
                channels: x[1],
                groups: self.groups,
            });
        }
        Ok(x.to_vec())
    }

    fn forward<T: Scalar>(&self, a: &Fwd<T>) -> (ArrayD<T>, NormCache<T>) {
        let x = a.x[0];
        let w = self.expanded(a.p, 0, x.shape(), T::one());
        let b = self.expanded(a.p, 1, x.shape(), T::zero());
        let (y, c) = self.rows(x.shape()).forward(&flat(x), &w, &b);
        (ArrayD::from_shape_vec(x.raw_dim(), y).expect("size"), c)
    }

    fn cache_bytes<T: Scalar>(c: &NormCache<T>) -> usize {
        (c.mean.len() + c.rstd.len()) * std::mem::size_of::<T>()
    }

    fn r_backward_reads_gy(&self) -> bool {
        true
    }

    fn backward<T: Scalar>(&self, a: &Taped<T>, c: &NormCache<T>, gy: ArrayD<T>) -> Grads<T> {
        let x = flat(a.x[0]);
        let w = self.expanded(a.p, 0, a.x[0].shape(), T::one());
        self.grads(a, gy, |rows, g, out| rows.backward(&x, c, &w, g, out))
    }

    fn r_forward<T: Scalar>(
        &self,
        a: &Taped<T>,
        c: &NormCache<T>,
    ) -> (Option<ArrayD<T>>, NormRCache<T>) {
        let x = a.x[0];
        let w = self.expanded(a.p, 0, x.shape(), T::one());
        let vw = self
            .affine
            .then(|| self.expanded(a.v, 0, x.shape(), T::zero()));
        let vb = self
            .affine
            .then(|| self.expanded(a.v, 1, x.shape(), T::zero()));
        let rx = a.rx(0).map(flat);
        let (ry, rc) = self.rows(x.shape()).r_forward(
            &flat(x),
            (c, &w),
            (vw.as_deref(), vb.as_deref()),
            rx.as_deref(),
        );
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
        let x = flat(a.x[0]);
        let shape = a.x[0].shape();
        let w = self.expanded(a.p, 0, shape, T::one());
        let vw = self.affine.then(|| self.expanded(a.v, 0, shape, T::zero()));
        let rx = a.rx(0).map(flat);
        let gy = flat(gy);
        self.grads(a, rgy, |rows, rg, out| {
            rows.r_backward(
                &x,
                (c, rc, &w),
                (vw.as_deref(), rx.as_deref()),
                (&gy, rg),
                out,
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::ops::testing::{check_op, randn, rng, At};

    #[test]
    fn passes_for_groups_ranks_and_affine() {
        let mut r = rng(1);
        for (shape, groups) in [
            (&[2, 6, 3, 2][..], 3),
            (&[2, 6, 3, 2][..], 1),
            (&[2, 4, 5][..], 4),
            (&[3, 4][..], 2),
        ] {
            for affine in [true, false] {
                let op = GroupNorm {
                    groups,
                    eps: 1e-5,
                    affine,
                };
                eprintln!("{op:?} on {shape:?}");
                let x = randn(shape, &mut r) * 1.5 - 0.3;
                let p = match affine {
                    true => vec![randn(&[shape[1]], &mut r) + 1.0, randn(&[shape[1]], &mut r)],
                    false => vec![],
                };
                check_op(&op, &[x], &p, 1e-6);
            }
        }
    }

    /// InstanceNorm (a group per channel) normalizes each (sample, channel) plane.
    #[test]
    fn instance_norm_planes() {
        let mut r = rng(2);
        let x = randn(&[2, 3, 4, 4], &mut r) * 2.0 + 5.0;
        let op = GroupNorm {
            groups: 3,
            eps: 0.0,
            affine: false,
        };
        let y = At::<_, f64>::new(&op, &[x], &[]).forward().0;
        for n in 0..2 {
            for c in 0..3 {
                let plane = y.slice(ndarray::s![n, c, .., ..]);
                let m = plane.sum() / 16.0;
                let v = plane.iter().map(|a| (a - m) * (a - m)).sum::<f64>() / 16.0;
                assert!(m.abs() < 1e-14 && (v - 1.0).abs() < 1e-13, "{m} {v}");
            }
        }
        assert_eq!(
            GroupNorm {
                groups: 4,
                eps: 0.0,
                affine: true
            }
            .infer_shape(&[&[2, 6, 3]])
            .unwrap_err()
            .to_string(),
            "6 channels do not split into 4 groups"
        );
    }
}
