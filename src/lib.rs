//! losscape: loss landscapes and Hessian curvature of plain and residual networks.
pub mod analysis;
pub mod args;
pub mod cli;
pub mod data;
pub mod engine;
pub mod error;
pub mod hessian;
pub mod io;
pub mod landscape;
pub mod metrics;
pub mod model;
pub mod objective;
pub mod plot;
pub mod probe;
pub mod sharpness;
pub mod train;
pub mod util;
