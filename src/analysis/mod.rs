//! Analyses: a TOML spec → every step for every model → `outputs/<name>/` with per-model
//! HDF5 files, PNG plots, `metrics.json`, `report.md` and `report.html`.
//!
//! ```text
//! first:      models given by `arch` with a `[train]` recipe are trained (in parallel,
//!             one core each) into outputs/<name>/<label>.safetensors, or kept when that
//!             file holds the same arch and recipe
//! per model:  eval (train, test) → surface (HDF5, resumable) → surface metrics
//!             → Hessian (top eigenvalues by Lanczos, Hutchinson trace) → probes
//! then:       plots (per-model contours, a shared-scale panel, probe curves, training
//!             curves) → report
//! ```
//! Each step stores its result in `outputs/<name>/<label>.<step>.json` (or its HDF5 file)
//! and is skipped when that file is newer than both the spec and the model, so a rerun
//! after a crash or an edit only does what is missing.

pub mod error;
pub mod figures;
pub mod report;
pub mod runner;
pub mod spec;
pub mod steps;
pub mod transformer;

pub use error::{AnalysisError, AnalysisResult};
pub use runner::{run_analysis, AnalysisOutcome, ModelResult};
pub use spec::{load, Analysis, AnalysisSpec, SpecError};
