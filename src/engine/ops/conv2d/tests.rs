//! The convolution's passes against an unblocked whole-batch reference (f64, any block
//! size) and against f64 in f32 (direct kernels, im2col, every SIMD cap).

use super::*;
use crate::engine::options::Simd;
use ndarray::{linalg::general_mat_mul, Array2, Array4, Axis, Dimension, Ix2};

/// The plan for input `x` under `opts`, with `rb` output rows per block when given.
fn plan<'c, T: Scalar>(
    cfg: &'c Conv2d,
    x: &ArrayD<T>,
    opts: &EngineOptions,
    rb: Option<usize>,
) -> Plan<'c> {
    let mut p = cfg.plan::<T>(opts, shape4(x.shape()));
    if let Some(rb) = rb {
        p.rb = rb;
    }
    p
}

/// Direct 7-loop convolution, the slow obvious reference.
fn conv_slow(cfg: &Conv2d, x: &Array4<f64>, w: &Array4<f64>) -> Array4<f64> {
    let (c, n, h, wd) = x.dim();
    let (ho, wo) = cfg.out_hw(h, wd).unwrap();
    let mut y = Array4::zeros((cfg.out_channels, n, ho, wo));
    for o in 0..cfg.out_channels {
        for ni in 0..n {
            for oh in 0..ho {
                for ow in 0..wo {
                    let mut acc = 0.0;
                    for ci in 0..c {
                        for ki in 0..cfg.kernel {
                            for kj in 0..cfg.kernel {
                                let ih = (oh * cfg.stride + ki) as isize - cfg.padding as isize;
                                let iw = (ow * cfg.stride + kj) as isize - cfg.padding as isize;
                                if ih >= 0 && iw >= 0 && (ih as usize) < h && (iw as usize) < wd {
                                    acc +=
                                        w[[o, ci, ki, kj]] * x[[ci, ni, ih as usize, iw as usize]];
                                }
                            }
                        }
                    }
                    y[[o, ni, oh, ow]] = acc;
                }
            }
        }
    }
    y
}

/// Deterministic pseudo-random entries in [−0.5, 0.5] from a seed and the index.
fn hashed(seed: usize) -> impl Fn(IxDyn) -> f64 {
    move |i: IxDyn| {
        let h = i
            .slice()
            .iter()
            .fold(seed, |a, &v| a.wrapping_mul(31).wrapping_add(v));
        ((h * 2654435761) % 1000) as f64 / 997.0 - 0.5
    }
}

fn close(a: &ArrayD<f64>, b: &ArrayD<f64>, what: &str) {
    assert_eq!(a.shape(), b.shape(), "{what}: shape");
    let scale = b.iter().fold(1.0f64, |m, v| m.max(v.abs()));
    for (x, y) in a.iter().zip(b.iter()) {
        assert!((x - y).abs() <= 1e-12 * scale, "{what}: {x} vs {y}");
    }
}

#[test]
fn matches_direct_convolution_and_col2im_is_adjoint() {
    for (k, s, p, h) in [
        (3, 1, 1, 5),
        (3, 2, 1, 6),
        (1, 2, 0, 5),
        (3, 1, 0, 4),
        (1, 1, 0, 3),
    ] {
        let cfg = Conv2d {
            in_channels: 2,
            out_channels: 3,
            kernel: k,
            stride: s,
            padding: p,
            bias: false,
            groups: 1,
        };
        let x = Array4::from_shape_fn((2, 2, h, h), |(a, b, c, d)| {
            ((a * 7 + b * 5 + c * 3 + d) % 11) as f64 - 5.0
        });
        let w = Array4::from_shape_fn((3, 2, k, k), |(a, b, c, d)| {
            ((a * 3 + b * 2 + c + d * 5) % 7) as f64 - 3.0
        });
        let xd = x.clone().into_dyn();
        let pl = plan(&cfg, &xd, &EngineOptions::default(), None);
        let y = pl.forward(&xd, &w.view().into_dyn(), None, None);
        let y_ref = conv_slow(&cfg, &x, &w);
        assert_eq!(y.shape(), y_ref.shape());
        assert!(y
            .iter()
            .zip(y_ref.iter())
            .all(|(a, b)| (a - b).abs() < 1e-12));
        // ⟨im2col(x), c⟩ = ⟨x, col2im(c)⟩
        let cols = pl.im2col(&xd);
        let c = cols.mapv(|v| v * 0.5 + 1.0);
        let lhs: f64 = (&cols * &c).sum();
        let back = pl.col2im(&c);
        let rhs: f64 = (&xd * &back).sum();
        assert!(
            (lhs - rhs).abs() < 1e-9 * lhs.abs().max(1.0),
            "k{k} s{s} p{p}: {lhs} vs {rhs}"
        );
    }
}

fn mm(a: ndarray::ArrayView2<f64>, b: ndarray::ArrayView2<f64>) -> Array2<f64> {
    let mut c = Array2::zeros((a.nrows(), b.ncols()));
    general_mat_mul(1.0, &a, &b, 0.0, &mut c);
    c
}

fn rows(y: &ArrayD<f64>, o: usize) -> Array2<f64> {
    let m = y.len() / o;
    y.to_shape((o, m))
        .unwrap()
        .into_dimensionality::<Ix2>()
        .unwrap()
        .to_owned()
}

/// The four passes on the whole-batch `cols`, as in the module docs.
#[allow(clippy::type_complexity)]
fn unblocked(
    cfg: &Conv2d,
    x: &ArrayD<f64>,
    rx: &ArrayD<f64>,
    w: &ArrayD<f64>,
    v: &ArrayD<f64>,
    gy: &ArrayD<f64>,
    rgy: &ArrayD<f64>,
) -> [ArrayD<f64>; 6] {
    let p = plan(cfg, x, &EngineOptions::default(), None);
    let (o, kk) = (cfg.out_channels, w.len() / cfg.out_channels);
    let w2 = w
        .to_shape((o, kk))
        .unwrap()
        .into_dimensionality::<Ix2>()
        .unwrap()
        .to_owned();
    let v2 = v
        .to_shape((o, kk))
        .unwrap()
        .into_dimensionality::<Ix2>()
        .unwrap()
        .to_owned();
    let (cols, rcols) = (p.im2col(x), p.im2col(rx));
    let (gy2, rgy2) = (rows(gy, o), rows(rgy, o));
    let ys = [o, x.shape()[1], gy.shape()[2], gy.shape()[3]];
    let y = mm(w2.view(), cols.view())
        .into_shape_with_order(IxDyn(&ys))
        .unwrap();
    let ry = (mm(w2.view(), rcols.view()) + mm(v2.view(), cols.view()))
        .into_shape_with_order(IxDyn(&ys))
        .unwrap();
    let ws = w.shape().to_vec();
    let dw = mm(gy2.view(), cols.t())
        .into_shape_with_order(IxDyn(&ws))
        .unwrap();
    let dx = p.col2im(&mm(w2.t(), gy2.view()));
    let rdw = (mm(rgy2.view(), cols.t()) + mm(gy2.view(), rcols.t()))
        .into_shape_with_order(IxDyn(&ws))
        .unwrap();
    let rdx = p.col2im(&(mm(w2.t(), rgy2.view()) + mm(v2.t(), gy2.view())));
    [y, ry, dw, dx, rdw, rdx]
}

#[test]
fn blocked_passes_match_unblocked_reference() {
    let db_ref = |g: &ArrayD<f64>| g.sum_axis(Axis(3)).sum_axis(Axis(2)).sum_axis(Axis(1));
    let opts = EngineOptions::default();
    // (C, O, k, s, p, N, H, W, rows per block); blocks that cut images in the middle; 3×3
    // stride 2 (padding 1) and 1×1 stride 2 on even widths take col2im's pairwise path
    // (`Plan::col2im_s2`), odd widths not.
    for &(c, o, k, s, p, n, h, wd, rb) in &[
        (3, 4, 3, 2, 1, 3, 7, 6, 2),
        (2, 5, 3, 1, 1, 2, 5, 5, 3),
        (3, 2, 1, 2, 0, 3, 5, 4, 4),
        (4, 3, 1, 1, 0, 3, 3, 5, 2),
        (2, 3, 3, 1, 0, 2, 4, 6, 1),
        (2, 2, 5, 3, 2, 2, 9, 7, 5),
        (3, 4, 3, 2, 1, 3, 7, 6, 1000),
        (2, 3, 3, 2, 1, 2, 5, 34, 3),
        (2, 3, 3, 2, 1, 2, 6, 33, 2),
        (3, 2, 1, 2, 0, 2, 5, 34, 3),
        (2, 3, 5, 1, 2, 3, 1, 2, 2),
        (3, 2, 3, 1, 1, 2, 4, 7, 3),
        (2, 2, 5, 1, 2, 3, 6, 5, 4),
    ] {
        let cfg = Conv2d {
            in_channels: c,
            out_channels: o,
            kernel: k,
            stride: s,
            padding: p,
            bias: true,
            groups: 1,
        };
        let f = hashed;
        let x = ArrayD::from_shape_fn(IxDyn(&[c, n, h, wd]), f(1));
        let rx = ArrayD::from_shape_fn(IxDyn(&[c, n, h, wd]), f(2));
        let w = ArrayD::from_shape_fn(IxDyn(&[o, c, k, k]), f(3));
        let v = ArrayD::from_shape_fn(IxDyn(&[o, c, k, k]), f(4));
        let b = ArrayD::from_shape_fn(IxDyn(&[o]), f(5));
        let vb = ArrayD::from_shape_fn(IxDyn(&[o]), f(6));
        let (ho, wo) = cfg.out_hw(h, wd).unwrap();
        let gy = ArrayD::from_shape_fn(IxDyn(&[o, n, ho, wo]), f(7));
        let rgy = ArrayD::from_shape_fn(IxDyn(&[o, n, ho, wo]), f(8));
        let [y0, ry0, dw0, dx0, rdw0, rdx0] = unblocked(&cfg, &x, &rx, &w, &v, &gy, &rgy);
        let tag = format!("c{c} o{o} k{k} s{s} p{p} n{n} h{h} w{wd} rb{rb}");
        let (wv, vv) = (w.view(), v.view());
        let pb = plan(&cfg, &x, &opts, Some(rb));
        let y = pb.forward(&x, &wv, None, None);
        close(&y, &y0, &format!("y {tag}"));
        let yb = plan(&cfg, &x, &opts, None).forward(&x, &wv, Some(&b.view()), None);
        close(
            &(&yb - &b.to_shape((o, 1, 1, 1)).unwrap()),
            &y0,
            &format!("y+b {tag}"),
        );
        let (dx, dw, db) = pb.backward(&x, &wv, &gy, (true, true), &mut None);
        close(&dx.unwrap(), &dx0, &format!("dx {tag}"));
        close(&dw.unwrap(), &dw0, &format!("dw {tag}"));
        close(&db.unwrap(), &db_ref(&gy), &tag);
        let (nodx, dw2, _) = pb.backward(&x, &wv, &gy, (false, true), &mut None);
        assert!(nodx.is_none());
        close(&dw2.unwrap(), &dw0, &format!("dw (no dx) {tag}"));
        // dx alone (the reverse pass of an HVP's θ-only half): no dW, no db
        let (dx3, nodw, nodb) = pb.backward(&x, &wv, &gy, (true, false), &mut None);
        assert!(nodw.is_none() && nodb.is_none());
        close(&dx3.unwrap(), &dx0, &format!("dx (no dW) {tag}"));
        let ry = pb.r_forward(&x, &wv, &vv, None, Some(&rx));
        close(&ry, &ry0, &format!("ry {tag}"));
        let ry_b = pb.r_forward(&x, &wv, &vv, Some(&vb.view()), None);
        // R{x} = 0 with v_b: R{y} = V ⋆ x + v_b = ry0 − W ⋆ R{x} + v_b.
        let w_rx = pb.forward(&rx, &wv, None, None);
        close(
            &(&ry_b - &vb.to_shape((o, 1, 1, 1)).unwrap() + &w_rx),
            &ry0,
            &tag,
        );
        let (rdx, rdw, rdb) = pb.r_backward(&x, Some(&rx), (&wv, &vv, &gy, &rgy), true);
        close(&rdx.unwrap(), &rdx0, &format!("rdx {tag}"));
        close(&rdw, &rdw0, &format!("rdw {tag}"));
        close(&rdb.unwrap(), &db_ref(&rgy), &format!("rdb {tag}"));
        // R{x} = 0: R{dW} = R{dy} · colsᵀ alone
        let zero = ArrayD::zeros(x.raw_dim());
        let [_, _, _, _, rdw_norx, _] = unblocked(&cfg, &x, &zero, &w, &v, &gy, &rgy);
        let (nordx, rdw0x, _) = pb.r_backward(&x, None, (&wv, &vv, &gy, &rgy), false);
        assert!(nordx.is_none());
        close(&rdw0x, &rdw_norx, &format!("rdw, R{{x}} = 0 {tag}"));
        // conv → affine → ReLU fused per block equals the three passes
        let cfg_nb = Conv2d {
            bias: false,
            ..cfg.clone()
        };
        // (the map reads the offset too: each value's place in the output)
        let epilogue = |ch: usize, off: usize, row: &mut [f64]| {
            for (i, t) in row.iter_mut().enumerate() {
                *t = (*t * (1.0 + ch as f64) - 0.1 + 1e-3 * (off + i) as f64).max(0.0);
            }
        };
        let yf = plan(&cfg_nb, &x, &opts, Some(rb)).forward(&x, &wv, None, Some(&epilogue));
        let mut y3 = y0.clone();
        let plane_len = y3.len() / y3.shape()[0];
        for (ch, mut plane) in y3.axis_iter_mut(Axis(0)).enumerate() {
            for (i, t) in plane.iter_mut().enumerate() {
                let at = (ch * plane_len + i) as f64;
                *t = (*t * (1.0 + ch as f64) - 0.1 + 1e-3 * at).max(0.0);
            }
        }
        close(&yf, &y3, &format!("fused forward {tag}"));
        // the automatic block size gives the same
        let pa = plan(&cfg, &x, &opts, None);
        let (rdx_a, rdw_a, _) = pa.r_backward(&x, Some(&rx), (&wv, &vv, &gy, &rgy), true);
        close(&rdx_a.unwrap(), &rdx0, &format!("rdx auto {tag}"));
        close(&rdw_a, &rdw0, &format!("rdw auto {tag}"));
    }
}

/// The f32 passes against the f64 im2col reference, to f32 rounding (relative to each
/// tensor's largest entry), under every option set: the direct kernels (rows ≥ 8: forward,
/// fused forward, R-forward, dW and R{dW} at any stride, dx and R{dx} as stride-1
/// transposed convolutions and, for 3×3 stride 2 on even sizes, by phases; the others
/// stay on col2im) at the CPU's widest vectors
/// and capped at AVX2's, and im2col + GEMM with either backend.
#[test]
fn f32_passes_match_f64_reference() {
    // Winograd's sums round up to ~20× more, F(4×4)'s ~100× (bounds and tests in
    // `winograd.rs`, `winograd_f4.rs`)
    let tol = std::cell::Cell::new(2e-6);
    let close32 = |a: &ArrayD<f32>, b: &ArrayD<f64>, what: &str| {
        assert_eq!(a.shape(), b.shape(), "{what}: shape");
        let scale = b.iter().fold(1e-30f64, |m, v| m.max(v.abs()));
        let err = a
            .iter()
            .zip(b.iter())
            .fold(0.0f64, |m, (x, y)| m.max((*x as f64 - y).abs()));
        assert!(
            err <= tol.get() * scale,
            "{what}: max error {err} vs scale {scale}"
        );
    };
    let all = [
        EngineOptions::default(),
        EngineOptions {
            simd: Simd::Avx2,
            ..Default::default()
        },
        EngineOptions {
            conv: ConvAlgorithm::Im2col,
            ..Default::default()
        },
        EngineOptions {
            conv: ConvAlgorithm::Im2col,
            gemm: GemmBackend::MatrixMultiply,
            ..Default::default()
        },
        EngineOptions {
            conv: ConvAlgorithm::Winograd,
            ..Default::default()
        },
        EngineOptions {
            conv: ConvAlgorithm::Winograd,
            gemm: GemmBackend::MatrixMultiply,
            simd: Simd::Avx2,
            ..Default::default()
        },
        EngineOptions {
            conv: ConvAlgorithm::Winograd4,
            ..Default::default()
        },
        EngineOptions {
            conv: ConvAlgorithm::Winograd4,
            simd: Simd::Avx2,
            ..Default::default()
        },
    ];
    // (C, O, k, s, p, N, H, W): ResNet-like 3×3 same-size, a 1×1, a 5×5 valid, odd
    // widths; stride-2 3×3 and 1×1 (the forward passes run on polyphase planes; dx by
    // phases for 3×3 on even sizes, output rows 8, 16 and 24 wide, and on col2im at width
    // 17 and for 1×1).
    for &(c, o, k, st, p, n, h, wd) in &[
        (16, 16, 3, 1, 1, 2, 8, 8),
        (4, 6, 3, 1, 1, 3, 12, 16),
        (5, 11, 3, 1, 1, 3, 9, 13),
        (6, 4, 1, 1, 0, 2, 5, 10),
        (3, 7, 5, 1, 0, 2, 12, 14),
        (4, 9, 3, 2, 1, 2, 16, 17),
        (6, 8, 1, 2, 0, 2, 16, 16),
        (4, 9, 3, 2, 1, 2, 16, 16),
        (16, 32, 3, 2, 1, 2, 32, 32),
        (3, 5, 3, 2, 1, 1, 12, 48),
        (5, 6, 1, 2, 0, 3, 10, 20),
    ] {
        let cfg = Conv2d {
            in_channels: c,
            out_channels: o,
            kernel: k,
            stride: st,
            padding: p,
            bias: false,
            groups: 1,
        };
        let f = hashed;
        let (ho, wo) = cfg.out_hw(h, wd).unwrap();
        let x = ArrayD::from_shape_fn(IxDyn(&[c, n, h, wd]), f(1));
        let rx = ArrayD::from_shape_fn(IxDyn(&[c, n, h, wd]), f(2));
        let w = ArrayD::from_shape_fn(IxDyn(&[o, c, k, k]), f(3));
        let v = ArrayD::from_shape_fn(IxDyn(&[o, c, k, k]), f(4));
        let gy = ArrayD::from_shape_fn(IxDyn(&[o, n, ho, wo]), f(7));
        let rgy = ArrayD::from_shape_fn(IxDyn(&[o, n, ho, wo]), f(8));
        // The reference sees exactly the f32 inputs.
        let r = |a: &ArrayD<f64>| a.mapv(|t| t as f32 as f64);
        let (x, rx, w, v, gy, rgy) = (r(&x), r(&rx), r(&w), r(&v), r(&gy), r(&rgy));
        let [y0, ry0, dw0, dx0, rdw0, rdx0] = unblocked(&cfg, &x, &rx, &w, &v, &gy, &rgy);
        let s = |a: &ArrayD<f64>| a.mapv(|t| t as f32);
        let (x, rx, w, v, gy, rgy) = (s(&x), s(&rx), s(&w), s(&v), s(&gy), s(&rgy));
        let (wv, vv) = (w.view(), v.view());
        for opts in &all {
            let tag = format!("c{c} o{o} k{k} s{st} p{p} n{n} h{h} w{wd} {opts}");
            tol.set(match opts.conv {
                ConvAlgorithm::Winograd => 2e-5,
                ConvAlgorithm::Winograd4 => 1e-4,
                _ => 2e-6,
            });
            let pl = plan(&cfg, &x, opts, None);
            let y = pl.forward(&x, &wv, None, None);
            close32(&y, &y0, &format!("y {tag}"));
            let cols = y.len() / y.shape()[0];
            let at = |ch: usize, off: usize, row: &mut [f32]| {
                assert!(
                    off / cols == ch && off % cols + row.len() <= cols,
                    "offset {tag}"
                );
            };
            let yf = pl.forward(&x, &wv, None, Some(&at));
            assert_eq!(yf, y, "fused and plain forward differ: {tag}");
            let ry = pl.r_forward(&x, &wv, &vv, None, Some(&rx));
            close32(&ry, &ry0, &format!("ry {tag}"));
            let (dx, dw, _) = pl.backward(&x, &wv, &gy, (true, true), &mut None);
            let dx = dx.unwrap();
            close32(&dx, &dx0, &format!("dx {tag}"));
            close32(&dw.unwrap(), &dw0, &format!("dw {tag}"));
            // with the sum the graph's other readers sent back: taken where dx runs the
            // direct kernels or Winograd (stride 1, and stride 2 by phases), and then
            // added as each output is stored, with the bits of the addition after (zeros
            // of either sign too)
            let acc0 = x.mapv(|t| if t < 0.0 { -0.0 } else { t * 0.5 - 0.125 });
            let mut acc = Some(acc0.clone());
            let (dxa, dwa, _) = pl.backward(&x, &wv, &gy, (true, false), &mut acc);
            assert!(dwa.is_none(), "{tag}");
            let dxa = dxa.unwrap();
            let bits = |a: &ArrayD<f32>| a.iter().map(|t| t.to_bits()).collect::<Vec<_>>();
            let taken = acc.is_none();
            match acc {
                None => assert_eq!(bits(&dxa), bits(&(&acc0 + &dx)), "dx + sum {tag}"),
                Some(a) => {
                    assert_eq!(bits(&a), bits(&acc0), "{tag}");
                    assert_eq!(bits(&dxa), bits(&dx), "dx, sum left {tag}");
                }
            }
            let direct = opts.conv != ConvAlgorithm::Im2col && k > p;
            let phases = st == 2 && (k, p) == (3, 1) && h % 2 == 0 && wd % 2 == 0;
            assert_eq!(direct && (st == 1 || phases), taken, "sum taken {tag}");
            let (rdx, rdw, _) = pl.r_backward(&x, Some(&rx), (&wv, &vv, &gy, &rgy), true);
            close32(&rdx.unwrap(), &rdx0, &format!("rdx {tag}"));
            close32(&rdw, &rdw0, &format!("rdw {tag}"));
        }
    }
}

/// Grouped convolution by plain loops: output channel o sees input channels of its group.
fn grouped_slow(cfg: &Conv2d, x: &ArrayD<f64>, w: &ArrayD<f64>) -> ArrayD<f64> {
    let (c, n, h, wd) = (x.shape()[0], x.shape()[1], x.shape()[2], x.shape()[3]);
    let (ho, wo) = cfg.out_hw(h, wd).unwrap();
    let (ci, co) = (c / cfg.groups, cfg.out_channels / cfg.groups);
    let (k, s, p) = (cfg.kernel, cfg.stride, cfg.padding as isize);
    ArrayD::from_shape_fn(IxDyn(&[cfg.out_channels, n, ho, wo]), |i| {
        let (o, ni, oh, ow) = (i[0], i[1], i[2], i[3]);
        let mut acc = 0.0;
        for cl in 0..ci {
            let cx = (o / co) * ci + cl;
            for a in 0..k {
                for b in 0..k {
                    let ih = (oh * s + a) as isize - p;
                    let iw = (ow * s + b) as isize - p;
                    if ih >= 0 && iw >= 0 && (ih as usize) < h && (iw as usize) < wd {
                        acc += w[[o, cl, a, b]] * x[[cx, ni, ih as usize, iw as usize]];
                    }
                }
            }
        }
        acc
    })
}

/// (C, O, groups, k, s, p, N, H, W): grouped (2 and 3 groups), depthwise with channel
/// multipliers 1 and 2, strides and paddings.
const GROUPED: [[usize; 9]; 6] = [
    [4, 6, 2, 3, 1, 1, 2, 5, 4],
    [6, 3, 3, 3, 2, 1, 2, 6, 5],
    [3, 3, 3, 3, 1, 1, 2, 5, 6],
    [2, 4, 2, 3, 2, 1, 2, 7, 5],
    [4, 4, 4, 5, 1, 2, 1, 6, 6],
    [3, 6, 3, 1, 2, 0, 2, 5, 4],
];

fn grouped_cfg(c: usize, o: usize, groups: usize, k: usize, s: usize, p: usize) -> Conv2d {
    Conv2d {
        in_channels: c,
        out_channels: o,
        kernel: k,
        stride: s,
        padding: p,
        bias: true,
        groups,
    }
}

#[test]
fn grouped_forward_matches_loops_and_fuses() {
    use crate::engine::ops::{EngineOp, Fwd, Mode};
    let opts = EngineOptions::default();
    for &[c, o, groups, k, s, p, n, h, wd] in &GROUPED {
        let cfg = grouped_cfg(c, o, groups, k, s, p);
        let x = ArrayD::from_shape_fn(IxDyn(&[c, n, h, wd]), hashed(1));
        let w = ArrayD::from_shape_fn(IxDyn(&[o, c / groups, k, k]), hashed(2));
        let want = grouped_slow(&cfg, &x, &w);
        let (xs, pv) = ([&x], [w.view()]);
        let a = Fwd {
            options: &opts,
            mode: Mode::Eval,
            x: &xs,
            p: &pv,
            affine: None,
        };
        let tag = format!("c{c} o{o} g{groups} k{k} s{s} p{p}");
        assert_eq!(
            cfg.infer_shape(&[x.shape()]).unwrap(),
            want.shape(),
            "{tag}"
        );
        let (y, _) = cfg.forward(&a);
        close(&y, &want, &tag);
        let nb = Conv2d {
            bias: false,
            ..cfg.clone()
        };
        let epilogue = |ch: usize, off: usize, row: &mut [f64]| {
            for (i, t) in row.iter_mut().enumerate() {
                *t = (*t * (1.0 + ch as f64) - 0.1 + 1e-3 * (off + i) as f64).max(0.0);
            }
        };
        let fused = nb.forward_fused(&a, &epilogue).unwrap();
        let mut then = want.clone();
        let plane_len = then.len() / then.shape()[0];
        for (ch, mut plane) in then.axis_iter_mut(Axis(0)).enumerate() {
            for (i, t) in plane.iter_mut().enumerate() {
                let at = (ch * plane_len + i) as f64;
                *t = (*t * (1.0 + ch as f64) - 0.1 + 1e-3 * at).max(0.0);
            }
        }
        close(&fused, &then, &format!("fused {tag}"));
    }
    let bad = grouped_cfg(4, 6, 4, 3, 1, 1);
    assert!(bad.infer_shape(&[&[4, 1, 5, 5]]).is_err());
}

#[test]
fn grouped_passes_match_central_differences() {
    use crate::engine::ops::oracle::{check, random, Case};
    use rand::SeedableRng;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(26);
    for &[c, o, groups, k, s, p, n, h, wd] in &GROUPED {
        let cfg = grouped_cfg(c, o, groups, k, s, p);
        let x = random(&[c, n, h, wd], &mut rng);
        let w = random(&[o, c / groups, k, k], &mut rng);
        let b = random(&[o], &mut rng);
        let case = Case::new(vec![x], vec![w, b]);
        check(&format!("{cfg:?}"), &cfg, &case, 27);
    }
}
