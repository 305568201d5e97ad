//! Tests of the graph's passes.

use super::fuse::{unfused, without_numbers};
use super::*;
use crate::engine::ops::{Concat, Conv2d, Linear, Pool2d};

/// Bits of every output of the passes of the bundled ResNet-20 on `n` inputs, and the
/// kept state's size.
fn pass_bits<T: Scalar>(n: usize, mode: Mode) -> (Vec<Vec<u64>>, usize) {
    pass_bits_with::<T>(n, mode, EngineOptions::default(), None)
}

/// [`pass_bits`] under `options`, on images of `side × side` where given.
fn pass_bits_with<T: Scalar>(
    n: usize,
    mode: Mode,
    options: EngineOptions,
    side: Option<usize>,
) -> (Vec<Vec<u64>>, usize) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/models/resnet20-digits.safetensors");
    let model = crate::model::Model::load(&path, None).unwrap();
    let g = &model.graph.with_options(options);
    let mut shape = vec![n];
    shape.extend(&g.input_shape);
    if let Some(s) = side {
        shape[2..].fill(s);
    }
    let x = ArrayD::from_shape_fn(IxDyn(&shape), |i| {
        let h = (ndarray::Dimension::slice(&i).iter())
            .fold(17usize, |a, &v| a.wrapping_mul(31).wrapping_add(v));
        T::from_f((h.wrapping_mul(2654435761) % 1000) as f64 / 500.0 - 1.0)
    });
    let y: Vec<usize> = (0..n).map(|i| i * 3 % g.num_classes).collect();
    let theta = model.theta.data.mapv(|v| T::from_f(v as f64));
    let v = Array1::from_shape_fn(theta.len(), |i| {
        T::from_f((i.wrapping_mul(2654435761) % 1000) as f64 / 1000.0 - 0.5)
    });
    let bits = |a: &Array1<T>| a.iter().map(|t| t.as_f64().to_bits()).collect::<Vec<_>>();
    let mut out = vec![];
    let logits = g.logits(theta.view(), &x, mode);
    out.push(logits.iter().map(|t| t.as_f64().to_bits()).collect());
    let mut grad = zeros_like(&theta.view());
    g.grad_batch(theta.view(), &x, &y, mode, grad.view_mut());
    out.push(bits(&grad));
    let mut hv = zeros_like(&theta.view());
    g.hvp_batch(theta.view(), v.view(), &x, &y, mode, hv.view_mut());
    out.push(bits(&hv));
    let state = g.hvp_prepare(theta.view(), &x, &y, mode);
    let mut kept = zeros_like(&theta.view());
    g.hvp_prepared(theta.view(), v.view(), &state, kept.view_mut());
    out.push(bits(&kept));
    let kind = GnKind::Ggn;
    let mut gn = zeros_like(&theta.view());
    g.gn_batch(theta.view(), v.view(), &x, &y, mode, &kind, gn.view_mut());
    out.push(bits(&gn));
    (out, state.bytes())
}

/// The fused passes (conv → batch norm → ReLU on the tape, ReLU → batch norm and ReLU →
/// add → batch norm in the reverse pass, conv → batch norm [→ ReLU] and conv → batch norm
/// → add → ReLU in inference) give the bits of the
/// separate ones, f32 and f64, on image counts with and without a lane tail; on the
/// tape each residual block keeps one activation less per fused pair.
#[test]
fn fused_passes_keep_the_bits() {
    for n in [5, 12] {
        for mode in [Mode::Eval, Mode::Train] {
            let (fused, fused_bytes) = pass_bits::<f32>(n, mode);
            let (plain, plain_bytes) = unfused(|| pass_bits::<f32>(n, mode));
            assert_eq!(fused, plain, "f32, {n} inputs, {mode:?}");
            let (fused64, _) = pass_bits::<f64>(n, mode);
            let (plain64, _) = unfused(|| pass_bits::<f64>(n, mode));
            assert_eq!(fused64, plain64, "f64, {n} inputs, {mode:?}");
            // eval mode fuses conv → batch norm → ReLU, both modes add → ReLU
            let fused_away = (plain_bytes - fused_bytes) / std::mem::size_of::<f32>();
            let activation = 16 * 8 * 8 * n; // the stem's output on 8×8 digits
            let blocks = if mode == Mode::Eval { 2 } else { 1 };
            assert!(
                fused_away >= blocks * 9 * activation / 4,
                "{mode:?}: {fused_bytes} vs {plain_bytes}"
            );
        }
    }
}

/// Winograd's output transform applies the fused epilogues (conv → batch norm → ReLU,
/// and → add → ReLU, in inference and on the lean tape) as it stores the outputs (zmm:
/// in registers for rows up to 32 wide; AVX2 and wider rows: on each block while in
/// cache): the bits of their passes over each image, and in inference of the separate
/// ops, with zmm and with AVX2 vectors, on 8×8, 32×32 and 40×40 images (output rows of 4
/// to 40), odd sizes (7×7, 13×13: odd output heights and widths) and image counts with
/// and without a lane tail; and F(4×4)'s (in registers as its outputs are transposed
/// back), on the sides it takes (8, 16: 17 inputs, a group of 16 and a tail of one). On
/// the full tape, the reverse passes too (the conv dx that Winograd adds to the
/// shortcut's gradient as it stores it).
#[test]
fn winograd_fused_epilogues_keep_the_bits() {
    use crate::engine::{ConvAlgorithm, Simd, TapeLayout};
    for (conv, tape, simd) in [ConvAlgorithm::Winograd, ConvAlgorithm::Winograd4]
        .into_iter()
        .flat_map(|c| [(c, TapeLayout::Full), (c, TapeLayout::Lean)])
        .flat_map(|(c, t)| [(c, t, Simd::Native), (c, t, Simd::Avx2)])
    {
        let options = EngineOptions {
            conv,
            tape,
            simd,
            ..EngineOptions::default()
        };
        for (n, side) in [
            (5, None),
            (3, Some(32)),
            (2, Some(40)),
            (3, Some(7)),
            (2, Some(13)),
            (17, Some(16)),
        ] {
            let run = || pass_bits_with::<f32>(n, Mode::Eval, options, side).0;
            let (fused, maps, plain) = (run(), without_numbers(run), unfused(run));
            let case = format!("{conv:?}, {tape:?}, {simd:?}, {n} inputs of side {side:?}");
            assert_eq!(fused, maps, "{case}");
            // the logits (the lean tape's reverse passes round γ's gradient differently);
            // on the full tape every pass, with each block's conv dx added to the
            // shortcut's gradient as Winograd stores it
            match tape {
                TapeLayout::Full => assert_eq!(fused, plain, "{case}"),
                TapeLayout::Lean => assert_eq!(fused[0], plain[0], "{case}"),
            }
        }
    }
}

/// `--simd avx2-only` (AVX2's own 16-register kernels, what an AVX2-only CPU runs) gives
/// the bits of `--simd avx2` (AVX-512VL's ymm kernels on AVX-512 machines) on every pass:
/// the direct kernels, Winograd F(2×2) and F(4×4), both tapes, 8×8, 16×16 (17 inputs: a
/// full group of 16 and a tail of one) and 32×32 images.
#[test]
fn avx2_only_kernels_give_the_avx2_bits() {
    use crate::engine::{ConvAlgorithm, Simd, TapeLayout};
    for conv in [
        ConvAlgorithm::Auto,
        ConvAlgorithm::Winograd,
        ConvAlgorithm::Winograd4,
    ] {
        for tape in [TapeLayout::Full, TapeLayout::Lean] {
            for (n, side) in [(5, None), (2, Some(32)), (17, Some(16))] {
                let run = |simd| {
                    let options = EngineOptions {
                        conv,
                        tape,
                        simd,
                        ..EngineOptions::default()
                    };
                    pass_bits_with::<f32>(n, Mode::Eval, options, side).0
                };
                let case = format!("{conv:?}, {tape:?}, {n} inputs of side {side:?}");
                assert_eq!(run(Simd::Avx2Only), run(Simd::Avx2), "{case}");
            }
        }
    }
}

/// The message of the shape error of a graph with input `[n, sample…]` and the nodes
/// `(name, op, inputs)` after the input node.
fn message(sample: &[usize], n: usize, nodes: Vec<(&str, Op, &[usize])>) -> String {
    let mut g = Graph {
        nodes: vec![],
        layout: Arc::new(Layout::new()),
        loss: Loss::CrossEntropy,
        input_shape: sample.to_vec(),
        num_classes: 3,
        options: EngineOptions::default(),
    };
    g.push("input", Op::Input, &[], &[]);
    for (name, op, inputs) in nodes {
        g.push(name, op, inputs, &[]);
    }
    g.infer_shapes(sample, n).unwrap_err().to_string()
}

/// Shape errors name the node and op, the input shape and the reason, as they always
/// have (the ops' typed reasons render the same text).
#[test]
fn shape_errors_name_node_op_and_reason() {
    let lin = Linear {
        in_features: 5,
        out_features: 3,
        bias: false,
    };
    assert_eq!(
        message(&[4], 2, vec![("fc", Op::Linear(lin), &[0])]),
        "layer 'fc' (linear) cannot take an input of shape [2, 4]: expected [N, 5]"
    );
    let conv = Conv2d {
        in_channels: 2,
        out_channels: 4,
        kernel: 5,
        stride: 1,
        padding: 0,
        bias: false,
        groups: 1,
    };
    assert_eq!(
        message(&[2, 3, 3], 1, vec![("c", Op::Conv2d(conv), &[0])]),
        "layer 'c' (conv2d) cannot take an input of shape [2, 1, 3, 3]: kernel larger than the padded image"
    );
    let pool = Pool2d {
        kernel: 4,
        stride: 1,
        padding: 0,
        ceil_mode: false,
    };
    assert_eq!(
        message(&[2, 3, 3], 1, vec![("p", Op::MaxPool(pool), &[0])]),
        "layer 'p' (max-pool) cannot take an input of shape [2, 1, 3, 3]: window larger than the padded image"
    );
    let cat = Op::Concat(Concat { axis: 5 });
    assert_eq!(
        message(&[2, 3, 3], 1, vec![("s", Op::Add, &[0, 0]), ("", cat, &[0, 1])]),
        "layer '' (concat) cannot take an input of shape [2, 1, 3, 3]: cannot concatenate [2, 1, 3, 3] and [2, 1, 3, 3] along axis 5"
    );
    assert_eq!(
        message(&[4], 2, vec![("", Op::Relu, &[0])]),
        "layer 'output' (logits) cannot take an input of shape [2, 4]: expected [N, 3]"
    );
}
