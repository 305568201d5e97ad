//! Tests of [`super`]: the weight gradient against f64 within its bound, the row
//! kernels against the portable form, and chains continued across products.

use super::super::f4::tests::{AT, BT};
use super::super::tests::values;
use super::*;

/// Per weight: the f64 gradient `Σ dy ⋆ x` over the terms, and the bound's
/// `|G|ᵀ (Σ_tiles |A||dY||Aᵀ| ⊙ |Bᵀ||d||B|) |G|` (module docs).
#[allow(clippy::needless_range_loop)]
fn reference(
    terms: &[(Vec<f32>, Vec<f32>)],
    (o, c, n, h, w): (usize, usize, usize, usize, usize),
) -> (Vec<f64>, Vec<f64>) {
    let (mut dw, mut t) = (vec![0.0; o * c * 9], vec![0.0; o * c * 9]);
    for (dy, x) in terms {
        let xat = |ci: usize, img: usize, ih: isize, iw: isize| -> f64 {
            if ih < 0 || iw < 0 || ih as usize >= h || iw as usize >= w {
                0.0
            } else {
                f64::from(x[((ci * n + img) * h + ih as usize) * w + iw as usize])
            }
        };
        let dat = |oc: usize, img: usize, oh: usize, ow: usize| -> f64 {
            f64::from(dy[((oc * n + img) * h + oh) * w + ow])
        };
        for oc in 0..o {
            for ci in 0..c {
                let mut s = [0.0f64; XI];
                for img in 0..n {
                    for ty in 0..h / 4 {
                        for tx in 0..w / 4 {
                            for (xi, sx) in s.iter_mut().enumerate() {
                                let (a, b) = (xi / 6, xi % 6);
                                let (mut ud, mut vd) = (0.0, 0.0);
                                for r in 0..4 {
                                    for q in 0..4 {
                                        let d = dat(oc, img, 4 * ty + r, 4 * tx + q);
                                        ud += AT[r][a].abs() * d.abs() * AT[q][b].abs();
                                    }
                                }
                                for r in 0..6 {
                                    for q in 0..6 {
                                        let ih = (4 * ty + r) as isize - 1;
                                        let iw = (4 * tx + q) as isize - 1;
                                        let d = xat(ci, img, ih, iw);
                                        vd += BT[a][r].abs() * d.abs() * BT[b][q].abs();
                                    }
                                }
                                *sx += ud * vd;
                            }
                        }
                    }
                }
                for i in 0..3 {
                    for j in 0..3 {
                        let k = (oc * c + ci) * 9 + i * 3 + j;
                        for img in 0..n {
                            for oh in 0..h {
                                for ow in 0..w {
                                    let (ih, iw) = ((oh + i) as isize - 1, (ow + j) as isize - 1);
                                    dw[k] += dat(oc, img, oh, ow) * xat(ci, img, ih, iw);
                                }
                            }
                        }
                        for (a, ga) in G.iter().enumerate() {
                            for (b, gb) in G.iter().enumerate() {
                                t[k] += ga[i].abs() * s[a * 6 + b] * gb[j].abs();
                            }
                        }
                    }
                }
            }
        }
    }
    (dw, t)
}

/// Against the f64 gradient: every weight within `γ_{P+11}·T + 2u·|dW|` (P the tiles
/// of the whole call, which bounds a block's), on 1, 2, 4 and 8 tiles to a row, output
/// channels not multiples of 16, two terms, blocks that end mid-call; every kernel
/// this CPU has gives the same bits, and the sums added to `dw` keep what it held.
#[test]
fn weight_grad4_within_bound_against_f64() {
    let u = f64::from(f32::EPSILON) / 2.0;
    let mut worst = 0.0f64;
    for (case, &(o, c, n, h, w, nterms)) in [
        (16, 16, 2, 8, 8, 1),
        (5, 3, 3, 4, 4, 1),
        (11, 13, 3, 12, 8, 2),
        (17, 9, 2, 8, 16, 1),
        (32, 16, 3, 16, 16, 2),
        (64, 64, 5, 8, 8, 1),
        (16, 16, 5, 32, 32, 1),
        (20, 8, 7, 4, 32, 1),
    ]
    .iter()
    .enumerate()
    {
        let seed = case as u64 * 7 + 100;
        let terms: Vec<(Vec<f32>, Vec<f32>)> = (0..nterms as u64)
            .map(|t| {
                (
                    values(o * n * h * w, seed + 2 * t + 1),
                    values(c * n * h * w, seed + 2 * t + 2),
                )
            })
            .collect();
        let (dw64, tb) = reference(&terms, (o, c, n, h, w));
        let tiles = n * (h / 4) * (w / 4);
        let gamma = (tiles + 11) as f64 * u / (1.0 - (tiles + 11) as f64 * u);
        let refs: Vec<(&[f32], &[f32])> = terms.iter().map(|(d, x)| (&d[..], &x[..])).collect();
        let mut first: Option<Vec<f32>> = None;
        for k in Kernel::available() {
            let mut dw = vec![1.0f32; o * c * 9];
            weight_grad(k, (o, c), [n, h, w], &refs, &mut dw);
            for (i, (&a, (&b, &t))) in dw.iter().zip(dw64.iter().zip(&tb)).enumerate() {
                let err = (f64::from(a) - 1.0 - b).abs();
                let bound = gamma * t + 2.0 * u * (b.abs() + 1.0);
                assert!(
                    err <= bound,
                    "case {case} {k:?} at {i}: {a} − 1 vs {b}, bound {bound}"
                );
                worst = worst.max(err / bound);
            }
            match &first {
                None => first = Some(dw),
                Some(f) => assert!(
                    f.iter().zip(&dw).all(|(a, b)| a.to_bits() == b.to_bits()),
                    "case {case}: bits differ on {k:?}"
                ),
            }
        }
    }
    eprintln!("winograd4 weight gradient: largest error / bound {worst:.3e}");
    assert!(worst > 1e-4, "largest error / bound {worst}");
}

/// [`simd::products`] with `add` continues the chains of one without: K split in two (at
/// any point, rows and column vectors of every tile shape) gives the bits of one
/// product over the whole K, on every kernel, and the same bits on all of them.
#[test]
fn products_continue_the_chains() {
    for (rows, k, cols) in [
        (13usize, 40usize, 16usize),
        (64, 9, 64),
        (7, 33, 48),
        (16, 2, 32),
    ] {
        let (lda, ld) = (k + 3, cols.next_multiple_of(16));
        let a = values(rows * lda, 3);
        let bm = values(k * ld, 5);
        let mut first: Option<Vec<f32>> = None;
        for kern in Kernel::available() {
            let mut whole = vec![0.0f32; rows * ld];
            let one = (rows * ld, rows * ld);
            simd::products(
                kern,
                1,
                (rows, k),
                (&a, rows * lda, lda),
                (&bm, k * ld),
                (&mut whole, one.0),
                (cols, ld),
                false,
            );
            for split in [1, k / 2, k - 1] {
                let mut m = vec![0.0f32; rows * ld];
                simd::products(
                    kern,
                    1,
                    (rows, split),
                    (&a, rows * lda, lda),
                    (&bm, k * ld),
                    (&mut m, one.0),
                    (cols, ld),
                    false,
                );
                let rest = k - split;
                simd::products(
                    kern,
                    1,
                    (rows, rest),
                    (&a[split..], rows * lda - split, lda),
                    (&bm[split * ld..], rest * ld),
                    (&mut m, one.1),
                    (cols, ld),
                    true,
                );
                for o in 0..rows {
                    for j in 0..cols {
                        let (x, y) = (m[o * ld + j], whole[o * ld + j]);
                        assert_eq!(
                            x.to_bits(),
                            y.to_bits(),
                            "{kern:?} {rows}×{k}×{cols} split {split}"
                        );
                    }
                }
            }
            let got: Vec<f32> = (0..rows)
                .flat_map(|o| whole[o * ld..][..cols].to_vec())
                .collect();
            match &first {
                None => first = Some(got),
                Some(f) => assert!(f.iter().zip(&got).all(|(a, b)| a.to_bits() == b.to_bits())),
            }
        }
    }
}

/// [`rows`]' kernels give [`rows_scalar`]'s bits on every row width, with partial
/// vectors at the end and NaN in the padding's neighbours (masked, never summed).
#[test]
fn row_kernels_match_the_scalar_form() {
    for (tw, b, th) in [
        (1, 3, 2),
        (2, 5, 1),
        (4, 3, 2),
        (8, 1, 3),
        (8, 3, 1),
        (2, 16, 2),
    ] {
        let w = 4 * tw;
        let glen = 6 * th * b * w;
        let mut g = vec![f32::NAN; glen + 80];
        g[16..16 + glen].copy_from_slice(&values(glen, tw as u64 + 31 * b as u64));
        let q = b * tw;
        let vs = th * q + 5;
        let mut want = vec![0.0f32; 36 * vs];
        for a in 0..6 {
            for ty in 0..th {
                let src = 16 + (a * th + ty) * b * w;
                let dst = 6 * a * vs + ty * q;
                rows_scalar(&g[src - 1..src + 4 * q + 1], (q, tw), &mut want[dst..], vs);
            }
        }
        for k in Kernel::available() {
            let mut v = vec![7.0f32; 36 * vs];
            rows(k, &g, (b, th, tw), &mut v, vs);
            for (i, (x, y)) in v.iter().zip(&want).enumerate() {
                let unwritten = i % vs >= th * q;
                assert!(
                    if unwritten {
                        *x == 7.0
                    } else {
                        x.to_bits() == y.to_bits()
                    },
                    "tw {tw} b {b} th {th} {k:?} at {i}: {x} vs {y}"
                );
            }
        }
    }
}
