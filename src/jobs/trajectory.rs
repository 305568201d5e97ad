//! The trajectory job: PCA directions of a training run's checkpoints and the run's path
//! projected onto them (see [`crate::landscape::trajectory`]; loss-landscape's
//! `plot_trajectory.py`, Li et al. 2018 §7).
//!
//! Writes the direction file in loss-landscape's PCA layout (`/xdirection`, `/ydirection`,
//! `explained_variance_ratio_`, `singular_values_`, `explained_variance_`) and, beside it,
//! the projection file (`proj_xcoord`, `proj_ycoord`; also `epoch`, and both methods as
//! `cos_xcoord`… and `lstsq_xcoord`…). Then `surface --directions dirs.h5` samples the
//! plane and `plot --trajectory` draws the path on it.

use std::path::{Path, PathBuf};

use serde::Serialize;

use super::error::{JobError, JobResult};
use super::inputs::ModelSource;
use crate::choice::choice;
use crate::landscape::directions::{
    DirType, DirectionConfig, DirectionKind, DirectionNorm, Directions,
};
use crate::landscape::trajectory::{pca_directions, project, trajectory_mask};
use crate::progress::Reporter;
use crate::train::checkpoint::list_checkpoints;

choice! {
    /// How checkpoints are projected onto the PCA plane.
    #[derive(Default)]
    pub enum ProjMethod {
        #[default]
        Cos = "cos": "x = d·v₁/‖v₁‖ (loss-landscape's default).",
        Lstsq = "lstsq": "Least squares onto span{v₁, v₂}.",
    }
}

/// A validated trajectory job.
#[derive(Debug, Clone)]
pub struct TrajectoryConfig {
    /// Folder of checkpoints `model_{epoch}.safetensors`.
    pub checkpoints: PathBuf,
    /// The origin of the plane (None: the last checkpoint).
    pub final_model: Option<PathBuf>,
    /// Only ≥ 2-D weights enter the PCA.
    pub ignore_biasbn: bool,
    /// Which projection goes into `proj_xcoord`/`proj_ycoord`.
    pub proj_method: ProjMethod,
    /// The direction file.
    pub out: PathBuf,
    /// The projection file (None: `<stem>_proj_<method>.h5` beside `out`).
    pub proj: Option<PathBuf>,
}

impl TrajectoryConfig {
    /// The projection file.
    pub fn proj_path(&self) -> PathBuf {
        self.proj.clone().unwrap_or_else(|| {
            let stem = self.out.file_stem().unwrap_or_default().to_string_lossy();
            self.out
                .with_file_name(format!("{stem}_proj_{}.h5", self.proj_method))
        })
    }
}

fn write_projection(path: &Path, cols: &[(&str, Vec<f64>)]) -> JobResult<()> {
    let hdf5 = |e: hdf5::Error| std::io::Error::other(e.to_string());
    crate::io::output::replace_atomically(
        path,
        false,
        |e| e,
        |tmp| {
            crate::io::hdf5_init();
            let f = hdf5::File::create(tmp).map_err(hdf5)?;
            for (name, v) in cols {
                f.new_dataset_builder()
                    .with_data(v.as_slice())
                    .create(*name)
                    .map_err(hdf5)?;
            }
            f.flush().map_err(hdf5)
        },
    )
    .map_err(|source| JobError::Io {
        what: "writing",
        path: path.to_path_buf(),
        source: Box::new(source),
    })
}

/// What the job wrote, with the PCA statistics and the projected path.
#[derive(Serialize)]
pub struct TrajectoryReport {
    /// The origin of the plane.
    #[serde(skip)]
    pub final_model: PathBuf,
    pub directions: String,
    pub projection: String,
    pub checkpoints: usize,
    pub explained_variance_ratio: [f64; 2],
    pub singular_values: [f64; 2],
    pub explained_variance: [f64; 2],
    pub epochs: Vec<usize>,
    pub x: Vec<f64>,
    pub y: Vec<f64>,
}

/// Runs the job; a bar on `reporter` while the checkpoints load.
pub fn run_trajectory(c: &TrajectoryConfig, reporter: &Reporter) -> JobResult<TrajectoryReport> {
    let _lock = super::prepare_out("out", &c.out)?;
    let _proj_lock = super::prepare_out("out", &c.proj_path())?;
    let cps = list_checkpoints(&c.checkpoints).map_err(|e| JobError::Checkpoints(Box::new(e)))?;
    if cps.len() < 3 {
        return Err(JobError::invalid(
            "checkpoints",
            format!(
                "{} holds {} checkpoints (model_<epoch>.safetensors); PCA needs at least 3. \
                 HINT: train with `losscape train --checkpoints DIR --every 1`",
                c.checkpoints.display(),
                cps.len()
            ),
        ));
    }
    let final_path = c
        .final_model
        .clone()
        .unwrap_or_else(|| cps.last().unwrap().1.clone());
    let last = ModelSource::file(&final_path)
        .load()
        .map_err(|e| e.in_step("`final_model`"))?;
    let mut models = Vec::new();
    let bar = reporter.bar(cps.len() as u64, "checkpoints", "trajectory: loading");
    for (e, p) in &cps {
        let m = ModelSource {
            path: p.clone(),
            arch: Some(last.arch.clone()),
            ..ModelSource::file(p)
        }
        .load()
        .map_err(|err| err.in_step(format!("checkpoint of epoch {e}")))?;
        models.push(m.theta);
        bar.inc(1);
    }
    bar.finish();
    let mask = trajectory_mask(&last.theta, c.ignore_biasbn);
    let pca = pca_directions(&models, &last.theta, &mask).map_err(JobError::trajectory)?;
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
            perturb_biasbn: !c.ignore_biasbn,
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
    crate::io::directions::write_directions(&c.out, &dirs, last.sha256.as_deref()).map_err(
        |source| JobError::DirectionFile {
            what: "writing",
            path: c.out.clone(),
            source: Box::new(source),
        },
    )?;
    let (px, py) = match c.proj_method {
        ProjMethod::Cos => (cx.clone(), cy.clone()),
        ProjMethod::Lstsq => (lx.clone(), ly.clone()),
    };
    let epochs: Vec<usize> = cps.iter().map(|(e, _)| *e).collect();
    let proj = c.proj_path();
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
    Ok(TrajectoryReport {
        final_model: final_path,
        directions: c.out.display().to_string(),
        projection: proj.display().to_string(),
        checkpoints: cps.len(),
        explained_variance_ratio: pca.explained_variance_ratio,
        singular_values: pca.singular_values,
        explained_variance: pca.explained_variance,
        epochs,
        x: px,
        y: py,
    })
}
