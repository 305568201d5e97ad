//! Gradient-flow and activation probes: the vanishing-gradient and stable-activation
//! claims of the residual-network literature (He et al. 2016; Balduzzi et al. 2017, "The
//! shattered gradients problem", arXiv:1702.08591) made measurable.
//!
//! ```text
//! per weight tensor W (conv / linear, in depth order):
//!     ‖∂L/∂W‖₂,   ‖∂L/∂W‖₂ / ‖W‖₂        (L = per-sample mean loss over the data)
//! per block output h (the ReLU that ends the stem and each block):
//!     mean(h), std(h)                     over all samples, channels and positions
//! first-to-last gradient ratio = ‖∂L/∂W_first‖ / ‖∂L/∂W_last‖
//! per block (the tensors named `BLOCK.…` of a tap `BLOCK`):  ‖∂L/∂θ_block‖₂, ‖θ_block‖₂
//! per token block output X [T, D] of a sample (transformers), averaged over samples:
//!     rank residual  ‖X − 1x̄ᵀ‖_F / ‖X‖_F,  x̄ = token mean (the x minimizing ‖X − 1xᵀ‖_F)
//!     token cosine   mean over pairs i ≠ j of ⟨X_i, X_j⟩ / (‖X_i‖ ‖X_j‖)
//! ```
//! The rank residual is Dong, Cordonnier & Loukas 2021 ("Attention is not all you need:
//! pure attention loses rank doubly exponentially with depth", ICML, arXiv:2103.03404),
//! measured in the Frobenius norm: 0 when every token is the same vector (rank collapse),
//! near 1 when the tokens average out. Cosine 1 means all tokens point the same way.
//! A vanishing gradient shows as a first-to-last ratio ≪ 1; exploding or collapsing
//! activations as a std that drifts with depth. Both are measured on the trained weights
//! and on a freshly He-initialized copy (seeded), where the architecture alone decides.

use ndarray::{ArrayView1, ArrayView2, Axis, Ix3};
use serde::Serialize;

use crate::dist::{Wire, WireError};
use crate::engine::{Graph, Role, Scalar};
use crate::objective::Objective;

#[derive(Clone, Debug, Serialize)]
pub struct GradientRow {
    pub name: String,
    /// Position among the weight tensors (0 = first layer).
    pub depth: usize,
    pub grad_norm: f64,
    pub weight_norm: f64,
    pub ratio: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct ActivationRow {
    pub name: String,
    pub depth: usize,
    pub mean: f64,
    pub std: f64,
    /// Token block outputs `[N, T, D]` only: mean over samples of ‖X − 1x̄ᵀ‖_F / ‖X‖_F.
    pub rank_residual: Option<f64>,
    /// Token block outputs only: mean over samples of the mean pairwise token cosine.
    pub token_cosine: Option<f64>,
}

/// Gradient and weight norm of all trainable tensors of one block.
#[derive(Clone, Debug, Serialize)]
pub struct BlockGradientRow {
    pub name: String,
    pub depth: usize,
    pub grad_norm: f64,
    pub weight_norm: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct ProbeReport {
    pub loss: f64,
    pub accuracy: f64,
    pub gradients: Vec<GradientRow>,
    /// Per block tap with parameters (`layer2.0`, `blocks.3`), in depth order.
    pub blocks: Vec<BlockGradientRow>,
    pub activations: Vec<ActivationRow>,
    /// ‖∂L/∂W_first‖ / ‖∂L/∂W_last‖.
    pub first_to_last_gradient_ratio: f64,
    /// std of the last block output / std of the first.
    pub last_to_first_activation_std: f64,
}

/// One batch's sums at one tap: Σh, Σh² and the count of values; for token outputs
/// `[N, T, D]` also Σ rank residual and Σ token cosine over its samples.
#[derive(Clone, Copy, Debug, Default)]
struct TapSums {
    sum: f64,
    squares: f64,
    count: usize,
    residual: f64,
    cosine: f64,
    tokens: usize,
}

impl TapSums {
    fn of<T: Scalar>(value: &ndarray::ArrayD<T>) -> Self {
        let mut t = TapSums {
            count: value.len(),
            ..Self::default()
        };
        for &v in value.iter() {
            let v = v.as_f64();
            t.sum += v;
            t.squares += v * v;
        }
        if let Ok(v3) = value.view().into_dimensionality::<Ix3>() {
            for sample in v3.outer_iter() {
                let m = sample.mapv(|v| v.as_f64());
                t.residual += rank_residual(m.view());
                t.cosine += mean_token_cosine(m.view());
                t.tokens += 1;
            }
        }
        t
    }

    fn add(&mut self, o: &Self) {
        self.sum += o.sum;
        self.squares += o.squares;
        self.count += o.count;
        self.residual += o.residual;
        self.cosine += o.cosine;
        self.tokens += o.tokens;
    }
}

impl Wire for TapSums {
    fn encode(&self, out: &mut Vec<u8>) {
        for v in [self.sum, self.squares, self.residual, self.cosine] {
            v.encode(out);
        }
        self.count.encode(out);
        self.tokens.encode(out);
    }
    fn decode(bytes: &mut &[u8]) -> Result<Self, WireError> {
        let [sum, squares, residual, cosine] = [
            f64::decode(bytes)?,
            f64::decode(bytes)?,
            f64::decode(bytes)?,
            f64::decode(bytes)?,
        ];
        Ok(TapSums {
            sum,
            squares,
            residual,
            cosine,
            count: usize::decode(bytes)?,
            tokens: usize::decode(bytes)?,
        })
    }
}

/// Runs both probes at θ over the objective's data, in its batches and batch-norm mode.
/// Every quantity is a sum over batches added in batch order ([`Objective::fold_data`]),
/// so a distributed objective gives the one-process report bit for bit.
pub fn probe<T: Scalar>(obj: &Objective<'_>, theta: ArrayView1<T>) -> ProbeReport {
    let graph: &Graph = obj.graph();
    let (eval, grad) = obj.gradient(theta);
    let mut gradients = Vec::new();
    for t in graph.layout.tensors() {
        if t.role != Role::Weight {
            continue;
        }
        let r = t.range();
        let norm = |v: ArrayView1<T>| v.iter().map(|a| a.as_f64().powi(2)).sum::<f64>().sqrt();
        let g = norm(grad.slice(ndarray::s![r.clone()]));
        let w = norm(theta.slice(ndarray::s![r]));
        gradients.push(GradientRow {
            name: t.name.clone(),
            depth: gradients.len(),
            grad_norm: g,
            weight_norm: w,
            ratio: g / w,
        });
    }
    // activation statistics: Σh, Σh², count per tap, in f64, batches in order; token
    // outputs [N, T, D] also Σ rank residual, Σ token cosine over samples
    let taps = graph.taps();
    let norm = |g: &ndarray::Array1<T>, r: std::ops::Range<usize>| {
        g.slice(ndarray::s![r])
            .iter()
            .map(|a| a.as_f64().powi(2))
            .sum::<f64>()
    };
    let theta_own = theta.to_owned();
    let blocks: Vec<BlockGradientRow> = taps
        .iter()
        .filter_map(|(name, _)| {
            let prefix = format!("{name}.");
            let ranges: Vec<_> = graph
                .layout
                .tensors()
                .iter()
                .filter(|t| t.role.is_trainable() && t.name.starts_with(&prefix))
                .map(|t| t.range())
                .collect();
            (!ranges.is_empty()).then(|| (name.clone(), ranges))
        })
        .enumerate()
        .map(|(depth, (name, ranges))| BlockGradientRow {
            name,
            depth,
            grad_norm: ranges
                .iter()
                .map(|r| norm(&grad, r.clone()))
                .sum::<f64>()
                .sqrt(),
            weight_norm: ranges
                .iter()
                .map(|r| norm(&theta_own, r.clone()))
                .sum::<f64>()
                .sqrt(),
        })
        .collect();
    // per batch and tap: Σh, Σh², count (and the token sums); the batches' sums are added
    // in batch order, on one process or over the ranks alike
    let mode = obj.config().mode;
    let mut sums = vec![TapSums::default(); taps.len()];
    obj.fold_data::<T, Vec<TapSums>>(
        |xb, _| {
            let values = graph.forward_all(theta, xb, mode);
            taps.iter()
                .map(|(_, node)| TapSums::of(&values[*node]))
                .collect()
        },
        |batch| {
            for (acc, t) in sums.iter_mut().zip(batch) {
                acc.add(&t);
            }
        },
    );
    let activations: Vec<ActivationRow> = taps
        .iter()
        .zip(&sums)
        .enumerate()
        .map(|(depth, ((name, _), t))| {
            let (s, s2, n, r, c, k) = (t.sum, t.squares, t.count, t.residual, t.cosine, t.tokens);
            let mean = s / n as f64;
            ActivationRow {
                name: name.clone(),
                depth,
                mean,
                std: (s2 / n as f64 - mean * mean).max(0.0).sqrt(),
                rank_residual: (k > 0).then(|| r / k as f64),
                token_cosine: (k > 0).then(|| c / k as f64),
            }
        })
        .collect();
    let ratio = match (gradients.first(), gradients.last()) {
        (Some(f), Some(l)) => f.grad_norm / l.grad_norm,
        _ => f64::NAN,
    };
    let act = match (activations.first(), activations.last()) {
        (Some(f), Some(l)) => l.std / f.std,
        _ => f64::NAN,
    };
    ProbeReport {
        loss: eval.loss,
        accuracy: eval.accuracy,
        gradients,
        blocks,
        activations,
        first_to_last_gradient_ratio: ratio,
        last_to_first_activation_std: act,
    }
}

/// ‖X − 1x̄ᵀ‖_F / ‖X‖_F of a token matrix `x [T, D]` (rows = tokens), x̄ the token mean,
/// which minimizes ‖X − 1xᵀ‖_F over x (Dong et al. 2021's residual, Frobenius norm). 0 for
/// X = 0.
pub fn rank_residual(x: ArrayView2<f64>) -> f64 {
    let Some(mean) = x.mean_axis(Axis(0)) else {
        return 0.0;
    };
    let total: f64 = x.iter().map(|v| v * v).sum();
    if total == 0.0 {
        return 0.0;
    }
    let res: f64 = x
        .outer_iter()
        .map(|row| {
            row.iter()
                .zip(&mean)
                .map(|(a, m)| (a - m).powi(2))
                .sum::<f64>()
        })
        .sum();
    (res / total).sqrt()
}

/// Mean cosine similarity over the T(T−1) ordered pairs of distinct tokens (rows) of
/// `x [T, D]`; a zero token has cosine 0 with every other. NaN for fewer than 2 tokens.
pub fn mean_token_cosine(x: ArrayView2<f64>) -> f64 {
    let t = x.nrows();
    if t < 2 {
        return f64::NAN;
    }
    // Σ_{i≠j} ûᵢ·ûⱼ = ‖Σᵢ ûᵢ‖² − Σᵢ ‖ûᵢ‖², ûᵢ the unit tokens
    let mut sum = ndarray::Array1::<f64>::zeros(x.ncols());
    let mut units = 0.0;
    for row in x.outer_iter() {
        let n = row.dot(&row).sqrt();
        if n > 0.0 {
            sum.scaled_add(1.0 / n, &row);
            units += 1.0;
        }
    }
    (sum.dot(&sum) - units) / (t * (t - 1)) as f64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::Mode;
    use crate::model::{Arch, Model};
    use crate::objective::ObjectiveConfig;
    use ndarray::{ArrayD, IxDyn};

    #[test]
    fn probes_every_weight_and_block() {
        let arch: Arch = "resnet-cifar:depth=8,width=4,in_channels=1,input_size=8,num_classes=3"
            .parse()
            .unwrap();
        let m = Model::init(arch, 1, true);
        let x = ArrayD::from_shape_fn(IxDyn(&[10, 1, 8, 8]), |i| {
            ((i[0] * 7 + i[2] * 3 + i[3]) % 11) as f32 / 5.0 - 1.0
        });
        let y: Vec<usize> = (0..10).map(|i| i % 3).collect();
        let cfg = ObjectiveConfig {
            batch_size: 4,
            mode: Mode::Eval,
        };
        let o = Objective::new(&m.graph, x.view(), &y, cfg).unwrap();
        let r = probe(&o, m.theta.data.view());
        // conv1, 3 stages × (conv1, conv2) + 2 projections, linear
        assert_eq!(r.gradients.len(), 1 + 6 + 2 + 1);
        assert_eq!(
            r.activations
                .iter()
                .map(|a| a.name.as_str())
                .collect::<Vec<_>>(),
            ["stem", "layer1.0", "layer2.0", "layer3.0"]
        );
        assert!(r.activations.iter().all(|a| a.std > 0.0 && a.mean >= 0.0));
        assert!(r.first_to_last_gradient_ratio.is_finite() && r.first_to_last_gradient_ratio > 0.0);
        // gradient norms equal the objective's gradient
        let (_, g) = o.gradient(m.theta.data.view());
        let w = m.graph.layout.get("linear.weight").unwrap();
        let n: f64 = g
            .slice(ndarray::s![w.range()])
            .iter()
            .map(|v| (*v as f64).powi(2))
            .sum::<f64>()
            .sqrt();
        assert!((r.gradients.last().unwrap().grad_norm - n).abs() < 1e-9 * n);
    }

    #[test]
    fn rank_collapse_measures_by_hand() {
        use ndarray::array;
        // X = [[1,0],[0,1],[1,1]]: x̄ = (2/3, 2/3), ‖X − 1x̄ᵀ‖² = 4/3, ‖X‖² = 4
        let x = array![[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]];
        assert!((rank_residual(x.view()) - (1.0f64 / 3.0).sqrt()).abs() < 1e-15);
        // cosines: (1,2) 0, (1,3) and (2,3) 1/√2
        let want = (2.0 / 2f64.sqrt()) / 3.0;
        assert!((mean_token_cosine(x.view()) - want).abs() < 1e-15);
        // collapsed tokens X = 1xᵀ: residual 0, cosine 1
        let c = array![
            [0.5, -2.0, 3.0],
            [0.5, -2.0, 3.0],
            [0.5, -2.0, 3.0],
            [0.5, -2.0, 3.0]
        ];
        assert_eq!(rank_residual(c.view()), 0.0);
        assert!((mean_token_cosine(c.view()) - 1.0).abs() < 1e-15);
        // rank one a·bᵀ with a not constant is not collapsed: residual ‖a − ā‖/‖a‖
        let (a, b) = (array![1.0, 2.0, -1.0], array![3.0, 0.5]);
        let ab = ndarray::Array2::from_shape_fn((3, 2), |(i, j)| a[i] * b[j]);
        assert!((rank_residual(ab.view()) - (7.0f64 / 9.0).sqrt()).abs() < 1e-15);
        // tokens ±b: pair signs +, −, − → mean −1/3
        assert!((mean_token_cosine(ab.view()) + 1.0 / 3.0).abs() < 1e-15);
        assert_eq!(rank_residual(ndarray::Array2::zeros((3, 2)).view()), 0.0);
    }

    #[test]
    fn vit_probes_blocks_and_tokens() {
        let arch: Arch =
            "vit:input_size=8,patch=2,depth=3,width=8,heads=2,mlp_ratio=2,num_classes=3"
                .parse()
                .unwrap();
        let m = Model::init(arch, 1, false);
        let x = ArrayD::from_shape_fn(IxDyn(&[6, 1, 8, 8]), |i| {
            ((i[0] * 5 + i[2] * 3 + i[3]) % 7) as f32 / 3.0 - 1.0
        });
        let y: Vec<usize> = (0..6).map(|i| i % 3).collect();
        let cfg = ObjectiveConfig {
            batch_size: 4,
            mode: Mode::Eval,
        };
        let o = Objective::new(&m.graph, x.view(), &y, cfg).unwrap();
        let r = probe(&o, m.theta.data.view());
        let names: Vec<&str> = r.activations.iter().map(|a| a.name.as_str()).collect();
        assert_eq!(names, ["embed", "blocks.0", "blocks.1", "blocks.2"]);
        let blocks: Vec<&str> = r.blocks.iter().map(|b| b.name.as_str()).collect();
        assert_eq!(blocks, ["blocks.0", "blocks.1", "blocks.2"]);
        // the per-block norm is the norm over the block's tensors
        let (_, g) = o.gradient(m.theta.data.view());
        let want: f64 = m
            .graph
            .layout
            .tensors()
            .iter()
            .filter(|t| t.name.starts_with("blocks.1."))
            .flat_map(|t| g.slice(ndarray::s![t.range()]).to_vec())
            .map(|v| (v as f64).powi(2))
            .sum::<f64>()
            .sqrt();
        assert!((r.blocks[1].grad_norm - want).abs() < 1e-9 * want);
        // token rows: the sample mean of the residual at blocks.2, from the forward values
        // (one f32 batch here, batches of 4 in the probe: agreement to f32 rounding)
        let tap = m.graph.taps()[3].1;
        let vals = m.graph.forward_all(m.theta.data.view(), &x, Mode::Eval);
        let v3 = vals[tap].view().into_dimensionality::<Ix3>().unwrap();
        let want: f64 = v3
            .outer_iter()
            .map(|s| rank_residual(s.mapv(|v| v as f64).view()))
            .sum::<f64>()
            / 6.0;
        let got = r.activations[3].rank_residual.unwrap();
        assert!((got - want).abs() < 1e-6 * want, "{got} vs {want}");
        for a in &r.activations {
            let (res, cos) = (a.rank_residual.unwrap(), a.token_cosine.unwrap());
            assert!(
                res > 0.0 && res <= 1.0 && (-1.0..=1.0).contains(&cos),
                "{a:?}"
            );
        }
    }
}
