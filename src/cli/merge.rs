//! `losscape merge SHARD.h5... --out F.h5`: joins the shard files of one surface
//! (`surface --shard i/N`) into the file a single run would have written.
//!
//! The shards must belong together (same fingerprint: model, directions, grid, data and
//! options), be distinct, number N together, and cover every point.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Args;

use crate::io::surface::{read_surface, write_surface, Attr, SurfaceFile};
use crate::landscape::surface::Shard;

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
    let files: Vec<(PathBuf, SurfaceFile)> = args
        .shards
        .iter()
        .map(|p| {
            read_surface(p)
                .with_context(|| format!("reading shard {}", p.display()))
                .map(|f| (p.clone(), f))
        })
        .collect::<Result<_>>()?;
    let (first_path, first) = &files[0];
    let fp = |f: &SurfaceFile| {
        f.attrs
            .get("fingerprint")
            .and_then(Attr::as_str)
            .map(str::to_owned)
    };
    let shard_of = |p: &PathBuf, f: &SurfaceFile| -> Result<Shard> {
        let s = f
            .attrs
            .get("shard")
            .map(|a| a.to_string())
            .unwrap_or_else(|| "0/1".into());
        s.parse::<Shard>()
            .map_err(|e| anyhow::anyhow!("{}: attribute shard: {e}", p.display()))
    };
    let Some(fingerprint) = fp(first) else {
        bail!("{} has no fingerprint attribute: only shards written by `losscape surface --shard` can be merged", first_path.display());
    };
    let count = shard_of(first_path, first)?.count;
    let mut seen = vec![None::<PathBuf>; count];
    let mut merged = first.values.clone();
    merged.completed.fill(0);
    for a in merged.arrays.iter_mut() {
        a.fill(f64::NAN);
    }
    for (p, f) in &files {
        if fp(f).as_deref() != Some(fingerprint.as_str()) {
            bail!(
                "{} does not belong with {}: they differ in model, directions, grid, data or options (fingerprint)",
                p.display(),
                first_path.display()
            );
        }
        let s = shard_of(p, f)?;
        if s.count != count {
            bail!(
                "{} is shard {s} but {} is one of {count}",
                p.display(),
                first_path.display()
            );
        }
        if let Some(other) = &seen[s.index] {
            bail!("{} and {} are both shard {s}", other.display(), p.display());
        }
        seen[s.index] = Some(p.clone());
        if f.values.names != merged.names {
            bail!(
                "{} holds {:?} but {} holds {:?}",
                p.display(),
                f.values.names,
                first_path.display(),
                merged.names
            );
        }
        for (k, &c) in f.values.completed.iter().enumerate() {
            if c == 1 && s.contains(k) {
                let v: Vec<f64> = f
                    .values
                    .arrays
                    .iter()
                    .map(|a| a.as_slice().expect("standard")[k])
                    .collect();
                merged.set(k, &v);
            }
        }
    }
    let missing: Vec<String> = seen
        .iter()
        .enumerate()
        .filter(|(_, s)| s.is_none())
        .map(|(i, _)| format!("{i}/{count}"))
        .collect();
    if !missing.is_empty() {
        bail!(
            "missing shard(s) {}; pass every shard file",
            missing.join(", ")
        );
    }
    let pending = merged.completed.iter().filter(|&&c| c == 0).count();
    if pending > 0 {
        bail!("{pending} point(s) are not computed in any shard; rerun the unfinished shard commands first");
    }
    let mut attrs = first.attrs.clone();
    attrs.insert("shard".into(), Shard::WHOLE.to_string().into());
    for k in [
        "points_completed",
        "points_total",
        "axis_order",
        "x_axis",
        "y_axis",
        "reinterpreted_axes",
    ] {
        attrs.remove(k);
    }
    write_surface(
        &args.out,
        &first.grid(),
        &merged,
        first.dir_file.as_deref(),
        &attrs,
    )
    .with_context(|| format!("writing {}", args.out.display()))?;
    println!(
        "{}: merged {} shards, {} points",
        args.out.display(),
        count,
        merged.completed_count()
    );
    Ok(())
}
