//! A model described for people: the layer table, parameter counts, tensors and norms
//! (`losscape info`).

use serde::Serialize;

use super::Model;
use crate::engine::{EngineError, Op, Role};

/// One node of the graph as `info` lists it.
#[derive(Serialize)]
pub struct LayerRow {
    pub name: String,
    pub op: String,
    /// Output shape of one sample, PyTorch order.
    pub output: Vec<usize>,
    pub params: usize,
}

/// One tensor of the layout with its norm.
#[derive(Serialize)]
pub struct TensorRow {
    pub name: String,
    pub shape: Vec<usize>,
    pub role: Role,
    pub numel: usize,
    pub norm: f64,
}

/// What `losscape info` shows of a model.
#[derive(Serialize)]
pub struct ModelInfo {
    pub file: String,
    pub sha256: Option<String>,
    pub arch: crate::model::Arch,
    pub description: String,
    pub residual: bool,
    pub input_shape: Vec<usize>,
    pub num_classes: usize,
    pub trainable_params: usize,
    pub buffers: usize,
    pub layers: Vec<LayerRow>,
    pub tensors: Vec<TensorRow>,
    pub metadata: std::collections::BTreeMap<String, String>,
    /// How the architecture was inferred from the tensors, when the file did not say.
    pub inference: Option<crate::model::infer::Inference>,
}

/// The layer table (per-sample output shapes in PyTorch order, trainable parameters per
/// node), the tensors with their norms, and the model's metadata.
pub fn describe(m: &Model) -> Result<ModelInfo, EngineError> {
    let g = &m.graph;
    let shapes = g.infer_shapes(&g.input_shape, 1)?;
    let layers = g
        .nodes
        .iter()
        .zip(&shapes)
        .skip(1)
        .map(|(node, s)| {
            // internal [C, 1, H, W] → PyTorch per-sample [C, H, W]; [1, F] → [F]
            let output = if s.len() == 4 {
                vec![s[0], s[2], s[3]]
            } else {
                s[1..].to_vec()
            };
            let params = node
                .params
                .iter()
                .map(|&i| g.layout.tensor(i))
                .filter(|t| t.role.is_trainable())
                .map(|t| t.len())
                .sum();
            let op = match &node.op {
                Op::Conv2d(c) => {
                    format!("conv{}x{} s{} p{}", c.kernel, c.kernel, c.stride, c.padding)
                }
                other => other.kind().to_string(),
            };
            LayerRow {
                name: node.name.clone(),
                op,
                output,
                params,
            }
        })
        .collect();
    let tensors = g
        .layout
        .tensors()
        .iter()
        .enumerate()
        .map(|(i, t)| TensorRow {
            name: t.name.clone(),
            shape: t.shape.clone(),
            role: t.role,
            numel: t.len(),
            norm: m
                .theta
                .tensor(i)
                .iter()
                .map(|&v| (v as f64).powi(2))
                .sum::<f64>()
                .sqrt(),
        })
        .collect();
    Ok(ModelInfo {
        file: m
            .path
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_default(),
        sha256: m.sha256.clone(),
        arch: m.arch.clone(),
        description: m.arch.to_string(),
        residual: m.arch.is_residual(),
        input_shape: g.input_shape.clone(),
        num_classes: g.num_classes,
        trainable_params: g.layout.trainable_len(),
        buffers: g.layout.len() - g.layout.trainable_len(),
        layers,
        tensors,
        metadata: m.metadata.clone(),
        inference: m.inference.clone(),
    })
}
