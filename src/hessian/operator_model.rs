//! The Hessian of a network's dataset loss as a [`LinearOperator`] over a chosen subset of
//! its parameters, and the split of a network into top-level blocks for per-block analyses.
//! With [`HessianOptions::curvature`] the same operator multiplies by the loss's GGN,
//! Fisher or empirical Fisher instead ([`Curvature`]), so every solver applies to them.
//!
//! ```text
//! apply(v) = P (H + λI) Pᵀ v      H = ∇²_θ (1/N) Σₙ ℓ(f(xₙ; θ), yₙ)   (per-sample mean, PyHessian)
//!                                 P selects the subset's scalars, in layout order
//!                                 λ = weight decay (the curvature of λ/2‖θ‖²)
//! ```
//!
//! One `apply` costs one exact H·v over the dataset (Pearlmutter's R-operator; see
//! [`Objective::hvp`]): the first about 2.5 gradients, later ones, which reuse the kept
//! θ-only half ([`crate::objective::PreparedCurvature`]), about 1.7. Products are computed in f32 by default (the
//! precision models are trained in, with f64 sums) and optionally in f64 end to end; the
//! operator's input and output are f64 either way, so every analysis runs in f64.
//!
//! Batch-norm running statistics are never in a subset: they are not parameters of the loss
//! (in eval mode they are constants, which is why Hessians are taken in eval mode: in train
//! mode the loss of one sample depends on the rest of its mini-batch).

use ndarray::{ArrayView1, ArrayViewMut1};

use super::objective_op::DEFAULT_HVP_CACHE_BYTES;
use super::{LinearOperator, ObjectiveHessian};
use crate::engine::{Layout, ParamVec, TensorSpec};
use crate::objective::{Curvature, Objective};

/// Which parameter tensors the Hessian is taken over (trainable tensors only, always).
///
/// Alternatives considered: a free predicate (`Fn(&TensorSpec) -> bool`, still available
/// through [`HessianOperator::restricted`]) is more general but cannot be written to a file
/// or compared; strings (`"biasbn"` in loss-landscape) fail silently on typos.
#[derive(Debug, Clone, Default)]
pub enum ParamSubset {
    /// Every trainable tensor, biases and BN γ/β included (PyHessian's choice; the default).
    #[default]
    Trainable,
    /// Tensors with more than one dimension: conv and linear weights (loss-landscape's
    /// eigenvalue maps ignore biases and BN parameters).
    Weights,
    /// Trainable tensors whose `state_dict` name matches the regex (unanchored search).
    Regex(regex::Regex),
}

impl ParamSubset {
    /// Whether `tensor` belongs to the subset.
    pub fn contains(&self, tensor: &TensorSpec) -> bool {
        tensor.role.is_trainable()
            && match self {
                ParamSubset::Trainable => true,
                ParamSubset::Weights => tensor.shape.len() > 1,
                ParamSubset::Regex(re) => re.is_match(&tensor.name),
            }
    }

    /// How the subset is recorded in output files: `trainable`, `weights` or `regex:<re>`.
    pub fn describe(&self) -> String {
        match self {
            ParamSubset::Trainable => "trainable".into(),
            ParamSubset::Weights => "weights".into(),
            ParamSubset::Regex(re) => format!("regex:{re}"),
        }
    }

    /// Names of the selected tensors, in layout order (the order of the operator's entries).
    pub fn tensor_names(&self, layout: &Layout) -> Vec<String> {
        layout
            .tensors()
            .iter()
            .filter(|t| self.contains(t))
            .map(|t| t.name.clone())
            .collect()
    }
}

/// The block a tensor belongs to, from its `state_dict` name.
///
/// ```text
/// name                          block        rule
/// conv1.weight, bn1.bias        stem         the ResNet stem (top-level conv1 / bn1)
/// layer2.0.shortcut.0.weight    layer2       otherwise the first '.'-component …
/// blocks.3.fc.weight            blocks.3     … plus the index when that component is `blocks`
/// fc_in.weight, linear.bias     fc_in, linear                 (the MLP's residual blocks)
/// ```
/// For resnet-cifar this gives stem, layer1, layer2, layer3, linear; for the MLP fc_in,
/// blocks.0 … blocks.{depth-1}, fc_out.
pub fn block_of(name: &str) -> String {
    let mut parts = name.split('.');
    let first = parts.next().unwrap_or_default();
    let second = parts.next();
    match (first, second) {
        ("conv1" | "bn1", Some(_)) if name.matches('.').count() == 1 => "stem".into(),
        ("blocks", Some(index)) if index.bytes().all(|b| b.is_ascii_digit()) => {
            format!("blocks.{index}")
        }
        _ => first.into(),
    }
}

/// The blocks ([`block_of`]) that contain at least one tensor of `subset`, in layout order.
pub fn blocks(layout: &Layout, subset: &ParamSubset) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for t in layout.tensors().iter().filter(|t| subset.contains(t)) {
        let b = block_of(&t.name);
        if !out.contains(&b) {
            out.push(b);
        }
    }
    out
}

/// How products are computed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HessianOptions {
    /// Compute H·v in f64 end to end (default: f32 with f64 sums, casting θ and v).
    pub double_precision: bool,
    /// λ ≥ 0 of the `+ λI` shift (weight decay; `--weight-decay`).
    pub weight_decay: f64,
    /// Memory budget (bytes) for the θ-only half of the products, kept across them
    /// (`--hvp-cache-mb`; default [`DEFAULT_HVP_CACHE_BYTES`]; 0 recomputes it each time).
    pub hvp_cache_bytes: usize,
    /// The matrix the operator multiplies by: the Hessian (default) or a Gauss–Newton
    /// type (`--operator`).
    pub curvature: Curvature,
}

impl Default for HessianOptions {
    fn default() -> Self {
        Self {
            double_precision: false,
            weight_decay: 0.0,
            hvp_cache_bytes: DEFAULT_HVP_CACHE_BYTES,
            curvature: Curvature::Hessian,
        }
    }
}

/// `P (H + λI) Pᵀ` at θ for the tensors of a [`ParamSubset`] (see the module doc).
///
/// # Example
/// ```no_run
/// # use losscape::hessian::{HessianOperator, HessianOptions, ParamSubset, LinearOperator};
/// # fn f(objective: &losscape::objective::Objective, model: &losscape::model::Model) {
/// let op = HessianOperator::new(objective, &model.theta, &ParamSubset::Weights, HessianOptions::default());
/// println!("{} scalars in {:?}", op.dim(), op.tensors());
/// # }
/// ```
pub struct HessianOperator<'a, 'd> {
    inner: ObjectiveHessian<'a, 'd>,
    tensors: Vec<String>,
    lengths: Vec<usize>,
}

impl<'a, 'd> HessianOperator<'a, 'd> {
    /// The Hessian over `subset` at `theta`.
    pub fn new(
        objective: &'a Objective<'d>,
        theta: &'a ParamVec<f32>,
        subset: &ParamSubset,
        options: HessianOptions,
    ) -> Self {
        Self::restricted(objective, theta, |t| subset.contains(t), options)
    }

    /// The Hessian over the tensors for which `keep` holds (trainable ones only), e.g. one
    /// block of a subset.
    pub fn restricted(
        objective: &'a Objective<'d>,
        theta: &'a ParamVec<f32>,
        keep: impl Fn(&TensorSpec) -> bool,
        options: HessianOptions,
    ) -> Self {
        let keep = |t: &TensorSpec| t.role.is_trainable() && keep(t);
        let (tensors, lengths) = theta
            .layout
            .tensors()
            .iter()
            .filter(|t| keep(t))
            .map(|t| (t.name.clone(), t.len()))
            .unzip();
        let inner = ObjectiveHessian::new(objective, theta, keep)
            .with_shift(options.weight_decay)
            .with_f64(options.double_precision)
            .with_cache_bytes(options.hvp_cache_bytes)
            .with_curvature(options.curvature);
        Self {
            inner,
            tensors,
            lengths,
        }
    }

    /// Shares `other`'s kept θ-only state (one cache for a whole-network operator and its
    /// per-block ones): both must be on the same objective and θ, in the same precision.
    pub fn sharing_cache_with(mut self, other: &Self) -> Self {
        self.inner = self.inner.sharing_cache_with(&other.inner);
        self
    }

    /// (batches kept, batches, bytes) of the kept θ-only state of the products, once the
    /// first product has built it (see [`ObjectiveHessian::kept_state`]).
    pub fn kept_state(&self) -> Option<(usize, usize, usize)> {
        self.inner.kept_state()
    }

    /// Names of the selected tensors; the operator's entries are theirs, concatenated in
    /// this order (each tensor flattened row-major).
    pub fn tensors(&self) -> &[String] {
        &self.tensors
    }

    /// Scalars of each tensor of [`tensors`](Self::tensors); they sum to `dim()`.
    pub fn tensor_lengths(&self) -> &[usize] {
        &self.lengths
    }
}

impl LinearOperator for HessianOperator<'_, '_> {
    fn dim(&self) -> usize {
        self.inner.dim()
    }

    fn apply(&self, v: ArrayView1<f64>, out: ArrayViewMut1<f64>) {
        self.inner.apply(v, out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::Role;
    use crate::model::{Arch, Model};
    use crate::objective::ObjectiveConfig;
    use ndarray::{Array1, Array2};

    fn names(arch: &str) -> Vec<String> {
        let arch: Arch = arch.parse().unwrap();
        let m = Model::init(arch, 0, false);
        blocks(&m.graph.layout, &ParamSubset::Trainable)
    }

    #[test]
    fn blocks_of_the_zoo() {
        assert_eq!(
            names("resnet-cifar:depth=8,width=4"),
            ["stem", "layer1", "layer2", "layer3", "linear"]
        );
        assert_eq!(
            names("mlp:in_features=5,depth=2,width=3"),
            ["fc_in", "blocks.0", "blocks.1", "fc_out"]
        );
        assert_eq!(block_of("layer1.0.conv1.weight"), "layer1");
        assert_eq!(block_of("conv1"), "conv1");
    }

    #[test]
    fn subsets() {
        let mut layout = Layout::new();
        layout.push("fc.weight", &[3, 2], Role::Weight);
        layout.push("fc.bias", &[3], Role::Bias);
        layout.push("bn.running_mean", &[3], Role::RunningMean);
        let names = |s: &ParamSubset| s.tensor_names(&layout);
        assert_eq!(names(&ParamSubset::Trainable), ["fc.weight", "fc.bias"]);
        assert_eq!(names(&ParamSubset::Weights), ["fc.weight"]);
        let re = ParamSubset::Regex(regex::Regex::new("bias|running").unwrap());
        assert_eq!(names(&re), ["fc.bias"]);
        assert_eq!(re.describe(), "regex:bias|running");
    }

    /// The operator equals the matching block of the full Hessian plus λI.
    #[test]
    fn operator_is_a_shifted_principal_block() {
        let arch: Arch = "mlp:in_features=4,depth=1,width=3,num_classes=3"
            .parse()
            .unwrap();
        let m = Model::init(arch, 1, false);
        let x = ndarray::Array2::from_shape_fn((6, 4), |(i, j)| ((i * 7 + j * 3) % 5) as f32 - 2.0)
            .into_dyn();
        let y: Vec<usize> = (0..6).map(|i| i % 3).collect();
        let o = Objective::new(&m.graph, x.view(), &y, ObjectiveConfig::default()).unwrap();
        let f64_opts = HessianOptions {
            double_precision: true,
            weight_decay: 0.0,
            ..Default::default()
        };
        let dense = |op: &HessianOperator| -> Array2<f64> {
            let n = op.dim();
            let mut h = Array2::zeros((n, n));
            for j in 0..n {
                let mut e = Array1::zeros(n);
                e[j] = 1.0;
                op.apply(e.view(), h.column_mut(j));
            }
            h
        };
        let full = dense(&HessianOperator::new(
            &o,
            &m.theta,
            &ParamSubset::Trainable,
            f64_opts,
        ));
        let sub = HessianOperator::new(
            &o,
            &m.theta,
            &ParamSubset::Weights,
            HessianOptions {
                weight_decay: 0.25,
                ..f64_opts
            },
        );
        let idx: Vec<usize> = m
            .graph
            .layout
            .tensors()
            .iter()
            .filter(|t| t.role.is_trainable())
            .flat_map(|t| {
                let keep = t.shape.len() > 1;
                (0..t.len()).map(move |_| keep)
            })
            .enumerate()
            .filter(|(_, k)| *k)
            .map(|(i, _)| i)
            .collect();
        assert_eq!(sub.dim(), idx.len());
        assert_eq!(
            sub.tensors(),
            ["fc_in.weight", "blocks.0.fc.weight", "fc_out.weight"]
        );
        let h = dense(&sub);
        let scale = full.iter().fold(0.0_f64, |a, v| a.max(v.abs()));
        for (a, &i) in idx.iter().enumerate() {
            for (b, &j) in idx.iter().enumerate() {
                let want = full[[i, j]] + if a == b { 0.25 } else { 0.0 };
                assert!(
                    (h[[a, b]] - want).abs() <= 1e-12 * scale,
                    "H[{a},{b}] = {} vs {want}",
                    h[[a, b]]
                );
            }
        }
        // f32 products agree with f64 to f32 accuracy
        let op32 = HessianOperator::new(
            &o,
            &m.theta,
            &ParamSubset::Trainable,
            HessianOptions::default(),
        );
        let h32 = dense(&op32);
        let worst = (&h32 - &full).iter().fold(0.0_f64, |a, v| a.max(v.abs()));
        assert!(worst <= 1e-4 * scale, "f32 vs f64: max diff {worst}");
    }
}
