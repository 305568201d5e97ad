//! Directions in parameter space: random Gaussian directions with filter normalization
//! (Li, Xu, Taylor, Studer, Goldstein 2018, "Visualizing the Loss Landscape of Neural
//! Nets", arXiv:1712.09913, §4), and interpolation directions θ₂ − θ₁.
//!
//! ```text
//! d ~ N(0, I), one tensor per parameter tensor, each from its own stream
//!     seeded by (seed, axis, tensor name): independent of threads and of other tensors
//! ≤ 1-D tensors (biases, BN γ/β, running stats):  0, or a copy of θ (--perturb-biasbn)
//! ≥ 2-D tensors, by normalization:
//!   filter   dᵢ ← dᵢ · ‖θᵢ‖ / (‖dᵢ‖ + 1e-10)   for every filter i (slice along dim 0)
//!   layer    d  ← d · ‖θ‖ / ‖d‖
//!   weight   d  ← d ⊙ θ
//!   dfilter  dᵢ ← dᵢ / (‖dᵢ‖ + 1e-10),   dlayer  d ← d / ‖d‖,   none  d unchanged
//! ```
//! These are loss-landscape's `net_plotter.py` semantics, except that its default norm is
//! `none` (which reaches NaN losses at |α| ≈ 1, its issue #25); ours is `filter`. Its
//! `dfilter` branch calls `d.ngorm()` (a typo) and so never ran; ours divides by
//! `‖dᵢ‖ + 1e-10`, the formula that branch spells out.
//!
//! Eigenvector directions (PyHessian's loss along the top Hessian eigenvector, Yao et al.
//! 2020, Fig. 1): the unit eigenvectors of a curvature operator at θ, used as they are
//! (`none`, so that α is a Euclidean step and L(θ + αv) ≈ L(θ) + ½λα² near θ when ∇L ≈ 0)
//! or normalized like a random direction ([`normalize_direction`]).

use std::fmt;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::engine::{ParamVec, TensorSpec};

/// loss-landscape adds this to a random filter's norm before dividing (net_plotter.py
/// `normalize_direction`, `filter` and `dfilter`), so an all-zero filter stays zero instead
/// of becoming NaN. Kept at their value so our directions match theirs to rounding.
pub const FILTER_NORM_EPS: f64 = 1e-10;

crate::choice::choice! {
    /// How a random direction is scaled to the model's weights.
    #[derive(Default, Serialize, Deserialize)]
    #[serde(rename_all = "lowercase")]
    pub enum DirectionNorm {
        #[default]
        Filter = "filter": "Each filter gets the norm of the corresponding weight filter (Li et al.).",
        Layer = "layer": "Each tensor gets the norm of its weight tensor.",
        Weight = "weight": "Elementwise product with the weights.",
        Dfilter = "dfilter": "Each filter has unit norm.",
        Dlayer = "dlayer": "Each tensor has unit norm.",
        None = "none": "Raw Gaussian.",
    }
}

crate::choice::choice! {
    /// Which tensors a direction moves.
    #[derive(Default, Serialize, Deserialize)]
    #[serde(rename_all = "lowercase")]
    pub enum DirType {
        #[default]
        Weights = "weights": "Trainable parameters (PyTorch `parameters()`).",
        States = "states": "Every `state_dict` tensor: parameters and BN running statistics.",
    }
}

/// The two axes of a surface; part of each tensor's random stream seed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DirectionAxis {
    X,
    Y,
}

/// Options of a random direction.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirectionConfig {
    pub norm: DirectionNorm,
    /// 1-D tensors get a copy of the parameter (loss-landscape without `--xignore biasbn`)
    /// instead of 0.
    pub perturb_biasbn: bool,
    pub dir_type: DirType,
    pub seed: u64,
}

/// Where directions came from.
#[derive(Clone, Debug, PartialEq)]
pub enum DirectionKind {
    /// Gaussian, normalized by [`DirectionConfig::norm`].
    Random,
    /// θ₂ − θ₁ (`--model2`, `--model3`).
    Interpolation,
    /// Principal components of a training trajectory (loss-landscape's PCA files).
    Pca,
    /// Read from this direction file.
    File(String),
    /// Top eigenvectors (x: the first, y: the second) of a curvature operator at θ.
    Eigen(EigenInfo),
}

/// Where eigenvector directions come from.
#[derive(Clone, Debug, PartialEq)]
pub struct EigenInfo {
    /// The operator (`hessian`, `ggn`, `fisher`, `empirical-fisher`).
    pub operator: String,
    /// The eigenvalues of the x (and y) eigenvectors.
    pub values: Vec<f64>,
    /// The Hessian file they were read from, if any.
    pub file: Option<String>,
}

impl fmt::Display for DirectionKind {
    /// `random`, `interpolation`, `pca` or `file` (the path is not part of the name).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DirectionKind::Random => "random",
            DirectionKind::Interpolation => "interpolation",
            DirectionKind::Pca => "pca",
            DirectionKind::File(_) => "file",
            DirectionKind::Eigen(_) => "eigen",
        })
    }
}

/// The x (and y) direction of a surface.
#[derive(Clone, Debug)]
pub struct Directions {
    pub x: ParamVec<f32>,
    pub y: Option<ParamVec<f32>>,
    pub config: DirectionConfig,
    pub kind: DirectionKind,
    /// loss-landscape PCA extras (`explained_variance_ratio_`, …) when read from such a file.
    pub pca: Option<Vec<(String, Vec<f64>)>>,
}

impl Directions {
    pub fn cosine(&self) -> Option<f64> {
        self.y.as_ref().map(|y| cosine(&self.x, y))
    }
}

/// Whether a direction of this type moves the tensor.
pub fn included(t: &TensorSpec, dir_type: DirType) -> bool {
    dir_type == DirType::States || t.role.is_trainable()
}

/// A stable 64-bit seed for one tensor's stream.
fn stream_seed(seed: u64, axis: DirectionAxis, name: &str) -> u64 {
    let axis = match axis {
        DirectionAxis::X => "x",
        DirectionAxis::Y => "y",
    };
    let h = Sha256::digest(format!("{seed}/{axis}/{name}").as_bytes());
    u64::from_le_bytes(h[..8].try_into().expect("32-byte digest"))
}

fn norm(v: &[f32]) -> f64 {
    v.iter()
        .map(|&x| (x as f64) * (x as f64))
        .sum::<f64>()
        .sqrt()
}

fn scale(v: &mut [f32], s: f64) {
    v.iter_mut().for_each(|x| *x = (*x as f64 * s) as f32);
}

/// A random direction normalized to θ (see the module docs).
pub fn random_direction(
    theta: &ParamVec<f32>,
    cfg: &DirectionConfig,
    axis: DirectionAxis,
) -> ParamVec<f32> {
    let mut d = ParamVec::<f32>::zeros(theta.layout.clone());
    for (i, t) in theta.layout.tensors().iter().enumerate() {
        if !included(t, cfg.dir_type) || t.shape.len() <= 1 {
            continue;
        }
        let mut out = d.tensor_mut(i);
        let out = out.as_slice_mut().expect("contiguous tensor");
        let mut rng = ChaCha8Rng::seed_from_u64(stream_seed(cfg.seed, axis, &t.name));
        for x in out.iter_mut() {
            *x = StandardNormal.sample(&mut rng);
        }
    }
    normalize_direction(theta, &mut d, cfg);
    d
}

/// Normalizes `d` to θ by `cfg.norm` (see the module docs), in place: ≥ 2-D tensors by
/// filter, layer or weight (`none` leaves them); ≤ 1-D tensors (biases, BN) become 0, or
/// a copy of θ with `perturb_biasbn` — except with `none`, which leaves `d` as it is
/// (an eigenvector keeps its bias and BN components). Tensors outside `cfg.dir_type` are 0.
pub fn normalize_direction(theta: &ParamVec<f32>, d: &mut ParamVec<f32>, cfg: &DirectionConfig) {
    for (i, t) in theta.layout.tensors().iter().enumerate() {
        let w = theta.tensor(i);
        let w = w.as_slice().expect("contiguous tensor");
        let mut out = d.tensor_mut(i);
        let out = out.as_slice_mut().expect("contiguous tensor");
        if !included(t, cfg.dir_type) {
            out.fill(0.0);
            continue;
        }
        if t.shape.len() <= 1 {
            match (cfg.norm, cfg.perturb_biasbn) {
                (_, true) => out.copy_from_slice(w),
                (DirectionNorm::None, false) => {}
                _ => out.fill(0.0),
            }
            continue;
        }
        let filter = t.len() / t.shape[0];
        match cfg.norm {
            DirectionNorm::Filter => {
                for (di, wi) in out.chunks_mut(filter).zip(w.chunks(filter)) {
                    let s = norm(wi) / (norm(di) + FILTER_NORM_EPS);
                    scale(di, s);
                }
            }
            DirectionNorm::Dfilter => {
                for di in out.chunks_mut(filter) {
                    let s = 1.0 / (norm(di) + FILTER_NORM_EPS);
                    scale(di, s);
                }
            }
            DirectionNorm::Layer => {
                let s = norm(w) / norm(out);
                scale(out, s);
            }
            DirectionNorm::Dlayer => {
                let s = 1.0 / norm(out);
                scale(out, s);
            }
            DirectionNorm::Weight => out.iter_mut().zip(w).for_each(|(x, &wv)| *x *= wv),
            DirectionNorm::None => {}
        }
    }
}

/// Occurs when a vector over named tensors (eigenvectors) does not fit a model.
#[derive(Debug, thiserror::Error)]
#[error("tensor '{name}' of the eigenvectors does not fit the model ({why}); they were computed for another model")]
pub struct SubsetMismatch {
    pub name: String,
    pub why: String,
}

/// A vector over some of θ's tensors (named, in the order given, each flattened) as a
/// direction over all of them (0 elsewhere): an eigenvector of a curvature operator
/// restricted to a parameter subset.
pub fn subset_direction(
    theta: &ParamVec<f32>,
    tensors: &[(String, usize)],
    values: impl IntoIterator<Item = f32>,
) -> Result<ParamVec<f32>, SubsetMismatch> {
    let mut d = ParamVec::<f32>::zeros(theta.layout.clone());
    let mut values = values.into_iter();
    for (name, len) in tensors {
        let Some(i) = theta.layout.tensors().iter().position(|t| &t.name == name) else {
            return Err(SubsetMismatch {
                name: name.clone(),
                why: "not a tensor of this model".into(),
            });
        };
        let want = theta.layout.tensor(i).len();
        if want != *len {
            return Err(SubsetMismatch {
                name: name.clone(),
                why: format!("{len} entries given, the model's tensor has {want}"),
            });
        }
        let mut out = d.tensor_mut(i);
        for (o, v) in out.iter_mut().zip(values.by_ref()) {
            *o = v;
        }
    }
    Ok(d)
}

/// Occurs when two models cannot be subtracted.
#[derive(Debug, thiserror::Error)]
#[error("the models differ at tensor '{name}' ({why}); interpolation needs the same architecture")]
pub struct LayoutMismatch {
    pub name: String,
    pub why: String,
}

/// θ₂ − θ₁ on the tensors of `dir_type` (interpolation, loss-landscape's `--model_file2`).
pub fn difference_direction(
    theta: &ParamVec<f32>,
    other: &ParamVec<f32>,
    dir_type: DirType,
) -> Result<ParamVec<f32>, LayoutMismatch> {
    let (a, b) = (theta.layout.tensors(), other.layout.tensors());
    for (i, t) in a.iter().enumerate() {
        match b.get(i) {
            Some(u) if u.name == t.name && u.shape == t.shape => {}
            Some(u) => {
                return Err(LayoutMismatch {
                    name: t.name.clone(),
                    why: format!(
                        "the other model has '{}' {:?} at that position, not {:?}",
                        u.name, u.shape, t.shape
                    ),
                })
            }
            None => {
                return Err(LayoutMismatch {
                    name: t.name.clone(),
                    why: "missing in the other model".into(),
                })
            }
        }
    }
    if b.len() > a.len() {
        return Err(LayoutMismatch {
            name: b[a.len()].name.clone(),
            why: "only in the other model".into(),
        });
    }
    let mut d = ParamVec::<f32>::zeros(theta.layout.clone());
    for (i, t) in theta.layout.tensors().iter().enumerate() {
        if included(t, dir_type) {
            let diff = &other.tensor(i) - &theta.tensor(i);
            d.tensor_mut(i).assign(&diff);
        }
    }
    Ok(d)
}

/// cos∠(x, y), accumulated in f64.
pub fn cosine(x: &ParamVec<f32>, y: &ParamVec<f32>) -> f64 {
    x.dot(y) / (x.norm() * y.norm())
}

/// y ← y − (⟨x, y⟩/⟨x, x⟩) x (Gram–Schmidt), so that cos∠(x, y) = 0.
pub fn orthogonalize(y: &mut ParamVec<f32>, x: &ParamVec<f32>) {
    let c = x.dot(y) / x.dot(x);
    y.data
        .zip_mut_with(&x.data, |yv, &xv| *yv = (*yv as f64 - c * xv as f64) as f32);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Arch, Model};

    fn model() -> Model {
        let arch: Arch = "resnet-cifar:depth=8,width=4,in_channels=1,input_size=8"
            .parse()
            .unwrap();
        let mut m = Model::init(arch, 3, false);
        m.theta.data.mapv_inplace(|v| v + 0.01); // non-trivial BN, running stats
        m
    }

    fn filter_norms(v: &ParamVec<f32>, i: usize) -> Vec<f64> {
        let t = v.tensor(i);
        let s = t.as_slice().unwrap();
        s.chunks(s.len() / t.shape()[0]).map(norm).collect()
    }

    #[test]
    fn filter_normalization_matches_weight_filters() {
        let m = model();
        let cfg = DirectionConfig::default();
        let d = random_direction(&m.theta, &cfg, DirectionAxis::X);
        for (i, t) in m.theta.layout.tensors().iter().enumerate() {
            if t.shape.len() >= 2 {
                for (a, b) in filter_norms(&d, i).iter().zip(filter_norms(&m.theta, i)) {
                    assert!((a - b).abs() <= 1e-5 * b, "{}: {a} vs {b}", t.name);
                }
            } else {
                assert!(
                    d.tensor(i).iter().all(|&v| v == 0.0),
                    "{} should be 0",
                    t.name
                );
            }
        }
    }

    #[test]
    fn other_norms_and_biasbn() {
        let m = model();
        for norm_kind in [
            DirectionNorm::Layer,
            DirectionNorm::Dfilter,
            DirectionNorm::Dlayer,
            DirectionNorm::Weight,
        ] {
            let cfg = DirectionConfig {
                norm: norm_kind,
                perturb_biasbn: true,
                ..Default::default()
            };
            let d = random_direction(&m.theta, &cfg, DirectionAxis::X);
            for (i, t) in m.theta.layout.tensors().iter().enumerate() {
                let (dv, wv) = (d.tensor(i), m.theta.tensor(i));
                let (ds, ws) = (dv.as_slice().unwrap(), wv.as_slice().unwrap());
                if t.shape.len() <= 1 {
                    let want = if t.role.is_trainable() {
                        ws.to_vec()
                    } else {
                        vec![0.0; ws.len()]
                    };
                    assert_eq!(ds, &want[..], "{} with perturb_biasbn", t.name);
                    continue;
                }
                match norm_kind {
                    DirectionNorm::Layer => assert!((norm(ds) - norm(ws)).abs() < 1e-5 * norm(ws)),
                    DirectionNorm::Dlayer => assert!((norm(ds) - 1.0).abs() < 1e-5),
                    DirectionNorm::Dfilter => filter_norms(&d, i)
                        .iter()
                        .for_each(|n| assert!((n - 1.0).abs() < 1e-5)),
                    _ => {}
                }
            }
        }
    }

    #[test]
    fn deterministic_per_tensor_streams() {
        let m = model();
        let cfg = DirectionConfig {
            seed: 9,
            ..Default::default()
        };
        let a = random_direction(&m.theta, &cfg, DirectionAxis::X);
        let b = random_direction(&m.theta, &cfg, DirectionAxis::X);
        assert_eq!(a.data, b.data);
        let y = random_direction(&m.theta, &cfg, DirectionAxis::Y);
        assert!(cosine(&a, &y).abs() < 0.2);
        // a tensor's raw stream does not depend on the other tensors of the model
        let other: Arch = "resnet-cifar:depth=14,width=4,in_channels=1,input_size=8"
            .parse()
            .unwrap();
        let m2 = Model::init(other, 3, false);
        let cfg_none = DirectionConfig {
            norm: DirectionNorm::None,
            seed: 9,
            ..Default::default()
        };
        let (p, q) = (
            random_direction(&m.theta, &cfg_none, DirectionAxis::X),
            random_direction(&m2.theta, &cfg_none, DirectionAxis::X),
        );
        assert_eq!(
            p.by_name("conv1.weight").unwrap(),
            q.by_name("conv1.weight").unwrap()
        );
        // states type moves running statistics
        let s = random_direction(
            &m.theta,
            &DirectionConfig {
                dir_type: DirType::States,
                perturb_biasbn: true,
                ..cfg
            },
            DirectionAxis::X,
        );
        assert_eq!(
            s.by_name("bn1.running_var").unwrap(),
            m.theta.by_name("bn1.running_var").unwrap()
        );
    }

    #[test]
    fn orthogonalize_and_difference() {
        let m = model();
        let x = random_direction(&m.theta, &DirectionConfig::default(), DirectionAxis::X);
        let mut y = random_direction(&m.theta, &DirectionConfig::default(), DirectionAxis::Y);
        y.axpy(0.5, &x);
        assert!(cosine(&x, &y) > 0.3);
        orthogonalize(&mut y, &x);
        assert!(cosine(&x, &y).abs() < 1e-5);
        let mut other = m.theta.clone();
        other.data.mapv_inplace(|v| v * 2.0);
        let d = difference_direction(&m.theta, &other, DirType::Weights).unwrap();
        assert_eq!(
            d.by_name("conv1.weight").unwrap(),
            m.theta.by_name("conv1.weight").unwrap()
        );
        assert!(d
            .by_name("bn1.running_mean")
            .unwrap()
            .iter()
            .all(|&v| v == 0.0));
        let arch: Arch = "mlp:in_features=4,depth=1,width=3".parse().unwrap();
        assert!(difference_direction(
            &m.theta,
            &Model::init(arch, 0, false).theta,
            DirType::Weights
        )
        .is_err());
    }
}
