//! Errors of the pipelines: each wraps the lower layer's typed error with what the job was
//! doing and which file or field it concerns. Fields are written in backticks (see
//! [`crate::error`]); the CLI and the spec reader translate them.

use std::path::PathBuf;

use thiserror::Error;

use crate::data::{DataError, Split};
use crate::engine::EngineError;
use crate::hessian::HessianError;
use crate::io::directions::DirectionFileError;
use crate::io::hessian::HessianFileError;
use crate::io::surface::SurfaceFileError;
use crate::landscape::journal::JournalError;
use crate::model::ModelError;
use crate::sharpness::SharpnessError;
use crate::train::TrainError;

/// Why a job could not run or finish.
#[non_exhaustive]
#[derive(Debug, Error)]
pub enum JobError {
    /// Occurs when a model file cannot be read or does not describe a network.
    #[error("loading model {}", path.display())]
    Model {
        path: PathBuf,
        #[source]
        source: Box<ModelError>,
    },
    /// Occurs when a dataset cannot be loaded.
    #[error("loading data '{data}' ({split} split)")]
    Data {
        data: String,
        split: Split,
        #[source]
        source: Box<DataError>,
    },
    /// Occurs when an interpolation end point has another architecture.
    #[error("`{field}` {}", path.display())]
    Interpolation {
        field: &'static str,
        path: PathBuf,
        #[source]
        source: Box<crate::landscape::directions::LayoutMismatch>,
    },
    /// Occurs when the samples do not fit the network (shape, labels).
    #[error("data '{data}' does not fit model {}", model.display())]
    Mismatch {
        data: String,
        model: PathBuf,
        #[source]
        source: Box<EngineError>,
    },
    /// Occurs when a configured value is invalid (the message names the field).
    #[error("`{field}` {problem}")]
    Invalid {
        field: &'static str,
        problem: String,
    },
    /// Occurs when shard files do not make one surface together (other computation,
    /// repeated or missing shards, points computed nowhere).
    #[error("{message}")]
    Shards { message: String },
    /// Occurs when a training run's checkpoints cannot be listed or read.
    #[error(transparent)]
    Checkpoints(#[from] Box<TrainError>),
    /// Occurs when the PCA of a trajectory cannot be computed (too few distinct
    /// checkpoints, a failed eigensolve).
    #[error("trajectory PCA: {message}")]
    Trajectory { message: String },
    /// Occurs when the thread pool cannot start.
    #[error(transparent)]
    Threads(#[from] crate::util::ThreadsError),
    /// Occurs when a file cannot be read or written.
    #[error("{what} {}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: Box<std::io::Error>,
    },
    /// Occurs when a surface file cannot be read or written.
    #[error("{what} {}", path.display())]
    SurfaceFile {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: Box<SurfaceFileError>,
    },
    /// Occurs when the output path holds something other than a surface file.
    #[error("`out` {} exists but is not a readable surface file; delete it or choose another `out`", path.display())]
    OutNotSurface {
        path: PathBuf,
        #[source]
        source: Box<SurfaceFileError>,
    },
    /// Occurs when a direction file cannot be read or written.
    #[error("{what} {}", path.display())]
    DirectionFile {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: Box<DirectionFileError>,
    },
    /// Occurs when the eigenvectors of a Hessian file cannot be read or do not fit the
    /// model.
    #[error("reading eigenvectors from `directions` {}", path.display())]
    EigenFile {
        path: PathBuf,
        #[source]
        source: Box<HessianFileError>,
    },
    /// Occurs when eigenvectors (read or computed) do not fit the model's tensors.
    #[error("eigenvector directions from {from}")]
    EigenMismatch {
        from: String,
        #[source]
        source: Box<crate::landscape::directions::SubsetMismatch>,
    },
    /// Occurs when the Hessian file cannot be written.
    #[error("`out` {}: writing the HDF5 file", path.display())]
    HessianFile {
        path: PathBuf,
        #[source]
        source: Box<HessianFileError>,
    },
    /// Occurs when a surface's journal cannot be opened, appended or removed.
    #[error("`out` {}: cannot write beside it", out.display())]
    Journal {
        out: PathBuf,
        #[source]
        source: Box<JournalError>,
    },
    /// Occurs when the MPI work queue of a surface fails: rank 0 cannot journal a point,
    /// a message is malformed, or the launcher stops the job (a rank died).
    #[error("`out` {}: the MPI surface job stopped", out.display())]
    Queue {
        out: PathBuf,
        #[source]
        source: Box<crate::landscape::distributed::QueueError>,
    },
    /// Occurs when a Hessian analysis rejects its parameters or its dense algebra fails.
    #[error(transparent)]
    Hessian(#[from] Box<HessianError>),
    /// Occurs when a sharpness analysis rejects its parameters.
    #[error(transparent)]
    Sharpness(#[from] Box<SharpnessError>),
    /// Occurs when a value cannot be serialized (JSON attributes).
    #[error("serializing {what}")]
    Json {
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },
    /// Occurs when an output path cannot be written: not a regular file, no folder, or
    /// locked by another process.
    #[error("`{field}`")]
    Output {
        field: &'static str,
        #[source]
        source: Box<crate::io::output::OutputError>,
    },
    /// Occurs when a surface grid is too large for the limit or the memory.
    #[error(transparent)]
    GridSize(#[from] crate::landscape::surface::GridSizeError),
    /// Occurs when a step fails: names the step, e.g. `block layer1 (1234 parameters)`.
    #[error("{step}")]
    Step {
        step: String,
        #[source]
        source: Box<JobError>,
    },
}

impl From<HessianError> for JobError {
    fn from(e: HessianError) -> Self {
        JobError::Hessian(Box::new(e))
    }
}

impl From<SharpnessError> for JobError {
    fn from(e: SharpnessError) -> Self {
        JobError::Sharpness(Box::new(e))
    }
}

impl JobError {
    /// An output that cannot be written, for the config field `field`.
    pub fn output(field: &'static str, source: crate::io::output::OutputError) -> Self {
        JobError::Output {
            field,
            source: Box::new(source),
        }
    }

    /// An invalid field.
    pub fn invalid(field: &'static str, problem: impl Into<String>) -> Self {
        JobError::Invalid {
            field,
            problem: problem.into(),
        }
    }

    /// A failed trajectory PCA.
    pub fn trajectory(e: impl std::fmt::Display) -> Self {
        JobError::Trajectory {
            message: e.to_string(),
        }
    }

    /// Wraps `self` as the failure of `step`.
    pub fn in_step(self, step: impl Into<String>) -> Self {
        JobError::Step {
            step: step.into(),
            source: Box::new(self),
        }
    }
}

/// Results of the jobs layer.
pub type JobResult<T> = Result<T, JobError>;
