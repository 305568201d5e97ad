//! Bit-identity guard of the engine: FNV-1a hashes of the exact bits of logits, loss,
//! gradient, batch statistics and H·v (cold and from a kept state) of fixture networks,
//! f32 and f64, eval and train mode, for every convolution algorithm and GEMM backend.
//! The hashes were recorded from the engine before its op-trait refactor (and its
//! environment switches became [`EngineOptions`]), and re-recorded for the networks with
//! batch norm when its channel sums (dγ, dβ, R{dγ}) became 8-lane sums, and for the
//! networks with eval-mode conv → batch norm → ReLU or with add → ReLU when the tape
//! stopped keeping the output of batch norm and of the add there (the kept state's size,
//! which is hashed, fell; with the size left out, all 28 rows of all four columns hashed
//! the same before and after), and for the networks with batch norm when R{dβ} became an
//! 8-lane sum too (one pass with R{dγ} and R{dx}). Any change of
//! arithmetic (order of sums, a fused pass, a kernel) changes them.
//!
//! They hold on x86-64 with AVX2 + FMA under [`Simd::Avx2`] (and `Simd::Native` without
//! AVX-512), and for OpenBLAS with `OPENBLAS_CORETYPE=Haswell` as the Makefile sets (the
//! BLAS tables are skipped otherwise). A deliberate change of arithmetic re-records them:
//! `cargo test --release --test engine_bits -- --nocapture` prints the new tables.

use std::path::PathBuf;

use losscape::engine::{ConvAlgorithm, EngineOptions, GemmBackend, Graph, Mode, Scalar, Simd};
use losscape::model::Model;
use ndarray::{Array1, ArrayD, Dimension, IxDyn};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// FNV-1a over 64-bit words.
#[derive(Clone, Copy)]
struct Fnv(u64);

impl Fnv {
    fn new() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
    fn word(&mut self, w: u64) {
        for b in w.to_le_bytes() {
            self.0 ^= b as u64;
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    fn all<T: Scalar>(&mut self, xs: impl IntoIterator<Item = T>) {
        for x in xs {
            // f64 bits of the value: exact for f32 too
            self.word(x.as_f64().to_bits());
        }
    }
}

/// A fixture network and a batch for it.
struct Case {
    name: &'static str,
    model: Model,
    x: ArrayD<f32>,
    y: Vec<usize>,
}

fn case(name: &'static str, file: &str, data: Option<&str>) -> Case {
    let model = Model::load(&root().join("fixtures").join(file), None)
        .unwrap_or_else(|e| panic!("{file}: {e}"));
    let n = 12;
    let (x, y) = match data {
        Some(spec) => {
            let ds = losscape::data::load(spec, &Default::default()).unwrap();
            let idx: Vec<usize> = (0..n).map(|i| i * 7 % ds.len()).collect();
            let ds = ds.subset(&idx);
            (ds.x, ds.y)
        }
        None => {
            let mut shape = vec![n];
            shape.extend(&model.graph.input_shape);
            let x = ArrayD::from_shape_fn(IxDyn(&shape), |i| {
                let h = i
                    .slice()
                    .iter()
                    .fold(17usize, |a, &v| a.wrapping_mul(31).wrapping_add(v));
                (h.wrapping_mul(2654435761) % 1000) as f32 / 500.0 - 1.0
            });
            let k = model.graph.num_classes;
            (x, (0..n).map(|i| i * 3 % k).collect())
        }
    };
    Case { name, model, x, y }
}

fn cases() -> Vec<Case> {
    vec![
        case(
            "resnet20",
            "models/resnet20-digits.safetensors",
            Some("digits"),
        ),
        case(
            "resnet20-noshort",
            "models/resnet20-noshort-digits.safetensors",
            Some("digits"),
        ),
        case(
            "mlp-plain",
            "models/mlp-plain-mnist1d.safetensors",
            Some("mnist1d"),
        ),
        case(
            "mlp-res",
            "models/mlp-res-mnist1d.safetensors",
            Some("mnist1d"),
        ),
        case("onnx-vgg-tiny", "onnx/vgg-tiny.onnx", None),
        case("onnx-resnet8-option-a", "onnx/resnet8-option-a.onnx", None),
        case("onnx-mlp-bn", "onnx/mlp-bn.onnx", None),
    ]
}

/// One hash over every output of every pass of `g` on the case, in precision T.
fn hash_passes<T: Scalar>(g: &Graph, c: &Case, mode: Mode) -> u64 {
    let theta = c.model.theta.data.mapv(|v| T::from_f(v as f64));
    let x = c.x.mapv(|v| T::from_f(v as f64));
    let v: Array1<T> = Array1::from_shape_fn(theta.len(), |i| {
        T::from_f((i.wrapping_mul(2654435761) % 1000) as f64 / 1000.0 - 0.5)
    });
    let mut h = Fnv::new();
    h.all(g.logits(theta.view(), &x, mode).iter().copied());
    let lv = g.loss_batch(theta.view(), &x, &c.y, mode);
    h.word(lv.sum.to_bits());
    h.word(lv.correct as u64);
    let mut grad = Array1::<T>::zeros(theta.len());
    let lv = g.grad_batch(theta.view(), &x, &c.y, mode, grad.view_mut());
    h.word(lv.sum.to_bits());
    h.all(grad.iter().copied());
    let mut grad2 = Array1::<T>::zeros(theta.len());
    let (_, stats) = g.grad_batch_stats(theta.view(), &x, &c.y, mode, grad2.view_mut());
    assert_eq!(grad, grad2, "{}: grad_batch_stats gradient", c.name);
    for s in &stats {
        h.word(s.running_mean as u64);
        h.word(s.running_var as u64);
        h.word(s.count as u64);
        h.all(s.mean.iter().copied());
        h.all(s.var.iter().copied());
    }
    let mut hv = Array1::<T>::zeros(theta.len());
    g.hvp_batch(theta.view(), v.view(), &x, &c.y, mode, hv.view_mut());
    h.all(hv.iter().copied());
    let state = g.hvp_prepare(theta.view(), &x, &c.y, mode);
    h.word(state.bytes() as u64);
    let mut hv2 = Array1::<T>::zeros(theta.len());
    g.hvp_prepared(theta.view(), v.view(), &state, hv2.view_mut());
    assert_eq!(hv, hv2, "{}: kept-state H·v", c.name);
    // a second direction on the same state
    let v2 = v.mapv(|t| t * T::from_f(-0.75) + T::from_f(0.01));
    let mut hv3 = Array1::<T>::zeros(theta.len());
    g.hvp_prepared(theta.view(), v2.view(), &state, hv3.view_mut());
    h.all(hv3.iter().copied());
    h.0
}

/// `(case, precision, mode) → hash` under `options`.
fn table(cases: &[Case], options: EngineOptions) -> Vec<(String, u64)> {
    let mut out = Vec::new();
    for c in cases {
        let g = c.model.graph.clone().with_options(options);
        for mode in [Mode::Eval, Mode::Train] {
            let m = if mode == Mode::Eval { "eval" } else { "train" };
            out.push((
                format!("{} f32 {m}", c.name),
                hash_passes::<f32>(&g, c, mode),
            ));
            out.push((
                format!("{} f64 {m}", c.name),
                hash_passes::<f64>(&g, c, mode),
            ));
        }
    }
    out
}

/// Whether the CPU has the direct kernels' AVX2 + FMA, and AVX-512.
fn cpu() -> (bool, bool) {
    #[cfg(target_arch = "x86_64")]
    {
        let avx2 = is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma");
        (avx2, avx2 && is_x86_feature_detected!("avx512f"))
    }
    #[cfg(not(target_arch = "x86_64"))]
    (false, false)
}

/// The configurations of [`RECORDED`]'s columns, in order.
const COLUMNS: [(GemmBackend, ConvAlgorithm); 4] = [
    (GemmBackend::Blas, ConvAlgorithm::Auto),
    (GemmBackend::Blas, ConvAlgorithm::Im2col),
    (GemmBackend::MatrixMultiply, ConvAlgorithm::Auto),
    (GemmBackend::MatrixMultiply, ConvAlgorithm::Im2col),
];

#[test]
fn loss_gradient_and_hvp_bits_are_unchanged() {
    let cases = cases();
    let (avx2, avx512) = cpu();
    let haswell =
        std::env::var("OPENBLAS_CORETYPE").is_ok_and(|v| v.eq_ignore_ascii_case("haswell"));
    let mut failed = vec![];
    let mut now: Vec<(String, [u64; 4])> = RECORDED
        .iter()
        .map(|(k, _)| (k.to_string(), [0; 4]))
        .collect();
    for (column, (gemm, conv)) in COLUMNS.into_iter().enumerate() {
        if gemm == GemmBackend::Blas && !haswell {
            eprintln!("OPENBLAS_CORETYPE is not Haswell: BLAS hashes not checked");
            continue;
        }
        // without AVX2 + FMA there are no direct kernels: auto is im2col
        let want = if avx2 { column } else { column | 1 };
        let mut simds = vec![Simd::Avx2];
        if !avx512 && conv == ConvAlgorithm::Auto {
            simds.push(Simd::Native); // the same kernels
        }
        for simd in simds {
            let options = EngineOptions {
                conv,
                gemm,
                simd,
                ..Default::default()
            };
            for (i, (k, h)) in table(&cases, options).into_iter().enumerate() {
                let (wk, wh) = RECORDED[i];
                assert_eq!(k, wk, "case order");
                now[i].1[column] = h;
                if h != wh[want] {
                    failed.push(format!(
                        "{options}: {k}: 0x{h:016x}, recorded 0x{:016x}",
                        wh[want]
                    ));
                }
            }
        }
    }
    for (k, hs) in &now {
        let hs: Vec<String> = hs.iter().map(|h| format!("0x{h:016x}")).collect();
        println!("(\"{k}\", [{}]),", hs.join(", "));
    }
    assert!(failed.is_empty(), "bits changed:\n{}", failed.join("\n"));
}

/// Recorded hashes per case, one column per configuration: `gemm=blas` with
/// `conv=auto` and `conv=im2col`, then `gemm=matrixmultiply` with the same two.
#[rustfmt::skip]
const RECORDED: &[(&str, [u64; 4])] = &[
    ("resnet20 f32 eval",               [0x159067c2d98c9910, 0x69461ebf929645ed, 0x37a9a630ff8ae546, 0x2af8343396fc3570]),
    ("resnet20 f64 eval",               [0x0d107ddab9b11465, 0x0d107ddab9b11465, 0x09832a4baa79396b, 0x09832a4baa79396b]),
    ("resnet20 f32 train",              [0x1d4ea5c22d6f0cae, 0xfe46783a823d9699, 0xc50ba84bbe7d1324, 0x2c25c4505e1ef493]),
    ("resnet20 f64 train",              [0x1aa0c1d0ffd52239, 0x1aa0c1d0ffd52239, 0x405661e1f5f02caf, 0x405661e1f5f02caf]),
    ("resnet20-noshort f32 eval",       [0xae0fb31ea8f5716c, 0x8e706193f38f2178, 0xa4f5950a8643650a, 0x863a07ded4965715]),
    ("resnet20-noshort f64 eval",       [0x47a57398267ce22c, 0x47a57398267ce22c, 0x219327a9facb2a9f, 0x219327a9facb2a9f]),
    ("resnet20-noshort f32 train",      [0x21dd52f2dfab3297, 0xb7ce5f01d5af38df, 0xfe443e9750d8b78d, 0x429c23ab9d92ff38]),
    ("resnet20-noshort f64 train",      [0xc469f479338ed1db, 0xc469f479338ed1db, 0xa39cca9281307f1c, 0xa39cca9281307f1c]),
    ("mlp-plain f32 eval",              [0x950b1fe0ef488116, 0x950b1fe0ef488116, 0x33e3ba78415723a7, 0x33e3ba78415723a7]),
    ("mlp-plain f64 eval",              [0x8e78187f7be596f0, 0x8e78187f7be596f0, 0x8e78187f7be596f0, 0x8e78187f7be596f0]),
    ("mlp-plain f32 train",             [0x950b1fe0ef488116, 0x950b1fe0ef488116, 0x33e3ba78415723a7, 0x33e3ba78415723a7]),
    ("mlp-plain f64 train",             [0x8e78187f7be596f0, 0x8e78187f7be596f0, 0x8e78187f7be596f0, 0x8e78187f7be596f0]),
    ("mlp-res f32 eval",                [0x309642e9a542efbb, 0x309642e9a542efbb, 0x81c8b9bf2026878a, 0x81c8b9bf2026878a]),
    ("mlp-res f64 eval",                [0x2cb872d3b6c81d5f, 0x2cb872d3b6c81d5f, 0x2cb872d3b6c81d5f, 0x2cb872d3b6c81d5f]),
    ("mlp-res f32 train",               [0x309642e9a542efbb, 0x309642e9a542efbb, 0x81c8b9bf2026878a, 0x81c8b9bf2026878a]),
    ("mlp-res f64 train",               [0x2cb872d3b6c81d5f, 0x2cb872d3b6c81d5f, 0x2cb872d3b6c81d5f, 0x2cb872d3b6c81d5f]),
    ("onnx-vgg-tiny f32 eval",          [0x7c7b605745438d74, 0x34158d904b6b4cfd, 0xa2b7cdc932ea2e25, 0xd468a02bb062060e]),
    ("onnx-vgg-tiny f64 eval",          [0xc7cbf5a0396d42ea, 0xc7cbf5a0396d42ea, 0xc7cbf5a0396d42ea, 0xc7cbf5a0396d42ea]),
    ("onnx-vgg-tiny f32 train",         [0xaa92ce206cdbce69, 0x96d916c8ab7c906e, 0x60db7518c1b16514, 0xd2b4fdca229e4b56]),
    ("onnx-vgg-tiny f64 train",         [0x4285a9c089c27f91, 0x4285a9c089c27f91, 0x4285a9c089c27f91, 0x4285a9c089c27f91]),
    ("onnx-resnet8-option-a f32 eval",  [0xd3ef71fd15080f0a, 0xe7650a57513a9e8e, 0xddc7c5cd5b962935, 0x4a28ed47407d8d29]),
    ("onnx-resnet8-option-a f64 eval",  [0x5cc6c9032cd7ec24, 0x5cc6c9032cd7ec24, 0x6ba971178d41a609, 0x6ba971178d41a609]),
    ("onnx-resnet8-option-a f32 train", [0x5bbd4f8d61b008c0, 0x4604b7621536cfa8, 0xc7cbc3560c20bf12, 0x0f7b0df03282f2f0]),
    ("onnx-resnet8-option-a f64 train", [0x1ef77bfa471f4800, 0x1ef77bfa471f4800, 0xe123ffab0f277e01, 0xe123ffab0f277e01]),
    ("onnx-mlp-bn f32 eval",            [0xe8d47b268a342f97, 0xe8d47b268a342f97, 0xcd502d53dbbe1af8, 0xcd502d53dbbe1af8]),
    ("onnx-mlp-bn f64 eval",            [0xf36e5db7289de010, 0xf36e5db7289de010, 0xf36e5db7289de010, 0xf36e5db7289de010]),
    ("onnx-mlp-bn f32 train",           [0x6b948c7f4e2640a9, 0x6b948c7f4e2640a9, 0x160647242f8603af, 0x160647242f8603af]),
    ("onnx-mlp-bn f64 train",           [0xab8be3b1ec6d2ff6, 0xab8be3b1ec6d2ff6, 0xab8be3b1ec6d2ff6, 0xab8be3b1ec6d2ff6]),
];
