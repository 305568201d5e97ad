//! `losscape trajectory --checkpoints DIR --final M --out dirs.h5`: PCA directions of a
//! training run and its path projected onto them (see [`crate::landscape::trajectory`]).
//!
//! Writes the direction file in loss-landscape's PCA layout (`/xdirection`, `/ydirection`,
//! `explained_variance_ratio_`, `singular_values_`, `explained_variance_`) and, beside it,
//! the projection file (`proj_xcoord`, `proj_ycoord`; also `epoch`, and both methods as
//! `cos_xcoord`… and `lstsq_xcoord`…). Then `surface --directions dirs.h5` samples the
//! plane and `plot --trajectory` draws the path on it.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use serde::Serialize;

use crate::landscape::directions::{
    DirType, DirectionConfig, DirectionKind, DirectionNorm, Directions,
};
use crate::landscape::trajectory::{pca_directions, project, trajectory_mask};
use crate::model::Model;
use crate::train::checkpoint::list_checkpoints;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ProjMethod {
    /// x = d·v₁/‖v₁‖ (loss-landscape's default).
    Cos,
    /// Least squares onto span{v₁, v₂}.
    Lstsq,
}

#[derive(Debug, Args)]
pub struct TrajectoryArgs {
    /// Folder of checkpoints model_{epoch}.safetensors (as `train --checkpoints` writes).
    #[arg(long, value_name = "DIR")]
    pub checkpoints: PathBuf,
    /// The final model, the origin of the plane (default: the last checkpoint).
    #[arg(long = "final", value_name = "M")]
    pub final_model: Option<PathBuf>,
    /// Only ≥ 2-D weights enter the PCA (biases and BN γ/β are held at 0).
    #[arg(long)]
    pub ignore_biasbn: bool,
    /// Which projection goes into proj_xcoord/proj_ycoord.
    #[arg(long, value_enum, default_value_t = ProjMethod::Cos)]
    pub proj_method: ProjMethod,
    /// Direction file to write.
    #[arg(long, short = 'o')]
    pub out: PathBuf,
    /// Projection file (default: beside --out, `<stem>_proj_<method>.h5` as loss-landscape names it).
    #[arg(long)]
    pub proj: Option<PathBuf>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Serialize)]
struct Report {
    directions: String,
    projection: String,
    checkpoints: usize,
    explained_variance_ratio: [f64; 2],
    singular_values: [f64; 2],
    explained_variance: [f64; 2],
    epochs: Vec<usize>,
    x: Vec<f64>,
    y: Vec<f64>,
}

fn proj_path(args: &TrajectoryArgs) -> PathBuf {
    args.proj.clone().unwrap_or_else(|| {
        let stem = args.out.file_stem().unwrap_or_default().to_string_lossy();
        let m = match args.proj_method {
            ProjMethod::Cos => "cos",
            ProjMethod::Lstsq => "lstsq",
        };
        args.out.with_file_name(format!("{stem}_proj_{m}.h5"))
    })
}

fn write_projection(path: &Path, cols: &[(&str, Vec<f64>)]) -> Result<()> {
    let io = |e: std::io::Error| anyhow::anyhow!(e);
    crate::util::replace_atomically(path, io, |tmp| {
        crate::io::hdf5_init();
        let f = hdf5::File::create(tmp)?;
        for (name, v) in cols {
            f.new_dataset_builder()
                .with_data(v.as_slice())
                .create(*name)?;
        }
        f.flush()?;
        Ok(())
    })
    .with_context(|| format!("writing {}", path.display()))
}

pub fn run(args: &TrajectoryArgs) -> Result<()> {
    let cps = list_checkpoints(&args.checkpoints)?;
    if cps.len() < 3 {
        bail!(
            "--checkpoints {} holds {} checkpoints (model_<epoch>.safetensors); PCA needs at least 3. \
             HINT: train with --checkpoints DIR --every 1",
            args.checkpoints.display(),
            cps.len()
        );
    }
    let final_path = args
        .final_model
        .clone()
        .unwrap_or_else(|| cps.last().unwrap().1.clone());
    let last = Model::load(&final_path, None)
        .with_context(|| format!("loading --final {}", final_path.display()))?;
    let mut models = Vec::new();
    for (e, p) in &cps {
        let m = Model::load(p, Some(&last.arch))
            .with_context(|| format!("checkpoint of epoch {e}: {}", p.display()))?;
        models.push(m.theta);
    }
    let mask = trajectory_mask(&last.theta, args.ignore_biasbn);
    let pca = pca_directions(&models, &last.theta, &mask).map_err(anyhow::Error::msg)?;
    let (mut cx, mut cy, mut lx, mut ly) = (vec![], vec![], vec![], vec![]);
    for m in &models {
        let (c, l) = project(m, &last.theta, &pca.x, &pca.y, &mask);
        cx.push(c.0);
        cy.push(c.1);
        lx.push(l.0);
        ly.push(l.1);
    }
    let dirs = Directions {
        x: pca.x.clone(),
        y: Some(pca.y.clone()),
        config: DirectionConfig {
            norm: DirectionNorm::None,
            perturb_biasbn: !args.ignore_biasbn,
            dir_type: DirType::Weights,
            seed: 0,
        },
        kind: DirectionKind::Pca,
        pca: Some(vec![
            (
                "explained_variance_ratio_".into(),
                pca.explained_variance_ratio.to_vec(),
            ),
            ("singular_values_".into(), pca.singular_values.to_vec()),
            (
                "explained_variance_".into(),
                pca.explained_variance.to_vec(),
            ),
        ]),
    };
    crate::io::directions::write_directions(&args.out, &dirs, last.sha256.as_deref())
        .with_context(|| format!("writing {}", args.out.display()))?;
    let (px, py) = match args.proj_method {
        ProjMethod::Cos => (cx.clone(), cy.clone()),
        ProjMethod::Lstsq => (lx.clone(), ly.clone()),
    };
    let epochs: Vec<usize> = cps.iter().map(|(e, _)| *e).collect();
    let proj = proj_path(args);
    write_projection(
        &proj,
        &[
            ("proj_xcoord", px.clone()),
            ("proj_ycoord", py.clone()),
            ("cos_xcoord", cx),
            ("cos_ycoord", cy),
            ("lstsq_xcoord", lx),
            ("lstsq_ycoord", ly),
            ("epoch", epochs.iter().map(|&e| e as f64).collect()),
        ],
    )?;
    let report = Report {
        directions: args.out.display().to_string(),
        projection: proj.display().to_string(),
        checkpoints: cps.len(),
        explained_variance_ratio: pca.explained_variance_ratio,
        singular_values: pca.singular_values,
        explained_variance: pca.explained_variance,
        epochs,
        x: px,
        y: py,
    };
    if args.json {
        return super::print_json(&report);
    }
    let span = |v: &[f64]| {
        let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        (lo, hi)
    };
    let ((x0, x1), (y0, y1)) = (span(&report.x), span(&report.y));
    println!(
        "{} checkpoints; explained variance ratio {:.4}, {:.4} (sum {:.4})",
        report.checkpoints,
        pca.explained_variance_ratio[0],
        pca.explained_variance_ratio[1],
        pca.explained_variance_ratio.iter().sum::<f64>()
    );
    println!(
        "directions -> {}\nprojection -> {}  (x in [{x0:.3}, {x1:.3}], y in [{y0:.3}, {y1:.3}])",
        report.directions, report.projection
    );
    let pad = |a: f64, b: f64| {
        let m = 0.2 * (b - a).max(1e-3);
        (a - m, b + m)
    };
    let ((a, b), (c, d)) = (pad(x0, x1), pad(y0, y1));
    println!(
        "next: losscape surface --model {} --data DATA --directions {} --x {a:.3}:{b:.3}:31 --y {c:.3}:{d:.3}:31 --out S.h5\n      losscape plot S.h5 --kind contour --trajectory {} --out S.png",
        final_path.display(),
        report.directions,
        report.projection
    );
    Ok(())
}
