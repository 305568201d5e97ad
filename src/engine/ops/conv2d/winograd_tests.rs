//! Tests of [`super::Winograd`] (F(2×2, 3×3)): filter transforms, error bounds against f64,
//! the padding-1 input transform; helpers F(4×4)'s tests share.

use super::*;

/// Pseudo-random values in [−1, 1) from a seed.
pub(super) fn values(len: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        })
        .collect()
}

/// `(|Bᵀ| |d| |B|)_ab` of the 4×4 input patch of tile (ty, tx) with padding `p`;
/// `at(ih, iw)` reads the input (0 outside it).
pub(super) fn abs_bt(
    at: impl Fn(isize, isize) -> f64,
    (ty, tx, p): (usize, usize, usize),
    (a, b): (usize, usize),
) -> f64 {
    const BT: [[f64; 4]; 4] = [
        [1.0, 0.0, -1.0, 0.0],
        [0.0, 1.0, 1.0, 0.0],
        [0.0, -1.0, 1.0, 0.0],
        [0.0, 1.0, 0.0, -1.0],
    ];
    let mut vd = 0.0;
    for (r, ar) in BT[a].iter().enumerate() {
        for (q, bq) in BT[b].iter().enumerate() {
            let ih = (2 * ty + r) as isize - p as isize;
            let iw = (2 * tx + q) as isize - p as isize;
            vd += ar.abs() * at(ih, iw).abs() * bq.abs();
        }
    }
    vd
}

/// Per output (o, n, oh, ow): the f64 convolution and the bound's `T` (module docs),
/// from the zero-padded 4×4 patch of the output's tile.
fn reference(
    x: &[f32],
    wts: &[f32],
    (o, c, n, h, w, p): (usize, usize, usize, usize, usize, usize),
) -> (Vec<f64>, Vec<f64>) {
    let (ho, wo) = (h + 2 * p - 2, w + 2 * p - 2);
    let at = |ci: usize, img: usize, ih: isize, iw: isize| -> f64 {
        if ih < 0 || iw < 0 || ih as usize >= h || iw as usize >= w {
            0.0
        } else {
            x[((ci * n + img) * h + ih as usize) * w + iw as usize] as f64
        }
    };
    let at_m = [[1.0, 1.0, 1.0, 0.0], [0.0, 1.0, -1.0, -1.0]];
    let (mut y, mut t) = (vec![0.0; o * n * ho * wo], vec![0.0; o * n * ho * wo]);
    for oc in 0..o {
        for img in 0..n {
            for oh in 0..ho {
                for ow in 0..wo {
                    let mut acc = 0.0;
                    for ci in 0..c {
                        for ki in 0..3 {
                            for kj in 0..3 {
                                let (ih, iw) = ((oh + ki) as isize, (ow + kj) as isize);
                                let g = wts[(oc * c + ci) * 9 + ki * 3 + kj] as f64;
                                acc += g * at(ci, img, ih - p as isize, iw - p as isize);
                            }
                        }
                    }
                    // T at (oh, ow): its tile's patch, |Bᵀ||d||B| ⊙ |U| summed over c
                    let (ty, tx, i, j) = (oh / 2, ow / 2, oh % 2, ow % 2);
                    let mut s = [0.0f64; XI];
                    for ci in 0..c {
                        let u = filter_transform(&wts[(oc * c + ci) * 9..][..9]);
                        for a in 0..4 {
                            for b in 0..4 {
                                let vd = abs_bt(|ih, iw| at(ci, img, ih, iw), (ty, tx, p), (a, b));
                                s[a * 4 + b] += u[a * 4 + b].abs() * vd;
                            }
                        }
                    }
                    let mut tv = 0.0;
                    for a in 0..4 {
                        for b in 0..4 {
                            tv += f64::abs(at_m[i][a]) * s[a * 4 + b] * f64::abs(at_m[j][b]);
                        }
                    }
                    let k = ((oc * n + img) * ho + oh) * wo + ow;
                    y[k] = acc;
                    t[k] = tv;
                }
            }
        }
    }
    (y, t)
}

/// That `new(o, c, wts, kernel)` (its `u [X, O, C]`) lays out each filter's
/// `transform`, rounded once, with every kernel (explicit AVX2 groups of eight and the
/// generic rest), for channel counts around the groups, on random filters with exact
/// zeros, signed zero, f32's extremes, an infinity and a NaN.
pub(super) fn check_filter_layout<const X: usize>(
    new: impl Fn(usize, usize, &[f32], Kernel) -> Vec<f32>,
    transform: impl Fn(&[f32]) -> [f64; X],
) {
    let cases = [(1, 1), (3, 7), (5, 8), (4, 17), (16, 16), (3, 64), (2, 24)];
    for (k, (o, c)) in Kernel::available()
        .into_iter()
        .flat_map(|k| cases.map(|oc| (k, oc)))
    {
        let mut wts = values(o * c * 9, (o * 31 + c + X) as u64);
        for (w, v) in wts.iter_mut().step_by(7).zip([
            0.0,
            -0.0,
            f32::MAX,
            -f32::MAX,
            f32::MIN_POSITIVE,
            1e-45,
            f32::INFINITY,
            f32::NAN,
        ]) {
            *w = v;
        }
        let u = new(o, c, &wts, k);
        for oc in 0..o {
            for ci in 0..c {
                let t = transform(&wts[(oc * c + ci) * 9..][..9]);
                for (xi, &v) in t.iter().enumerate() {
                    let got = u[(xi * o + oc) * c + ci];
                    assert_eq!(got.to_bits(), (v as f32).to_bits(), "{k:?} o{o} c{c} ξ{xi}");
                }
            }
        }
    }
}

/// `Winograd::new` lays out each filter's [`filter_transform`] ([`check_filter_layout`]).
#[test]
fn new_holds_each_filters_transform() {
    check_filter_layout(|o, c, w, k| Winograd::new(o, c, w, k).u, filter_transform);
}

/// The written-out filter transform equals `G g Gᵀ` as matrix products in f64, value
/// for value, on random filters, exact zeros and extremes of f32's range.
#[test]
fn filter_transform_is_g_g_gt() {
    const G: [[f64; 3]; 4] = [
        [1.0, 0.0, 0.0],
        [0.5, 0.5, 0.5],
        [0.5, -0.5, 0.5],
        [0.0, 0.0, 1.0],
    ];
    let mut filters: Vec<Vec<f32>> = (0..200).map(|s| values(9, s)).collect();
    filters.push(vec![0.0; 9]);
    filters.push(vec![
        f32::MAX,
        f32::MAX,
        -f32::MAX,
        1e-45,
        3.0,
        -1e-45,
        f32::MIN_POSITIVE,
        0.0,
        f32::MAX,
    ]);
    for g in &filters {
        let mut want = [0.0f64; XI];
        for a in 0..4 {
            for b in 0..4 {
                want[a * 4 + b] = (0..3)
                    .map(|j| G[b][j] * (0..3).map(|i| G[a][i] * g[i * 3 + j] as f64).sum::<f64>())
                    .sum();
            }
        }
        assert_eq!(filter_transform(g), want, "filter {g:?}");
    }
}

/// Against f64 direct convolution: every output within `γ_{C+8}·T` (module docs), on
/// odd sizes, channels not multiples of 8, batch 1, paddings 0–2, sources split in two;
/// every kernel this CPU has (scalar, AVX2, AVX-512VL ymm, zmm) gives the same bits.
#[test]
fn error_within_bound_against_f64() {
    let u = f64::from(f32::EPSILON) / 2.0;
    let kernels = Kernel::available();
    let mut worst = 0.0f64;
    for (case, &(o, c, n, h, w, p)) in [
        (16, 16, 2, 8, 8, 1),
        (5, 3, 1, 7, 9, 1),
        (11, 13, 3, 5, 6, 1),
        (4, 7, 1, 9, 5, 0),
        (3, 2, 2, 4, 3, 2),
        (9, 33, 1, 17, 70, 1),
        (2, 1, 1, 1, 1, 1),
        (32, 16, 3, 16, 16, 1),
        (64, 64, 2, 8, 8, 1),
    ]
    .iter()
    .enumerate()
    {
        let seed = case as u64 * 3;
        let x = values(c * n * h * w, seed + 1);
        let wts = values(o * c * 9, seed + 2);
        let (y64, t) = reference(&x, &wts, (o, c, n, h, w, p));
        let gamma = (c + 8) as f64 * u / (1.0 - (c + 8) as f64 * u);
        // the input channels as two sources: c = c₁ + c₂
        let c1 = c / 2;
        let per = n * h * w;
        let srcs: [&[f32]; 2] = [&x[..c1 * per], &x[c1 * per..]];
        let mut first: Option<Vec<f32>> = None;
        for &k in &kernels {
            let wg = Winograd::new(o, c, &wts, k);
            let mut y = vec![MaybeUninit::new(f32::NAN); y64.len()];
            let mut seen = Vec::new();
            wg.run(&srcs, [n, h, w], p, None, &mut y, |_, img| seen.push(img));
            // SAFETY: initialized (NaN) before the call.
            let y: Vec<f32> = y.iter().map(|v| unsafe { v.assume_init() }).collect();
            assert!(
                y.iter().all(|v| !v.is_nan()),
                "case {case} {k:?}: an output not written"
            );
            assert_eq!(seen, (0..n).collect::<Vec<_>>(), "after: images in order");
            within_bound(&y, (&y64, &t), gamma, (case, k), &mut worst);
            same_bits(&mut first, y, (case, k, kernels[0]));
        }
    }
    // the bound is not vacuous: errors reach a visible fraction of it
    eprintln!("winograd: largest error / bound {worst:.3e}");
    assert!(worst > 1e-4, "largest error / bound {worst}");
}

/// The padding-1 input transform gives the bits of the general one, for every kernel,
/// on blocks that start and end inside images and on images of odd height, with one
/// tile row to a vector and several (images 2, 4, 8, 16 wide).
#[test]
fn pad1_input_matches_the_general_one() {
    for &(c, n, h, w) in &[
        (3, 2, 8, 8),
        (2, 3, 7, 6),
        (1, 2, 16, 32),
        (2, 1, 9, 70),
        (2, 2, 16, 16),
        (2, 3, 7, 8),
        (1, 3, 10, 4),
        (2, 2, 5, 2),
    ] {
        let x = values(c * n * h * w, (h * w) as u64);
        let (ho, wo) = (h, w);
        let (th, tw) = (ho.div_ceil(2), wo.div_ceil(2));
        let rows = n * th;
        for kernel in Kernel::available() {
            let g = Geo {
                kernel,
                h,
                w,
                ho,
                wo,
                p: 1,
                tw,
            };
            for rb in [1, 3, rows] {
                for blk in Block::split(rows, rb, th) {
                    let pb = blk.tiles(tw);
                    let stride = c * pb;
                    let mut scratch = vec![0.0f32; 8 * (th + 1) * tw + 2 * tw + 2];
                    let mut out = [vec![f32::NAN; XI * stride], vec![f32::NAN; XI * stride]];
                    for (ci, plane) in x.chunks_exact(n * h * w).enumerate() {
                        let [a, b] = &mut out;
                        input_pad1(&g, &blk, plane, &mut a[ci * pb..], stride, &mut scratch);
                        input_lines(&g, &blk, plane, &mut b[ci * pb..], stride, &mut scratch);
                    }
                    let bits = |v: &[f32]| v.iter().map(|t| t.to_bits()).collect::<Vec<_>>();
                    assert_eq!(
                        bits(&out[0]),
                        bits(&out[1]),
                        "{kernel:?} {h}×{w} rows {}+{rb}",
                        blk.r0
                    );
                }
            }
        }
    }
}

/// That `y` is within `gamma · t` of the f64 reference `y64`, element by element (`case`
/// and kernel `k` name a failure), raising `worst` to the largest error / bound.
pub(super) fn within_bound(
    y: &[f32],
    (y64, t): (&[f64], &[f64]),
    gamma: f64,
    (case, k): (usize, Kernel),
    worst: &mut f64,
) {
    for (i, (&a, (&b, &tb))) in y.iter().zip(y64.iter().zip(t)).enumerate() {
        let err = (a as f64 - b).abs();
        assert!(
            err <= gamma * tb,
            "case {case} {k:?} at {i}: {a} vs {b}, bound {}",
            gamma * tb
        );
        *worst = worst.max(err / (gamma * tb).max(1e-300));
    }
}

/// That kernel `k`'s outputs `y` have the bits of the first kernel's (`k0`, kept in
/// `first` on its turn).
pub(super) fn same_bits(
    first: &mut Option<Vec<f32>>,
    y: Vec<f32>,
    (case, k, k0): (usize, Kernel, Kernel),
) {
    match first {
        None => *first = Some(y),
        Some(f) => assert!(
            f.iter().zip(&y).all(|(a, b)| a.to_bits() == b.to_bits()),
            "case {case}: bits differ between {k0:?} and {k:?}"
        ),
    }
}
