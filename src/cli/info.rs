//! `losscape info MODEL` (or `info --model MODEL`, as every other command names it): the
//! layer table, parameter counts and tensors of a model.

use std::path::{Path, PathBuf};

use anyhow::Result;
use clap::Args;

use crate::model::info::describe;

#[derive(Debug, Args)]
pub struct InfoArgs {
    /// Model file (see --model).
    #[arg(
        value_name = "MODEL",
        required_unless_present = "model_flag",
        conflicts_with = "model_flag"
    )]
    pub model: Option<PathBuf>,
    /// Model file: .safetensors (architecture in its metadata), .onnx (torch.onnx.export)
    /// or a torch.save checkpoint (.pt, .pth, .t7) holding a state_dict; the same as MODEL.
    #[arg(long = "model", short = 'm', id = "model_flag", value_name = "FILE")]
    pub model_flag: Option<PathBuf>,
    /// Architecture, overriding the file's metadata (see `eval --help`).
    #[arg(long, value_name = "SPEC")]
    pub arch: Option<crate::model::Arch>,
    /// Print JSON instead of tables.
    #[arg(long)]
    pub json: bool,
}

impl InfoArgs {
    /// The model file, given as MODEL or --model.
    pub fn path(&self) -> &Path {
        self.model
            .as_deref()
            .or(self.model_flag.as_deref())
            .expect("clap requires MODEL or --model")
    }
}

pub fn run(args: &InfoArgs) -> Result<()> {
    let m = crate::jobs::ModelSource {
        path: args.path().to_path_buf(),
        arch: args.arch.clone(),
        engine: Default::default(),
    }
    .load()?;
    let info = describe(&m)?;
    if args.json {
        return super::print_json(&info);
    }
    crate::outln!("{}  {}", info.file, info.description)?;
    crate::outln!(
        "{} trainable parameters, {} buffer values (BN running statistics); input {:?}, {} classes",
        info.trainable_params,
        info.buffers,
        info.input_shape,
        info.num_classes
    )?;
    if let Some(inf) = &info.inference {
        crate::outln!(
            "architecture {}:",
            if inf.reasons.len() == 1 {
                "given"
            } else {
                "inferred from the tensors"
            }
        )?;
        for r in &inf.reasons {
            crate::outln!("  {r}")?;
        }
    }
    for (k, v) in info
        .metadata
        .iter()
        .filter(|(k, _)| k.as_str() != crate::model::zoo::ARCH_METADATA_KEY)
    {
        crate::outln!("  {k}: {v}")?;
    }
    crate::outln!(
        "\n{:<28} {:<18} {:<16} {:>9}",
        "layer",
        "op",
        "output",
        "params"
    )?;
    for l in &info.layers {
        crate::outln!(
            "{:<28} {:<18} {:<16} {:>9}",
            l.name,
            l.op,
            format!("{:?}", l.output),
            l.params
        )?;
    }
    crate::outln!(
        "\n{:<36} {:<16} {:<13} {:>9} {:>10}",
        "tensor",
        "shape",
        "role",
        "numel",
        "‖·‖₂"
    )?;
    for t in &info.tensors {
        let role = serde_json::to_value(t.role)?
            .as_str()
            .unwrap_or("")
            .to_string();
        crate::outln!(
            "{:<36} {:<16} {:<13} {:>9} {:>10.4}",
            t.name,
            format!("{:?}", t.shape),
            role,
            t.numel,
            t.norm
        )?;
    }
    Ok(())
}
