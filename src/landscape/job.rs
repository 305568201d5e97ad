//! A surface job: model + data + directions + grid → a crash-safe, resumable, shardable
//! surface file (what `losscape surface` and analysis specs run). Loss and accuracy on a
//! 1-D or 2-D grid around a trained model, along random filter-normalized directions
//! (Li et al. 2018), a direction file, or the line to other models.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::Args;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::args::DataArgs;
use crate::engine::ParamVec;
use crate::io::surface::{read_surface, write_surface, Attr};
use crate::landscape::directions::{
    cosine, difference_direction, orthogonalize, random_direction, DirType, DirectionAxis,
    DirectionConfig, DirectionKind, DirectionNorm, Directions,
};
use crate::landscape::grid::GridAxis;
use crate::landscape::journal::Journal;
use crate::landscape::surface::{
    sample_surface, CurvatureSpec, Shard, SurfaceGrid, SurfaceRequest,
};
use crate::model::{Arch, Model};
use crate::objective::Objective;

#[derive(Debug, Args)]
pub struct SurfaceJob {
    /// Model file (.safetensors): the center θ of the grid.
    #[arg(long, short = 'm', value_name = "FILE")]
    pub model: PathBuf,
    /// Architecture, overriding the file's metadata.
    #[arg(long, value_name = "SPEC")]
    pub arch: Option<Arch>,
    #[command(flatten)]
    pub data: DataArgs,
    /// x axis as MIN:MAX:NUM (numpy linspace), e.g. -1:1:51.
    #[arg(long, value_name = "MIN:MAX:NUM", allow_hyphen_values = true)]
    pub x: GridAxis,
    /// y axis as MIN:MAX:NUM for a 2-D surface.
    #[arg(long, value_name = "MIN:MAX:NUM", allow_hyphen_values = true)]
    pub y: Option<GridAxis>,
    /// Direction normalization (Li et al.: filter; loss-landscape's own default is none).
    #[arg(long, value_enum, default_value_t = DirectionNorm::Filter)]
    pub norm: DirectionNorm,
    /// Perturb 1-D tensors (biases, BN) by the parameter itself, as loss-landscape does
    /// without `--xignore biasbn`. By default they are held fixed.
    #[arg(long)]
    pub perturb_biasbn: bool,
    /// `weights` perturbs parameters; `states` also BN running statistics.
    #[arg(long, value_enum, default_value_t = DirType::Weights)]
    pub dir_type: DirType,
    /// Seed of the random directions (each tensor has its own stream, by name).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Make the y direction orthogonal to x (Gram–Schmidt). The x–y cosine is always reported.
    #[arg(long)]
    pub orthogonalize: bool,
    /// Reuse directions from an HDF5 direction file (loss-landscape's layout or ours).
    #[arg(long, value_name = "FILE", conflicts_with_all = ["model2", "seed"])]
    pub directions: Option<PathBuf>,
    /// Interpolate: x direction = θ₂ − θ (loss-landscape's --model_file2).
    #[arg(long, value_name = "FILE")]
    pub model2: Option<PathBuf>,
    /// y direction = θ₃ − θ (needs --y).
    #[arg(long, value_name = "FILE", requires = "y")]
    pub model3: Option<PathBuf>,
    /// Also the largest and most negative Hessian eigenvalue at every point (weights with
    /// more than one dimension), stored as `max_eig` and `min_eig` for |λmin/λmax| maps.
    #[arg(long)]
    pub hessian: bool,
    /// Lanczos steps per eigenvalue for --hessian.
    #[arg(long, default_value_t = 30)]
    pub hessian_max_iter: usize,
    /// Relative residual accepted for --hessian eigenvalues.
    #[arg(long, default_value_t = 1e-3)]
    pub hessian_tol: f64,
    /// Compute only the points k ≡ I (mod N) into their own file; join with `losscape merge`.
    #[arg(long, value_name = "I/N")]
    pub shard: Option<Shard>,
    /// Require an interrupted run of this command to continue (resuming is automatic when
    /// its journal exists; this flag makes a missing one an error instead of a fresh start).
    #[arg(long)]
    pub resume: bool,
    /// Where to write the direction file (default: beside --out, `<stem>.directions.h5`).
    #[arg(long, value_name = "FILE")]
    pub dir_file: Option<PathBuf>,
    /// Output HDF5 surface file.
    #[arg(long, short = 'o', value_name = "FILE")]
    pub out: PathBuf,
    /// Worker threads (default: all cores). Results are identical for any count.
    #[arg(long)]
    pub threads: Option<usize>,
    /// No progress bar.
    #[arg(long, short = 'q')]
    pub quiet: bool,
    /// Print a JSON summary.
    #[arg(long)]
    pub json: bool,
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

/// The direction file used or written for a job.
fn dir_file_for(args: &SurfaceJob) -> PathBuf {
    match (&args.directions, &args.dir_file) {
        (Some(f), _) => f.clone(),
        (None, Some(f)) => f.clone(),
        (None, None) => {
            let stem = args
                .out
                .file_stem()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned();
            args.out.with_file_name(format!("{stem}.directions.h5"))
        }
    }
}

fn summary_of_file(
    out: &Path,
    f: &crate::io::surface::SurfaceFile,
    dir_file: PathBuf,
    seconds: f64,
) -> SurfaceSummary {
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
        seconds,
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

fn load_model(path: &Path, arch: Option<&Arch>) -> Result<Model> {
    Model::load(path, arch).with_context(|| format!("loading model {}", path.display()))
}

fn build_directions(args: &SurfaceJob, model: &Model) -> Result<Directions> {
    let cfg = DirectionConfig {
        norm: args.norm,
        perturb_biasbn: args.perturb_biasbn,
        dir_type: args.dir_type,
        seed: args.seed,
    };
    let mut dirs = if let Some(file) = &args.directions {
        let d = crate::io::directions::read_directions(file, &model.theta, args.dir_type)
            .with_context(|| format!("reading --directions {}", file.display()))?;
        if args.y.is_some() && d.y.is_none() {
            bail!("--directions {} has no y direction but --y was given; drop --y or use a 2-D direction file", file.display());
        }
        d
    } else {
        let x = match &args.model2 {
            Some(p) => difference_direction(
                &model.theta,
                &load_model(p, Some(&model.arch))?.theta,
                args.dir_type,
            )
            .with_context(|| format!("--model2 {}", p.display()))?,
            None => random_direction(&model.theta, &cfg, DirectionAxis::X),
        };
        let y = match (&args.y, &args.model3) {
            (None, _) => None,
            (Some(_), Some(p)) => Some(
                difference_direction(
                    &model.theta,
                    &load_model(p, Some(&model.arch))?.theta,
                    args.dir_type,
                )
                .with_context(|| format!("--model3 {}", p.display()))?,
            ),
            (Some(_), None) => Some(random_direction(&model.theta, &cfg, DirectionAxis::Y)),
        };
        let kind = if args.model2.is_some() {
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
    };
    if args.y.is_none() {
        dirs.y = None;
    }
    if args.orthogonalize {
        if let Some(y) = dirs.y.as_mut() {
            orthogonalize(y, &dirs.x);
        }
    }
    Ok(dirs)
}

/// Runs the job: resumes from its journal, skips a complete output, writes the surface
/// and direction files atomically.
pub fn run_surface_job(args: &SurfaceJob) -> Result<SurfaceSummary> {
    let model = load_model(&args.model, args.arch.as_ref())?;
    let datasets = args.data.load()?;
    let cfg = args.data.objective_config();
    let objectives: Vec<Objective> = datasets
        .iter()
        .map(|ds| {
            Objective::new(&model.graph, ds.x.view(), &ds.y, cfg).with_context(|| {
                format!(
                    "data '{}' does not fit model {}",
                    args.data.data,
                    args.model.display()
                )
            })
        })
        .collect::<Result<_>>()?;
    let prefixes: Vec<String> = args.data.split.iter().map(|s| s.to_string()).collect();
    let dirs = build_directions(args, &model)?;
    let grid = SurfaceGrid {
        x: args.x.clone(),
        y: args.y.clone(),
    };
    let shard = args.shard.unwrap_or_default();
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
        args.data.normalize.as_ref().map(|n| n.to_string()),
        args.data.samples,
        cfg.batch_size,
        cfg.mode,
        prefixes
    );
    h.update(setting.as_bytes());
    if args.hessian {
        h.update(
            format!(
                "|hessian {} {} {}",
                args.hessian_max_iter, args.hessian_tol, args.seed
            )
            .as_bytes(),
        );
    }
    let fingerprint = format!("{:x}", h.finalize());

    let journal_file = journal_path(&args.out);
    if args.out.exists() && !journal_file.exists() {
        let old = read_surface(&args.out).with_context(|| format!("--out {} exists but is not a readable surface file; delete it or choose another --out", args.out.display()))?;
        let same = old.attrs.get("fingerprint").and_then(Attr::as_str)
            == Some(fingerprint.as_str())
            && old.attrs.get("shard").map(|a| a.to_string()) == Some(shard.to_string());
        if !same {
            bail!("--out {} already holds a different surface (other model, grid, directions, data or shard); delete it or choose another --out", args.out.display());
        }
        if !args.quiet {
            eprintln!("{} is already complete; nothing to do", args.out.display());
        }
        return Ok(summary_of_file(&args.out, &old, dir_file_for(args), 0.0));
    }
    if args.resume && !journal_file.exists() {
        bail!("--resume: no interrupted run to resume ({} does not exist); run without --resume to start one", journal_file.display());
    }
    if let Some(parent) = args.out.parent().filter(|p| !p.as_os_str().is_empty()) {
        if !parent.is_dir() {
            bail!(
                "--out {}: folder {} does not exist",
                args.out.display(),
                parent.display()
            );
        }
    }
    let curvature = args.hessian.then_some(CurvatureSpec {
        max_iter: args.hessian_max_iter,
        tol: args.hessian_tol,
        seed: args.seed,
    });
    let values_per_point = 2 * objectives.len() + if curvature.is_some() { 2 } else { 0 };
    let (journal, done) = Journal::open(&journal_file, &fingerprint, grid.len(), values_per_point)
        .with_context(|| format!("--out {}: cannot write beside it", args.out.display()))?;

    // the direction file: reused as given, or written beside the output
    let dir_file = dir_file_for(args);
    if args.directions.is_none() {
        crate::io::directions::write_directions(&dir_file, &dirs, model.sha256.as_deref())
            .with_context(|| format!("writing direction file {}", dir_file.display()))?;
    }

    let progress = if args.quiet {
        ProgressBar::hidden()
    } else {
        ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr())
    };
    progress.set_style(
        ProgressStyle::with_template(
            "{spinner} {bar:30} {pos}/{len} points  {per_sec}  ETA {eta}  {msg}",
        )
        .expect("valid template"),
    );
    progress.set_message(args.out.display().to_string());
    let req = SurfaceRequest {
        theta: &model.theta,
        x_dir: &dirs.x,
        y_dir: dirs.y.as_ref(),
        grid: &grid,
        shard,
        objectives: prefixes.iter().cloned().zip(objectives.iter()).collect(),
        curvature,
    };
    let (report, journal) = crate::args::with_threads(args.threads, || {
        sample_surface(&req, journal, done, &progress)
    })??;
    progress.finish_and_clear();

    let mut attrs: BTreeMap<String, Attr> = BTreeMap::new();
    attrs.insert("fingerprint".into(), fingerprint.into());
    attrs.insert("shard".into(), shard.to_string().into());
    attrs.insert("seed".into(), (dirs.config.seed as i64).into());
    attrs.insert("direction_norm".into(), dirs.config.norm.to_string().into());
    attrs.insert("perturb_biasbn".into(), dirs.config.perturb_biasbn.into());
    attrs.insert(
        "ignore".into(),
        if dirs.config.perturb_biasbn {
            ""
        } else {
            "biasbn"
        }
        .into(),
    );
    attrs.insert("dir_type".into(), dirs.config.dir_type.to_string().into());
    attrs.insert(
        "direction_kind".into(),
        format!("{:?}", dirs.kind).to_lowercase().into(),
    );
    if let Some(c) = xy_cosine {
        attrs.insert("xy_cosine".into(), c.into());
    }
    attrs.insert("orthogonalized".into(), args.orthogonalize.into());
    attrs.insert("model".into(), args.model.display().to_string().into());
    attrs.insert(
        "model_sha256".into(),
        model.sha256.clone().unwrap_or_default().into(),
    );
    attrs.insert("arch".into(), serde_json::to_string(&model.arch)?.into());
    attrs.insert("data".into(), args.data.data.clone().into());
    attrs.insert("splits".into(), prefixes.join(",").into());
    attrs.insert("samples".into(), datasets[0].len().into());
    attrs.insert(
        "bn_mode".into(),
        format!("{:?}", cfg.mode).to_lowercase().into(),
    );
    attrs.insert("batch_size".into(), cfg.batch_size.into());
    attrs.insert("loss".into(), "per-sample mean cross-entropy".into());
    let dir_file_str = dir_file.display().to_string();
    write_surface(
        &args.out,
        &grid,
        &report.values,
        Some(&dir_file_str),
        &attrs,
    )?;
    journal.remove()?;

    if report.non_finite > 0 {
        eprintln!(
            "warning: {} point(s) have a NaN or infinite loss (stored as such); the grid may reach too far from θ",
            report.non_finite
        );
    }
    // values at the grid point nearest the center
    let center_k = {
        let nearest = |a: &GridAxis| {
            a.coordinates()
                .iter()
                .enumerate()
                .min_by(|p, q| p.1.abs().total_cmp(&q.1.abs()))
                .map(|(i, _)| i)
                .unwrap_or(0)
        };
        match &grid.y {
            Some(y) => nearest(y) * grid.x.num + nearest(&grid.x),
            None => nearest(&grid.x),
        }
    };
    let center = report
        .values
        .names
        .iter()
        .zip(&report.values.arrays)
        .map(|(n, a)| (n.clone(), a.as_slice().expect("standard")[center_k]))
        .collect();
    Ok(SurfaceSummary {
        out: args.out.display().to_string(),
        dir_file: dir_file_str,
        points: report.values.completed_count(),
        computed: report.computed,
        resumed: report.resumed,
        non_finite: report.non_finite,
        xy_cosine,
        seconds: report.seconds,
        points_per_second: report.computed as f64 / report.seconds.max(1e-9),
        center,
    })
}
