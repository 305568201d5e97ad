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
//! ```
//! A vanishing gradient shows as a first-to-last ratio ≪ 1; exploding or collapsing
//! activations as a std that drifts with depth. Both are measured on the trained weights
//! and on a freshly He-initialized copy (seeded), where the architecture alone decides.

use ndarray::{ArrayView1, Axis};
use serde::Serialize;

use crate::engine::{Graph, Mode, Role, Scalar};
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
}

#[derive(Clone, Debug, Serialize)]
pub struct ProbeReport {
    pub loss: f64,
    pub accuracy: f64,
    pub gradients: Vec<GradientRow>,
    pub activations: Vec<ActivationRow>,
    /// ‖∂L/∂W_first‖ / ‖∂L/∂W_last‖.
    pub first_to_last_gradient_ratio: f64,
    /// std of the last block output / std of the first.
    pub last_to_first_activation_std: f64,
}

/// Runs both probes at θ over the objective's data.
pub fn probe<T: Scalar>(
    obj: &Objective<'_>,
    x: ndarray::ArrayViewD<'_, f32>,
    theta: ArrayView1<T>,
    batch_size: usize,
    mode: Mode,
) -> ProbeReport {
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
    // activation statistics: Σh, Σh², count per tap, in f64, batches in order
    let taps = graph.taps();
    let mut sums = vec![(0.0f64, 0.0f64, 0usize); taps.len()];
    for batch in x.axis_chunks_iter(Axis(0), batch_size.max(1)) {
        let xb = batch.mapv(|v| T::from_f(v as f64));
        let values = graph.forward_all(theta, &xb, mode);
        for ((_, node), s) in taps.iter().zip(sums.iter_mut()) {
            for &v in values[*node].iter() {
                let v = v.as_f64();
                s.0 += v;
                s.1 += v * v;
            }
            s.2 += values[*node].len();
        }
    }
    let activations: Vec<ActivationRow> = taps
        .iter()
        .zip(&sums)
        .enumerate()
        .map(|(depth, ((name, _), &(s, s2, n)))| {
            let mean = s / n as f64;
            ActivationRow {
                name: name.clone(),
                depth,
                mean,
                std: (s2 / n as f64 - mean * mean).max(0.0).sqrt(),
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
        activations,
        first_to_last_gradient_ratio: ratio,
        last_to_first_activation_std: act,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
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
        let o = Objective::new(&m.graph, x.view(), &y, ObjectiveConfig::default()).unwrap();
        let r = probe(&o, x.view(), m.theta.data.view(), 4, Mode::Eval);
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
}
