//! The surface job: model + data + directions + grid → a crash-safe, resumable, shardable
//! surface file (what `losscape surface` and analysis specs run). Loss and accuracy on a
//! 1-D or 2-D grid around a trained model, along random filter-normalized directions
//! (Li et al. 2018, arXiv:1712.09913), a direction file, the line to other models, or the
//! top eigenvectors of a curvature operator (PyHessian's plot, Yao et al. 2020), read from
//! a `losscape hessian --save-vectors` file or computed at θ before the grid.
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
use super::hessian::{hessian_of, CurvatureOperator, HessianPlan, HessianSettings, ParamSet};
use super::inputs::Precision;
use super::inputs::{with_threads, DataConfig, ModelSource};
use crate::choice::choice;
use crate::engine::ParamVec;
use crate::io::hessian::{is_hessian_file, read_eigenvectors};
use crate::io::surface::{read_surface, write_surface, Attr, SurfaceFile};
use crate::landscape::directions::{
    cosine, difference_direction, normalize_direction, orthogonalize, random_direction,
    subset_direction, DirType, DirectionAxis, DirectionConfig, DirectionKind, DirectionNorm,
    Directions, EigenInfo,
};
use crate::landscape::distributed::{coordinate_surface, serve_surface};
use crate::landscape::grid::GridAxis;
use crate::landscape::journal::Journal;
use crate::landscape::surface::{
    sample_surface, CurvatureSpec, Shard, SurfaceGrid, SurfaceRequest,
};
use crate::model::Model;
use crate::objective::Objective;
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
    /// Read from an HDF5 file: a direction file (loss-landscape's layout or ours), used as
    /// stored; or a Hessian file written by `losscape hessian --save-vectors`, whose top-1
    /// (x) and top-2 (y) eigenvectors are normalized by `eigen_norm`.
    File {
        path: PathBuf,
        eigen_norm: EigenNorm,
    },
    /// The top-1 (x) and top-2 (y) eigenvectors of a curvature operator at θ on the
    /// surface's (first split's) data, computed before the grid, normalized by `norm`.
    Eigen {
        settings: EigenSettings,
        norm: EigenNorm,
    },
}

/// How eigenvector directions are scaled: `none` keeps the unit eigenvectors (α is then a
/// Euclidean step, PyHessian's plot); the other norms act as on random directions
/// ([`normalize_direction`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EigenNorm {
    pub norm: DirectionNorm,
    /// ≤ 1-D tensors get a copy of θ (as random directions with `perturb_biasbn`).
    pub perturb_biasbn: bool,
}

impl EigenNorm {
    /// The unit eigenvectors, as computed.
    pub const UNIT: EigenNorm = EigenNorm {
        norm: DirectionNorm::None,
        perturb_biasbn: false,
    };
}

/// How eigenvector directions are computed (Lanczos on the operator, [`hessian_of`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EigenSettings {
    pub operator: CurvatureOperator,
    /// Labels drawn per data point for the Fisher.
    pub fisher_samples: usize,
    /// The tensors the operator is taken over (the eigenvectors are 0 elsewhere).
    pub params: ParamSet,
    /// Lanczos steps (≥ the number of eigenvectors).
    pub max_iter: usize,
    /// Relative residual ‖Av − λv‖/|λ| that counts as converged.
    pub tol: f64,
    /// Seed of the start vector (and of the Fisher's labels).
    pub seed: u64,
    pub precision: Precision,
}

impl Default for EigenSettings {
    fn default() -> Self {
        Self {
            operator: CurvatureOperator::Hessian,
            fisher_samples: 1,
            params: ParamSet::Trainable,
            max_iter: 100,
            tol: 1e-4,
            seed: 0,
            precision: Precision::F32,
        }
    }
}

choice! {
    /// What a surface's directions move along: parameters or every state (random
    /// directions, loss-landscape's `dir_type`), or the top eigenvectors of a curvature
    /// operator (`eigen`).
    #[derive(Default)]
    pub enum SurfaceDirType {
        #[default]
        Weights = "weights": "Random directions on the trainable parameters (PyTorch `parameters()`).",
        States = "states": "Random directions on every `state_dict` tensor: parameters and BN running statistics.",
        Eigen = "eigen": "The top eigenvectors of --operator at θ (x: the first, y: the second), computed before the grid.",
    }
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
    /// Allow grids of more than [`crate::landscape::surface::MAX_GRID_POINTS`] points
    /// (the memory estimate is printed; a grid beyond the available memory stays an error).
    pub large_grid: bool,
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
    /// Points computed per second by this run; None when it computed none.
    pub points_per_second: Option<f64>,
    /// The output held this surface already, complete: nothing was done.
    pub already_complete: bool,
    pub center: BTreeMap<String, f64>,
}

impl SurfaceConfig {
    /// The direction file used or written (a direction file given as `directions` is used;
    /// for a Hessian file one is written).
    pub fn dir_file(&self) -> PathBuf {
        match (&self.directions, &self.dir_file) {
            (DirectionSource::File { path, .. }, _) if !is_hessian_file(path) => path.clone(),
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
        points_per_second: None,
        already_complete: true,
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

/// Eigenvector directions from the columns of `vectors` (dim × k, rows over `tensors`):
/// the first as x, the second as y (when `y`), normalized by `norm`.
fn eigen_directions(
    model: &Model,
    c: &SurfaceConfig,
    tensors: &[(String, usize)],
    vectors: &[Vec<f32>],
    norm: EigenNorm,
    info: EigenInfo,
) -> JobResult<Directions> {
    let from = match &info.file {
        Some(f) => f.clone(),
        None => format!("the {} at θ", info.operator),
    };
    let cfg = DirectionConfig {
        norm: norm.norm,
        perturb_biasbn: norm.perturb_biasbn,
        dir_type: c.dir_type,
        seed: 0,
    };
    let direction = |v: &Vec<f32>| -> JobResult<ParamVec<f32>> {
        let mut d = subset_direction(&model.theta, tensors, v.iter().copied()).map_err(|e| {
            JobError::EigenMismatch {
                from: from.clone(),
                source: Box::new(e),
            }
        })?;
        normalize_direction(&model.theta, &mut d, &cfg);
        Ok(d)
    };
    let x = direction(&vectors[0])?;
    let y = match c.y {
        Some(_) => Some(direction(&vectors[1])?),
        None => None,
    };
    Ok(Directions {
        x,
        y,
        config: cfg,
        kind: DirectionKind::Eigen(info),
        pca: None,
    })
}

fn build_directions(
    c: &SurfaceConfig,
    model: &Model,
    objective: &Objective,
    report: &Reporter,
) -> JobResult<Directions> {
    let wanted = if c.y.is_some() { 2 } else { 1 };
    let mut dirs = match &c.directions {
        DirectionSource::File { path, eigen_norm } if is_hessian_file(path) => {
            let e =
                read_eigenvectors(path, None, wanted).map_err(|source| JobError::EigenFile {
                    path: path.clone(),
                    source: Box::new(source),
                })?;
            if let (Some(a), Some(b)) = (&e.model_sha256, &model.sha256) {
                if a != b {
                    report.warn(&format!(
                        "{} was computed for another model file (sha256 {}…, this one {}…); its eigenvectors are used as they are",
                        path.display(),
                        &a[..a.len().min(12)],
                        &b[..b.len().min(12)]
                    ));
                }
            }
            let cols: Vec<Vec<f32>> = (0..wanted).map(|j| e.vectors.column(j).to_vec()).collect();
            let info = EigenInfo {
                operator: e.operator.clone(),
                values: e.values[..wanted].to_vec(),
                file: Some(path.display().to_string()),
            };
            eigen_directions(model, c, &e.tensors, &cols, *eigen_norm, info)?
        }
        DirectionSource::Eigen { settings, norm } => {
            let s = HessianSettings {
                top_k: wanted,
                max_iter: Some(settings.max_iter.max(wanted)),
                tol: settings.tol,
                seed: settings.seed,
                params: settings.params,
                save_vectors: true,
                precision: settings.precision,
                operator: settings.operator,
                fisher_samples: settings.fisher_samples,
                ..Default::default()
            };
            let plan = HessianPlan::new(&s).map_err(|e| e.in_step("eigenvector directions"))?;
            let r = hessian_of(
                objective,
                &model.theta,
                &plan,
                c.threads,
                &c.model.path,
                report,
            )
            .map_err(|e| e.in_step("eigenvector directions"))?;
            let top = r
                .whole
                .top
                .as_ref()
                .expect("top eigenpairs are always computed");
            let vectors = top.vectors.as_ref().expect("vectors were asked for");
            if let Some(i) = top.converged.iter().position(|&ok| !ok) {
                report.warn(&format!(
                    "eigenvector directions: pair {} of the {} did not converge (residual {:.1e} > `eigen_tol` {}); raise `eigen_max_iter`",
                    i + 1,
                    settings.operator,
                    top.residuals[i],
                    settings.tol
                ));
            }
            let cols: Vec<Vec<f32>> = (0..wanted)
                .map(|j| vectors.column(j).iter().map(|&v| v as f32).collect())
                .collect();
            let info = EigenInfo {
                operator: settings.operator.to_string(),
                values: top.values[..wanted].to_vec(),
                file: None,
            };
            eigen_directions(model, c, &r.whole.tensors, &cols, *norm, info)?
        }
        DirectionSource::File { path: file, .. } => {
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
    // everything about the outputs, the grid and the threads is checked before any work
    crate::util::check_threads(c.threads)?;
    let grid = SurfaceGrid {
        x: c.x.clone(),
        y: c.y.clone(),
    };
    let values_per_point = 2 * c.data.splits.len() + if c.curvature.is_some() { 2 } else { 0 };
    let bytes = grid.check_size(
        values_per_point,
        c.large_grid,
        crate::util::available_memory(),
    )?;
    if grid.points() > crate::landscape::surface::MAX_GRID_POINTS {
        report.warn(&format!(
            "large grid (`large_grid`): {} points, about {} of memory for the surface arrays",
            grid.points(),
            crate::util::human_bytes(bytes)
        ));
    }
    // only the process that writes the files (rank 0 under MPI) checks and locks them
    let root = super::is_root();
    let _out_lock = if root {
        Some(super::prepare_out("out", &c.out)?)
    } else {
        None
    };
    let journal_file = journal_path(&c.out);
    if root {
        crate::io::output::check_output(&journal_file).map_err(|e| JobError::output("out", e))?;
    }
    let writes_dir_file =
        !matches!(&c.directions, DirectionSource::File { path, .. } if !is_hessian_file(path));
    let _dir_lock = if writes_dir_file && root {
        Some(super::prepare_out("dir_file", &c.dir_file())?)
    } else {
        None
    };

    let mut model = c.model.load()?;
    if let Some(w) = model.parameterization_warning() {
        report.warn(&w);
    }
    let datasets = c.data.load()?;
    model.fit_input(datasets[0].sample_shape());
    let cfg = c.data.objective_config();
    let objectives = datasets
        .iter()
        .map(|ds| c.data.objective(&model, &c.model, ds))
        .collect::<JobResult<Vec<_>>>()?;
    let prefixes: Vec<String> = c.data.splits.iter().map(|s| s.to_string()).collect();
    let world = crate::dist::world();
    let distributed = world.size() > 1;
    // eigenvector directions: Lanczos with the batches shared over the ranks
    let first = c
        .data
        .objective(&model, &c.model, &datasets[0])?
        .distributed(world);
    let dirs = build_directions(c, &model, &first, report)?;
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

    let req = SurfaceRequest {
        theta: &model.theta,
        x_dir: &dirs.x,
        y_dir: dirs.y.as_ref(),
        grid: &grid,
        shard,
        objectives: prefixes.iter().cloned().zip(objectives.iter()).collect(),
        curvature: c.curvature,
    };
    if distributed && world.rank() > 0 {
        return serve_points(c, world, &req, xy_cosine);
    }

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
        if distributed {
            world.broadcast(0, &mut vec![STOP]);
        }
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
    let (journal, finished) =
        Journal::open(&journal_file, &fingerprint, grid.len(), values_per_point).map_err(
            |source| JobError::Journal {
                out: c.out.clone(),
                source: Box::new(source),
            },
        )?;

    // the direction file: reused as given, or written beside the output
    let dir_file = c.dir_file();
    if writes_dir_file {
        crate::io::directions::write_directions(&dir_file, &dirs, model.sha256.as_deref())
            .map_err(|source| JobError::DirectionFile {
                what: "writing direction file",
                path: dir_file.clone(),
                source: Box::new(source),
            })?;
    }

    // the bar's length is this shard's points, those of an interrupted run already done
    let in_shard = (0..grid.len()).filter(|&k| shard.contains(k)).count();
    let resumed = finished.keys().filter(|&&k| shard.contains(k)).count();
    let progress = report.bar_resumed(
        in_shard as u64,
        resumed as u64,
        "points",
        c.out.display().to_string(),
    );
    let (done, journal) = if distributed {
        report.note(&format!(
            "{}: rank 0 owns {}; if the job stops, rerun the same command (any number of ranks) to resume",
            world.describe(),
            journal_file.display()
        ));
        world.broadcast(0, &mut vec![WORK]);
        with_threads(c.threads, || {
            coordinate_surface(world, &req, journal, &journal_file, finished, &progress)
        })?
        .map_err(|source| JobError::Queue {
            out: c.out.clone(),
            source: Box::new(source),
        })?
    } else {
        with_threads(c.threads, || {
            sample_surface(&req, journal, finished, &progress)
        })?
        .map_err(|source| JobError::Journal {
            out: c.out.clone(),
            source: Box::new(source),
        })?
    };
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
    // why an earlier MPI run stopped, now that the surface is whole
    let _ = std::fs::remove_file(crate::landscape::distributed::stop_log_path(&journal_file));

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
        points_per_second: (done.computed > 0)
            .then(|| done.computed as f64 / done.seconds.max(1e-9)),
        already_complete: false,
        center,
    })
}

/// Rank 0's word to the other ranks after it has checked the output and opened the journal.
const STOP: u8 = 0;
const WORK: u8 = 1;

/// Ranks > 0 of an MPI job: wait for rank 0's word, then compute the points it hands
/// out. Nothing is written here; the summary counts this rank's points.
fn serve_points(
    c: &SurfaceConfig,
    world: &dyn crate::dist::Comm,
    req: &SurfaceRequest<'_>,
    xy_cosine: Option<f64>,
) -> JobResult<SurfaceSummary> {
    let start = std::time::Instant::now();
    let mut word = Vec::new();
    world.broadcast(0, &mut word);
    let computed = if word.first() == Some(&WORK) {
        with_threads(c.threads, || serve_surface(world, req))?.map_err(|source| {
            JobError::Queue {
                out: c.out.clone(),
                source: Box::new(source),
            }
        })?
    } else {
        0
    };
    let seconds = start.elapsed().as_secs_f64();
    Ok(SurfaceSummary {
        out: c.out.display().to_string(),
        dir_file: c.dir_file().display().to_string(),
        points: computed,
        computed,
        resumed: 0,
        non_finite: 0,
        xy_cosine,
        seconds,
        points_per_second: (computed > 0).then(|| computed as f64 / seconds.max(1e-9)),
        already_complete: false,
        center: BTreeMap::new(),
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
    let kind = match &dirs.kind {
        DirectionKind::Eigen(e) => {
            attrs.insert("eigen_operator".into(), e.operator.clone().into());
            for (axis, v) in ["x", "y"].iter().zip(&e.values) {
                attrs.insert(format!("eigenvalue_{axis}"), (*v).into());
            }
            if let Some(f) = &e.file {
                attrs.insert("eigen_file".into(), f.clone().into());
            }
            "eigen".to_string()
        }
        other => format!("{other:?}").to_lowercase(),
    };
    attrs.insert("direction_kind".into(), kind.into());
    if let Some(cos) = xy_cosine {
        attrs.insert("xy_cosine".into(), cos.into());
    }
    attrs.insert("orthogonalized".into(), c.orthogonalize.into());
    c.model.describe_in(model, "arch", &mut attrs)?;
    c.data.describe_in(&mut attrs);
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
