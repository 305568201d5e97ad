//! Merging shards: the files of one surface computed as `surface --shard i/N` joined into
//! the file a single run would have written.
//!
//! The shards must belong together (same fingerprint: model, directions, grid, data and
//! options), be distinct, number N together, and cover every point.

use std::path::{Path, PathBuf};

use super::error::{JobError, JobResult};
use crate::io::surface::{read_surface, write_surface, Attr, SurfaceFile};
use crate::landscape::surface::Shard;

/// What [`merge_shards`] wrote.
#[derive(Debug, Clone)]
pub struct MergeSummary {
    pub shards: usize,
    pub points: usize,
}

fn fingerprint(f: &SurfaceFile) -> Option<String> {
    f.attrs
        .get("fingerprint")
        .and_then(Attr::as_str)
        .map(str::to_owned)
}

fn shard_of(p: &Path, f: &SurfaceFile) -> JobResult<Shard> {
    let s = f
        .attrs
        .get("shard")
        .map(|a| a.to_string())
        .unwrap_or_else(|| "0/1".into());
    s.parse::<Shard>().map_err(|e| JobError::Shards {
        message: format!("{}: attribute shard: {e}", p.display()),
    })
}

/// Reads the shard files and writes the whole surface to `out` (atomically).
pub fn merge_shards(shards: &[PathBuf], out: &Path) -> JobResult<MergeSummary> {
    let _lock = super::prepare_out("out", out)?;
    let files: Vec<(PathBuf, SurfaceFile)> = shards
        .iter()
        .map(|p| {
            read_surface(p)
                .map_err(|source| JobError::SurfaceFile {
                    what: "reading shard",
                    path: p.clone(),
                    source: Box::new(source),
                })
                .map(|f| (p.clone(), f))
        })
        .collect::<JobResult<_>>()?;
    let Some((first_path, first)) = files.first() else {
        return Err(JobError::Shards {
            message: "give at least one shard file".into(),
        });
    };
    let bad = |message: String| JobError::Shards { message };
    let Some(fp) = fingerprint(first) else {
        return Err(bad(format!("{} has no fingerprint attribute: only shards written by `losscape surface --shard` can be merged", first_path.display())));
    };
    let count = shard_of(first_path, first)?.count;
    // the count comes from the file: a surface has at most one shard per point
    let points = first.values.completed.len();
    if count > points.max(1) {
        return Err(bad(format!(
            "{}: attribute shard says {count} shards, more than the {points} points of its grid",
            first_path.display()
        )));
    }
    let mut seen = vec![None::<PathBuf>; count];
    let mut merged = first.values.clone();
    merged.completed.fill(0);
    for a in merged.arrays.iter_mut() {
        a.fill(f64::NAN);
    }
    for (p, f) in &files {
        if fingerprint(f).as_deref() != Some(fp.as_str()) {
            return Err(bad(format!(
                "{} does not belong with {}: they differ in model, directions, grid, data or options (fingerprint)",
                p.display(),
                first_path.display()
            )));
        }
        let s = shard_of(p, f)?;
        if s.count != count {
            return Err(bad(format!(
                "{} is shard {s} but {} is one of {count}",
                p.display(),
                first_path.display()
            )));
        }
        if let Some(other) = &seen[s.index] {
            return Err(bad(format!(
                "{} and {} are both shard {s}",
                other.display(),
                p.display()
            )));
        }
        seen[s.index] = Some(p.clone());
        if f.values.names != merged.names {
            return Err(bad(format!(
                "{} holds {:?} but {} holds {:?}",
                p.display(),
                f.values.names,
                first_path.display(),
                merged.names
            )));
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
        return Err(bad(format!(
            "missing shard(s) {}; pass every shard file",
            missing.join(", ")
        )));
    }
    let pending = merged.completed.iter().filter(|&&c| c == 0).count();
    if pending > 0 {
        return Err(bad(format!("{pending} point(s) are not computed in any shard; rerun the unfinished shard commands first")));
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
        out,
        &first.grid(),
        &merged,
        first.dir_file.as_deref(),
        &attrs,
    )
    .map_err(|source| JobError::SurfaceFile {
        what: "writing",
        path: out.to_path_buf(),
        source: Box::new(source),
    })?;
    Ok(MergeSummary {
        shards: count,
        points: merged.completed_count(),
    })
}
