//! `losscape convert IN --out OUT.safetensors`: a checkpoint (torch.save `.pt`/`.pth`/`.t7`,
//! or any model file losscape reads) rewritten as a self-describing safetensors file, the
//! architecture (given or inferred) in its metadata.

use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::Args;

use crate::model::Arch;

#[derive(Debug, Args)]
pub struct ConvertArgs {
    /// Model file to convert: a torch.save checkpoint (.pt, .pth, .t7), .safetensors or .onnx.
    #[arg(value_name = "IN")]
    pub input: PathBuf,
    /// The safetensors file to write (architecture JSON in its metadata).
    #[arg(long, value_name = "OUT.safetensors")]
    pub out: PathBuf,
    /// Architecture, instead of inferring it from the tensor names and shapes (see `eval --help`).
    #[arg(long, value_name = "SPEC")]
    pub arch: Option<Arch>,
    /// Input size (pixels per side) stored for a ResNet, whose weights do not fix it.
    #[arg(long, value_name = "PIXELS", default_value_t = 32, value_parser = clap::value_parser!(u64).range(4..))]
    pub input_size: u64,
}

pub fn run(args: &ConvertArgs) -> Result<()> {
    if args.out.extension().and_then(|e| e.to_str()) != Some("safetensors") {
        bail!("--out {} must end in .safetensors", args.out.display());
    }
    // the output is checked and locked before the checkpoint is read
    let _lock = crate::io::output::prepare_output(&args.out)?;
    let mut m = crate::jobs::ModelSource {
        path: args.input.clone(),
        arch: args.arch.clone(),
        engine: Default::default(),
    }
    .load()?;
    if let Arch::Onnx(_) = m.arch {
        bail!("{} is an ONNX network: its graph cannot be stored as a zoo architecture; use the .onnx file directly", args.input.display());
    }
    if let Arch::ResnetCifar(r) = &m.arch {
        let s = args.input_size as usize;
        m.fit_input(&[r.in_channels, s, s]);
    }
    m.metadata
        .insert("converted_from".into(), args.input.display().to_string());
    if let Some(inf) = &m.inference {
        m.metadata
            .insert("arch_inferred".into(), inf.reasons.join("; "));
    }
    m.save(&args.out)?;
    crate::outln!("{}  {}", args.out.display(), m.arch)?;
    if let Some(inf) = &m.inference {
        for r in &inf.reasons {
            crate::outln!("  {r}")?;
        }
    }
    Ok(())
}
