//! Errors of the engine.

use thiserror::Error;

#[non_exhaustive]
#[derive(Debug, Error)]
pub enum EngineError {
    /// Occurs when an input batch does not have the shape the network expects.
    #[error("input has per-sample shape {got:?} but the network expects {expected:?}{hint}")]
    InputShape {
        expected: Vec<usize>,
        got: Vec<usize>,
        hint: String,
    },
    /// Occurs when an op cannot accept the shape its input has (e.g. a kernel larger than the image).
    #[error("layer '{node}' ({op}) cannot take an input of shape {shape:?}: {why}")]
    OpShape {
        node: String,
        op: String,
        shape: Vec<usize>,
        why: String,
    },
    /// Occurs when a label is not below the number of network outputs.
    #[error("label {label} is out of range: the network has {classes} outputs")]
    Label { label: usize, classes: usize },
}
