//! `losscape info MODEL`: the layer table, parameter counts and tensors of a model.

use anyhow::Result;
use clap::Args;
use serde::Serialize;

use crate::engine::{Op, Role};
use crate::model::Model;

#[derive(Debug, Args)]
pub struct InfoArgs {
    /// Model file (.safetensors or .onnx).
    #[arg(value_name = "MODEL")]
    pub model: std::path::PathBuf,
    /// Architecture, overriding the file's metadata (see `eval --help`).
    #[arg(long, value_name = "SPEC")]
    pub arch: Option<crate::model::Arch>,
    /// Print JSON instead of tables.
    #[arg(long)]
    pub json: bool,
}

#[derive(Serialize)]
struct LayerRow {
    name: String,
    op: String,
    /// Output shape of one sample, PyTorch order.
    output: Vec<usize>,
    params: usize,
}

#[derive(Serialize)]
struct TensorRow {
    name: String,
    shape: Vec<usize>,
    role: Role,
    numel: usize,
    norm: f64,
}

#[derive(Serialize)]
struct Info {
    file: String,
    sha256: Option<String>,
    arch: crate::model::Arch,
    description: String,
    residual: bool,
    input_shape: Vec<usize>,
    num_classes: usize,
    trainable_params: usize,
    buffers: usize,
    layers: Vec<LayerRow>,
    tensors: Vec<TensorRow>,
    metadata: std::collections::BTreeMap<String, String>,
}

fn describe(m: &Model) -> Result<Info> {
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
    Ok(Info {
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
    })
}

pub fn run(args: &InfoArgs) -> Result<()> {
    let m = crate::jobs::ModelSource {
        path: args.model.clone(),
        arch: args.arch.clone(),
        engine: Default::default(),
    }
    .load()?;
    let info = describe(&m)?;
    if args.json {
        return super::print_json(&info);
    }
    println!("{}  {}", info.file, info.description);
    println!(
        "{} trainable parameters, {} buffer values (BN running statistics); input {:?}, {} classes",
        info.trainable_params, info.buffers, info.input_shape, info.num_classes
    );
    for (k, v) in info
        .metadata
        .iter()
        .filter(|(k, _)| k.as_str() != crate::model::zoo::ARCH_METADATA_KEY)
    {
        println!("  {k}: {v}");
    }
    println!(
        "\n{:<28} {:<18} {:<16} {:>9}",
        "layer", "op", "output", "params"
    );
    for l in &info.layers {
        println!(
            "{:<28} {:<18} {:<16} {:>9}",
            l.name,
            l.op,
            format!("{:?}", l.output),
            l.params
        );
    }
    println!(
        "\n{:<36} {:<16} {:<13} {:>9} {:>10}",
        "tensor", "shape", "role", "numel", "‖·‖₂"
    );
    for t in &info.tensors {
        let role = serde_json::to_value(t.role)?
            .as_str()
            .unwrap_or("")
            .to_string();
        println!(
            "{:<36} {:<16} {:<13} {:>9} {:>10.4}",
            t.name,
            format!("{:?}", t.shape),
            role,
            t.numel,
            t.norm
        );
    }
    Ok(())
}
