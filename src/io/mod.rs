//! HDF5 files: surfaces (readable by loss-landscape's scripts), directions and Hessian results.

pub mod directions;
pub mod hessian;
pub mod surface;
