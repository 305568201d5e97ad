//! `losscape surface`: see [`crate::jobs::surface`] for what it computes.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;

use super::{DataArgs, ModelArgs};
use crate::jobs::hessian::{CurvatureOperator, ParamSet};
use crate::jobs::surface::{
    run_surface, DirectionSource, EigenNorm, EigenSettings, SurfaceConfig, SurfaceDirType,
};
use crate::jobs::{JobError, JobResult};
use crate::landscape::directions::{DirType, DirectionNorm};
use crate::landscape::grid::GridAxis;
use crate::landscape::surface::{CurvatureSpec, Shard};
use crate::progress::three_significant;

#[derive(Debug, Args)]
pub struct SurfaceArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub data: DataArgs,
    /// x axis as MIN:MAX:NUM (numpy linspace), e.g. -1:1:51.
    #[arg(long, value_name = "MIN:MAX:NUM", allow_hyphen_values = true)]
    pub x: GridAxis,
    /// y axis as MIN:MAX:NUM for a 2-D surface.
    #[arg(long, value_name = "MIN:MAX:NUM", allow_hyphen_values = true)]
    pub y: Option<GridAxis>,
    /// Direction normalization [default: filter for random directions (Li et al.;
    /// loss-landscape's own default is none); none for eigenvector directions, i.e. the
    /// unit eigenvectors, so that α is a Euclidean step and L ≈ L₀ + ½λα² near θ].
    #[arg(long, value_enum)]
    pub norm: Option<DirectionNorm>,
    /// Perturb 1-D tensors (biases, BN) by the parameter itself, as loss-landscape does
    /// without `--xignore biasbn`. By default they are held fixed (random directions, or
    /// normalized eigenvectors; unit eigenvectors keep their own 1-D components).
    #[arg(long)]
    pub perturb_biasbn: bool,
    /// `weights` perturbs parameters; `states` also BN running statistics (random
    /// directions); `eigen` moves along the top eigenvectors of --operator at θ (x the
    /// largest, y the second), computed by Lanczos on the surface's data before the grid.
    #[arg(long, value_enum, default_value_t = SurfaceDirType::Weights)]
    pub dir_type: SurfaceDirType,
    /// --dir-type eigen: the curvature matrix whose top eigenvectors are the directions.
    #[arg(long, value_enum, default_value_t = CurvatureOperator::Hessian)]
    pub operator: CurvatureOperator,
    /// --dir-type eigen with --operator fisher: labels drawn per data point.
    #[arg(long, value_name = "M", default_value_t = 1, value_parser = super::numbers::count::<usize>)]
    pub fisher_samples: usize,
    /// --dir-type eigen: the tensors the operator is taken over (its eigenvectors are 0 on
    /// the others).
    #[arg(long, value_enum, default_value_t = ParamSet::Trainable)]
    pub eigen_params: ParamSet,
    /// --dir-type eigen: Lanczos steps.
    #[arg(long, default_value_t = EigenSettings::default().max_iter, value_parser = super::numbers::count::<usize>)]
    pub eigen_max_iter: usize,
    /// --dir-type eigen: relative residual ‖Av − λv‖/|λ| that counts as converged.
    #[arg(long, default_value_t = EigenSettings::default().tol, value_parser = super::numbers::positive_real)]
    pub eigen_tol: f64,
    /// Seed of the random directions (each tensor has its own stream, by name); with
    /// --dir-type eigen, of the Lanczos start vector and the Fisher's labels.
    #[arg(long, default_value_t = 0, value_parser = super::numbers::count::<u64>)]
    pub seed: u64,
    /// Make the y direction orthogonal to x (Gram–Schmidt). The x–y cosine is always reported.
    #[arg(long)]
    pub orthogonalize: bool,
    /// Reuse directions from an HDF5 direction file (loss-landscape's layout or ours), or
    /// take the top-1 (x) and top-2 (y) eigenvectors of a `losscape hessian --save-vectors`
    /// file (normalized by --norm, default none).
    #[arg(long, value_name = "FILE", conflicts_with_all = ["model2", "seed"])]
    pub directions: Option<PathBuf>,
    /// Interpolate: x direction = θ₂ − θ (loss-landscape's --model_file2).
    #[arg(long, value_name = "FILE")]
    pub model2: Option<PathBuf>,
    /// y direction = θ₃ − θ (needs --y).
    #[arg(long, value_name = "FILE", requires = "y")]
    pub model3: Option<PathBuf>,
    /// Also the largest and most negative Hessian eigenvalue at every point, stored as
    /// `max_eig` and `min_eig` for |λmin/λmax| maps. Taken over the weights with more than
    /// one dimension (loss-landscape's set, as `sharpness`'s default; `hessian` defaults to
    /// every trainable tensor: pass it `--params weights` to compare), BN in eval mode.
    #[arg(long)]
    pub hessian: bool,
    /// Lanczos steps per eigenvalue for --hessian (fewer than `hessian`'s 100: one run per
    /// grid point).
    #[arg(long, default_value_t = 30, value_parser = super::numbers::count::<usize>)]
    pub hessian_max_iter: usize,
    /// Relative residual accepted for --hessian eigenvalues (as `hessian --tol`).
    #[arg(long, default_value_t = 1e-3, value_parser = super::numbers::positive_real)]
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
    #[arg(long, value_parser = crate::cli::args::parse_threads)]
    pub threads: Option<usize>,
    /// Allow a grid of more than a million points (prints the memory estimate; a grid
    /// beyond the memory available stays an error).
    #[arg(long)]
    pub large_grid: bool,
    /// No progress bar.
    #[arg(long, short = 'q')]
    pub quiet: bool,
    /// Print a JSON summary.
    #[arg(long)]
    pub json: bool,
}

impl SurfaceArgs {
    pub fn config(&self) -> JobResult<SurfaceConfig> {
        let eigen = self.dir_type == SurfaceDirType::Eigen;
        if eigen {
            let given = [
                (self.directions.is_some(), "directions"),
                (self.model2.is_some(), "model2"),
                (self.model3.is_some(), "model3"),
            ];
            if let Some((_, other)) = given.iter().find(|(g, _)| *g) {
                return Err(JobError::invalid(
                    "dir_type",
                    format!("eigen computes its own directions: drop `{other}`"),
                ));
            }
        }
        // eigenvectors default to their unit length, random directions to filter
        let eigen_norm = EigenNorm {
            norm: self.norm.unwrap_or(DirectionNorm::None),
            perturb_biasbn: self.perturb_biasbn,
        };
        let directions = match (&self.directions, eigen) {
            (Some(f), _) => DirectionSource::File {
                path: f.clone(),
                eigen_norm,
            },
            (None, true) => DirectionSource::Eigen {
                settings: EigenSettings {
                    operator: self.operator,
                    fisher_samples: self.fisher_samples,
                    params: self.eigen_params,
                    max_iter: self.eigen_max_iter,
                    tol: self.eigen_tol,
                    seed: self.seed,
                    ..Default::default()
                },
                norm: eigen_norm,
            },
            (None, false) => DirectionSource::Generate {
                norm: self.norm.unwrap_or(DirectionNorm::Filter),
                perturb_biasbn: self.perturb_biasbn,
                seed: self.seed,
                model2: self.model2.clone(),
                model3: self.model3.clone(),
            },
        };
        Ok(SurfaceConfig {
            model: self.model.source(),
            data: self.data.config(),
            x: self.x.clone(),
            y: self.y.clone(),
            directions,
            dir_type: match self.dir_type {
                SurfaceDirType::States => DirType::States,
                SurfaceDirType::Weights | SurfaceDirType::Eigen => DirType::Weights,
            },
            orthogonalize: self.orthogonalize,
            curvature: self.hessian.then_some(CurvatureSpec {
                max_iter: self.hessian_max_iter,
                tol: self.hessian_tol,
                seed: self.seed,
            }),
            shard: self.shard.unwrap_or_default(),
            resume: self.resume,
            dir_file: self.dir_file.clone(),
            out: self.out.clone(),
            threads: self.threads,
            large_grid: self.large_grid,
        })
    }
}

pub fn run(args: &SurfaceArgs) -> Result<()> {
    let summary = run_surface(&args.config()?, &super::reporter(args.quiet))?;
    if args.json {
        return super::print_json(&summary);
    }
    let cosine = summary
        .xy_cosine
        .map(|c| format!(", x–y cosine {c:.4}"))
        .unwrap_or_default();
    if summary.already_complete {
        crate::outln!(
            "{}: already complete ({} points){cosine}",
            summary.out,
            summary.points
        )?;
        return Ok(());
    }
    let rate = summary
        .points_per_second
        .map(|r| format!(", {} points/s", three_significant(r)))
        .unwrap_or_default();
    crate::outln!(
        "{}: {} points ({} computed, {} resumed) in {:.1} s{rate}{cosine}",
        summary.out,
        summary.points,
        summary.computed,
        summary.resumed,
        summary.seconds,
    )?;
    Ok(())
}
