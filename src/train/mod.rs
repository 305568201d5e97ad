//! Training: mini-batch SGD exactly as PyTorch's `torch.optim.SGD` defines it, or AdamW as
//! `torch.optim.AdamW` does (Loshchilov & Hutter 2019, "Decoupled weight decay
//! regularization", arXiv:1711.05101), batch norm in train mode with PyTorch's
//! running-statistics update, seeded shuffling and augmentation, per-epoch history, and
//! checkpoints that make a killed run resumable bit for bit.
//!
//! ```text
//! per step (lr from the schedule, constant within an epoch), on trainable tensors only:
//! SGD:
//!   g  = (1/B) Σ_b ∇ℓ_b  + wd·θ                      (weight decay added to the gradient)
//!   m  = g  on the first step,  else  μ·m + g          (momentum buffer, dampening 0)
//!   d  = g + μ·m  (nesterov)  or  m
//!   θ ← θ − lr·d
//! AdamW (step t = 1, 2, …; m, v start at 0):
//!   g  = (1/B) Σ_b ∇ℓ_b
//!   θ ← θ·(1 − lr·wd)                                  (decoupled weight decay)
//!   m  ← m + (1 − β₁)(g − m)            v ← β₂·v + (1 − β₂)·g²
//!   θ ← θ − (lr / (1 − β₁ᵗ)) · m / (√v / √(1 − β₂ᵗ) + ε)
//! batch norm (both):
//!   running_mean ← 0.9·running_mean + 0.1·mean_batch
//!   running_var  ← 0.9·running_var  + 0.1·var_batch·n/(n−1)   (unbiased, n = N·H·W)
//! schedules:  step:E1,E2  lr·0.1^(#milestones ≤ epoch)   (MultiStepLR, gamma 0.1)
//!             cosine      lr·(1 + cos(π·epoch/E))/2       (CosineAnnealingLR, T_max = E)
//! ```
//! Randomness: epoch `e` draws its permutation, then every sample's crop offset and flip,
//! from ChaCha8 seeded with `seed` on stream `e + 1`; nothing else is random. So the state
//! at an epoch boundary is (θ with running statistics, momentum buffer (AdamW: m and v, and
//! the step count), epoch) and a run
//! resumed from a checkpoint ends with exactly the weights of an uninterrupted run.
//!
//! Parallelism: batch norm in train mode normalizes with the statistics of the whole
//! mini-batch, so a step runs on one core (splitting the batch would change the result);
//! the per-epoch evaluations (train and test set, eval mode) run in parallel.

pub mod checkpoint;
pub mod session;

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Instant;

use ndarray::{Array1, ArrayD, Axis, IxDyn};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::data::Dataset;
use crate::engine::{EngineError, Graph, Mode, ParamVec};
use crate::model::ModelError;
use crate::objective::{Objective, ObjectiveConfig};

/// Why training cannot start or go on. Messages name config fields (see [`crate::error`]).
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// Occurs when a schedule is not `constant`, `cosine` or `step:E1,E2,…`.
    #[error("unknown schedule '{given}': use constant, cosine or step:E1,E2 (epochs)")]
    UnknownSchedule { given: String },
    /// Occurs when a step schedule's milestones are not epoch numbers.
    #[error("'{given}': milestones must be epoch numbers, e.g. step:30,45")]
    Milestones { given: String },
    /// Occurs when resnet-cifar (or vit) is asked for data whose samples are not square
    /// images (vit: nor 1-D sequences).
    #[error("resnet-cifar takes square images [C, H, W] (vit also 1-D samples [L]); {data} has samples {shape:?}")]
    NotSquare { data: String, shape: Vec<usize> },
    /// Occurs when the architecture, completed from the data, is invalid.
    #[error("{cause} (as {full})")]
    Arch {
        full: String,
        cause: Box<ModelError>,
    },
    /// Occurs when the recipe asks for no epochs or empty batches.
    #[error("epochs and batch size must be positive")]
    Empty,
    /// Occurs when crop or flip augmentation is asked for data that are not images.
    #[error("crop and flip augment images [N, C, H, W]; {data} has samples of shape {shape:?}")]
    Augment { data: String, shape: Vec<usize> },
    /// Occurs when Nesterov momentum is asked with a momentum of 0.
    #[error("nesterov needs a positive momentum (as in PyTorch)")]
    Nesterov,
    /// Occurs when SGD's `momentum` or `nesterov` is given with AdamW (whose moments are
    /// set by `betas`).
    #[error(
        "`momentum` and `nesterov` are SGD's; AdamW's moments are set by `betas` (set momentum 0)"
    )]
    AdamwMomentum,
    /// Occurs when AdamW's `betas` or `eps` is given for SGD.
    #[error("`betas` and `eps` are AdamW's; pass `optimizer` adamw, or drop them")]
    SgdBetas,
    /// Occurs when an optimizer name is not `sgd` or `adamw`.
    #[error("unknown optimizer '{given}': use sgd or adamw")]
    UnknownOptimizer { given: String },
    /// Occurs when AdamW's β₁, β₂ are not in [0, 1) or ε is not positive (PyTorch's checks).
    #[error("AdamW needs 0 ≤ β₁, β₂ < 1 and ε > 0, got betas ({beta1}, {beta2}) and eps {eps}")]
    AdamwHyper { beta1: f64, beta2: f64, eps: f64 },
    /// Occurs when the network cannot evaluate a dataset (shapes, labels).
    #[error("{data}: {cause}")]
    Data {
        data: String,
        cause: Box<EngineError>,
    },
    /// Occurs when checkpoints are asked for every 0 epochs.
    #[error("`every` must be at least 1")]
    Every,
    /// Occurs when a resume is asked without a checkpoint folder.
    #[error("`resume` continues from the state in `checkpoints` DIR; give that folder")]
    ResumeWithoutCheckpoints,
    /// Occurs when the checkpoint folder cannot be created.
    #[error("`checkpoints` {}: cannot create it", dir.display())]
    CreateCheckpoints {
        dir: PathBuf,
        #[source]
        cause: std::io::Error,
    },
    /// Occurs when the checkpoint folder already holds a run and no resume is asked.
    #[error("`checkpoints` {} already holds a run ({state}); HINT: pass `resume` to continue it, or choose an empty folder", dir.display())]
    RunExists { dir: PathBuf, state: &'static str },
    /// Occurs when a resume state was written for another architecture.
    #[error("{}: the checkpoint is of {saved}, this run trains {arch}; HINT: use another `checkpoints` folder or the same `arch`", path.display())]
    OtherArch {
        path: PathBuf,
        saved: String,
        arch: String,
    },
    /// Occurs when a resume state was written with another recipe.
    #[error("{}: the checkpoint was trained with another recipe ({saved}), this run asks for {asked}; HINT: resume with the same options or use another `checkpoints` folder", path.display())]
    OtherRecipe {
        path: PathBuf,
        /// Both recipes as JSON.
        saved: String,
        asked: String,
    },
    /// Occurs when the mean mini-batch loss of an epoch is NaN or infinite.
    #[error("training diverged in epoch {epoch} (loss {loss}); HINT: lower `lr`")]
    Diverged { epoch: usize, loss: f64 },
    /// Occurs when the network cannot be trained on the data with this recipe (the
    /// source says why: [`TrainError::Empty`], [`TrainError::Data`], …).
    #[error("setting up training")]
    Setup(#[source] Box<TrainError>),
    /// Occurs when the thread pool of the per-epoch evaluations cannot start.
    #[error(transparent)]
    Threads(#[from] crate::util::ThreadsError),
    /// Occurs when an output (model, history, checkpoint folder) cannot be written: not a
    /// regular file (or folder), or locked by another run; checked before training.
    #[error(transparent)]
    Output(#[from] crate::io::output::OutputError),
    /// Occurs when a file or folder of the run (checkpoint folder, resume state, history)
    /// cannot be read.
    #[error("reading {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Occurs when a file of the run (resume state, history CSV) cannot be written.
    #[error("writing {}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Occurs when a model checkpoint or the trained model cannot be written.
    #[error("writing {}", path.display())]
    WriteModel {
        path: PathBuf,
        #[source]
        source: Box<ModelError>,
    },
    /// Occurs when the HDF5 history cannot be created or filled.
    #[error("writing {}", path.display())]
    WriteHdf5 {
        path: PathBuf,
        #[source]
        source: Box<hdf5::Error>,
    },
    /// Occurs when a resume state is not a safetensors file.
    #[error("{}: not a safetensors file", path.display())]
    NotSafetensors {
        path: PathBuf,
        #[source]
        source: Box<safetensors::SafeTensorError>,
    },
    /// Occurs when the resume state cannot be serialized, or its header read, by the
    /// safetensors library (the message is the library's).
    #[error(transparent)]
    Safetensors(Box<safetensors::SafeTensorError>),
    /// Occurs when the recipe or architecture cannot be written as JSON, or the JSON in a
    /// resume state's metadata does not read back as one (the message is serde's).
    #[error(transparent)]
    Json(#[from] serde_json::Error),
    /// Occurs when a resume state's metadata lacks an entry (`epoch`, `recipe`, …).
    #[error("{}: metadata lacks '{key}'", path.display())]
    MissingMetadata { path: PathBuf, key: &'static str },
    /// Occurs when the epoch in a resume state's metadata is not a number (the message
    /// is the parser's).
    #[error(transparent)]
    Epoch(std::num::ParseIntError),
    /// Occurs when a resume state lacks a tensor it needs (`theta`).
    #[error("{}: no '{name}'", path.display())]
    MissingTensor { path: PathBuf, name: &'static str },
    /// Occurs when a tensor of a resume state is not f32 or not as long as the network's
    /// parameter vector.
    #[error("{}: tensor '{name}' is not f32 of length {len}", path.display())]
    BadTensor {
        path: PathBuf,
        name: &'static str,
        len: usize,
    },
    /// Occurs when a history row holds something that is not a number.
    #[error("{}: bad row '{line}'", path.display())]
    BadRow {
        path: PathBuf,
        line: String,
        #[source]
        source: std::num::ParseFloatError,
    },
    /// Occurs when a history row has another number of columns than
    /// [`checkpoint::HISTORY_COLUMNS`] (or one fewer, from before `step_seconds`).
    #[error("{}: row '{line}' has {columns} columns", path.display())]
    RowColumns {
        path: PathBuf,
        line: String,
        columns: usize,
    },
}

/// PyTorch's batch-norm momentum for the running statistics.
pub const BN_MOMENTUM: f32 = 0.1;

/// Learning-rate schedule, stepped once per epoch.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Schedule {
    Constant,
    /// Multiply by 0.1 at each of these epochs (PyTorch `MultiStepLR`).
    Step(Vec<usize>),
    /// Cosine annealing to 0 over the run (PyTorch `CosineAnnealingLR(T_max=epochs)`).
    Cosine,
}

impl Schedule {
    /// Learning rate of (0-based) `epoch` of `epochs`.
    pub fn lr(&self, base: f64, epoch: usize, epochs: usize) -> f64 {
        match self {
            Schedule::Constant => base,
            Schedule::Step(m) => {
                base * 0.1f64.powi(m.iter().filter(|&&e| e <= epoch).count() as i32)
            }
            Schedule::Cosine => {
                base * (0.5 * (1.0 + (std::f64::consts::PI * epoch as f64 / epochs as f64).cos()))
            }
        }
    }
}

impl FromStr for Schedule {
    type Err = TrainError;
    /// `constant`, `cosine` or `step:E1,E2,…`.
    fn from_str(s: &str) -> Result<Self, TrainError> {
        let s = s.trim();
        match s {
            "constant" => Ok(Schedule::Constant),
            "cosine" => Ok(Schedule::Cosine),
            _ => {
                let Some(list) = s.strip_prefix("step:") else {
                    return Err(TrainError::UnknownSchedule {
                        given: s.to_string(),
                    });
                };
                let m = list
                    .split(',')
                    .map(|e| e.trim().parse::<usize>())
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|_| TrainError::Milestones {
                        given: s.to_string(),
                    })?;
                Ok(Schedule::Step(m))
            }
        }
    }
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Schedule::Constant => f.write_str("constant"),
            Schedule::Cosine => f.write_str("cosine"),
            Schedule::Step(m) => {
                let v: Vec<String> = m.iter().map(|e| e.to_string()).collect();
                write!(f, "step:{}", v.join(","))
            }
        }
    }
}

/// An architecture for data `ds`: `NAME[:key=value,…]` (the `--arch` syntax) with the
/// input shape (`in_channels`, `input_size` or `in_features`) and `num_classes` taken from
/// the data unless given.
pub fn resolve_arch(spec: &str, ds: &Dataset) -> Result<crate::model::Arch, TrainError> {
    let (kind, rest) = spec.split_once(':').unwrap_or((spec, ""));
    let kind = kind.trim();
    let mut kv: Vec<String> = Vec::new();
    let shape = ds.sample_shape();
    match kind {
        "resnet-cifar" => {
            if shape.len() != 3 || shape[1] != shape[2] {
                return Err(TrainError::NotSquare {
                    data: ds.name.clone(),
                    shape: shape.to_vec(),
                });
            }
            kv.push(format!("in_channels={}", shape[0]));
            kv.push(format!("input_size={}", shape[1]));
        }
        "mlp" => kv.push(format!("in_features={}", shape.iter().product::<usize>())),
        "vit" => match shape {
            [c, h, w] if h == w => {
                kv.push(format!("in_channels={c}"));
                kv.push(format!("input_size={h}"));
            }
            [l] => {
                kv.push("input=seq".into());
                kv.push(format!("input_size={l}"));
            }
            _ => {
                return Err(TrainError::NotSquare {
                    data: ds.name.clone(),
                    shape: shape.to_vec(),
                })
            }
        },
        _ => {}
    }
    kv.push(format!("num_classes={}", ds.num_classes));
    kv.extend(
        rest.split(',')
            .filter(|s| !s.trim().is_empty())
            .map(str::to_string),
    );
    let full = format!("{kind}:{}", kv.join(","));
    full.parse::<crate::model::Arch>()
        .map_err(|cause| TrainError::Arch {
            full,
            cause: Box::new(cause),
        })
}

/// The update rule (see the module docs).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Optimizer {
    /// `torch.optim.SGD` with the recipe's momentum, nesterov and (L2) weight decay.
    #[default]
    Sgd,
    /// `torch.optim.AdamW` (amsgrad off) with decoupled weight decay `weight_decay`.
    Adamw { beta1: f64, beta2: f64, eps: f64 },
}

impl Optimizer {
    /// AdamW with PyTorch's defaults: betas (0.9, 0.999), eps 1e-8.
    pub const ADAMW_DEFAULT: Optimizer = Optimizer::Adamw {
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-8,
    };

    /// `sgd` or `adamw`, with AdamW's betas and eps where given (else PyTorch's defaults);
    /// betas or eps for SGD are an error.
    pub fn from_parts(
        name: &str,
        betas: Option<(f64, f64)>,
        eps: Option<f64>,
    ) -> Result<Self, TrainError> {
        match name.trim() {
            "sgd" if betas.is_some() || eps.is_some() => Err(TrainError::SgdBetas),
            "sgd" => Ok(Optimizer::Sgd),
            "adamw" => {
                let (beta1, beta2) = betas.unwrap_or((0.9, 0.999));
                Ok(Optimizer::Adamw {
                    beta1,
                    beta2,
                    eps: eps.unwrap_or(1e-8),
                })
            }
            other => Err(TrainError::UnknownOptimizer {
                given: other.to_string(),
            }),
        }
    }

    /// SGD's default momentum for this optimizer: 0.9 for SGD, 0 (none) for AdamW.
    pub fn default_momentum(&self) -> f64 {
        match self {
            Optimizer::Sgd => 0.9,
            Optimizer::Adamw { .. } => 0.0,
        }
    }
}

impl fmt::Display for Optimizer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Optimizer::Sgd => f.write_str("sgd"),
            Optimizer::Adamw { beta1, beta2, eps } => {
                write!(f, "adamw (betas {beta1}, {beta2}; eps {eps})")
            }
        }
    }
}

/// A training recipe.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    pub epochs: usize,
    pub batch_size: usize,
    pub lr: f64,
    /// SGD's momentum (0 with AdamW).
    pub momentum: f64,
    pub nesterov: bool,
    /// SGD: L2 penalty added to the gradient; AdamW: decoupled decay θ ← θ(1 − lr·wd).
    pub weight_decay: f64,
    /// Absent in recipes written before AdamW: SGD.
    #[serde(default)]
    pub optimizer: Optimizer,
    pub schedule: Schedule,
    pub seed: u64,
    /// Random crop after zero padding by this many pixels (0 = off); images only.
    pub crop_pad: usize,
    /// Random horizontal flip with probability ½; images only.
    pub flip: bool,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            epochs: 10,
            batch_size: 64,
            lr: 0.1,
            momentum: 0.9,
            nesterov: false,
            weight_decay: 5e-4,
            optimizer: Optimizer::Sgd,
            schedule: Schedule::Cosine,
            seed: 0,
            crop_pad: 0,
            flip: false,
        }
    }
}

/// One epoch's numbers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EpochRecord {
    /// 1-based: the number of epochs done.
    pub epoch: usize,
    pub lr: f64,
    /// Mean mini-batch loss during the epoch (BN in train mode, augmented inputs).
    pub batch_loss: f64,
    /// Accuracy (%) of the mini-batches during the epoch.
    pub batch_acc: f64,
    /// Loss over the whole training set at the end of the epoch (BN in eval mode).
    pub train_loss: f64,
    pub train_acc: f64,
    /// Loss over the test set at the end of the epoch (NaN when there is none).
    pub test_loss: f64,
    pub test_acc: f64,
    /// Wall time of the epoch, evaluations included.
    pub seconds: f64,
    /// Wall time of the SGD steps alone.
    pub step_seconds: f64,
}

/// Everything a resumed run needs: weights (running statistics included), momentum
/// buffer (SGD; AdamW's first moment m) and AdamW's second moment v (absent before the
/// first step), steps taken, epochs done, and the history so far.
#[derive(Clone, Debug)]
pub struct TrainState {
    pub theta: ParamVec<f32>,
    pub momentum: Option<Array1<f32>>,
    pub second_moment: Option<Array1<f32>>,
    /// Optimizer steps taken (AdamW's bias correction reads it).
    pub steps: u64,
    pub epoch: usize,
    pub history: Vec<EpochRecord>,
}

impl TrainState {
    pub fn new(theta: ParamVec<f32>) -> Self {
        Self {
            theta,
            momentum: None,
            second_moment: None,
            steps: 0,
            epoch: 0,
            history: vec![],
        }
    }
}

/// A recipe bound to a network and its data.
pub struct Trainer<'a> {
    pub graph: &'a Graph,
    pub cfg: TrainConfig,
    pub train: &'a Dataset,
    pub test: Option<&'a Dataset>,
    /// Testing hook: the sample order of each epoch (instead of the seeded shuffle), e.g.
    /// to replay PyTorch's `randperm` order.
    #[doc(hidden)]
    pub order: Option<Vec<Vec<usize>>>,
    trainable: Array1<f32>,
}

impl<'a> Trainer<'a> {
    pub fn new(
        graph: &'a Graph,
        cfg: TrainConfig,
        train: &'a Dataset,
        test: Option<&'a Dataset>,
    ) -> Result<Self, TrainError> {
        if cfg.batch_size == 0 || cfg.epochs == 0 {
            return Err(TrainError::Empty);
        }
        if (cfg.crop_pad > 0 || cfg.flip) && train.x.ndim() != 4 {
            return Err(TrainError::Augment {
                data: train.name.clone(),
                shape: train.sample_shape().to_vec(),
            });
        }
        if cfg.nesterov && cfg.momentum <= 0.0 {
            return Err(TrainError::Nesterov);
        }
        if let Optimizer::Adamw { beta1, beta2, eps } = cfg.optimizer {
            if cfg.momentum != 0.0 || cfg.nesterov {
                return Err(TrainError::AdamwMomentum);
            }
            let beta = 0.0..1.0;
            if !beta.contains(&beta1) || !beta.contains(&beta2) || eps.is_nan() || eps <= 0.0 {
                return Err(TrainError::AdamwHyper { beta1, beta2, eps });
            }
        }
        for ds in std::iter::once(train).chain(test) {
            Objective::new(graph, ds.x.view(), &ds.y, ObjectiveConfig::default()).map_err(
                |cause| TrainError::Data {
                    data: ds.name.clone(),
                    cause: Box::new(cause),
                },
            )?;
        }
        let trainable = graph.layout.mask(|t| t.role.is_trainable());
        Ok(Self {
            graph,
            cfg,
            train,
            test,
            order: None,
            trainable,
        })
    }

    /// Number of mini-batches per epoch (the last one may be smaller).
    pub fn steps_per_epoch(&self) -> usize {
        self.train.len().div_ceil(self.cfg.batch_size)
    }

    /// One optimizer step on a batch (PyTorch layout) at learning rate `lr`: returns Σ loss
    /// and the number of correct predictions (train-mode forward, before the update).
    pub fn step(
        &self,
        state: &mut TrainState,
        x: &ArrayD<f32>,
        y: &[usize],
        lr: f32,
    ) -> crate::engine::ops::loss::LossValue {
        let n = y.len();
        let mut grad = Array1::<f32>::zeros(state.theta.data.len());
        let (value, stats) = self.graph.grad_batch_stats(
            state.theta.data.view(),
            x,
            y,
            Mode::Train,
            grad.view_mut(),
        );
        state.steps += 1;
        match self.cfg.optimizer {
            Optimizer::Sgd => self.sgd_update(state, grad, n, lr),
            Optimizer::Adamw { beta1, beta2, eps } => {
                self.adamw_update(state, grad, n, lr, (beta1, beta2, eps))
            }
        }
        let theta = &mut state.theta.data;
        for s in stats {
            let unbias = s.count as f32 / (s.count as f32 - 1.0).max(1.0);
            let rm = state.theta.layout.tensor(s.running_mean).range();
            let rv = state.theta.layout.tensor(s.running_var).range();
            let m = BN_MOMENTUM;
            for (r, v) in theta
                .slice_mut(ndarray::s![rm])
                .iter_mut()
                .zip(s.mean.iter())
            {
                *r = (1.0 - m) * *r + m * v;
            }
            for (r, v) in theta
                .slice_mut(ndarray::s![rv])
                .iter_mut()
                .zip(s.var.iter())
            {
                *r = (1.0 - m) * *r + m * (v * unbias);
            }
        }
        value
    }

    /// SGD (momentum, nesterov, L2 weight decay) with the summed batch gradient `grad`.
    fn sgd_update(&self, state: &mut TrainState, mut grad: Array1<f32>, n: usize, lr: f32) {
        let (mu, wd) = (self.cfg.momentum as f32, self.cfg.weight_decay as f32);
        let nf = n as f32;
        let theta = &mut state.theta.data;
        // g = ∇(mean loss) + wd θ, on trainable entries (running statistics have mask 0)
        ndarray::Zip::from(&mut grad)
            .and(&*theta)
            .and(&self.trainable)
            .for_each(|g, &p, &t| *g = if t > 0.0 { *g / nf + wd * p } else { 0.0 });
        let direction = if mu != 0.0 {
            match &mut state.momentum {
                None => state.momentum = Some(grad.clone()),
                Some(buf) => ndarray::Zip::from(buf)
                    .and(&grad)
                    .for_each(|b, &g| *b = *b * mu + g),
            }
            let buf = state.momentum.as_ref().unwrap();
            if self.cfg.nesterov {
                ndarray::Zip::from(&mut grad)
                    .and(buf)
                    .for_each(|g, &b| *g += mu * b);
                grad
            } else {
                buf.clone()
            }
        } else {
            grad
        };
        ndarray::Zip::from(&mut *theta)
            .and(&direction)
            .and(&self.trainable)
            .for_each(|p, &d, &t| {
                if t > 0.0 {
                    *p += -lr * d
                }
            });
    }

    /// AdamW step `state.steps` with the summed batch gradient `grad`, in the operation
    /// order of PyTorch's single-tensor `_single_tensor_adam` (f32 throughout, the bias
    /// corrections in f64 as Python floats).
    fn adamw_update(
        &self,
        state: &mut TrainState,
        grad: Array1<f32>,
        n: usize,
        lr: f32,
        (beta1, beta2, eps): (f64, f64, f64),
    ) {
        let len = grad.len();
        let m = state.momentum.get_or_insert_with(|| Array1::zeros(len));
        let v = state
            .second_moment
            .get_or_insert_with(|| Array1::zeros(len));
        let t = state.steps as i32;
        let bc1 = 1.0 - beta1.powi(t);
        let bc2_sqrt = (1.0 - beta2.powi(t)).sqrt();
        let step_size = (lr as f64 / bc1) as f32;
        let decay = 1.0 - lr * self.cfg.weight_decay as f32;
        let (b1, b2, eps, bc2_sqrt) = (beta1 as f32, beta2 as f32, eps as f32, bc2_sqrt as f32);
        let nf = n as f32;
        ndarray::Zip::from(&mut state.theta.data)
            .and(&grad)
            .and(m)
            .and(v)
            .and(&self.trainable)
            .for_each(|p, &g, m, v, &tr| {
                if tr > 0.0 {
                    let g = g / nf;
                    *p *= decay;
                    // torch.lerp(m, g, w) = m + w (g − m) for w < 0.5
                    *m += (1.0 - b1) * (g - *m);
                    *v = *v * b2 + (1.0 - b2) * g * g;
                    let denom = v.sqrt() / bc2_sqrt + eps;
                    *p += -step_size * (*m / denom);
                }
            });
    }

    /// The sample order and augmentation draws of (0-based) `epoch`.
    fn epoch_plan(&self, epoch: usize) -> (Vec<usize>, Vec<(usize, usize, bool)>) {
        let mut rng = ChaCha8Rng::seed_from_u64(self.cfg.seed);
        rng.set_stream(epoch as u64 + 1);
        let n = self.train.len();
        let order = match self.order.as_ref().and_then(|o| o.get(epoch)) {
            Some(o) => o.clone(),
            None => {
                let mut idx: Vec<usize> = (0..n).collect();
                idx.shuffle(&mut rng);
                idx
            }
        };
        let pad = self.cfg.crop_pad;
        let aug = (0..n)
            .map(|_| {
                let (i, j) = if pad > 0 {
                    (rng.random_range(0..=2 * pad), rng.random_range(0..=2 * pad))
                } else {
                    (pad, pad)
                };
                let f = self.cfg.flip && rng.random_bool(0.5);
                (i, j, f)
            })
            .collect();
        (order, aug)
    }

    /// The batch of `indices`, augmented with `aug` (crop offsets into the padded image, flip).
    fn make_batch(&self, indices: &[usize], aug: &[(usize, usize, bool)]) -> ArrayD<f32> {
        let mut x = self.train.x.select(Axis(0), indices);
        let pad = self.cfg.crop_pad;
        if pad == 0 && !self.cfg.flip {
            return x;
        }
        let shape = x.shape().to_vec();
        let (h, w) = (shape[2], shape[3]);
        for (k, mut sample) in x.axis_iter_mut(Axis(0)).enumerate() {
            let (oi, oj, flip) = aug[k];
            let src = sample.to_owned();
            for c in 0..shape[1] {
                for r in 0..h {
                    for col in 0..w {
                        // output (r, col) reads padded (r + oi, col' + oj) = source (r + oi − pad, …)
                        let cc = if flip { w - 1 - col } else { col };
                        let (sr, sc) = (
                            (r + oi) as isize - pad as isize,
                            (cc + oj) as isize - pad as isize,
                        );
                        sample[IxDyn(&[c, r, col])] =
                            if sr >= 0 && sc >= 0 && (sr as usize) < h && (sc as usize) < w {
                                src[IxDyn(&[c, sr as usize, sc as usize])]
                            } else {
                                0.0
                            };
                    }
                }
            }
        }
        x
    }

    /// Runs the next epoch; `on_batch(done, total, mean loss so far)` after every step.
    pub fn run_epoch(
        &self,
        state: &mut TrainState,
        on_batch: &mut dyn FnMut(usize, usize, f64),
    ) -> EpochRecord {
        let start = Instant::now();
        let epoch = state.epoch;
        let lr = self.cfg.schedule.lr(self.cfg.lr, epoch, self.cfg.epochs);
        let (order, aug) = self.epoch_plan(epoch);
        let total = self.steps_per_epoch();
        let (mut loss, mut correct, mut seen) = (0.0, 0usize, 0usize);
        for (b, chunk) in order.chunks(self.cfg.batch_size).enumerate() {
            let lo = b * self.cfg.batch_size;
            let x = self.make_batch(chunk, &aug[lo..lo + chunk.len()]);
            let y: Vec<usize> = chunk.iter().map(|&i| self.train.y[i]).collect();
            let v = self.step(state, &x, &y, lr as f32);
            loss += v.sum;
            correct += v.correct;
            seen += y.len();
            on_batch(b + 1, total, loss / seen as f64);
        }
        state.epoch += 1;
        let step_seconds = start.elapsed().as_secs_f64();
        let eval = |ds: &Dataset| {
            let cfg = ObjectiveConfig {
                batch_size: 256,
                mode: Mode::Eval,
            };
            Objective::new(self.graph, ds.x.view(), &ds.y, cfg)
                .expect("checked in Trainer::new")
                .evaluate(state.theta.data.view())
        };
        let tr = eval(self.train);
        let te = self.test.map(eval);
        let rec = EpochRecord {
            epoch: state.epoch,
            lr,
            batch_loss: loss / seen as f64,
            batch_acc: 100.0 * correct as f64 / seen as f64,
            train_loss: tr.loss,
            train_acc: tr.accuracy,
            test_loss: te.map_or(f64::NAN, |e| e.loss),
            test_acc: te.map_or(f64::NAN, |e| e.accuracy),
            seconds: start.elapsed().as_secs_f64(),
            step_seconds,
        };
        state.history.push(rec.clone());
        rec
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedules_parse_and_match_pytorch() {
        let s: Schedule = "step:2,4".parse().unwrap();
        assert_eq!(s, Schedule::Step(vec![2, 4]));
        assert_eq!(s.to_string(), "step:2,4");
        let lrs: Vec<f64> = (0..6).map(|e| s.lr(0.1, e, 6)).collect();
        // MultiStepLR(milestones=[2, 4], gamma=0.1)
        for (got, want) in lrs.iter().zip([0.1, 0.1, 0.01, 0.01, 0.001, 0.001]) {
            assert!((got - want).abs() < 1e-15, "{lrs:?}");
        }
        let c: Schedule = "cosine".parse().unwrap();
        assert_eq!(c.lr(0.1, 0, 4), 0.1);
        assert!((c.lr(0.1, 2, 4) - 0.05).abs() < 1e-15);
        assert!("step:x".parse::<Schedule>().is_err());
        assert!("linear".parse::<Schedule>().is_err());
    }

    fn tiny_images() -> Dataset {
        let x = ArrayD::from_shape_fn(IxDyn(&[4, 1, 3, 3]), |i| (i[2] * 3 + i[3]) as f32 + 1.0);
        Dataset {
            name: "tiny".into(),
            x,
            y: vec![0, 1, 0, 1],
            num_classes: 2,
        }
    }

    #[test]
    fn crop_and_flip_move_pixels() {
        let ds = tiny_images();
        let arch = resolve_arch("mlp:depth=1,width=4", &ds).unwrap();
        assert_eq!(arch.input_shape(), vec![9]);
        let arch = resolve_arch("resnet-cifar:depth=8,width=2", &ds);
        assert!(
            arch.is_err(),
            "3×3 is below resnet-cifar's minimum input size"
        );
        // a graph that takes [1, 3, 3] images
        let g = crate::model::Arch::ResnetCifar(crate::model::ResnetCifar {
            depth: 8,
            width: 2,
            shortcut: crate::model::Shortcut::Projection,
            in_channels: 1,
            input_size: 4,
            num_classes: 2,
        })
        .build();
        let mut g = g;
        g.input_shape = vec![1, 3, 3];
        let cfg = TrainConfig {
            crop_pad: 1,
            flip: true,
            ..Default::default()
        };
        let t = Trainer {
            graph: &g,
            cfg,
            train: &ds,
            test: None,
            order: None,
            trainable: Array1::zeros(0),
        };
        // offset (0, 0) into the padded image shifts the content down-right by one
        let x = t.make_batch(&[0], &[(0, 0, false)]);
        let v: Vec<f32> = x.iter().copied().collect();
        assert_eq!(v, vec![0., 0., 0., 0., 1., 2., 0., 4., 5.]);
        // centered crop + flip mirrors the columns
        let x = t.make_batch(&[0], &[(1, 1, true)]);
        let v: Vec<f32> = x.iter().copied().collect();
        assert_eq!(v, vec![3., 2., 1., 6., 5., 4., 9., 8., 7.]);
        // the plan is a permutation and reproducible
        let (o1, a1) = t.epoch_plan(3);
        let (o2, a2) = t.epoch_plan(3);
        assert_eq!((o1.clone(), a1), (o2, a2));
        let mut s = o1;
        s.sort_unstable();
        assert_eq!(s, vec![0, 1, 2, 3]);
    }
}
