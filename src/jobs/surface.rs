//! The surface job: model + data + directions + grid → a crash-safe, resumable, shardable
//! surface file (what `losscape surface` and analysis specs run). Loss and accuracy on a
//! 1-D or 2-D grid around a trained model, along random filter-normalized directions
//! (Li et al. 2018, arXiv:1712.09913), a direction file, or the line to other models.
//!
//! ```text
//! load model, data ─► directions (random, file, or θ₂−θ) ─► fingerprint (everything that
//! determines the numbers) ─► complete output with that fingerprint? done
//!   ─► journal (resume the finished points) ─► direction file ─► sample_surface (parallel,
//!   each point appended to the journal) ─► surface file (atomic) ─► journal removed
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Serialize;
use sha2::{Digest, Sha256};

use super::error::{JobError, JobResult};
use super::inputs::{with_threads, DataConfig, ModelSource};
use crate::engine::ParamVec;
use crate::io::surface::{read_surface, write_surface, Attr, SurfaceFile};
use crate::landscape::directions::{
    cosine, difference_direction, orthogonalize, random_direction, DirType, DirectionAxis,
    DirectionConfig, DirectionKind, DirectionNorm, Directions,
};
use crate::landscape::grid::GridAxis;
use crate::landscape::journal::Journal;
use crate::landscape::surface::{
    sample_surface, CurvatureSpec, Shard, SurfaceGrid, SurfaceRequest,
};
use crate::model::Model;
use crate::progress::Reporter;

/// Where the directions come from.
#[derive(Debug, Clone)]
pub enum DirectionSource {
    /// Generated: random Gaussian directions, one stream per tensor seeded by
    /// (seed, name), normalized by `norm`; or, for an axis with a model, the difference
    /// to that model (x = θ₂ − θ is loss-landscape's `--model_file2`, y = θ₃ − θ).
    Generate {
        norm: DirectionNorm,
        perturb_biasbn: bool,
        seed: u64,
        model2: Option<PathBuf>,
        model3: Option<PathBuf>,
    },
    /// Read from an HDF5 direction file (loss-landscape's layout or ours).
    File(PathBuf),
}

/// A validated surface job.
#[derive(Debug, Clone)]
pub struct SurfaceConfig {
    /// The center θ of the grid.
    pub model: ModelSource,
    pub data: DataConfig,
    pub x: GridAxis,
    /// The y axis of a 2-D surface.
    pub y: Option<GridAxis>,
    pub directions: DirectionSource,
    /// `weights` perturbs parameters; `states` also BN running statistics.
    pub dir_type: DirType,
    /// Make y orthogonal to x (Gram–Schmidt).
    pub orthogonalize: bool,
    /// Also λmax and λmin at every point (`max_eig`, `min_eig`).
    pub curvature: Option<CurvatureSpec>,
    /// The share of the points to compute.
    pub shard: Shard,
    /// A missing journal is an error instead of a fresh start.
    pub resume: bool,
    /// The direction file (default: `<out stem>.directions.h5` beside `out`).
    pub dir_file: Option<PathBuf>,
    pub out: PathBuf,
    /// Worker threads (None: all cores); results are identical for any count.
    pub threads: Option<usize>,
}

/// What a surface job did.
#[derive(Clone, Debug, Serialize)]
pub struct SurfaceSummary {
    pub out: String,
    pub dir_file: String,
    pub points: usize,
    pub computed: usize,
    pub resumed: usize,
    pub non_finite: usize,
    pub xy_cosine: Option<f64>,
    pub seconds: f64,
    pub points_per_second: f64,
    pub center: BTreeMap<String, f64>,
}

impl SurfaceConfig {
    /// The direction file used or written.
    pub fn dir_file(&self) -> PathBuf {
        match (&self.directions, &self.dir_file) {
            (DirectionSource::File(f), _) => f.clone(),
            (_, Some(f)) => f.clone(),
            _ => {
                let stem = self.out.file_stem().unwrap_or_default().to_string_lossy();
                self.out.with_file_name(format!("{stem}.directions.h5"))
            }
        }
    }
}

fn summary_of_file(out: &Path, f: &SurfaceFile, dir_file: PathBuf) -> SurfaceSummary {
    SurfaceSummary {
        out: out.display().to_string(),
        dir_file: dir_file.display().to_string(),
        points: f.values.completed_count(),
        computed: 0,
        resumed: 0,
        non_finite: 0,
        xy_cosine: match f.attrs.get("xy_cosine") {
            Some(Attr::Float(c)) => Some(*c),
            _ => None,
        },
        seconds: 0.0,
        points_per_second: 0.0,
        center: BTreeMap::new(),
    }
}

/// The journal beside an output file.
pub fn journal_path(out: &Path) -> PathBuf {
    let mut s = out.as_os_str().to_owned();
    s.push(".journal");
    PathBuf::from(s)
}

fn hash_vec(h: &mut Sha256, v: &ParamVec<f32>) {
    for x in v.data.iter() {
        h.update(x.to_le_bytes());
    }
}

fn difference(
    model: &Model,
    field: &'static str,
    path: &Path,
    dir_type: DirType,
) -> JobResult<ParamVec<f32>> {
    let other = ModelSource {
        path: path.to_path_buf(),
        arch: Some(model.arch.clone()),
        engine: model.graph.options,
    }
    .load()?;
    difference_direction(&model.theta, &other.theta, dir_type).map_err(|source| {
        JobError::Interpolation {
            field,
            path: path.to_path_buf(),
            source: Box::new(source),
        }
    })
}

fn build_directions(c: &SurfaceConfig, model: &Model) -> JobResult<Directions> {
    let mut dirs = match &c.directions {
        DirectionSource::File(file) => {
            let d = crate::io::directions::read_directions(file, &model.theta, c.dir_type)
                .map_err(|source| JobError::DirectionFile {
                    what: "reading `directions`",
                    path: file.clone(),
                    source: Box::new(source),
                })?;
            if c.y.is_some() && d.y.is_none() {
                return Err(JobError::invalid(
                    "directions",
                    format!(
                        "{} has no y direction but `y` was given; drop `y` or use a 2-D direction file",
                        file.display()
                    ),
                ));
            }
            d
        }
        DirectionSource::Generate {
            norm,
            perturb_biasbn,
            seed,
            model2,
            model3,
        } => {
            let cfg = DirectionConfig {
                norm: *norm,
                perturb_biasbn: *perturb_biasbn,
                dir_type: c.dir_type,
                seed: *seed,
            };
            let x = match model2 {
                Some(p) => difference(model, "model2", p, c.dir_type)?,
                None => random_direction(&model.theta, &cfg, DirectionAxis::X),
            };
            let y = match (&c.y, model3) {
                (None, _) => None,
                (Some(_), Some(p)) => Some(difference(model, "model3", p, c.dir_type)?),
                (Some(_), None) => Some(random_direction(&model.theta, &cfg, DirectionAxis::Y)),
            };
            let kind = if model2.is_some() {
                DirectionKind::Interpolation
            } else {
                DirectionKind::Random
            };
            Directions {
                x,
                y,
                config: cfg,
                kind,
                pca: None,
            }
        }
    };
    if c.y.is_none() {
        dirs.y = None;
    }
    if c.orthogonalize {
        if let Some(y) = dirs.y.as_mut() {
            orthogonalize(y, &dirs.x);
        }
    }
    Ok(dirs)
}

/// Runs the job: resumes from its journal, skips a complete output, writes the surface
/// and direction files atomically.
pub fn run_surface(c: &SurfaceConfig, report: &Reporter) -> JobResult<SurfaceSummary> {
    let model = c.model.load()?;
    if let Some(w) = model.parameterization_warning() {
        report.warn(&w);
    }
    let datasets = c.data.load()?;
    let cfg = c.data.objective_config();
    let objectives = datasets
        .iter()
        .map(|ds| c.data.objective(&model, &c.model, ds))
        .collect::<JobResult<Vec<_>>>()?;
    let prefixes: Vec<String> = c.data.splits.iter().map(|s| s.to_string()).collect();
    let dirs = build_directions(c, &model)?;
    let grid = SurfaceGrid {
        x: c.x.clone(),
        y: c.y.clone(),
    };
    let shard = c.shard;
    let xy_cosine = dirs.y.as_ref().map(|y| cosine(&dirs.x, y));

    // Everything that determines the numbers (the shard excepted, so shards can be merged).
    let mut h = Sha256::new();
    h.update(model.sha256.as_deref().unwrap_or("").as_bytes());
    hash_vec(&mut h, &model.theta);
    hash_vec(&mut h, &dirs.x);
    if let Some(y) = &dirs.y {
        hash_vec(&mut h, y);
    }
    let setting = format!(
        "{}|{:?}|{:?}|{:?}|{:?}|{}|{:?}|{:?}",
        grid.x,
        grid.y.as_ref().map(|g| g.to_string()),
        datasets
            .iter()
            .map(|d| (&d.name, d.len()))
            .collect::<Vec<_>>(),
        c.data.normalize.as_ref().map(|n| n.to_string()),
        c.data.samples,
        cfg.batch_size,
        cfg.mode,
        prefixes
    );
    h.update(setting.as_bytes());
    if let Some(k) = &c.curvature {
        h.update(format!("|hessian {} {} {}", k.max_iter, k.tol, k.seed).as_bytes());
    }
    // engine options change the last bits: part of the fingerprint unless the defaults
    // (so files and journals of earlier versions still match)
    if !c.model.engine.is_default() {
        h.update(format!("|engine {}", c.model.engine.describe()).as_bytes());
    }
    let fingerprint = format!("{:x}", h.finalize());

    let journal_file = journal_path(&c.out);
    if c.out.exists() && !journal_file.exists() {
        let old = read_surface(&c.out).map_err(|source| JobError::OutNotSurface {
            path: c.out.clone(),
            source: Box::new(source),
        })?;
        let same = old.attrs.get("fingerprint").and_then(Attr::as_str)
            == Some(fingerprint.as_str())
            && old.attrs.get("shard").map(|a| a.to_string()) == Some(shard.to_string());
        if !same {
            return Err(JobError::invalid(
                "out",
                format!("{} already holds a different surface (other model, grid, directions, data or shard); delete it or choose another `out`", c.out.display()),
            ));
        }
        report.note(&format!(
            "{} is already complete; nothing to do",
            c.out.display()
        ));
        return Ok(summary_of_file(&c.out, &old, c.dir_file()));
    }
    if c.resume && !journal_file.exists() {
        return Err(JobError::invalid(
            "resume",
            format!(
                "no interrupted run to resume ({} does not exist); run without `resume` to start one",
                journal_file.display()
            ),
        ));
    }
    super::check_out_folder(&c.out)?;
    let values_per_point = 2 * objectives.len() + if c.curvature.is_some() { 2 } else { 0 };
    let (journal, finished) =
        Journal::open(&journal_file, &fingerprint, grid.len(), values_per_point).map_err(
            |source| JobError::Journal {
                out: c.out.clone(),
                source: Box::new(source),
            },
        )?;

    // the direction file: reused as given, or written beside the output
    let dir_file = c.dir_file();
    if !matches!(c.directions, DirectionSource::File(_)) {
        crate::io::directions::write_directions(&dir_file, &dirs, model.sha256.as_deref())
            .map_err(|source| JobError::DirectionFile {
                what: "writing direction file",
                path: dir_file.clone(),
                source: Box::new(source),
            })?;
    }

    let progress = report.bar(grid.len() as u64, "points", c.out.display().to_string());
    let req = SurfaceRequest {
        theta: &model.theta,
        x_dir: &dirs.x,
        y_dir: dirs.y.as_ref(),
        grid: &grid,
        shard,
        objectives: prefixes.iter().cloned().zip(objectives.iter()).collect(),
        curvature: c.curvature,
    };
    let (done, journal) = with_threads(c.threads, || {
        sample_surface(&req, journal, finished, &progress)
    })?
    .map_err(|source| JobError::Journal {
        out: c.out.clone(),
        source: Box::new(source),
    })?;
    progress.finish();

    let attrs = surface_attrs(
        c,
        &model,
        &dirs,
        &fingerprint,
        xy_cosine,
        &datasets,
        &prefixes,
    )?;
    let dir_file_str = dir_file.display().to_string();
    write_surface(&c.out, &grid, &done.values, Some(&dir_file_str), &attrs).map_err(|source| {
        JobError::SurfaceFile {
            what: "writing surface file",
            path: c.out.clone(),
            source: Box::new(source),
        }
    })?;
    journal.remove().map_err(|source| JobError::Journal {
        out: c.out.clone(),
        source: Box::new(source),
    })?;

    if done.non_finite > 0 {
        report.warn(&format!(
            "{} point(s) have a NaN or infinite loss (stored as such); the grid may reach too far from θ",
            done.non_finite
        ));
    }
    let center_k = grid.center_index();
    let center = done
        .values
        .names
        .iter()
        .zip(&done.values.arrays)
        .map(|(n, a)| (n.clone(), a.as_slice().expect("standard")[center_k]))
        .collect();
    Ok(SurfaceSummary {
        out: c.out.display().to_string(),
        dir_file: dir_file_str,
        points: done.values.completed_count(),
        computed: done.computed,
        resumed: done.resumed,
        non_finite: done.non_finite,
        xy_cosine,
        seconds: done.seconds,
        points_per_second: done.computed as f64 / done.seconds.max(1e-9),
        center,
    })
}

/// The attributes that make a surface file self-describing.
fn surface_attrs(
    c: &SurfaceConfig,
    model: &Model,
    dirs: &Directions,
    fingerprint: &str,
    xy_cosine: Option<f64>,
    datasets: &[crate::data::Dataset],
    prefixes: &[String],
) -> JobResult<BTreeMap<String, Attr>> {
    let cfg = c.data.objective_config();
    let mut attrs: BTreeMap<String, Attr> = BTreeMap::new();
    attrs.insert("fingerprint".into(), fingerprint.into());
    attrs.insert("shard".into(), c.shard.to_string().into());
    attrs.insert("seed".into(), (dirs.config.seed as i64).into());
    attrs.insert("direction_norm".into(), dirs.config.norm.to_string().into());
    attrs.insert("perturb_biasbn".into(), dirs.config.perturb_biasbn.into());
    let ignore = if dirs.config.perturb_biasbn {
        ""
    } else {
        "biasbn"
    };
    attrs.insert("ignore".into(), ignore.into());
    attrs.insert("dir_type".into(), dirs.config.dir_type.to_string().into());
    attrs.insert(
        "direction_kind".into(),
        format!("{:?}", dirs.kind).to_lowercase().into(),
    );
    if let Some(cos) = xy_cosine {
        attrs.insert("xy_cosine".into(), cos.into());
    }
    attrs.insert("orthogonalized".into(), c.orthogonalize.into());
    c.model.describe_in(model, "arch", &mut attrs)?;
    attrs.insert("data".into(), c.data.data.clone().into());
    attrs.insert("splits".into(), prefixes.join(",").into());
    attrs.insert("samples".into(), datasets[0].len().into());
    attrs.insert(
        "bn_mode".into(),
        format!("{:?}", cfg.mode).to_lowercase().into(),
    );
    attrs.insert("batch_size".into(), cfg.batch_size.into());
    attrs.insert("loss".into(), "per-sample mean cross-entropy".into());
    Ok(attrs)
}
