//! Loss landscapes: grid axes, random and interpolation directions with filter
//! normalization (Li et al. 2018, arXiv:1712.09913), and crash-safe parallel sampling of
//! 1-D and 2-D surfaces.

pub mod directions;
pub mod distributed;
pub mod grid;
pub mod journal;
pub mod surface;
pub mod trajectory;
