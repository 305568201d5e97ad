//! The direct kernels against naive f64 sums, on every kernel this CPU can run.

use super::grad::Grad;
use super::*;
use crate::engine::ops::vmath::uninit;

/// Straight six-loop convolution in f64 as the oracle.
fn naive(x: &[f32], n: usize, sh: Shape, wts: &[f32]) -> Vec<f64> {
    let Shape {
        o,
        c,
        k,
        s,
        p,
        h,
        w,
    } = sh;
    let (ho, wo) = sh.out();
    let mut y = vec![0.0f64; o * n * ho * wo];
    for oc in 0..o {
        for img in 0..n {
            for oh in 0..ho {
                for ow in 0..wo {
                    let mut acc = 0.0f64;
                    for ci in 0..c {
                        for ki in 0..k {
                            for kj in 0..k {
                                let ih = (s * oh + ki).checked_sub(p).filter(|&i| i < h);
                                let iw = (s * ow + kj).checked_sub(p).filter(|&i| i < w);
                                if let (Some(ih), Some(iw)) = (ih, iw) {
                                    acc += wts[((oc * c + ci) * k + ki) * k + kj] as f64
                                        * x[((ci * n + img) * h + ih) * w + iw] as f64;
                                }
                            }
                        }
                    }
                    y[oc * n * ho * wo + (img * ho + oh) * wo + ow] = acc;
                }
            }
        }
    }
    y
}

#[test]
fn matches_naive_convolution_on_odd_shapes() {
    // (o, c, k, s, p, h, w): channel tails (o % 4 ≠ 0), partial vectors, no padding,
    // 1×1, 5×5; rows 8 (zmm joins two rows; odd row count), 16 and 32 wide (one zmm
    // load); stride 2 and 3 (polyphase planes), odd sizes, 1×1 stride-2 projections.
    for &(o, c, k, s, p, h, w) in &[
        (16, 16, 3, 1, 1, 8, 8),
        (9, 3, 3, 1, 1, 7, 8),
        (10, 4, 3, 1, 1, 5, 16),
        (8, 2, 3, 1, 1, 4, 32),
        (3, 2, 1, 1, 0, 3, 32),
        (7, 3, 3, 1, 1, 10, 13),
        (5, 4, 1, 1, 0, 9, 11),
        (6, 2, 5, 1, 2, 12, 9),
        (9, 5, 3, 1, 0, 11, 20),
        (16, 3, 3, 2, 1, 32, 32),
        (9, 4, 3, 2, 1, 16, 16),
        (8, 4, 1, 2, 0, 32, 32),
        (5, 3, 1, 2, 0, 17, 17),
        (6, 2, 3, 2, 1, 15, 19),
        (4, 3, 5, 3, 2, 26, 29),
        (7, 2, 4, 2, 1, 18, 20),
        (5, 3, 2, 3, 1, 13, 17),
    ] {
        let sh = Shape {
            o,
            c,
            k,
            s,
            p,
            h,
            w,
        };
        // 4 images: batches of 3 (where an image's vectors leave a tile short) and 1.
        let n = 4;
        let x: Vec<f32> = (0..c * n * h * w)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 25.0)
            .collect();
        let wts: Vec<f32> = (0..o * c * k * k)
            .map(|i| ((i * 53 % 97) as f32 - 48.0) / 60.0)
            .collect();
        let want = naive(&x, n, sh, &wts);
        let mut first: Option<Vec<f32>> = None;
        for kernel in Kernel::available() {
            let mut d = DirectConv::new(kernel, sh, &wts);
            let mut y = vec![f32::NAN; want.len()];
            // The input split into two sources (channels stacked) must not matter.
            let (x0, x1) = x.split_at((c / 2) * n * h * w);
            let mut img = 0;
            while img < n {
                img += d.images(&[x0, x1], n, img, uninit(&mut y));
            }
            for (i, (a, b)) in y.iter().zip(&want).enumerate() {
                assert!(
                    ((*a as f64) - b).abs() <= 1e-5 * (1.0 + b.abs()),
                    "{kernel:?} {sh:?} at {i}: {a} vs {b}"
                );
            }
            // Every tile shape sums each output's taps in the same order with one FMA
            // each: the scalar tile's bits, whatever the registers (e.g. AVX2's 4 × 3).
            let bits = |v: &[f32]| v.iter().map(|t| t.to_bits()).collect::<Vec<u32>>();
            match &first {
                None => first = Some(y),
                Some(f) => assert_eq!(bits(&y), bits(f), "{kernel:?} {sh:?}: bits"),
            }
        }
    }
}

/// `dw[o, c, ki, kj] = Σ dy[o, n, oh, ow] · x[c, n, s·oh + ki − p, s·ow + kj − p]` in f64.
fn naive_grad(dy: &[f32], x: &[f32], n: usize, sh: Shape) -> Vec<f64> {
    let Shape {
        o,
        c,
        k,
        s,
        p,
        h,
        w,
    } = sh;
    let (ho, wo) = sh.out();
    let mut dw = vec![0.0f64; o * c * k * k];
    for oc in 0..o {
        for ci in 0..c {
            for ki in 0..k {
                for kj in 0..k {
                    let mut acc = 0.0f64;
                    for img in 0..n {
                        for oh in 0..ho {
                            for ow in 0..wo {
                                let ih = (s * oh + ki).checked_sub(p).filter(|&i| i < h);
                                let iw = (s * ow + kj).checked_sub(p).filter(|&i| i < w);
                                if let (Some(ih), Some(iw)) = (ih, iw) {
                                    acc += dy[oc * n * ho * wo + (img * ho + oh) * wo + ow] as f64
                                        * x[((ci * n + img) * h + ih) * w + iw] as f64;
                                }
                            }
                        }
                    }
                    dw[((oc * c + ci) * k + ki) * k + kj] = acc;
                }
            }
        }
    }
    dw
}

#[test]
fn tap_subsets_sum_as_zero_weights() {
    // `with_taps` sums the listed taps in their order: the bits of the full kernel with
    // the other taps' weights zero (adding 0·x leaves each FMA chain's sum as it was), on
    // every kernel, where the list is in the full kernel's (row-major) order; the tap sets
    // of the dx phases of a 3×3 stride-2 layer, rows 8 (split zmm), 16 and 24 wide,
    // channel tails.
    let sets: [&[(usize, usize)]; 4] = [
        &[(1, 1)],
        &[(1, 1), (1, 2)],
        &[(1, 1), (2, 1)],
        &[(1, 1), (1, 2), (2, 1), (2, 2)],
    ];
    for &(o, c, h, w) in &[(16, 32, 8, 8), (9, 5, 16, 16), (4, 3, 5, 24)] {
        let sh = Shape {
            o,
            c,
            k: 3,
            s: 1,
            p: 1,
            h,
            w,
        };
        let n = 3;
        let x: Vec<f32> = (0..c * n * h * w)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 25.0)
            .collect();
        for taps in sets {
            let mut sub = Vec::with_capacity(o * c * taps.len());
            let mut full = vec![0.0f32; o * c * 9];
            for oc in 0..o {
                for ci in 0..c {
                    for (t, &(ki, kj)) in taps.iter().enumerate() {
                        let v = (((oc * 7 + ci * 3 + t) * 53 % 97) as f32 - 48.0) / 60.0;
                        sub.push(v);
                        full[(oc * c + ci) * 9 + ki * 3 + kj] = v;
                    }
                }
            }
            for kernel in Kernel::available() {
                let run = |mut d: DirectConv| {
                    let mut y = vec![f32::NAN; o * n * h * w];
                    let mut img = 0;
                    while img < n {
                        img += d.images(&[&x], n, img, uninit(&mut y));
                    }
                    y
                };
                let a = run(DirectConv::with_taps(kernel, sh, taps, &sub));
                let b = run(DirectConv::new(kernel, sh, &full));
                assert!(
                    a.iter().zip(&b).all(|(u, v)| u.to_bits() == v.to_bits()),
                    "{kernel:?} {sh:?} taps {taps:?}"
                );
            }
        }
    }
}

#[test]
fn weight_grad_matches_naive_sums() {
    // Channel and tap tails (O % 4, C·k² % 6 ≠ 0), partial and split vectors, strides
    // 1–3, batches of several small images (8×8 rows) and one large image per batch; for
    // zmm's channel tiles, O' = 32, 48 and 80 (16·MR = 32, 48, 16), O % 16 ≠ 0 and a
    // last input-channel tile past C.
    for &(o, c, k, s, p, h, w, n) in &[
        (32, 3, 3, 1, 1, 16, 16, 3),
        (48, 2, 3, 1, 1, 8, 16, 2),
        (20, 3, 3, 1, 1, 7, 8, 3),
        (80, 5, 3, 1, 1, 6, 8, 4),
        (16, 16, 3, 1, 1, 8, 8, 20),
        (9, 3, 3, 1, 1, 7, 8, 5),
        (5, 4, 3, 1, 1, 5, 16, 3),
        (7, 2, 3, 1, 1, 4, 32, 2),
        (6, 3, 3, 1, 1, 10, 13, 3),
        (3, 4, 1, 1, 0, 9, 11, 2),
        (10, 3, 3, 2, 1, 32, 32, 2),
        (8, 5, 1, 2, 0, 16, 16, 3),
        (4, 3, 5, 3, 2, 26, 29, 2),
        (5, 3, 2, 3, 1, 13, 17, 2),
        (6, 300, 3, 1, 1, 16, 16, 4),
        // zmm's channel tiles at stride 2: O' = 32, 48 and 64, split (8-wide) vectors
        (32, 4, 3, 2, 1, 16, 16, 5),
        (45, 3, 3, 2, 1, 16, 32, 3),
        (64, 3, 3, 2, 1, 32, 32, 2),
    ] {
        let sh = Shape {
            o,
            c,
            k,
            s,
            p,
            h,
            w,
        };
        let (ho, wo) = sh.out();
        let f = |seed: usize, len: usize| -> Vec<f32> {
            (0..len)
                .map(|i| (((i + seed) * 37 % 101) as f32 - 50.0) / 25.0)
                .collect()
        };
        let (x1, x2) = (f(1, c * n * h * w), f(7, c * n * h * w));
        let (g1, g2) = (f(3, o * n * ho * wo), f(5, o * n * ho * wo));
        let a = naive_grad(&g1, &x1, n, sh);
        let b = naive_grad(&g2, &x2, n, sh);
        // f32 rounding scales with Σ|dy·x|, not with the (cancelling) sum itself.
        let abs = |v: &[f32]| v.iter().map(|t| t.abs()).collect::<Vec<f32>>();
        let sa = naive_grad(&abs(&g1), &abs(&x1), n, sh);
        let sb = naive_grad(&abs(&g2), &abs(&x2), n, sh);
        for kernel in Kernel::available() {
            // Accumulates into what is there: start from 1.
            let mut dw = vec![1.0f32; a.len()];
            weight_grad(kernel, sh, n, &[(&g1, &x1), (&g2, &x2)], &mut dw);
            for (i, d) in dw.iter().enumerate() {
                let want = 1.0 + a[i] + b[i];
                let tol = 1e-5 * (1.0 + sa[i] + sb[i]);
                assert!(
                    ((*d as f64) - want).abs() <= tol,
                    "{kernel:?} {sh:?} n{n} at {i}: {d} vs {want}"
                );
            }
        }
    }
}

#[test]
fn fma_peak_is_measured_where_a_kernel_exists() {
    // A rate, not a timing target: positive and finite wherever AVX2 + FMA exist.
    for simd in [Simd::Native, Simd::Avx2, Simd::Avx2Only] {
        match Kernel::for_simd(simd) {
            Kernel::Scalar => assert!(fma_peak(simd).is_none()),
            _ => assert!(fma_peak(simd).is_some_and(|f| f.is_finite() && f > 0.0)),
        }
    }
}

/// A weight-gradient batch of `n` images for `kernel`: dy, and x in its padded scratch.
#[cfg(target_arch = "x86_64")]
struct GradCase {
    plan: Plan,
    xpad: Vec<f32>,
    imgs: Vec<(usize, usize)>,
    dy: Vec<f32>,
}

#[cfg(target_arch = "x86_64")]
impl GradCase {
    fn new(kernel: Kernel, sh: Shape, n: usize) -> GradCase {
        let (ho, wo) = sh.out();
        let x: Vec<f32> = (0..sh.c * n * sh.h * sh.w)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 25.0)
            .collect();
        let dy: Vec<f32> = (0..sh.o * n * ho * wo)
            .map(|i| ((i * 53 % 97) as f32 - 48.0) / 60.0)
            .collect();
        let plan = Plan::new(kernel, sh);
        let mut xpad = plan.scratch(n);
        for (j, slot) in xpad.chunks_exact_mut(plan.img_len).enumerate() {
            plan.fill(&[&x], n, j, slot);
        }
        plan.check((n - 1) * plan.img_len, xpad.len());
        let imgs = (0..n).map(|j| (j * plan.img_len, j * ho * wo)).collect();
        GradCase {
            plan,
            xpad,
            imgs,
            dy,
        }
    }

    fn grad(&self) -> Grad<'_> {
        Grad {
            plan: &self.plan,
            xpad: &self.xpad,
            imgs: &self.imgs,
            dy: &self.dy,
            cols: self.dy.len() / self.plan.sh.o,
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[test]
fn avx2_weight_grad_tiles_give_the_same_bits() {
    // The 3 × 4 assembly tile against the 2 × 6 one on full vectors: channel and tap tails
    // (O = 7 and 16; C·k² = 45 and 36), one and several images per batch, stride 2.
    if Kernel::detect() == Kernel::Scalar {
        return;
    }
    for &(o, c, k, s, p, h, w, n) in &[
        (7, 5, 3, 1, 1, 8, 8, 5),
        (16, 4, 3, 1, 1, 16, 16, 3),
        (16, 4, 3, 2, 1, 32, 32, 2),
    ] {
        let sh = Shape {
            o,
            c,
            k,
            s,
            p,
            h,
            w,
        };
        let case = GradCase::new(Kernel::Avx2, sh, n);
        let (g, plan) = (case.grad(), &case.plan);
        assert!(plan.vecs.iter().all(|v| v.lanes == LANES));
        let kk = plan.offs.len();
        let (mut a, mut b) = (vec![0.5f32; o * kk], vec![0.5f32; o * kk]);
        g.tiles::<2, 6>(&mut a, avx::gymm2::<2, 6, false>);
        g.tiles_3x4(&mut b);
        let bits = |v: &[f32]| v.iter().map(|t| t.to_bits()).collect::<Vec<u32>>();
        assert_eq!(bits(&a), bits(&b), "{sh:?} n{n}");
    }
}

#[cfg(target_arch = "x86_64")]
#[test]
fn zmm_channel_tiles_give_the_same_bits() {
    // Every dw element of `Grad::by_channels` is the same running sums over the same runs
    // of positions, added in the same order, so tiles of 16, 32 and 48 output channels
    // (O' = 96) give the same bits, with a tail of input channels (C = 5 in tiles of 2) and
    // O % 16 ≠ 0, at strides 1 and 2 (384 and 320 positions: runs of 256 and a shorter
    // last one).
    if Kernel::detect() != Kernel::Zmm {
        return;
    }
    for &(o, c, s, h, w, n) in &[
        (90, 5, 1, 8, 16, 3),
        (96, 4, 1, 8, 8, 5),
        (90, 5, 2, 16, 32, 3),
        (96, 4, 2, 16, 16, 5),
    ] {
        let sh = Shape {
            o,
            c,
            k: 3,
            s,
            p: 1,
            h,
            w,
        };
        let case = GradCase::new(Kernel::Zmm, sh, n);
        let (g, plan) = (case.grad(), &case.plan);
        let kk = plan.offs.len();
        // `by_channels` leaves the transposed dy and the positions in its scratch
        let (mut by_default, mut scratch) = (vec![0.5f32; o * kk], (Vec::new(), Vec::new()));
        g.by_channels(&mut by_default, &mut scratch);
        let (xs, dyt) = (&scratch.0, &scratch.1);
        let bits = |v: &[f32]| v.iter().map(|t| t.to_bits()).collect::<Vec<u32>>();
        let (mut a, mut b, mut d) = (
            vec![0.5f32; o * kk],
            vec![0.5f32; o * kk],
            vec![0.5f32; o * kk],
        );
        g.channel_tiles::<1, 2, 18>(&mut a, xs, dyt, 96);
        g.channel_tiles::<2, 1, 9>(&mut b, xs, dyt, 96);
        g.channel_tiles::<3, 1, 9>(&mut d, xs, dyt, 96);
        assert_eq!(bits(&a), bits(&by_default), "{sh:?} n{n}");
        assert_eq!(bits(&a), bits(&b), "{sh:?} n{n}");
        assert_eq!(bits(&a), bits(&d), "{sh:?} n{n}");
    }
}

/// The isolated-kernel bench measures both direct kernels and both passes of F(2×2) and
/// F(4×4) on the three ResNet-cifar stride-1 shapes, the direct kernels on its two stride-2
/// shapes, and its rates are direct convolution's multiply-adds over its best time.
#[test]
fn kernel_rates_cover_both_kernels_and_three_shapes() {
    for simd in [Simd::Native, Simd::Avx2, Simd::Avx2Only] {
        let rates = kernel_rates(simd, 1);
        let shapes: Vec<(&str, usize, usize)> =
            rates.iter().map(|r| (r.pass, r.channels, r.size)).collect();
        assert_eq!(
            shapes,
            [16, 32, 64]
                .into_iter()
                .flat_map(|c| {
                    let size = 512 / c;
                    [
                        "forward",
                        "weight-grad",
                        "winograd forward",
                        "winograd weight-grad",
                        "winograd4 forward",
                        "winograd4 weight-grad",
                    ]
                    .map(|pass| (pass, c, size))
                })
                .chain([16, 32].into_iter().flat_map(|c| {
                    ["stride-2 forward", "stride-2 weight-grad"].map(|pass| (pass, c, 512 / c))
                }))
                .collect::<Vec<_>>()
        );
        for r in &rates {
            let (o, s) = (r.out_channels, r.stride);
            assert_eq!(
                (o, s),
                if s == 2 {
                    (2 * r.channels, 2)
                } else {
                    (r.channels, 1)
                }
            );
            let outs = r.size * r.size / (s * s);
            let flops = 2.0 * (o * r.channels * 9 * outs * r.images) as f64;
            assert!(r.best_ms > 0.0 && r.best_ms.is_finite(), "{r:?}");
            assert!((r.gflops - flops / (r.best_ms / 1e3) / 1e9).abs() <= 1e-9 * r.gflops);
            assert_eq!(
                r.kernel,
                format!("{:?}", Kernel::for_simd(simd).for_width(r.size / s))
            );
            if let (Some(p), Some(f)) = (r.fma_peak_gflops, r.of_peak) {
                assert!((f - r.gflops / p).abs() <= 1e-9 * f.max(1.0), "{r:?}");
            }
        }
    }
}

#[test]
fn stride_two_fill_splits_pairs_as_the_scalar_loop() {
    // The padded polyphase copy of stride 2 takes AVX2 de-interleaves (8 pairs a step)
    // on the vector kernels: the same scratch as the scalar kernel's pair loop, for
    // widths below, at and past one and two vectors, odd and even, with padding 0–2.
    let vector = Kernel::detect();
    if vector == Kernel::Scalar {
        return;
    }
    for w in (1..=40).chain([47, 64]) {
        for p in 0..=2 {
            for k in [1, 3] {
                if p >= k {
                    continue;
                }
                let (c, h, n) = (3, 5, 2);
                let sh = Shape {
                    o: 1,
                    c,
                    k,
                    s: 2,
                    p,
                    h,
                    w,
                };
                let x: Vec<f32> = (0..c * n * h * w).map(|i| i as f32 + 0.5).collect();
                let fill = |kernel| {
                    let plan = Plan::new(kernel, sh);
                    let mut d = plan.scratch(n);
                    for (j, slot) in d.chunks_exact_mut(plan.img_len).enumerate() {
                        plan.fill(&[&x], n, j, slot);
                    }
                    d
                };
                let (a, b) = (fill(vector), fill(Kernel::Scalar));
                assert!(a.iter().zip(&b).all(|(u, v)| u.to_bits() == v.to_bits()));
                // every input value a tap reads was copied once (the border stays zero):
                // all rows for 3×3, the even ones (row phase 0) for 1×1
                let sum = |d: &[f32]| d.iter().map(|&v| v as f64).sum::<f64>();
                let read = x
                    .chunks_exact(w)
                    .enumerate()
                    .filter(|(r, _)| (r % h + p) % 2 < k)
                    .flat_map(|(_, row)| row);
                assert_eq!(
                    sum(&a),
                    read.map(|&v| v as f64).sum::<f64>(),
                    "w {w} p {p} k {k}"
                );
            }
        }
    }
}
