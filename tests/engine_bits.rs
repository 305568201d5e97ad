//! Bit-identity guard of the engine: FNV-1a hashes of the exact bits of logits, loss,
//! gradient, batch statistics and H·v (cold and from a kept state) of fixture networks,
//! f32 and f64, eval and train mode, for every convolution algorithm and GEMM backend.
//! The hashes were recorded from the engine before its op-trait refactor (and its
//! environment switches became [`EngineOptions`]), and re-recorded for the networks with
//! batch norm when its channel sums (dγ, dβ, R{dγ}) became 8-lane sums, and for the
//! networks with eval-mode conv → batch norm → ReLU or with add → ReLU when the tape
//! stopped keeping the output of batch norm and of the add there (the kept state's size,
//! which is hashed, fell; with the size left out, all 28 rows of all four columns hashed
//! the same before and after). Any change of
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
    ("resnet20 f32 eval",               [0x75d2547c221be49a, 0xa0329e8bba3188eb, 0x3e00510d196c119d, 0xf353af6666f1b7b9]),
    ("resnet20 f64 eval",               [0x52c5b4932785774b, 0x52c5b4932785774b, 0xc126eda33696bdb8, 0xc126eda33696bdb8]),
    ("resnet20 f32 train",              [0x4f35aec3bee69015, 0x3312e04bc9938f1c, 0xa432f736720b8630, 0x207332a74e030406]),
    ("resnet20 f64 train",              [0xcc86aadd998c57a8, 0xcc86aadd998c57a8, 0x1272f62566f3103a, 0x1272f62566f3103a]),
    ("resnet20-noshort f32 eval",       [0x291af673326d17b6, 0x29b7718cf7609404, 0xd123865ad7ec1a5e, 0x7552318260d98d0f]),
    ("resnet20-noshort f64 eval",       [0xdef7f0f4655806b0, 0xdef7f0f4655806b0, 0x80f2bea5dbade52b, 0x80f2bea5dbade52b]),
    ("resnet20-noshort f32 train",      [0xd4cc95d63318a2c8, 0x8bdef7770dfd87e1, 0xa14976197fb97b15, 0xa882794db5bd6c07]),
    ("resnet20-noshort f64 train",      [0x080ae36eca375b3f, 0x080ae36eca375b3f, 0x233952dd99098930, 0x233952dd99098930]),
    ("mlp-plain f32 eval",              [0x950b1fe0ef488116, 0x950b1fe0ef488116, 0x33e3ba78415723a7, 0x33e3ba78415723a7]),
    ("mlp-plain f64 eval",              [0x8e78187f7be596f0, 0x8e78187f7be596f0, 0x8e78187f7be596f0, 0x8e78187f7be596f0]),
    ("mlp-plain f32 train",             [0x950b1fe0ef488116, 0x950b1fe0ef488116, 0x33e3ba78415723a7, 0x33e3ba78415723a7]),
    ("mlp-plain f64 train",             [0x8e78187f7be596f0, 0x8e78187f7be596f0, 0x8e78187f7be596f0, 0x8e78187f7be596f0]),
    ("mlp-res f32 eval",                [0x309642e9a542efbb, 0x309642e9a542efbb, 0x81c8b9bf2026878a, 0x81c8b9bf2026878a]),
    ("mlp-res f64 eval",                [0x2cb872d3b6c81d5f, 0x2cb872d3b6c81d5f, 0x2cb872d3b6c81d5f, 0x2cb872d3b6c81d5f]),
    ("mlp-res f32 train",               [0x309642e9a542efbb, 0x309642e9a542efbb, 0x81c8b9bf2026878a, 0x81c8b9bf2026878a]),
    ("mlp-res f64 train",               [0x2cb872d3b6c81d5f, 0x2cb872d3b6c81d5f, 0x2cb872d3b6c81d5f, 0x2cb872d3b6c81d5f]),
    ("onnx-vgg-tiny f32 eval",          [0xf1d247911b04c2b4, 0x7f7422b5d1f36c1a, 0x0d2f4659e04b666c, 0xa565dec92a7e0a8f]),
    ("onnx-vgg-tiny f64 eval",          [0xd18e599e5dfa32b6, 0xd18e599e5dfa32b6, 0xd18e599e5dfa32b6, 0xd18e599e5dfa32b6]),
    ("onnx-vgg-tiny f32 train",         [0x4e0f7959527aa1fe, 0x6c2008c1d34d7333, 0xa2751e39a5c92376, 0xb1162e03a632373c]),
    ("onnx-vgg-tiny f64 train",         [0xa173d974d3070fc7, 0xa173d974d3070fc7, 0xa173d974d3070fc7, 0xa173d974d3070fc7]),
    ("onnx-resnet8-option-a f32 eval",  [0xf452fca5955852a0, 0x0a1bad6078b3614f, 0x6c41c15296db67df, 0xf178731df48620a2]),
    ("onnx-resnet8-option-a f64 eval",  [0x37035474d1ec2897, 0x37035474d1ec2897, 0x8cb7314166457f2b, 0x8cb7314166457f2b]),
    ("onnx-resnet8-option-a f32 train", [0x8d61107f67cea8be, 0xf1c6fcc654cbe968, 0xec50d86833a4bed1, 0xa6a2c243329aac18]),
    ("onnx-resnet8-option-a f64 train", [0xe490125cf401fc5e, 0xe490125cf401fc5e, 0x32449fbcb775db65, 0x32449fbcb775db65]),
    ("onnx-mlp-bn f32 eval",            [0x29f3283da5ec0879, 0x29f3283da5ec0879, 0xccabadf9c658e04f, 0xccabadf9c658e04f]),
    ("onnx-mlp-bn f64 eval",            [0x4303239604a51d3e, 0x4303239604a51d3e, 0x4303239604a51d3e, 0x4303239604a51d3e]),
    ("onnx-mlp-bn f32 train",           [0x7b65026c0ddf8d3a, 0x7b65026c0ddf8d3a, 0x3e61885dad003978, 0x3e61885dad003978]),
    ("onnx-mlp-bn f64 train",           [0x35ae9ac88074db7a, 0x35ae9ac88074db7a, 0x35ae9ac88074db7a, 0x35ae9ac88074db7a]),
];
