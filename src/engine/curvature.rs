//! The output-space middle of Gauss–Newton-type curvature products, G·v = Σₙ Jₙᵀ Mₙ Jₙ v,
//! where Jₙ = ∂zₙ/∂θ is the Jacobian of sample n's logits and Mₙ a symmetric PSD K × K
//! matrix (see [`super::graph::Graph::gn_prepare`] for the passes around it).
//!
//! ```text
//! operator                Mₙ                                      where from
//! GGN, cross-entropy      diag(pₙ) − pₙpₙᵀ        (= ∇²_z ℓ)      Schraudolph 2002; Martens 2014
//! GGN, MSE on softmax     (2/K) Sₙᵀ Sₙ,  Sₙ = diag(pₙ) − pₙpₙᵀ     split at the probabilities
//! Fisher (sampled)        (1/m) Σₛ uₙₛ uₙₛᵀ,  uₙₛ = ∇_z ℓ(zₙ, ŷₙₛ),  ŷₙₛ ∼ softmax(zₙ)
//! empirical Fisher        uₙ uₙᵀ,  uₙ = ∇_z ℓ(zₙ, yₙ)              (Kunstner et al. 2019)
//! ```
//! Softmax cross-entropy is convex in the logits, so its Hessian there is PSD and the GGN
//! split at the logits is PSD (Schraudolph 2002's "matching loss"). MSE between softmax
//! probabilities and one-hot labels is not convex in the logits, so its GGN is split at the
//! probabilities instead: the softmax joins the network (Jacobian S = diag(p) − ppᵀ,
//! symmetric) and the loss's Hessian in p is (2/K)·I, which keeps G PSD.
//!
//! The Fisher products use the identity gₙ = Jₙᵀ uₙ for the per-sample gradient gₙ of
//! sample n's loss: Σₙ gₙ(gₙᵀ v) = Σₙ Jₙᵀ uₙ (uₙᵀ Jₙ v), which is one R-forward pass (all
//! Jₙ v at once), K-vector products, and one backward pass — the cost of a GGN product,
//! not of N per-sample backward passes. For softmax cross-entropy the expectation of the
//! sampled Fisher over ŷ is exactly the GGN (Martens 2014, §9.2); with m samples per
//! point it is a Monte-Carlo estimate of it.

use ndarray::{Array2, ArrayD, Ix2, Zip};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::ops::loss::{Loss, LossCache};
use super::Scalar;

/// Which Gauss–Newton-type matrix a product multiplies by (per batch; see the module doc).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GnKind<'a> {
    /// The generalized Gauss–Newton matrix Jᵀ H_L J.
    Ggn,
    /// The empirical Fisher: outer products of the per-sample gradients at the batch's
    /// own labels.
    EmpiricalFisher,
    /// The Fisher with labels drawn from the model's predictive distribution softmax(zₙ):
    /// `samples` labels per sample, sample n's from a stream seeded by `seeds[n]` (one seed
    /// per sample of the batch, so labels do not depend on batching or threads).
    SampledFisher { seeds: &'a [u64], samples: usize },
}

/// Mₙ of every sample of a batch.
pub(crate) enum Middle<T> {
    /// The loss's GGN factor from its probabilities `[N, K]`.
    Loss { loss: Loss, probs: Array2<T> },
    /// (1/m) Σₛ uₛ uₛᵀ per row, from m factors `[N, K]`.
    Outer { factors: Vec<Array2<T>> },
}

impl<T: Scalar> Middle<T> {
    /// The middle of `kind` from the loss's forward cache on a batch with labels `y`.
    pub(crate) fn new(loss: Loss, lc: LossCache<T>, y: &[usize], kind: &GnKind) -> Self {
        match kind {
            GnKind::Ggn => Middle::Loss {
                loss,
                probs: lc.probs,
            },
            GnKind::EmpiricalFisher => Middle::Outer {
                factors: vec![factor(loss, &lc, y)],
            },
            GnKind::SampledFisher { seeds, samples } => {
                let labels = sample_labels(&lc.probs, seeds, *samples);
                Middle::Outer {
                    factors: labels.iter().map(|l| factor(loss, &lc, l)).collect(),
                }
            }
        }
    }

    /// Mₙ R{zₙ} for every row of `rz` `[N, K]`.
    pub(crate) fn apply(&self, rz: &ArrayD<T>) -> ArrayD<T> {
        let rz = rz
            .view()
            .into_dimensionality::<Ix2>()
            .expect("logits [N, K]");
        let mut out = Array2::<T>::zeros(rz.raw_dim());
        match self {
            Middle::Loss { loss, probs } => {
                let k = T::from_usize(probs.ncols()).expect("class count");
                for ((mut o, p), r) in out.rows_mut().into_iter().zip(probs.rows()).zip(rz.rows()) {
                    // S r = p ⊙ (r − ⟨p, r⟩), the softmax's (symmetric) Jacobian
                    let pr = p.dot(&r);
                    Zip::from(&mut o)
                        .and(&p)
                        .and(&r)
                        .for_each(|o, &pc, &rc| *o = pc * (rc - pr));
                    if *loss == Loss::Mse {
                        let s = o.to_owned();
                        let ps = p.dot(&s);
                        let two_k = T::from_f(2.0) / k;
                        Zip::from(&mut o)
                            .and(&p)
                            .and(&s)
                            .for_each(|o, &pc, &sc| *o = two_k * pc * (sc - ps));
                    }
                }
            }
            Middle::Outer { factors } => {
                let inv_m = T::one() / T::from_usize(factors.len()).expect("count");
                for u in factors {
                    for ((mut o, u), r) in out.rows_mut().into_iter().zip(u.rows()).zip(rz.rows()) {
                        let c = u.dot(&r) * inv_m;
                        o.scaled_add(c, &u);
                    }
                }
            }
        }
        out.into_dyn()
    }

    /// Elements held.
    pub(crate) fn len(&self) -> usize {
        match self {
            Middle::Loss { probs, .. } => probs.len(),
            Middle::Outer { factors } => factors.iter().map(|f| f.len()).sum(),
        }
    }
}

/// uₙ = ∇_z ℓ(zₙ, labelₙ) for every row (the loss's own backward pass).
fn factor<T: Scalar>(loss: Loss, lc: &LossCache<T>, labels: &[usize]) -> Array2<T> {
    loss.backward(lc, labels)
        .into_dimensionality::<Ix2>()
        .expect("[N, K]")
}

/// `samples` label vectors for a batch with softmax probabilities `probs` `[N, K]`: entry
/// `[s][n]` is the s-th draw from row n's categorical distribution, by inversion of its
/// cumulative sum (in f64) against uniforms from a ChaCha8 stream seeded by `seeds[n]`.
pub fn sample_labels<T: Scalar>(
    probs: &Array2<T>,
    seeds: &[u64],
    samples: usize,
) -> Vec<Vec<usize>> {
    assert_eq!(probs.nrows(), seeds.len(), "one seed per sample");
    let mut out = vec![Vec::with_capacity(seeds.len()); samples];
    for (p, &seed) in probs.rows().into_iter().zip(seeds) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let total: f64 = p.iter().map(|v| v.as_f64()).sum();
        for draws in out.iter_mut() {
            let u = rng.random::<f64>() * total;
            let mut acc = 0.0;
            let mut label = p.len() - 1;
            for (c, &pc) in p.iter().enumerate() {
                acc += pc.as_f64();
                if u < acc {
                    label = c;
                    break;
                }
            }
            draws.push(label);
        }
    }
    out
}

/// The seed of sample `index`'s label stream under the operator seed `seed` (SplitMix64
/// finalizer of both; Steele, Lea, Flood 2014), so each sample's labels depend only on the
/// seed and its position in the dataset.
pub fn label_seed(seed: u64, index: usize) -> u64 {
    fn mix(mut z: u64) -> u64 {
        z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    mix(mix(seed) ^ index as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    /// The middles are symmetric PSD and the sampled labels follow the probabilities.
    #[test]
    fn middles_are_psd_and_labels_follow_p() {
        let z = array![[0.3, -1.2, 2.0], [1.0, 0.0, -0.5]].into_dyn();
        let y = [2usize, 0];
        for loss in [Loss::CrossEntropy, Loss::Mse] {
            let seeds: Vec<u64> = (0..2).map(|i| label_seed(7, i)).collect();
            for kind in [
                GnKind::Ggn,
                GnKind::EmpiricalFisher,
                GnKind::SampledFisher {
                    seeds: &seeds,
                    samples: 3,
                },
            ] {
                let (_, lc) = loss.forward(&z, &y);
                let m = Middle::new(loss, lc, &y, &kind);
                // dense Mₙ of each row from unit vectors
                for n in 0..2 {
                    let mut dense = Array2::<f64>::zeros((3, 3));
                    for c in 0..3 {
                        let mut e = Array2::<f64>::zeros((2, 3));
                        e[[n, c]] = 1.0;
                        let col = m.apply(&e.into_dyn());
                        for r in 0..3 {
                            dense[[r, c]] = col[[n, r]];
                        }
                    }
                    let asym = (&dense - &dense.t()).mapv(f64::abs).sum();
                    assert!(asym < 1e-15, "{loss:?} {kind:?}: asymmetric by {asym}");
                    use ndarray_linalg::{Eigh, UPLO};
                    let (ev, _) = dense.eigh(UPLO::Lower).unwrap();
                    assert!(ev.iter().all(|&l| l > -1e-15), "{loss:?} {kind:?}: {ev}");
                }
            }
        }
        let probs = array![[0.2, 0.5, 0.3]];
        let draws = sample_labels(&probs, &[label_seed(1, 0)], 20000);
        for (c, want) in [0.2, 0.5, 0.3].iter().enumerate() {
            let got = draws.iter().filter(|d| d[0] == c).count() as f64 / 20000.0;
            assert!((got - want).abs() < 0.015, "class {c}: {got} vs {want}");
        }
        assert_ne!(label_seed(0, 1), label_seed(1, 0));
    }
}
