//! Errors of an analysis run: each wraps the lower layer's typed error with the spec key,
//! model or file it concerns. Fields stay in backticks as the lower layers write them (see
//! [`crate::error`]), so [`super::Analysis::render`] can name the spec key and its line.
//!
//! Variants without context of their own are `transparent`: their message is the lower
//! layer's.

use std::path::PathBuf;

use thiserror::Error;

use crate::data::DataError;
use crate::io::directions::DirectionFileError;
use crate::io::surface::SurfaceFileError;
use crate::jobs::JobError;
use crate::model::{Arch, ModelError};
use crate::plot::PlotError;
use crate::train::TrainError;
use crate::util::ThreadsError;

/// Why an analysis, its plots or its report could not be made.
#[non_exhaustive]
#[derive(Debug, Error)]
pub enum AnalysisError {
    /// Occurs when the output folder cannot be created.
    #[error("creating {}", path.display())]
    CreateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Occurs when the analysis folder or one of its files cannot be written: outside
    /// `--outputs`, not a folder or regular file, or locked by another run.
    #[error(transparent)]
    Output(#[from] crate::io::output::OutputError),
    /// Occurs when the spec's dataset cannot be loaded.
    #[error("{}: data.name '{name}'", spec.display())]
    Data {
        /// The spec file.
        spec: PathBuf,
        name: String,
        #[source]
        source: Box<DataError>,
    },
    /// Occurs when a model to train has an `arch` that does not fit the data, or the
    /// `[train]` recipe is invalid; `key` is `arch` or `train`.
    #[error("{}: models[{index}].{key}", spec.display())]
    Recipe {
        /// The spec file.
        spec: PathBuf,
        /// The model's position in `[[models]]`.
        index: usize,
        key: &'static str,
        #[source]
        source: Box<TrainError>,
    },
    /// Occurs when stale checkpoints (of another recipe) cannot be removed.
    #[error("removing stale checkpoints {}", dir.display())]
    RemoveCheckpoints {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Occurs when training a model fails. The source is the train layer's error.
    #[error("training {label} ({arch})")]
    Train {
        label: String,
        arch: Box<Arch>,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// Occurs when a model's `arch` override does not parse.
    #[error(transparent)]
    Arch(Box<ModelError>),
    /// Occurs when a model file cannot be loaded.
    #[error("{}: models file {}", spec.display(), file.display())]
    Model {
        /// The spec file.
        spec: PathBuf,
        file: PathBuf,
        #[source]
        source: Box<ModelError>,
    },
    /// Occurs when a step of one model fails where the step names itself in the message,
    /// e.g. `surface of ResNet-20`.
    #[error("{step} of {label}")]
    Step {
        step: &'static str,
        /// The model's label.
        label: String,
        #[source]
        source: Box<JobError>,
    },
    /// Occurs when a job (eval, Hessian, probes, sharpness) fails; its message names the
    /// model file or field.
    #[error(transparent)]
    Job(Box<JobError>),
    /// Occurs when a surface file cannot be read.
    #[error(transparent)]
    SurfaceFile(Box<SurfaceFileError>),
    /// Occurs when a model's direction file cannot be read.
    #[error(transparent)]
    DirectionFile(Box<DirectionFileError>),
    /// Occurs when a step needs the result of one that did not run before it.
    #[error("the {step} step did not run")]
    StepNotRun { step: &'static str },
    /// Occurs when a part of a job's results that the step needs is absent.
    #[error("{what} did not run")]
    NotRun { what: &'static str },
    /// Occurs when the surface lacks the training loss its metrics are computed from.
    #[error("surface has no train_loss")]
    NoTrainLoss,
    /// Occurs when the Hessian job returns no eigenvalues.
    #[error("no eigenvalues")]
    NoEigenvalues,
    /// Occurs when the surfaces' panel cannot be drawn.
    #[error(transparent)]
    Plot(Box<PlotError>),
    /// Occurs when a figure has no finite (positive, on a log scale) value.
    #[error("{title}: nothing to draw")]
    NothingToDraw {
        /// The figure's title.
        title: String,
    },
    /// Occurs when plotters fails to draw or encode a figure; `why` is its message.
    #[error("drawing failed: {why}")]
    Draw { why: String },
    /// Occurs when the thread pool cannot start.
    #[error(transparent)]
    Threads(#[from] ThreadsError),
    /// Occurs when a result cannot be serialized.
    #[error(transparent)]
    Json(#[from] serde_json::Error),
    /// Occurs when a file cannot be read or written.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// Occurs when rank 0's message to the other ranks of an MPI run cannot be decoded
    /// (ranks running different builds).
    #[error(transparent)]
    Wire(#[from] crate::dist::WireError),
    /// Occurs when a file cannot be written; names it.
    #[error("writing {}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// `From` for the transparent variants that box the lower layer's error.
macro_rules! from_boxed {
    ($($source:ty => $variant:ident),* $(,)?) => {$(
        impl From<$source> for AnalysisError {
            fn from(e: $source) -> Self {
                AnalysisError::$variant(Box::new(e))
            }
        }
    )*};
}

from_boxed!(
    JobError => Job,
    SurfaceFileError => SurfaceFile,
    DirectionFileError => DirectionFile,
    PlotError => Plot,
);

/// Results of the analysis layer.
pub type AnalysisResult<T> = Result<T, AnalysisError>;
