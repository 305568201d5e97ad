//! losscape: loss landscapes and Hessian curvature of plain and residual networks.

pub mod engine;
pub mod model;
pub mod util;
