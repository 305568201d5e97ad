//! Loss surfaces: the loss and accuracy at θ + α·d₁ (+ β·d₂) for every point of a 1-D
//! or 2-D grid (Li et al. 2018, arXiv:1712.09913, §4–5).
//!
//! ```text
//! point k of an (ny × nx) grid:  iy = k / nx,  ix = k % nx,  α = x[ix],  β = y[iy]
//! θₖ = (θ + α·d₁) + β·d₂    (f32, in this order, as loss-landscape's set_weights does)
//! ```
//! Points run in parallel (rayon), each on one worker with a reusable θₖ buffer; the model
//! is never mutated. Each point's loss is a sequential pass over the data, so its value
//! does not depend on scheduling: the same command gives the same bits with any thread
//! count. Finished points go to an append-only [`Journal`] as they complete, so a killed
//! run resumes without recomputing or losing any of them. `--shard i/N` computes the
//! points k ≡ i (mod N), an interleaved share with balanced cost.
//!
//! Cost: one evaluation pass over the data per point and dataset (train, test).

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::sync::Mutex;
use std::time::Instant;

use ndarray::{ArrayD, IxDyn};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::grid::GridAxis;
use super::journal::{Journal, JournalError};
use crate::engine::ParamVec;
use crate::objective::Objective;
use crate::progress::Progress;

/// A deterministic interleaved share of the grid: points k with k mod `count` = `index`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shard {
    /// 0-based, below `count` (e.g. `$SLURM_ARRAY_TASK_ID` with `--array=0-(N-1)`).
    pub index: usize,
    pub count: usize,
}

impl Shard {
    pub const WHOLE: Shard = Shard { index: 0, count: 1 };

    pub fn contains(&self, point: usize) -> bool {
        point % self.count == self.index
    }
}

impl Default for Shard {
    fn default() -> Self {
        Self::WHOLE
    }
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

/// Why an `I/N` shard could not be read (the field `shard`).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("`shard` expects I/N with 0 ≤ I < N, e.g. 0/4; got '{given}': {why}")]
pub struct ShardError {
    /// The text that was given.
    pub given: String,
    pub why: ShardFault,
}

/// What is wrong with an `I/N` shard.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ShardFault {
    /// Occurs when the text has no `/`.
    #[error("no '/'")]
    Slash,
    /// Occurs when I does not parse as a non-negative integer.
    #[error("I is not a non-negative integer")]
    Index,
    /// Occurs when N does not parse as a non-negative integer.
    #[error("N is not a positive integer")]
    Count,
    /// Occurs when N is 0.
    #[error("N must be at least 1")]
    NoShards,
    /// Occurs when I is not below N.
    #[error("I must be below N (shards are numbered from 0)")]
    Range,
}

impl FromStr for Shard {
    type Err = ShardError;

    fn from_str(s: &str) -> Result<Self, ShardError> {
        let bad = |why: ShardFault| ShardError {
            given: s.to_string(),
            why,
        };
        let (i, n) = s.split_once('/').ok_or_else(|| bad(ShardFault::Slash))?;
        let index: usize = i.trim().parse().map_err(|_| bad(ShardFault::Index))?;
        let count: usize = n.trim().parse().map_err(|_| bad(ShardFault::Count))?;
        if count == 0 {
            return Err(bad(ShardFault::NoShards));
        }
        if index >= count {
            return Err(bad(ShardFault::Range));
        }
        Ok(Shard { index, count })
    }
}

/// The grid of a surface: x, and y for a 2-D surface.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SurfaceGrid {
    pub x: GridAxis,
    pub y: Option<GridAxis>,
}

impl SurfaceGrid {
    /// Array shape: `[ny, nx]` (loss-landscape's plot scripts read `[iy, ix]`) or `[nx]`.
    pub fn shape(&self) -> Vec<usize> {
        match &self.y {
            Some(y) => vec![y.num, self.x.num],
            None => vec![self.x.num],
        }
    }

    pub fn len(&self) -> usize {
        self.shape().iter().product()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Index of the grid point nearest the center (0, 0): the first point of least |α|
    /// on each axis.
    pub fn center_index(&self) -> usize {
        let nearest = |a: &GridAxis| nearest_zero(&a.coordinates());
        match &self.y {
            Some(y) => nearest(y) * self.x.num + nearest(&self.x),
            None => nearest(&self.x),
        }
    }

    /// (α, β) of point k (β = 0 for a 1-D surface), in O(1).
    pub fn coordinates(&self, k: usize) -> (f64, f64) {
        match &self.y {
            Some(y) => (
                self.x.coordinate(k % self.x.num),
                y.coordinate(k / self.x.num),
            ),
            None => (self.x.coordinate(k), 0.0),
        }
    }
}

/// Grids with more points than this need `large_grid` (Li et al. used 51 × 51; a million
/// points is a 1000 × 1000 grid, each point a pass over the data).
pub const MAX_GRID_POINTS: u128 = 1_000_000;

/// Peak bytes a surface of `points` grid points with `values` quantities each needs beyond
/// the model and data: the value arrays and their copy when written (2 × 8 bytes a value),
/// each computed point's result before it is stored (8 bytes a value plus about 48 bytes
/// of bookkeeping), the completion mask and the pending index (9 bytes).
pub fn grid_memory_bytes(points: u128, values: u128) -> u128 {
    points.saturating_mul(24 * values + 57)
}

/// Why a grid is refused before anything is written.
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum GridSizeError {
    /// Occurs when a grid has more than [`MAX_GRID_POINTS`] points and `large_grid` is not set.
    #[error("`x`/`y`: the grid has {points} points (limit {MAX_GRID_POINTS} without `large_grid`) and needs about {} of memory; use fewer points, or set `large_grid` if you mean it", crate::util::human_bytes(*bytes))]
    TooManyPoints { points: u128, bytes: u128 },
    /// Occurs when the grid's arrays would not fit in the memory available.
    #[error("`x`/`y`: the grid has {points} points and needs about {} of memory, but only {} is available; use fewer points (`large_grid` does not lift this)", crate::util::human_bytes(*bytes), crate::util::human_bytes(*available as u128))]
    NoMemory {
        points: u128,
        bytes: u128,
        available: u64,
    },
}

impl SurfaceGrid {
    /// The number of points, without overflow.
    pub fn points(&self) -> u128 {
        self.x.num as u128 * self.y.as_ref().map_or(1, |y| y.num as u128)
    }

    /// Checks the grid against [`MAX_GRID_POINTS`] (unless `large_grid`) and against the
    /// memory available (`available`, when known); returns the estimate of
    /// [`grid_memory_bytes`]. O(1).
    pub fn check_size(
        &self,
        values: usize,
        large_grid: bool,
        available: Option<u64>,
    ) -> Result<u128, GridSizeError> {
        let points = self.points();
        let bytes = grid_memory_bytes(points, values as u128);
        if let Some(a) = available {
            if bytes > a as u128 {
                return Err(GridSizeError::NoMemory {
                    points,
                    bytes,
                    available: a,
                });
            }
        }
        if points > MAX_GRID_POINTS && !large_grid {
            return Err(GridSizeError::TooManyPoints { points, bytes });
        }
        Ok(bytes)
    }
}

/// The quantities of a surface, each an array of the grid's shape (NaN where not computed).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SurfaceValues {
    /// Dataset names in loss-landscape's convention: `train_loss`, `train_acc`, `test_loss`, `test_acc`.
    pub names: Vec<String>,
    pub arrays: Vec<ArrayD<f64>>,
    /// 1 where the point is computed.
    pub completed: ArrayD<u8>,
}

impl SurfaceValues {
    pub fn empty(grid: &SurfaceGrid, names: Vec<String>) -> Self {
        let shape = IxDyn(&grid.shape());
        Self {
            arrays: names
                .iter()
                .map(|_| ArrayD::from_elem(shape.clone(), f64::NAN))
                .collect(),
            names,
            completed: ArrayD::zeros(shape),
        }
    }

    /// Stores the values of point k (flat index in standard order).
    pub fn set(&mut self, k: usize, values: &[f64]) {
        for (a, &v) in self.arrays.iter_mut().zip(values) {
            a.as_slice_mut().expect("standard layout")[k] = v;
        }
        self.completed.as_slice_mut().expect("standard layout")[k] = 1;
    }

    pub fn get(&self, name: &str) -> Option<&ArrayD<f64>> {
        self.names
            .iter()
            .position(|n| n == name)
            .map(|i| &self.arrays[i])
    }

    pub fn completed_count(&self) -> usize {
        self.completed.iter().filter(|&&c| c == 1).count()
    }
}

/// What to sample.
pub struct SurfaceRequest<'a> {
    pub theta: &'a ParamVec<f32>,
    pub x_dir: &'a ParamVec<f32>,
    pub y_dir: Option<&'a ParamVec<f32>>,
    pub grid: &'a SurfaceGrid,
    pub shard: Shard,
    /// (prefix, objective): `("train", …)`, `("test", …)`.
    pub objectives: Vec<(String, &'a Objective<'a>)>,
    /// Also λmax and λmin of the Hessian at every point (Li et al. 2018 §6).
    pub curvature: Option<CurvatureSpec>,
}

/// Eigenvalue maps: at each point, the largest and the most negative Hessian eigenvalue
/// over the weights with more than one dimension (as loss-landscape's maps), on the first
/// objective's data, by Lanczos with full reorthogonalization. Stored as loss-landscape's
/// `max_eig` and `min_eig`, so |λmin/λmax| can be plotted as in Li et al. Fig. 7.
/// Cost per point: up to 2·`max_iter` + 2 H·v products.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CurvatureSpec {
    pub max_iter: usize,
    pub tol: f64,
    pub seed: u64,
}

impl CurvatureSpec {
    fn eigenvalues(&self, obj: &Objective<'_>, theta: &ParamVec<f32>) -> [f64; 2] {
        use crate::hessian::objective_op::DEFAULT_HVP_CACHE_BYTES;
        use crate::hessian::{top_eigenpairs, LanczosParams, ObjectiveHessian, Which};
        // points run in parallel, each with its own kept H·v state: split the budget
        let budget = DEFAULT_HVP_CACHE_BYTES / rayon::current_num_threads().max(1);
        let op = ObjectiveHessian::new(obj, theta, |t| t.role.is_trainable() && t.shape.len() > 1)
            .with_cache_bytes(budget);
        let run = |which| {
            let p = LanczosParams {
                k: 1,
                max_iter: self.max_iter,
                tol: self.tol,
                seed: self.seed,
                which,
                keep_vectors: false,
            };
            top_eigenpairs(&op, &p)
                .ok()
                .and_then(|r| r.values.first().copied())
                .unwrap_or(f64::NAN)
        };
        [run(Which::Largest), run(Which::Smallest)]
    }
}

impl SurfaceRequest<'_> {
    /// The values of grid point `k` (loss and accuracy per objective, then λmax and λmin
    /// when asked), using `buf` (θ-sized) for θₖ. A pure function of `k`: the same bits on
    /// any thread, process or rank.
    pub fn point(&self, buf: &mut [f32], k: usize) -> Vec<f64> {
        let theta = self.theta.data.as_slice().expect("contiguous θ");
        let dx = self.x_dir.data.as_slice().expect("contiguous direction");
        let dy = self
            .y_dir
            .map(|d| d.data.as_slice().expect("contiguous direction"));
        let (alpha, beta) = self.grid.coordinates(k);
        perturb(buf, theta, dx, dy, alpha as f32, beta as f32);
        let point = ndarray::ArrayView1::from(&buf[..]);
        let mut v: Vec<f64> = self
            .objectives
            .iter()
            .flat_map(|(_, o)| {
                let e = o.evaluate_sequential(point);
                [e.loss, e.accuracy]
            })
            .collect();
        if let (Some(c), Some((_, obj))) = (&self.curvature, self.objectives.first()) {
            let theta_k = ParamVec::from_data(
                self.theta.layout.clone(),
                ndarray::Array1::from(buf.to_vec()),
            );
            v.extend(c.eigenvalues(obj, &theta_k));
        }
        v
    }

    /// The values of `points`, in parallel on the current rayon pool, in the given order.
    pub fn points(&self, points: &[usize]) -> Vec<(usize, Vec<f64>)> {
        let n = self.theta.data.len();
        points
            .par_iter()
            .map_init(|| vec![0f32; n], |buf, &k| (k, self.point(buf, k)))
            .collect()
    }

    pub fn names(&self) -> Vec<String> {
        let mut n: Vec<String> = self
            .objectives
            .iter()
            .flat_map(|(p, _)| [format!("{p}_loss"), format!("{p}_acc")])
            .collect();
        if self.curvature.is_some() {
            n.extend(["max_eig".to_string(), "min_eig".to_string()]);
        }
        n
    }
}

/// Outcome of [`sample_surface`].
#[derive(Debug)]
pub struct SurfaceReport {
    pub values: SurfaceValues,
    /// Points computed by this run.
    pub computed: usize,
    /// Points taken from the journal of an earlier run.
    pub resumed: usize,
    /// Points whose loss is NaN or infinite.
    pub non_finite: usize,
    pub seconds: f64,
}

/// Writes θ + α·d₁ + β·d₂ into `buf`.
pub fn perturb(
    buf: &mut [f32],
    theta: &[f32],
    dx: &[f32],
    dy: Option<&[f32]>,
    alpha: f32,
    beta: f32,
) {
    match dy {
        Some(dy) => {
            for (((b, &t), &x), &y) in buf.iter_mut().zip(theta).zip(dx).zip(dy) {
                *b = (t + x * alpha) + y * beta;
            }
        }
        None => {
            for ((b, &t), &x) in buf.iter_mut().zip(theta).zip(dx) {
                *b = t + x * alpha;
            }
        }
    }
}

/// Index of the first coordinate of least magnitude (0 for none).
pub fn nearest_zero(coordinates: &[f64]) -> usize {
    coordinates
        .iter()
        .enumerate()
        .min_by(|p, q| p.1.abs().total_cmp(&q.1.abs()))
        .map(|(i, _)| i)
        .unwrap_or(0)
}

/// Computes every pending point of the request's shard, appending each to `journal` as it
/// finishes; `done` holds points finished by an earlier run (from [`Journal::open`]).
pub fn sample_surface(
    req: &SurfaceRequest<'_>,
    journal: Journal,
    done: BTreeMap<usize, Vec<f64>>,
    progress: &Progress,
) -> Result<(SurfaceReport, Journal), JournalError> {
    let start = Instant::now();
    let mut values = SurfaceValues::empty(req.grid, req.names());
    let mut resumed = 0;
    for (&k, v) in &done {
        if req.shard.contains(k) {
            values.set(k, v);
            resumed += 1;
        }
    }
    let pending: Vec<usize> = (0..req.grid.len())
        .filter(|&k| req.shard.contains(k) && !done.contains_key(&k))
        .collect();
    // the caller's bar counts the shard's points, `resumed` of them already done
    debug_assert_eq!(progress.length(), Some((pending.len() + resumed) as u64));

    let theta = req.theta.data.as_slice().expect("contiguous θ");
    let journal = Mutex::new((journal, None::<JournalError>));
    let results = Mutex::new(Vec::with_capacity(pending.len()));
    pending.par_iter().for_each_init(
        || vec![0f32; theta.len()],
        |buf, &k| {
            let v = req.point(buf, k);
            let mut j = journal.lock().expect("journal lock");
            if j.1.is_none() {
                if let Err(e) = j.0.append(k, &v) {
                    j.1 = Some(e);
                }
            }
            drop(j);
            results.lock().expect("results lock").push((k, v));
            progress.inc(1);
        },
    );
    let (mut journal, failure) = journal.into_inner().expect("journal lock");
    if let Some(e) = failure {
        return Err(e);
    }
    journal.sync()?;
    let results = results.into_inner().expect("results lock");
    let computed = results.len();
    for (k, v) in results {
        values.set(k, &v);
    }
    Ok((
        finish_report(req, values, computed, resumed, start),
        journal,
    ))
}

/// The report of a sampling run whose points are all in `values`.
pub(crate) fn finish_report(
    req: &SurfaceRequest<'_>,
    values: SurfaceValues,
    computed: usize,
    resumed: usize,
    start: Instant,
) -> SurfaceReport {
    let non_finite = (0..req.objectives.len())
        .map(|i| {
            values.arrays[2 * i]
                .iter()
                .zip(values.completed.iter())
                .filter(|(v, &c)| c == 1 && !v.is_finite())
                .count()
        })
        .max()
        .unwrap_or(0);
    SurfaceReport {
        values,
        computed,
        resumed,
        non_finite,
        seconds: start.elapsed().as_secs_f64(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shard_parsing() {
        assert_eq!(
            "1/4".parse::<Shard>().unwrap(),
            Shard { index: 1, count: 4 }
        );
        assert!("4/4".parse::<Shard>().is_err());
        assert!("0/0".parse::<Shard>().is_err());
        assert!("x".parse::<Shard>().is_err());
    }

    #[test]
    fn grid_indexing_is_iy_ix() {
        let g = SurfaceGrid {
            x: "-1:1:3".parse().unwrap(),
            y: Some("0:1:2".parse().unwrap()),
        };
        assert_eq!(g.shape(), vec![2, 3]);
        assert_eq!(g.coordinates(0), (-1.0, 0.0));
        assert_eq!(g.coordinates(2), (1.0, 0.0));
        assert_eq!(g.coordinates(3), (-1.0, 1.0));
    }
}
