//! HDF5 files: surfaces (readable by loss-landscape's scripts) and directions.

pub mod directions;
pub mod surface;
