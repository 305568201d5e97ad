//! Model × data × loss: loss, accuracy, gradient and Hessian-vector products over a whole
//! dataset, as per-sample means.
//!
//! ```text
//! L(θ) = (1/N) Σₙ ℓ(f(xₙ; θ), yₙ)     ∇L = (1/N) Σₙ ∇ℓₙ     H·v = (1/N) Σₙ ∇²ℓₙ · v
//! ```
//! The samples are cut into mini-batches of `batch_size` in file order; batches run in
//! parallel (rayon), each on one core, and their sums are added **in batch order** in f64,
//! so results are bit-identical for any number of threads and equal (to rounding) for any
//! batch size. In eval mode (the default) the batch size trades memory for speed and moves
//! the last bits: each batch runs its samples through one matrix product per layer, whose
//! f32 blocking, and the summation over samples inside the weight-gradient products,
//! depend on the batch's size (relative differences ~1e-7 in f32). Bit-identity across
//! batch sizes would need per-sample products accumulated in sample order, giving up the
//! batched GEMMs the engine's speed rests on. In train mode batch norm normalizes with
//! each batch's statistics, so the batch size changes the results.
//!
//! Distributed ([`Objective::distributed`], several MPI ranks): the batches of each round
//! are dealt out over the ranks, every rank's per-batch partial sums are gathered to all,
//! and each rank adds them in the same batch order, so every rank holds the same result as
//! one process, bit for bit, for any number of ranks and threads.
//!
//! PyHessian averages H·v per sample the same way (`dataloader_hv_product`);
//! loss-landscape sums per-batch means, which inflates absolute eigenvalues by the number
//! of batches (see ANCHORS.md).
//!
//! Besides the Hessian, products with the Gauss–Newton-type matrices of the same
//! per-sample mean loss ([`Curvature`]): the GGN (1/N) Σₙ Jₙᵀ H_ℓ Jₙ, the Fisher with
//! labels drawn from the model and the empirical Fisher (see [`crate::engine::curvature`]).

use ndarray::{Array1, ArrayD, ArrayView1, ArrayViewD, Axis};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::dist::{Comm, Wire};
use crate::engine::curvature::label_seed;
use crate::engine::{EngineError, GnKind, GnState, Graph, HvpState, Mode, Scalar};

/// Batches summed per parallel round; fixed so that the order of additions (hence every
/// bit of the result) does not depend on the thread count, and memory stays bounded by
/// this many gradient-sized buffers.
const BATCHES_PER_ROUND: usize = 16;

/// How the dataset is cut and how batch norm behaves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ObjectiveConfig {
    /// Samples per mini-batch (default 32).
    pub batch_size: usize,
    /// Batch norm statistics: running (eval, default) or per batch (train).
    pub mode: Mode,
}

impl Default for ObjectiveConfig {
    fn default() -> Self {
        Self {
            batch_size: 32,
            mode: Mode::Eval,
        }
    }
}

/// Which curvature matrix of the per-sample mean loss a product multiplies by.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Curvature {
    /// The Hessian ∇²L (Pearlmutter's R-operator).
    #[default]
    Hessian,
    /// The generalized Gauss–Newton matrix (1/N) Σₙ Jₙᵀ H_ℓ Jₙ (Schraudolph 2002): the
    /// Hessian without the terms from the network's own curvature; PSD.
    Ggn,
    /// The Fisher (1/N) Σₙ (1/m) Σₛ gₙₛ gₙₛᵀ with gₙₛ the gradient of sample n's loss at a
    /// label ŷₙₛ drawn from softmax(zₙ): `samples` (m ≥ 1) labels per sample, drawn once
    /// per θ from streams seeded by (`seed`, sample index), so the operator is fixed while
    /// solvers apply it and the same for any batch size or thread count. PSD.
    Fisher { seed: u64, samples: usize },
    /// The empirical Fisher (1/N) Σₙ gₙ gₙᵀ at the dataset's labels. PSD.
    EmpiricalFisher,
}

/// The prepared half of one batch's product.
enum BatchState<T> {
    Hvp(HvpState<T>),
    Gn(GnState<T>),
}

impl<T: Scalar> BatchState<T> {
    fn bytes(&self) -> usize {
        match self {
            BatchState::Hvp(s) => s.bytes(),
            BatchState::Gn(s) => s.bytes(),
        }
    }
}

/// Loss and accuracy over a dataset.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Evaluation {
    /// Per-sample mean loss.
    pub loss: f64,
    /// Correct predictions in percent (loss-landscape's `train_acc` convention).
    pub accuracy: f64,
    pub correct: usize,
    pub samples: usize,
}

/// A dataset bound to a network: the function θ ↦ L(θ) with its derivatives.
pub struct Objective<'a> {
    graph: &'a Graph,
    x: ArrayViewD<'a, f32>,
    y: &'a [usize],
    cfg: ObjectiveConfig,
    /// Several ranks that share the batches (None: this process does all of them).
    comm: Option<&'a dyn Comm>,
}

#[derive(Default)]
struct Sums {
    loss: f64,
    correct: usize,
}

impl<'a> Objective<'a> {
    /// Binds inputs `x` (`[N, …]`, PyTorch layout) and labels `y` to `graph`, checking shapes.
    pub fn new(
        graph: &'a Graph,
        x: ArrayViewD<'a, f32>,
        y: &'a [usize],
        cfg: ObjectiveConfig,
    ) -> Result<Self, EngineError> {
        graph.infer_shapes(&x.shape()[1..], 1)?;
        if let Some(&label) = y.iter().find(|&&l| l >= graph.num_classes) {
            return Err(EngineError::Label {
                label,
                classes: graph.num_classes,
            });
        }
        assert_eq!(x.shape()[0], y.len(), "inputs and labels differ in length");
        assert!(cfg.batch_size > 0, "batch size must be positive");
        Ok(Self {
            graph,
            x,
            y,
            cfg,
            comm: None,
        })
    }

    /// Shares the batches with the other ranks of `comm`: every rank must then make the
    /// same calls in the same order (they are collective) and gets the whole result, bit
    /// for bit what one process gets. A one-rank group changes nothing.
    pub fn distributed(mut self, comm: &'a dyn Comm) -> Self {
        self.comm = (comm.size() > 1).then_some(comm);
        self
    }

    /// The ranks sharing the batches, when several do.
    pub fn comm(&self) -> Option<&'a dyn Comm> {
        self.comm
    }

    /// Runs `f` on every mini-batch (inputs converted to `T`, its labels) and folds the
    /// results in batch order: batches in parallel rounds and, when distributed, dealt
    /// over the ranks with every rank folding all results, so the fold sees the same
    /// values in the same order for any number of threads and ranks (collective).
    pub fn fold_data<T: Scalar, R: Send + Wire>(
        &self,
        f: impl Fn(&ArrayD<T>, &[usize]) -> R + Sync,
        fold: impl FnMut(R),
    ) {
        self.fold_batches(
            true,
            |b| {
                let (x, y) = self.batch::<T>(b);
                f(&x, y)
            },
            fold,
        )
    }

    /// Batches dealt per distributed round: at least [`BATCHES_PER_ROUND`] and a multiple
    /// of the rank count.
    fn round_len(&self) -> usize {
        match self.comm {
            Some(c) => BATCHES_PER_ROUND.div_ceil(c.size()) * c.size(),
            None => BATCHES_PER_ROUND,
        }
    }

    /// Whether batch `b` is computed by this process (all are, undistributed).
    fn owns(&self, b: usize) -> bool {
        match self.comm {
            Some(c) => (b % self.round_len()) % c.size() == c.rank(),
            None => true,
        }
    }

    pub fn graph(&self) -> &Graph {
        self.graph
    }
    pub fn len(&self) -> usize {
        self.y.len()
    }
    pub fn is_empty(&self) -> bool {
        self.y.is_empty()
    }
    pub fn config(&self) -> ObjectiveConfig {
        self.cfg
    }

    fn num_batches(&self) -> usize {
        self.len().div_ceil(self.cfg.batch_size)
    }

    fn batch<T: Scalar>(&self, b: usize) -> (ArrayD<T>, &'a [usize]) {
        let lo = b * self.cfg.batch_size;
        let hi = (lo + self.cfg.batch_size).min(self.len());
        let x = self
            .x
            .slice_axis(Axis(0), (lo..hi).into())
            .mapv(|v| T::from_f(v as f64));
        (x, &self.y[lo..hi])
    }

    fn finish(&self, s: Sums) -> Evaluation {
        let n = self.len();
        Evaluation {
            loss: s.loss / n as f64,
            accuracy: 100.0 * s.correct as f64 / n as f64,
            correct: s.correct,
            samples: n,
        }
    }

    /// Runs `f` on every batch, in parallel rounds, folding results in batch order. With
    /// several ranks each computes its share of a round and the encoded results are
    /// gathered to all before the fold, which then sees the same values in the same order.
    fn fold_batches<R: Send + Wire>(
        &self,
        parallel: bool,
        f: impl Fn(usize) -> R + Sync,
        mut fold: impl FnMut(R),
    ) {
        let nb = self.num_batches();
        let round = self.round_len();
        for start in (0..nb).step_by(round) {
            let end = (start + round).min(nb);
            let mine: Vec<usize> = (start..end).filter(|&b| self.owns(b)).collect();
            let results: Vec<R> = if parallel {
                mine.par_iter().map(|&b| f(b)).collect()
            } else {
                mine.iter().map(|&b| f(b)).collect()
            };
            let Some(comm) = self.comm else {
                results.into_iter().for_each(&mut fold);
                continue;
            };
            let mut bytes = Vec::new();
            for r in &results {
                r.encode(&mut bytes);
            }
            drop(results);
            let gathered = comm.all_gather(&bytes);
            drop(bytes);
            // rank k holds the batches start + k, start + k + size, … in order
            let mut cursors: Vec<&[u8]> = gathered.iter().map(Vec::as_slice).collect();
            for b in start..end {
                let k = (b - start) % comm.size();
                let r = R::decode(&mut cursors[k])
                    .unwrap_or_else(|e| panic!("rank {k}'s partial sums of batch {b}: {e}"));
                fold(r);
            }
        }
    }

    /// Loss and accuracy at θ, batches in parallel.
    pub fn evaluate<T: Scalar>(&self, theta: ArrayView1<T>) -> Evaluation {
        self.evaluate_with(theta, true)
    }

    /// Loss and accuracy at θ on the calling thread only (for callers that parallelize
    /// over something else, such as grid points).
    pub fn evaluate_sequential<T: Scalar>(&self, theta: ArrayView1<T>) -> Evaluation {
        self.evaluate_with(theta, false)
    }

    /// [`Objective::evaluate`], calling `done(n)` with each batch's sample count as its sums
    /// are folded in (in batch order, on the calling thread): the hook of a progress bar.
    pub fn evaluate_reporting<T: Scalar>(
        &self,
        theta: ArrayView1<T>,
        done: &dyn Fn(usize),
    ) -> Evaluation {
        self.evaluate_inner(theta, true, done)
    }

    fn evaluate_with<T: Scalar>(&self, theta: ArrayView1<T>, parallel: bool) -> Evaluation {
        self.evaluate_inner(theta, parallel, &|_| {})
    }

    fn evaluate_inner<T: Scalar>(
        &self,
        theta: ArrayView1<T>,
        parallel: bool,
        done: &dyn Fn(usize),
    ) -> Evaluation {
        let mut s = Sums::default();
        let mut folded = 0;
        self.fold_batches(
            parallel,
            |b| {
                let (x, y) = self.batch::<T>(b);
                self.graph.loss_batch(theta, &x, y, self.cfg.mode)
            },
            |v| {
                s.loss += v.sum;
                s.correct += v.correct;
                let lo = folded * self.cfg.batch_size;
                done((lo + self.cfg.batch_size).min(self.len()) - lo);
                folded += 1;
            },
        );
        self.finish(s)
    }

    /// Loss, accuracy and ∇L(θ) (zero on running statistics).
    pub fn gradient<T: Scalar>(&self, theta: ArrayView1<T>) -> (Evaluation, Array1<T>) {
        let mut s = Sums::default();
        let mut acc = Array1::<f64>::zeros(theta.len());
        self.fold_batches(
            true,
            |b| {
                let (x, y) = self.batch::<T>(b);
                let mut g = Array1::<T>::zeros(theta.len());
                let v = self
                    .graph
                    .grad_batch(theta, &x, y, self.cfg.mode, g.view_mut());
                (v, g)
            },
            |(v, g)| {
                s.loss += v.sum;
                s.correct += v.correct;
                acc.zip_mut_with(&g, |a, &b| *a += b.as_f64());
            },
        );
        let n = self.len() as f64;
        (self.finish(s), acc.mapv(|a| T::from_f(a / n)))
    }

    /// H·v at θ: the exact Hessian of the per-sample mean loss times v (Pearlmutter's
    /// R-operator; about 2–3 gradients of work). Components of v on running statistics are
    /// ignored and the result is zero there. One product: nothing is kept (see
    /// [`Objective::prepare_hvp`] for many products at one θ).
    pub fn hvp<T: Scalar>(&self, theta: ArrayView1<T>, v: ArrayView1<T>) -> Array1<T> {
        self.prepare_hvp(theta, 0).product(v)
    }

    /// C·v at θ for the curvature matrix `c` (one cold product, nothing kept).
    pub fn curvature_product<T: Scalar>(
        &self,
        theta: ArrayView1<T>,
        c: Curvature,
        v: ArrayView1<T>,
    ) -> Array1<T> {
        self.prepare_curvature(theta, c, 0).product(v)
    }

    /// Prepares H·v at a fixed θ for many directions (see [`PreparedCurvature`]).
    pub fn prepare_hvp<T: Scalar>(
        &self,
        theta: ArrayView1<T>,
        budget_bytes: usize,
    ) -> PreparedCurvature<'_, 'a, T> {
        self.prepare_curvature(theta, Curvature::Hessian, budget_bytes)
    }

    /// The label seeds of batch `b`'s samples under a Fisher seed.
    fn label_seeds(&self, b: usize, seed: u64) -> Vec<u64> {
        let lo = b * self.cfg.batch_size;
        let hi = (lo + self.cfg.batch_size).min(self.len());
        (lo..hi).map(|i| label_seed(seed, i)).collect()
    }

    /// The prepared half of batch `b`'s product with `c` at θ.
    fn prepare_batch<T: Scalar>(
        &self,
        theta: ArrayView1<T>,
        c: Curvature,
        b: usize,
    ) -> BatchState<T> {
        let (x, y) = self.batch::<T>(b);
        let mode = self.cfg.mode;
        match c {
            Curvature::Hessian => BatchState::Hvp(self.graph.hvp_prepare(theta, &x, y, mode)),
            Curvature::Ggn => {
                BatchState::Gn(self.graph.gn_prepare(theta, &x, y, mode, &GnKind::Ggn))
            }
            Curvature::EmpiricalFisher => {
                BatchState::Gn(
                    self.graph
                        .gn_prepare(theta, &x, y, mode, &GnKind::EmpiricalFisher),
                )
            }
            Curvature::Fisher { seed, samples } => {
                let seeds = self.label_seeds(b, seed);
                let kind = GnKind::SampledFisher {
                    seeds: &seeds,
                    samples,
                };
                BatchState::Gn(self.graph.gn_prepare(theta, &x, y, mode, &kind))
            }
        }
    }

    /// Prepares products with `c` at a fixed θ for many directions (see
    /// [`PreparedCurvature`]): the θ-only half of each batch's product is computed now and
    /// kept while it fits in `budget_bytes` (batches in order; 0 keeps none).
    pub fn prepare_curvature<T: Scalar>(
        &self,
        theta: ArrayView1<T>,
        c: Curvature,
        budget_bytes: usize,
    ) -> PreparedCurvature<'_, 'a, T> {
        if let Curvature::Fisher { samples, .. } = c {
            assert!(
                samples > 0,
                "a Fisher product needs at least one label per sample"
            );
        }
        let nb = self.num_batches();
        let prep = |b: usize| self.prepare_batch(theta, c, b);
        let mut states: Vec<Option<BatchState<T>>> = Vec::with_capacity(nb);
        let mine: Vec<usize> = (0..nb).filter(|&b| self.owns(b)).collect();
        if let (Some(&b0), true) = (mine.first(), budget_bytes > 0) {
            let first = prep(b0);
            let per = first.bytes().max(1);
            if per <= budget_bytes {
                let keep = (budget_bytes / per).min(mine.len());
                let mut kept = vec![first];
                for chunk in mine[1..keep].chunks(BATCHES_PER_ROUND) {
                    let round: Vec<BatchState<T>> = chunk.par_iter().map(|&b| prep(b)).collect();
                    kept.extend(round);
                }
                states.resize_with(nb, || None);
                for (&b, s) in mine.iter().zip(kept) {
                    states[b] = Some(s);
                }
            }
        }
        states.resize_with(nb, || None);
        PreparedCurvature {
            objective: self,
            theta: theta.to_owned(),
            curvature: c,
            states,
        }
    }
}

/// Products with one curvature matrix ([`Curvature`]) at one θ for many v, as Hessian
/// eigensolvers, trace estimators and SLQ need: the part of each batch's product that
/// depends on θ alone (for H·v the forward pass, loss and plain reverse pass, [`HvpState`];
/// for the Gauss–Newton types the forward pass and the output-space middle, [`GnState`])
/// is computed once by [`Objective::prepare_curvature`] and kept, so a product runs only
/// the R-passes (H·v: 6 of the 8 convolution passes of a cold product) or the R-forward
/// and reverse pass (G·v: 4 of 5). Batches past the memory budget run the whole product
/// each time. Products equal the cold ones at the same θ bit for bit.
pub struct PreparedCurvature<'o, 'a, T> {
    objective: &'o Objective<'a>,
    theta: Array1<T>,
    curvature: Curvature,
    states: Vec<Option<BatchState<T>>>,
}

impl<T: Scalar> PreparedCurvature<'_, '_, T> {
    /// C·v at the prepared θ (per-sample mean).
    pub fn product(&self, v: ArrayView1<T>) -> Array1<T> {
        let (o, theta) = (self.objective, self.theta.view());
        let mut acc = Array1::<f64>::zeros(theta.len());
        o.fold_batches(
            true,
            |b| {
                let mut cv = Array1::<T>::zeros(theta.len());
                let cold;
                let state = match &self.states[b] {
                    Some(s) => s,
                    None => {
                        cold = o.prepare_batch(theta, self.curvature, b);
                        &cold
                    }
                };
                match state {
                    BatchState::Hvp(s) => o.graph.hvp_prepared(theta, v, s, cv.view_mut()),
                    BatchState::Gn(s) => o.graph.gn_prepared(theta, v, s, cv.view_mut()),
                }
                cv
            },
            |cv| acc.zip_mut_with(&cv, |a, &b| *a += b.as_f64()),
        );
        let n = o.len() as f64;
        acc.mapv(|a| T::from_f(a / n))
    }

    /// The curvature matrix of the products.
    pub fn curvature(&self) -> Curvature {
        self.curvature
    }

    /// Batches whose θ-only half is kept, and all batches.
    pub fn kept(&self) -> (usize, usize) {
        (self.states.iter().flatten().count(), self.states.len())
    }

    /// Bytes held by the kept states.
    pub fn bytes(&self) -> usize {
        self.states.iter().flatten().map(BatchState::bytes).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Arch;
    use ndarray::IxDyn;

    fn setup() -> (Graph, Array1<f32>, ArrayD<f32>, Vec<usize>) {
        let arch: Arch = "resnet-cifar:depth=8,width=4,in_channels=1,input_size=6,num_classes=3"
            .parse()
            .unwrap();
        let g = arch.build();
        let theta = crate::model::zoo::init_params::<f32>(&g.layout, 1, false).data;
        let n = 23;
        let x = ArrayD::from_shape_fn(IxDyn(&[n, 1, 6, 6]), |i| {
            ((i[0] * 31 + i[2] * 7 + i[3] * 3) % 17) as f32 / 17.0 - 0.5
        });
        let y = (0..n).map(|i| i % 3).collect();
        (g, theta, x, y)
    }

    #[test]
    fn batch_size_changes_only_rounding() {
        let (g, theta, x, y) = setup();
        let v = theta.mapv(|t| t * 0.5 + 0.01);
        let run = |bs| {
            let o = Objective::new(
                &g,
                x.view(),
                &y,
                ObjectiveConfig {
                    batch_size: bs,
                    mode: Mode::Eval,
                },
            )
            .unwrap();
            (
                o.evaluate(theta.view()),
                o.gradient(theta.view()).1,
                o.hvp(theta.view(), v.view()),
            )
        };
        let (e1, g1, h1) = run(1);
        let (e2, g2, h2) = run(7);
        let (e3, _, _) = run(100);
        assert_eq!(e1.correct, e2.correct);
        assert!((e1.loss - e2.loss).abs() < 1e-6 && (e1.loss - e3.loss).abs() < 1e-6);
        let rel = |a: &Array1<f32>, b: &Array1<f32>| {
            (a - b).mapv(|d| d.abs()).sum() / b.mapv(|d| d.abs()).sum()
        };
        assert!(rel(&g1, &g2) < 1e-5, "{}", rel(&g1, &g2));
        assert!(rel(&h1, &h2) < 1e-5, "{}", rel(&h1, &h2));
    }

    #[test]
    fn bit_identical_for_any_thread_count() {
        let (g, theta, x, y) = setup();
        let o = Objective::new(
            &g,
            x.view(),
            &y,
            ObjectiveConfig {
                batch_size: 2,
                mode: Mode::Eval,
            },
        )
        .unwrap();
        let run = |threads| {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            pool.install(|| {
                (
                    o.evaluate(theta.view()).loss,
                    o.gradient(theta.view()).1,
                    o.hvp(theta.view(), theta.view()),
                )
            })
        };
        let (l1, g1, h1) = run(1);
        let (l3, g3, h3) = run(3);
        assert_eq!(l1.to_bits(), l3.to_bits());
        assert_eq!(g1, g3);
        assert_eq!(h1, h3);
    }

    /// Gauss–Newton-type products: kept and cold states give the same bits, the Fisher's
    /// labels do not depend on the thread count, and (in eval mode) the batch size changes
    /// only rounding, since each sample's labels come from its own seeded stream.
    #[test]
    fn gauss_newton_products_are_reproducible() {
        let (g, theta, x, y) = setup();
        let v = theta.mapv(|t| t * 0.5 + 0.01);
        let kinds = [
            Curvature::Ggn,
            Curvature::EmpiricalFisher,
            Curvature::Fisher {
                seed: 3,
                samples: 2,
            },
        ];
        let cfg = |bs| ObjectiveConfig {
            batch_size: bs,
            mode: Mode::Eval,
        };
        let o = Objective::new(&g, x.view(), &y, cfg(4)).unwrap();
        let o7 = Objective::new(&g, x.view(), &y, cfg(7)).unwrap();
        for c in kinds {
            let cold = o.curvature_product(theta.view(), c, v.view());
            assert!(cold.iter().any(|&a| a != 0.0), "{c:?}");
            let kept = o.prepare_curvature(theta.view(), c, usize::MAX);
            assert_eq!(kept.kept(), (6, 6));
            assert_eq!(kept.product(v.view()), cold, "{c:?} kept");
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(3)
                .build()
                .unwrap();
            let threaded = pool.install(|| o.curvature_product(theta.view(), c, v.view()));
            assert_eq!(threaded, cold, "{c:?} threads");
            let other = o7.curvature_product(theta.view(), c, v.view());
            let rel = (&other - &cold).mapv(|d| d.abs()).sum() / cold.mapv(|d| d.abs()).sum();
            assert!(rel < 1e-5, "{c:?} batch size: {rel}");
        }
        // another seed draws other labels
        let f = |seed| {
            o.curvature_product(
                theta.view(),
                Curvature::Fisher { seed, samples: 1 },
                v.view(),
            )
        };
        assert_ne!(f(0), f(1));
    }

    /// A prepared H·v (θ-only half kept) equals the cold one bit for bit: f32 (direct
    /// kernels at 16- and 8-wide rows, stride 2, im2col at 4-wide rows) and f64, eval and
    /// train mode, conv and MLP (BatchNorm1d) nets, with every, some or no batch kept.
    #[test]
    fn prepared_hvp_equals_cold_hvp_bit_for_bit() {
        fn check<T: Scalar>(arch: &str, shape: &[usize]) {
            let arch: Arch = arch.parse().unwrap();
            let g = arch.build();
            let theta = crate::model::zoo::init_params::<T>(&g.layout, 3, false).data;
            let n = shape[0];
            let x = ArrayD::from_shape_fn(IxDyn(shape), |i: IxDyn| -> f32 {
                let h: usize = ndarray::Dimension::slice(&i)
                    .iter()
                    .enumerate()
                    .map(|(k, &v)| v * (7 + 6 * k))
                    .sum();
                (h % 17) as f32 / 17.0 - 0.5
            });
            let y: Vec<usize> = (0..n).map(|i| i % 3).collect();
            for mode in [Mode::Eval, Mode::Train] {
                let cfg = ObjectiveConfig {
                    batch_size: 4,
                    mode,
                };
                let o = Objective::new(&g, x.view(), &y, cfg).unwrap();
                let all = o.prepare_hvp(theta.view(), usize::MAX);
                assert_eq!(all.kept(), (3, 3));
                let per = all.bytes() / 3;
                let some = o.prepare_hvp(theta.view(), 2 * per + per / 2);
                assert_eq!(some.kept(), (2, 3));
                let none = o.prepare_hvp(theta.view(), 0);
                assert_eq!(none.kept(), (0, 3));
                for k in 0..2 {
                    let v = theta.mapv(|t| t * T::from_f(0.5) + T::from_f(0.01 * k as f64 - 0.003));
                    let cold = o.hvp(theta.view(), v.view());
                    assert!(cold.iter().any(|h| h.as_f64() != 0.0));
                    for p in [&all, &some, &none] {
                        let hv = p.product(v.view());
                        let same = hv
                            .iter()
                            .zip(&cold)
                            .all(|(a, b)| a.as_f64().to_bits() == b.as_f64().to_bits());
                        assert!(same, "{arch:?} {mode:?} kept {:?}", p.kept());
                    }
                }
            }
        }
        let conv = "resnet-cifar:depth=8,width=4,in_channels=1,input_size=16,num_classes=3";
        check::<f32>(conv, &[11, 1, 16, 16]);
        check::<f64>(conv, &[11, 1, 16, 16]);
        let mlp = "mlp:in_features=5,depth=2,width=4,residual=true,batchnorm=true,num_classes=3";
        check::<f32>(mlp, &[11, 5]);
    }
}
