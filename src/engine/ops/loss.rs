//! Losses on logits z `[N, K]` with integer labels y. Both return the **sum** over the
//! samples of the batch; the objective divides by the dataset size, so dataset losses are
//! per-sample means whatever the batch size.
//!
//! ```text
//! cross-entropy (PyTorch F.cross_entropy):  p = softmax(z),  ℓₙ = logΣexp(zₙ) − zₙ,yₙ
//!     dz = p − onehot(y)
//!     R{dz} = p ⊙ R{z} − p ⟨p, R{z}⟩                       (= R{p})
//! MSE on probabilities (loss-landscape's `--loss_name mse`: nn.MSELoss()(softmax(z), onehot)),
//!     ℓₙ = (1/K) Σ_c (p_c − t_c)²,  u = 2(p − t)/K
//!     dz = p ⊙ (u − ⟨p, u⟩)
//!     R{p} = p ⊙ (R{z} − ⟨p, R{z}⟩),  R{u} = 2 R{p}/K
//!     R{dz} = R{p} ⊙ (u − ⟨p, u⟩) + p ⊙ (R{u} − ⟨R{p}, u⟩ − ⟨p, R{u}⟩)
//! ```
//! Loss values are accumulated in f64 whatever the compute precision.

use ndarray::{Array2, ArrayD, ArrayView1, ArrayViewMut1, Ix2, Zip};
use serde::{Deserialize, Serialize};

use crate::engine::Scalar;

/// Training objective on the network's logits.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Loss {
    /// Softmax cross-entropy (the default, as in every peer tool).
    #[default]
    CrossEntropy,
    /// Mean squared error between softmax probabilities and one-hot labels.
    Mse,
}

/// What the backward and R passes need from the forward pass.
pub struct LossCache<T> {
    pub probs: Array2<T>,
}

/// Result of the loss on one batch.
pub struct LossValue {
    /// Σₙ ℓₙ over the batch.
    pub sum: f64,
    /// Number of samples whose arg-max logit equals the label.
    pub correct: usize,
}

fn softmax_row<T: Scalar>(z: ArrayView1<T>, mut p: ArrayViewMut1<T>) -> f64 {
    let m = z.iter().fold(T::neg_infinity(), |a, &b| a.max(b));
    let mut s = 0.0f64;
    for (pi, &zi) in p.iter_mut().zip(z.iter()) {
        *pi = (zi - m).exp();
        s += pi.as_f64();
    }
    let inv = T::from_f(1.0 / s);
    p.mapv_inplace(|v| v * inv);
    m.as_f64() + s.ln() // log Σ exp z
}

fn argmax<T: Scalar>(z: ArrayView1<T>) -> Option<usize> {
    let mut best: Option<(usize, T)> = None;
    for (i, &v) in z.iter().enumerate() {
        if v.is_nan() {
            return None;
        }
        if best.is_none_or(|(_, b)| v > b) {
            best = Some((i, v));
        }
    }
    best.map(|(i, _)| i)
}

impl Loss {
    pub fn forward<T: Scalar>(&self, z: &ArrayD<T>, y: &[usize]) -> (LossValue, LossCache<T>) {
        let z = z
            .view()
            .into_dimensionality::<Ix2>()
            .expect("logits [N, K]");
        let k = z.ncols();
        let mut probs = Array2::zeros(z.raw_dim());
        let mut sum = 0.0;
        let mut correct = 0;
        for ((zr, pr), &label) in z.rows().into_iter().zip(probs.rows_mut()).zip(y) {
            let lse = softmax_row(zr, pr);
            sum += match self {
                Loss::CrossEntropy => lse - zr[label].as_f64(),
                Loss::Mse => {
                    let p = &probs_row_f64(zr, lse);
                    p.iter()
                        .enumerate()
                        .map(|(c, &pc)| (pc - if c == label { 1.0 } else { 0.0 }).powi(2))
                        .sum::<f64>()
                        / k as f64
                }
            };
            correct += usize::from(argmax(zr) == Some(label));
        }
        (LossValue { sum, correct }, LossCache { probs })
    }

    /// d(Σₙ ℓₙ)/dz.
    pub fn backward<T: Scalar>(&self, c: &LossCache<T>, y: &[usize]) -> ArrayD<T> {
        let mut g = c.probs.clone();
        let k = T::from_usize(g.ncols()).unwrap();
        let two = T::from_f(2.0);
        for (mut gr, &label) in g.rows_mut().into_iter().zip(y) {
            match self {
                Loss::CrossEntropy => gr[label] -= T::one(),
                Loss::Mse => {
                    let p = gr.to_owned();
                    let u = mse_u(p.view(), label, k, two);
                    let pu = p.dot(&u);
                    Zip::from(&mut gr)
                        .and(&p)
                        .and(&u)
                        .for_each(|o, &pc, &uc| *o = pc * (uc - pu));
                }
            }
        }
        g.into_dyn()
    }

    /// R{d(Σₙ ℓₙ)/dz} for the direction R{z}.
    pub fn r_backward<T: Scalar>(
        &self,
        c: &LossCache<T>,
        y: &[usize],
        rz: &ArrayD<T>,
    ) -> ArrayD<T> {
        let rz = rz.view().into_dimensionality::<Ix2>().expect("[N, K]");
        let k = T::from_usize(c.probs.ncols()).unwrap();
        let two = T::from_f(2.0);
        let mut out = Array2::zeros(c.probs.raw_dim());
        for (((mut o, p), rzr), &label) in out
            .rows_mut()
            .into_iter()
            .zip(c.probs.rows())
            .zip(rz.rows())
            .zip(y)
        {
            let prz = p.dot(&rzr);
            let rp = Zip::from(&p)
                .and(&rzr)
                .map_collect(|&pc, &r| pc * (r - prz));
            match self {
                Loss::CrossEntropy => o.assign(&rp),
                Loss::Mse => {
                    let u = mse_u(p, label, k, two);
                    let ru = rp.mapv(|v| two * v / k);
                    let (pu, rpu, pru) = (p.dot(&u), rp.dot(&u), p.dot(&ru));
                    Zip::from(&mut o)
                        .and(&p)
                        .and(&rp)
                        .and(&u)
                        .and(&ru)
                        .for_each(|o, &pc, &rpc, &uc, &ruc| {
                            *o = rpc * (uc - pu) + pc * (ruc - rpu - pru);
                        });
                }
            }
        }
        out.into_dyn()
    }
}

/// u = 2(p − onehot)/K.
fn mse_u<T: Scalar>(p: ArrayView1<T>, label: usize, k: T, two: T) -> ndarray::Array1<T> {
    let mut u = p.mapv(|v| two * v / k);
    u[label] -= two / k;
    u
}

/// Softmax in f64 from logits and their log-sum-exp (for an accurate loss value).
fn probs_row_f64<T: Scalar>(z: ArrayView1<T>, lse: f64) -> Vec<f64> {
    z.iter().map(|&v| (v.as_f64() - lse).exp()).collect()
}
