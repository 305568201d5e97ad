//! Helpers shared by the integration tests: the binary and its exit codes, fixture paths,
//! the safetensors reader for PyTorch reference files, and the one tolerance table.
//!
//! Each test file declares `mod common;` and uses what it needs, hence the `allow` below.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use ndarray::{ArrayBase, Data, Dimension};
use safetensors::SafeTensors;

// ---- the binary -------------------------------------------------------------------------

/// The `losscape` binary, run from the crate root (where fixture paths are relative to).
pub fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_losscape"));
    c.current_dir(root());
    c
}

/// `losscape ARGS`, whatever the exit status.
pub fn run(args: &[&str]) -> Output {
    bin().args(args).output().expect("binary runs")
}

/// `losscape ARGS`, asserting success (the failure message names the arguments and holds
/// stderr).
pub fn ok(args: &[&str]) -> Output {
    assert_success(args, run(args))
}

/// `losscape ARGS`, asserting success; stdout parsed as JSON.
pub fn ok_json(args: &[&str]) -> serde_json::Value {
    json(&ok(args))
}

/// `losscape ARGS`, asserting exit code `code` and no panic; stderr.
pub fn fails(args: &[&str], code: i32) -> String {
    check_exit(&format!("{args:?}"), &run(args), code, &[])
}

/// Asserts that `o` succeeded; `o` back. `what` names the run in the failure message.
pub fn assert_success(what: impl std::fmt::Debug, o: Output) -> Output {
    assert!(o.status.success(), "{what:?}: {}", stderr(&o));
    o
}

/// Asserts exit code `code`, no panic, and every `needle` in stderr; stderr.
pub fn assert_fails(o: &Output, code: i32, needles: &[&str]) -> String {
    check_exit("losscape", o, code, needles)
}

fn check_exit(what: &str, o: &Output, code: i32, needles: &[&str]) -> String {
    let e = stderr(o);
    assert_eq!(
        o.status.code(),
        Some(code),
        "{what}: expected exit code {code}, stderr: {e}"
    );
    assert!(!e.contains("panicked"), "{what} panicked: {e}");
    for n in needles {
        assert!(e.contains(n), "{what}: message lacks '{n}': {e}");
    }
    e
}

/// Bad input: exit code 2, no panic, every `needle` in the message; stderr.
pub fn assert_bad_input(o: &Output, needles: &[&str]) -> String {
    assert_fails(o, 2, needles)
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Stdout of a successful run, parsed as JSON.
pub fn json(o: &Output) -> serde_json::Value {
    assert!(o.status.success(), "{}", stderr(o));
    serde_json::from_slice(&o.stdout).unwrap()
}

// ---- paths ------------------------------------------------------------------------------

/// The crate root.
pub fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// `rel` under the crate root, e.g. `fixture("fixtures/models/x.safetensors")`.
pub fn fixture(rel: &str) -> PathBuf {
    root().join(rel)
}

/// A fresh temporary directory, removed when dropped.
pub fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().expect("temporary directory")
}

/// A path as `&str`, for argument lists.
pub fn s(p: &Path) -> &str {
    p.to_str().expect("UTF-8 path")
}

// ---- PyTorch reference files ------------------------------------------------------------

/// Tensor name → (shape, values widened to f64).
pub type Tensors = HashMap<String, (Vec<usize>, Vec<f64>)>;

/// Every tensor of a safetensors file's bytes (f64, f32 or i64) as f64; `path` names the
/// file in panics.
pub fn decode_f64(bytes: &[u8], path: &Path) -> Tensors {
    use safetensors::tensor::Dtype as St;
    let st = SafeTensors::deserialize(bytes)
        .unwrap_or_else(|e| panic!("{}: not safetensors: {e}", path.display()));
    let mut tensors = HashMap::new();
    for (name, t) in st.tensors() {
        let d = t.data();
        let v: Vec<f64> = match t.dtype() {
            St::F64 => d
                .chunks_exact(8)
                .map(|c| f64::from_le_bytes(c.try_into().unwrap()))
                .collect(),
            St::F32 => d
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().unwrap()) as f64)
                .collect(),
            St::I64 => d
                .chunks_exact(8)
                .map(|c| i64::from_le_bytes(c.try_into().unwrap()) as f64)
                .collect(),
            other => panic!("{}: unexpected dtype {other:?} for {name}", path.display()),
        };
        tensors.insert(name, (t.shape().to_vec(), v));
    }
    tensors
}

// ---- tolerances -------------------------------------------------------------------------

/// The precision a quantity was computed in (on our side).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dtype {
    F32,
    F64,
}

/// What is compared; see [`tol`] for each entry and where its number comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Quantity {
    /// Mean loss against another computation of the same loss: PyTorch's, ours in f64 for
    /// an f32 result, or ours from differently rounded weights.
    Loss,
    /// Mean gradient against PyTorch's.
    Gradient,
    /// H·v (double backward) against PyTorch's.
    Hvp,
    /// Loss of an ONNX export whose batch norms were folded into the convolutions.
    FoldedOnnxLoss,
    /// ⟨g, v⟩ against a central difference of the loss (step 1e-6).
    FdGradient,
    /// H·v against a central difference of the gradient (step 1e-6).
    FdHvp,
    /// ⟨u, Hv⟩ against ⟨v, Hu⟩.
    HvpSymmetry,
    /// Hessian eigenvalues against PyTorch's (dense `eigh` or ARPACK), relative to the
    /// largest |λ| compared.
    Eigenvalue,
    /// Lanczos eigenvalues against the dense eigendecomposition of the same operator,
    /// relative to |λ1|.
    LanczosEigenvalue,
    /// λmax of a `surface --hessian` map against the `hessian` command at the same point.
    MapMaxEigenvalue,
    /// λmin of a `surface --hessian` map against the `hessian` command, relative to |λmax|.
    MapMinEigenvalue,
    /// Norms of direction tensors (per filter or per layer) against the norm they should
    /// have.
    DirectionNorm,
    /// ε-sharpness ascent and β-smoothness scan against PyTorch's.
    Sharpness,
    /// Losses of the diagonal-quadratic oracle against their closed form.
    QuadraticLoss,
    /// φ (a difference of losses) and β (a ratio of norms) of the quadratic oracle against
    /// their closed form.
    QuadraticRatio,
    /// Parameters after SGD steps against PyTorch's, per tensor.
    SgdParams,
    /// Mini-batch loss of an SGD step against PyTorch's.
    SgdLoss,
    /// PCA statistics and components against scikit-learn's, per element.
    Pca,
}

/// `got` is close to `want` when max |got − want| ≤ max(atol, rtol · max |want|).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Tol {
    pub atol: f64,
    pub rtol: f64,
}

impl Tol {
    /// The same tolerance with its relative part taken against `scale` rather than the
    /// reference's own magnitude (e.g. every eigenvalue relative to |λ1|).
    pub fn relative_to(self, scale: f64) -> Tol {
        Tol {
            atol: self.atol.max(self.rtol * scale.abs()),
            rtol: 0.0,
        }
    }
}

const fn rel(rtol: f64) -> Tol {
    Tol { atol: 0.0, rtol }
}

/// The tolerance for `quantity` computed in `dtype`. Panics for a pair with no entry:
/// add one, with its reason, rather than a number at the call site.
pub fn tol(dtype: Dtype, quantity: Quantity) -> Tol {
    use Dtype::*;
    use Quantity::*;
    match (dtype, quantity) {
        // f64 vs PyTorch f64: summation order only (≈1e-15); 1e-9 leaves room (reference.rs,
        // onnx.rs)
        (F64, Loss | Gradient | Hvp) => rel(1e-9),
        // f32: PyTorch and we accumulate in different orders, we sum losses in f64; observed
        // ≤ 1e-6 (reference.rs, onnx.rs; cli.rs, engine.rs, surface.rs: f32 vs f64 or PyTorch)
        (F32, Loss) => rel(1e-5),
        // f32 vectors: per-element rounding of long sums, relative to the largest; observed
        // ≤ 2e-6 (reference.rs, onnx.rs)
        (F32, Gradient | Hvp) => rel(1e-4),
        // folding BN into the convolutions rounds the weights to f32 once more (onnx.rs)
        (F64, FoldedOnnxLoss) => rel(1e-5),
        // central difference of the loss, step 1e-6; atol is engine.rs's floor
        // 1e-6 · max(|⟨g,v⟩|, 1e-3) (engine.rs)
        (F64, FdGradient) => Tol {
            atol: 1e-9,
            rtol: 1e-6,
        },
        // central difference of the gradient, step 1e-6, relative to its largest entry (engine.rs)
        (F64, FdHvp) => rel(1e-5),
        // exact H·v in f64: the two products differ by rounding only (engine.rs, reference.rs)
        (F64, HvpSymmetry) => rel(1e-10),
        // both f64 (ARPACK residual 2e-15), summation order only; observed 2e-15, and 1e-4
        // would hide a wrong normalization by a factor near 1 (hessian_cli.rs, reference.rs)
        (F64, Eigenvalue) => rel(1e-9),
        // f64 products: Lanczos (tol 1e-9) and the dense eigensolver differ by rounding
        // only (hessian_cli.rs DENSE_REL_TOL)
        (F64, LanczosEigenvalue) => rel(1e-6),
        // two f32 Lanczos runs to tol 1e-6 (surface.rs curvature_maps)
        (F32, MapMaxEigenvalue) => rel(1e-4),
        // used with `relative_to(λmax)`: 1e-3 of |λmax| (surface.rs curvature_maps)
        (F32, MapMinEigenvalue) => rel(1e-3),
        // f32 directions scaled to θ's norms: f32 rounding of the scaling (directions.rs,
        // STYLE.md §8)
        (F32, DirectionNorm) => rel(1e-5),
        // norms of loss-landscape's stored f32 tensors; make_ll_directions.py and we both
        // sum in f64 (directions.rs)
        (F64, DirectionNorm) => rel(1e-12),
        // f64 on both sides, summation order only (≈1e-16 per loss); 20 ascent steps amplify
        // that only through a flipped gradient sign, which would show far larger (sharpness.rs)
        (F64, Sharpness) => rel(1e-8),
        // closed form: exact arithmetic up to a few roundings (sharpness.rs)
        (F64, QuadraticLoss) => rel(1e-12),
        // φ (a difference of losses) and β (a ratio of norms): sharpness.rs's 1e-9 for these
        (F64, QuadraticRatio) => rel(1e-9),
        // two SGD steps: f32 rounding of two summation orders, relative to max(1, max|θ|)
        // (train.rs)
        (F32, SgdParams) => Tol {
            atol: 1e-5,
            rtol: 1e-5,
        },
        // one mini-batch loss (≈2.3) in f32, absolute (train.rs)
        (F32, SgdLoss) => Tol {
            atol: 1e-5,
            rtol: 0.0,
        },
        // f32 trajectory against sklearn's f64 PCA, per element relative to max(1, |want|)
        (F32, Pca) => Tol {
            atol: 1e-5,
            rtol: 1e-5,
        },
        (d, q) => panic!("no tolerance for {q:?} in {d:?}: add one to tests/common/mod.rs"),
    }
}

/// Values comparable by [`assert_close`]: a number, a slice or vector, or an array.
pub trait Values {
    fn values(&self) -> Vec<f64>;
}

impl Values for f64 {
    fn values(&self) -> Vec<f64> {
        vec![*self]
    }
}

impl Values for f32 {
    fn values(&self) -> Vec<f64> {
        vec![*self as f64]
    }
}

impl<A: Copy + Into<f64>> Values for [A] {
    fn values(&self) -> Vec<f64> {
        self.iter().map(|&v| v.into()).collect()
    }
}

impl<A: Copy + Into<f64>> Values for Vec<A> {
    fn values(&self) -> Vec<f64> {
        self.as_slice().values()
    }
}

impl<A: Copy + Into<f64>, S: Data<Elem = A>, D: Dimension> Values for ArrayBase<S, D> {
    fn values(&self) -> Vec<f64> {
        self.iter().map(|&v| v.into()).collect()
    }
}

impl<T: Values + ?Sized> Values for &T {
    fn values(&self) -> Vec<f64> {
        (**self).values()
    }
}

/// The worst element of a comparison that passed.
#[derive(Clone, Copy, Debug)]
pub struct Closeness {
    /// Index of the largest |got − want|.
    pub index: usize,
    /// The largest |got − want|.
    pub diff: f64,
    /// max |want|.
    pub scale: f64,
}

impl Closeness {
    /// max |got − want| / max |want|.
    pub fn relative(&self) -> f64 {
        self.diff / self.scale
    }
}

/// Asserts max |got − want| ≤ max(atol, rtol · max |want|); a NaN difference fails. On
/// failure prints `label`, the largest difference and the index of the worst element.
pub fn assert_close(label: &str, got: impl Values, want: impl Values, tol: Tol) -> Closeness {
    assert_close_at(label, got, want, tol, |i| format!("index {i}"))
}

/// [`assert_close`], naming the worst element with `locate(index)` (e.g. a tensor name).
pub fn assert_close_at(
    label: &str,
    got: impl Values,
    want: impl Values,
    tol: Tol,
    locate: impl Fn(usize) -> String,
) -> Closeness {
    let (got, want) = (got.values(), want.values());
    assert_eq!(got.len(), want.len(), "{label}: lengths differ");
    let scale = want.iter().fold(0.0f64, |a, &b| a.max(b.abs()));
    let (mut index, mut diff) = (0, 0.0f64);
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        let d = (g - w).abs();
        // a NaN difference is the worst of all
        if d > diff || (d.is_nan() && !diff.is_nan()) {
            (index, diff) = (i, d);
        }
    }
    let allowed = tol.atol.max(tol.rtol * scale);
    assert!(
        diff <= allowed,
        "{label}: max |got − want| {diff:e} at {} (got {}, want {}); allowed {allowed:e} \
         (atol {:e}, rtol {:e} × max |want| {scale:e}; relative difference {:e})",
        locate(index),
        got[index],
        want[index],
        tol.atol,
        tol.rtol,
        diff / scale,
    );
    Closeness { index, diff, scale }
}
