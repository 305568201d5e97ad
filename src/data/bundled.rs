//! Datasets built into the binary, so that their names work from any directory.
//!
//! - `digits`: scikit-learn's 8×8 digits, `x` `[1437, 1, 8, 8]`, `x_test` `[360, 1, 8, 8]`.
//! - `mnist1d`: MNIST-1D, `x` `[4000, 40]`, `x_test` `[1000, 40]`.

/// Names accepted by [`super::load`] as bundled datasets.
pub const BUNDLED: &[&str] = &["digits", "mnist1d"];

/// The `.npz` image of a bundled dataset.
pub(crate) fn bytes(name: &str) -> Option<&'static [u8]> {
    match name {
        "digits" => Some(include_bytes!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/fixtures/data/digits.npz"
        ))),
        "mnist1d" => Some(include_bytes!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/fixtures/data/mnist1d.npz"
        ))),
        _ => None,
    }
}
