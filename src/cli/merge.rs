//! `losscape merge SHARD.h5... --out F.h5`: joins the shard files of one surface
//! (`surface --shard i/N`) into the file a single run would have written; see
//! [`crate::jobs::merge`].

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;

use crate::jobs::merge::merge_shards;

#[derive(Debug, Args)]
pub struct MergeArgs {
    /// Shard files written by `losscape surface --shard I/N`.
    #[arg(required = true, value_name = "SHARD.h5")]
    pub shards: Vec<PathBuf>,
    /// Output surface file.
    #[arg(long, short = 'o', value_name = "FILE")]
    pub out: PathBuf,
}

pub fn run(args: &MergeArgs) -> Result<()> {
    let m = merge_shards(&args.shards, &args.out)?;
    crate::outln!(
        "{}: merged {} shards, {} points",
        args.out.display(),
        m.shards,
        m.points
    )?;
    Ok(())
}
