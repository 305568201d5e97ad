//! Bit-identity guard of the engine: FNV-1a hashes of the exact bits of logits, loss,
//! gradient, batch statistics and H·v (cold and from a kept state) of fixture networks,
//! f32 and f64, eval and train mode, for every convolution algorithm and GEMM backend.
//! The hashes were recorded from the engine before its op-trait refactor (and its
//! environment switches became [`EngineOptions`]), and re-recorded for the networks with
//! batch norm when its channel sums (dγ, dβ, R{dγ}) became 8-lane sums; any change of
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
            let options = EngineOptions { conv, gemm, simd };
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
    ("resnet20 f32 eval",               [0x2e750ce23a57a1bf, 0xd403e7990ac61cba, 0x588647074145ecac, 0xf1660455e57281e0]),
    ("resnet20 f64 eval",               [0x096f017ed21b84f1, 0x096f017ed21b84f1, 0xffac1acc0b9d8a7e, 0xffac1acc0b9d8a7e]),
    ("resnet20 f32 train",              [0x5b33d678fdd5ab39, 0x224f6ea5d62cba88, 0x91bce92bfeb5c704, 0x5bade4cf034b7fa2]),
    ("resnet20 f64 train",              [0xa540ecc252c34f10, 0xa540ecc252c34f10, 0xa3ad0aded94ecbc2, 0xa3ad0aded94ecbc2]),
    ("resnet20-noshort f32 eval",       [0x81bf8a457302360b, 0x6d998125f5b01189, 0xa08ac62f7fcbd4a3, 0x2196cc05da3c1d82]),
    ("resnet20-noshort f64 eval",       [0x60b8330d16496c5b, 0x60b8330d16496c5b, 0xe92138de0c8a1784, 0xe92138de0c8a1784]),
    ("resnet20-noshort f32 train",      [0xd4cc95d63318a2c8, 0x8bdef7770dfd87e1, 0xa14976197fb97b15, 0xa882794db5bd6c07]),
    ("resnet20-noshort f64 train",      [0x080ae36eca375b3f, 0x080ae36eca375b3f, 0x233952dd99098930, 0x233952dd99098930]),
    ("mlp-plain f32 eval",              [0x950b1fe0ef488116, 0x950b1fe0ef488116, 0x33e3ba78415723a7, 0x33e3ba78415723a7]),
    ("mlp-plain f64 eval",              [0x8e78187f7be596f0, 0x8e78187f7be596f0, 0x8e78187f7be596f0, 0x8e78187f7be596f0]),
    ("mlp-plain f32 train",             [0x950b1fe0ef488116, 0x950b1fe0ef488116, 0x33e3ba78415723a7, 0x33e3ba78415723a7]),
    ("mlp-plain f64 train",             [0x8e78187f7be596f0, 0x8e78187f7be596f0, 0x8e78187f7be596f0, 0x8e78187f7be596f0]),
    ("mlp-res f32 eval",                [0xa9349abb91672e9f, 0xa9349abb91672e9f, 0x88a77c12c70d00b6, 0x88a77c12c70d00b6]),
    ("mlp-res f64 eval",                [0x0873ffc7e0a716d7, 0x0873ffc7e0a716d7, 0x0873ffc7e0a716d7, 0x0873ffc7e0a716d7]),
    ("mlp-res f32 train",               [0xa9349abb91672e9f, 0xa9349abb91672e9f, 0x88a77c12c70d00b6, 0x88a77c12c70d00b6]),
    ("mlp-res f64 train",               [0x0873ffc7e0a716d7, 0x0873ffc7e0a716d7, 0x0873ffc7e0a716d7, 0x0873ffc7e0a716d7]),
    ("onnx-vgg-tiny f32 eval",          [0xf1d247911b04c2b4, 0x7f7422b5d1f36c1a, 0x0d2f4659e04b666c, 0xa565dec92a7e0a8f]),
    ("onnx-vgg-tiny f64 eval",          [0xd18e599e5dfa32b6, 0xd18e599e5dfa32b6, 0xd18e599e5dfa32b6, 0xd18e599e5dfa32b6]),
    ("onnx-vgg-tiny f32 train",         [0x4e0f7959527aa1fe, 0x6c2008c1d34d7333, 0xa2751e39a5c92376, 0xb1162e03a632373c]),
    ("onnx-vgg-tiny f64 train",         [0xa173d974d3070fc7, 0xa173d974d3070fc7, 0xa173d974d3070fc7, 0xa173d974d3070fc7]),
    ("onnx-resnet8-option-a f32 eval",  [0x1c26d3a476d4b288, 0x8f84bc2592607fe7, 0x373492e17aeb81d7, 0x5d8159dbdcd6c19a]),
    ("onnx-resnet8-option-a f64 eval",  [0x60f39478aeebe2f6, 0x60f39478aeebe2f6, 0xaff683d0c09f6a5e, 0xaff683d0c09f6a5e]),
    ("onnx-resnet8-option-a f32 train", [0x0e7d5afc2c3bc82a, 0x795f4654bb186a8c, 0x7980b22675720925, 0xa75eab6019997194]),
    ("onnx-resnet8-option-a f64 train", [0x63271ada492eca76, 0x63271ada492eca76, 0xfc19d012ecf40bdd, 0xfc19d012ecf40bdd]),
    ("onnx-mlp-bn f32 eval",            [0xf898d5608b5fd825, 0xf898d5608b5fd825, 0x6c1dd87f433e0983, 0x6c1dd87f433e0983]),
    ("onnx-mlp-bn f64 eval",            [0x97c0d696927deb06, 0x97c0d696927deb06, 0x97c0d696927deb06, 0x97c0d696927deb06]),
    ("onnx-mlp-bn f32 train",           [0x70606efa1aaf4d1e, 0x70606efa1aaf4d1e, 0x3151618ea9a20574, 0x3151618ea9a20574]),
    ("onnx-mlp-bn f64 train",           [0x0fd763b188331992, 0x0fd763b188331992, 0x0fd763b188331992, 0x0fd763b188331992]),
];
