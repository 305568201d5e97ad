//! Winograd minimal filtering F(2×2, 3×3) for f32 3×3 stride-1 convolutions (Lavin &
//! Gray 2016, "Fast algorithms for convolutional neural networks", CVPR): each 2×2 output
//! tile is `Y = Aᵀ [Σ_c (G g_c Gᵀ) ⊙ (Bᵀ d_c B)] A` from the 4×4 input patch `d_c` and
//! the 3×3 filter `g_c` of each input channel, 16 multiplications per tile and channel
//! instead of 36 (2.25× fewer). The channel sums are 16 independent GEMMs, one per
//! transform position ξ: `M_ξ [O, P] = U_ξ [O, C] · V_ξ [C, P]` over a block of P tiles.
//!
//! ```text
//! Bᵀ = ⎡1  0 −1  0⎤    G = ⎡ 1   0   0 ⎤    Aᵀ = ⎡1 1  1  0⎤
//!      ⎢0  1  1  0⎥        ⎢ ½   ½   ½ ⎥         ⎣0 1 −1 −1⎦
//!      ⎢0 −1  1  0⎥        ⎢ ½  −½   ½ ⎥
//!      ⎣0  1  0 −1⎦        ⎣ 0   0   1 ⎦
//! ```
//!
//! The filter transform is computed in f64 and rounded once; the input transform (two
//! additions per element), the GEMMs (OpenBLAS or `matrixmultiply`, the graph's
//! [`GemmBackend`](crate::engine::GemmBackend)) and the output transform (four additions)
//! in f32. Standard forward error analysis (Higham, *Accuracy and Stability of Numerical
//! Algorithms*, §3.1) bounds each output by
//!
//! `|ŷ − y| ≤ γ_{C+8} · T`,  `T = |Aᵀ| (Σ_c |U_c| ⊙ |Bᵀ| |d_c| |B|) |A|`,  `γ_n = nu/(1 − nu)`
//!
//! with `u = 2⁻²⁴`: the same form as direct convolution's `γ_{9C} · Σ|g||d|`, but `T` is up
//! to 81·2.25/9 ≈ 20× larger than `Σ|g||d|` (the transforms' entries add up), which is
//! what Winograd trades for its speed (Barabasz et al. 2020, "Error analysis and improving
//! the accuracy of Winograd convolution for deep neural networks", ACM TOMS 46(4)). The
//! tests check the bound elementwise against f64. Results do not depend on threads: each
//! call runs on the calling worker, block after block in a fixed order.

use super::kernels::Kernel;
use crate::engine::gemm::Mat;
use crate::engine::options::GemmBackend;

/// Transform positions per tile (4 × 4).
const XI: usize = 16;

/// Target size (floats) of one block's transformed input and GEMM output,
/// `16·(C + O)·P`: about L2-sized (tuned on ResNet-20 shapes).
const BLOCK_FLOATS: usize = 96 * 1024;

/// A prepared F(2×2, 3×3) convolution: `o` output channels, the filters transformed.
pub(super) struct Winograd {
    o: usize,
    c: usize,
    /// `U_ξ = (G g Gᵀ)_ξ`, `[16, O, C]`.
    u: Vec<f32>,
    gemm: GemmBackend,
    /// Whether the transforms may use AVX2 (same bits: they only add and subtract).
    avx2: bool,
}

/// `G g Gᵀ` of one 3×3 filter in f64.
fn filter_transform(g: &[f32]) -> [f64; XI] {
    let gm = [
        [1.0, 0.0, 0.0],
        [0.5, 0.5, 0.5],
        [0.5, -0.5, 0.5],
        [0.0, 0.0, 1.0],
    ];
    let mut t = [[0.0f64; 3]; 4]; // G g
    for (a, row) in gm.iter().enumerate() {
        for j in 0..3 {
            t[a][j] = (0..3).map(|i| row[i] * g[i * 3 + j] as f64).sum();
        }
    }
    let mut u = [0.0f64; XI];
    for a in 0..4 {
        for (b, row) in gm.iter().enumerate() {
            u[a * 4 + b] = (0..3).map(|j| t[a][j] * row[j]).sum();
        }
    }
    u
}

impl Winograd {
    /// Filters `[O, C, 3, 3]` row-major.
    pub(super) fn new(o: usize, c: usize, wts: &[f32], gemm: GemmBackend, kernel: Kernel) -> Self {
        assert_eq!(wts.len(), o * c * 9, "winograd: weight size");
        let mut u = vec![0.0f32; XI * o * c];
        for oc in 0..o {
            for ci in 0..c {
                let t = filter_transform(&wts[(oc * c + ci) * 9..][..9]);
                for (xi, &v) in t.iter().enumerate() {
                    u[(xi * o + oc) * c + ci] = v as f32;
                }
            }
        }
        Winograd {
            o,
            c,
            u,
            gemm,
            avx2: kernel != Kernel::Scalar,
        }
    }

    /// `y [O, N·Ho·Wo] = W ⋆ x` with zero padding `p` (`Ho = H + 2p − 2`), the input the
    /// channels of the sources `xs` (each `[Cᵢ, N, H, W]`, ΣCᵢ = C) stacked in order;
    /// `after(y, image)` is called once each image is complete, in order.
    pub(super) fn run(
        &self,
        xs: &[&[f32]],
        [n, h, w]: [usize; 3],
        p: usize,
        y: &mut [f32],
        mut after: impl FnMut(&mut [f32], usize),
    ) {
        let (o, c) = (self.o, self.c);
        assert!(p <= 2, "winograd: padding");
        let (ho, wo) = ((h + 2 * p).saturating_sub(2), (w + 2 * p).saturating_sub(2));
        let per = n * h * w;
        let planes: Vec<&[f32]> = xs
            .iter()
            .flat_map(|x| x.chunks_exact(per.max(1)).take(x.len() / per.max(1)))
            .collect();
        assert!(planes.len() == c, "winograd: input channels");
        let cols = n * ho * wo;
        assert!(y.len() >= o * cols, "winograd: output size");
        if cols == 0 {
            return;
        }
        let (th, tw) = (ho.div_ceil(2), wo.div_ceil(2));
        // Blocks of whole tile rows (image, ty), about BLOCK_FLOATS floats of V and M.
        let rows = n * th;
        let rb = (BLOCK_FLOATS / (XI * (c + o) * tw).max(1)).clamp(1, rows);
        let mut v = vec![0.0f32; XI * c * rb * tw];
        let mut m = vec![0.0f32; XI * o * rb * tw];
        let geo = Geo {
            h,
            w,
            ho,
            wo,
            p,
            tw,
        };
        let mut done = 0; // images passed to `after`
        let mut scratch = vec![0.0f32; 16 * tw + 2 * (tw + 1)];
        for r0 in (0..rows).step_by(rb) {
            let r1 = (r0 + rb).min(rows);
            let pb = (r1 - r0) * tw;
            let v = &mut v[..XI * c * pb];
            let m = &mut m[..XI * o * pb];
            let blk = Block { r0, r1, th };
            for (ci, plane) in planes.iter().enumerate() {
                self.input(&geo, &blk, plane, &mut v[ci * pb..], c * pb, &mut scratch);
            }
            for xi in 0..XI {
                let a = Mat::new(&self.u[xi * o * c..][..o * c], c);
                let b = Mat::new(&v[xi * c * pb..][..c * pb], pb);
                let mx = &mut m[xi * o * pb..][..o * pb];
                self.gemm.gemm_slices(o, pb, c, 1.0, a, b, 0.0, mx, pb);
            }
            for oc in 0..o {
                let dst = &mut y[oc * cols..][..cols];
                self.output(&geo, &blk, &m[oc * pb..], o * pb, dst, &mut scratch);
            }
            // images whose tile rows are all done
            while done < r1 / th {
                after(y, done);
                done += 1;
            }
        }
    }

    /// `V_ξ` of the block's tiles of one input channel `plane [N, H, W]`, written to
    /// `v[ξ·stride + tile]`.
    fn input(
        &self,
        g: &Geo,
        blk: &Block,
        plane: &[f32],
        v: &mut [f32],
        stride: usize,
        s: &mut [f32],
    ) {
        #[cfg(target_arch = "x86_64")]
        if self.avx2 {
            // SAFETY: AVX2 is present (a SIMD kernel was detected).
            unsafe { input_avx2(g, blk, plane, v, stride, s) };
            return;
        }
        input_rows(g, blk, plane, v, stride, s);
    }

    /// The 2×2 outputs of the block's tiles of one output channel from
    /// `m[ξ·stride + tile]` into the channel's output `dst [N, Ho, Wo]`.
    fn output(
        &self,
        g: &Geo,
        blk: &Block,
        m: &[f32],
        stride: usize,
        dst: &mut [f32],
        s: &mut [f32],
    ) {
        #[cfg(target_arch = "x86_64")]
        if self.avx2 {
            // SAFETY: AVX2 is present (a SIMD kernel was detected).
            unsafe { output_avx2(g, blk, m, stride, dst, s) };
            return;
        }
        output_rows(g, blk, m, stride, dst, s);
    }
}

/// The geometry of one call: input `h × w`, output `ho × wo`, padding, tiles per row.
struct Geo {
    h: usize,
    w: usize,
    ho: usize,
    wo: usize,
    p: usize,
    tw: usize,
}

/// One block: tile rows `r0..r1` (row r = image r / th, tile row r % th).
struct Block {
    r0: usize,
    r1: usize,
    th: usize,
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn input_avx2(
    g: &Geo,
    blk: &Block,
    plane: &[f32],
    v: &mut [f32],
    stride: usize,
    s: &mut [f32],
) {
    input_rows(g, blk, plane, v, stride, s)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn output_avx2(
    g: &Geo,
    blk: &Block,
    m: &[f32],
    stride: usize,
    dst: &mut [f32],
    s: &mut [f32],
) {
    output_rows(g, blk, m, stride, dst, s)
}

/// See [`Winograd::input`]. Row `r` of a tile row's 4×4 patches is input row
/// `2·ty − p + r`; the patches read columns `2·tx − p + j`: the row split into even and
/// odd columns `e[k] = x[2k − p]`, `q[k] = x[2k + 1 − p]` (zero outside) gives
/// `d_j = e[tx], q[tx], e[tx+1], q[tx+1]` — contiguous, so the transforms vectorize.
/// `s`: scratch of `16·tw + 2·(tw + 1)` floats.
#[allow(clippy::needless_range_loop)]
#[inline(always)]
fn input_rows(g: &Geo, blk: &Block, plane: &[f32], v: &mut [f32], stride: usize, s: &mut [f32]) {
    let tw = g.tw;
    let (hz, eq) = s.split_at_mut(16 * tw);
    let (e, q) = eq.split_at_mut(tw + 1);
    // the k with 0 ≤ 2k + d − p < w, for d = 0 (e) and 1 (q)
    let krange = |d: usize| {
        let lo = (g.p - d.min(g.p)).div_ceil(2);
        let hi =
            ((g.w + g.p - d) / 2 + usize::from(!(g.w + g.p - d).is_multiple_of(2))).min(tw + 1);
        lo..hi.max(lo)
    };
    let (ke, kq) = (krange(0), krange(1));
    for r in blk.r0..blk.r1 {
        let (img, ty) = (r / blk.th, r % blk.th);
        let src = &plane[img * g.h * g.w..][..g.h * g.w];
        let at = (r - blk.r0) * tw;
        // horizontal transform of the 4 rows: hz[(r·4 + b)·tw + tx]
        for (rr, hr) in hz.chunks_exact_mut(4 * tw).enumerate() {
            let ih = (2 * ty + rr) as isize - g.p as isize;
            if ih < 0 || ih as usize >= g.h {
                hr.fill(0.0); // a padding row
                continue;
            }
            let row = &src[ih as usize * g.w..][..g.w];
            e.fill(0.0);
            q.fill(0.0);
            for k in ke.clone() {
                e[k] = row[2 * k - g.p];
            }
            for k in kq.clone() {
                q[k] = row[2 * k + 1 - g.p];
            }
            let (h0, rest) = hr.split_at_mut(tw);
            let (h1, rest) = rest.split_at_mut(tw);
            let (h2, h3) = rest.split_at_mut(tw);
            let (e0, e1, q0, q1) = (&e[..tw], &e[1..=tw], &q[..tw], &q[1..=tw]);
            for k in 0..tw {
                h0[k] = e0[k] - e1[k];
                h1[k] = q0[k] + e1[k];
                h2[k] = e1[k] - q0[k];
                h3[k] = q0[k] - q1[k];
            }
        }
        // vertical transform: V[a·4 + b] from rows 0..4 of column transform b
        for b in 0..4 {
            let row = |rr: usize| &hz[(rr * 4 + b) * tw..][..tw];
            let (r0, r1, r2, r3) = (row(0), row(1), row(2), row(3));
            let dst = &mut v[b * stride + at..][..tw];
            for k in 0..tw {
                dst[k] = r0[k] - r2[k];
            }
            let dst = &mut v[(4 + b) * stride + at..][..tw];
            for k in 0..tw {
                dst[k] = r1[k] + r2[k];
            }
            let dst = &mut v[(8 + b) * stride + at..][..tw];
            for k in 0..tw {
                dst[k] = r2[k] - r1[k];
            }
            let dst = &mut v[(12 + b) * stride + at..][..tw];
            for k in 0..tw {
                dst[k] = r1[k] - r3[k];
            }
        }
    }
}

/// See [`Winograd::output`]: `t = Aᵀ M` down the columns, then `Y = t A` along the rows.
/// `s`: scratch of at least `10·tw` floats.
#[allow(clippy::needless_range_loop)]
#[inline(always)]
fn output_rows(g: &Geo, blk: &Block, m: &[f32], stride: usize, dst: &mut [f32], s: &mut [f32]) {
    let tw = g.tw;
    let (t, ys) = s.split_at_mut(8 * tw);
    let (y0, y1) = ys[..2 * tw].split_at_mut(tw);
    for r in blk.r0..blk.r1 {
        let (img, ty) = (r / blk.th, r % blk.th);
        let at = (r - blk.r0) * tw;
        let mrow = |xi: usize| &m[xi * stride + at..][..tw];
        // t[(i·4 + b)·tw + tx], i = output row within the tile
        let (ta, tb) = t.split_at_mut(4 * tw);
        for b in 0..4 {
            let (m0, m1, m2, m3) = (mrow(b), mrow(4 + b), mrow(8 + b), mrow(12 + b));
            let t0b = &mut ta[b * tw..][..tw];
            for k in 0..tw {
                t0b[k] = m0[k] + m1[k] + m2[k];
            }
            let t1b = &mut tb[b * tw..][..tw];
            for k in 0..tw {
                t1b[k] = m1[k] - m2[k] - m3[k];
            }
        }
        for (i, ti) in t.chunks_exact(4 * tw).enumerate() {
            let oh = 2 * ty + i;
            if oh >= g.ho {
                break;
            }
            let (c0, c1, c2, c3) = (
                &ti[..tw],
                &ti[tw..2 * tw],
                &ti[2 * tw..3 * tw],
                &ti[3 * tw..],
            );
            for k in 0..tw {
                y0[k] = c0[k] + c1[k] + c2[k];
                y1[k] = c1[k] - c2[k] - c3[k];
            }
            let row = &mut dst[(img * g.ho + oh) * g.wo..][..g.wo];
            let pairs = g.wo / 2;
            for (k, pair) in row.chunks_exact_mut(2).take(pairs).enumerate() {
                pair[0] = y0[k];
                pair[1] = y1[k];
            }
            if g.wo % 2 == 1 {
                row[g.wo - 1] = y0[pairs];
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pseudo-random values in [−1, 1) from a seed.
    fn values(len: usize, seed: u64) -> Vec<f32> {
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
        let bt = [
            [1.0, 0.0, -1.0, 0.0],
            [0.0, 1.0, 1.0, 0.0],
            [0.0, -1.0, 1.0, 0.0],
            [0.0, 1.0, 0.0, -1.0],
        ];
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
                                    let mut vd = 0.0;
                                    for r in 0..4 {
                                        for q in 0..4 {
                                            let ih = (2 * ty + r) as isize - p as isize;
                                            let iw = (2 * tx + q) as isize - p as isize;
                                            let d = at(ci, img, ih, iw).abs();
                                            vd += f64::abs(bt[a][r]) * d * f64::abs(bt[b][q]);
                                        }
                                    }
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

    /// Against f64 direct convolution: every output within `γ_{C+8}·T` (module docs), on
    /// odd sizes, channels not multiples of 8, batch 1, paddings 0–2, sources split in two;
    /// the scalar and the AVX2 transforms give the same bits, and so do the two GEMM
    /// backends' f32 sums up to that bound.
    #[test]
    fn error_within_bound_against_f64() {
        let u = f64::from(f32::EPSILON) / 2.0;
        let mut kernels = vec![Kernel::Scalar];
        #[cfg(target_arch = "x86_64")]
        if is_x86_feature_detected!("avx2") {
            kernels.push(Kernel::Avx2);
        }
        let mut worst = 0.0f64;
        for (case, &(o, c, n, h, w, p)) in [
            (16, 16, 2, 8, 8, 1),
            (5, 3, 1, 7, 9, 1),
            (11, 13, 3, 5, 6, 1),
            (4, 7, 1, 9, 5, 0),
            (3, 2, 2, 4, 3, 2),
            (9, 33, 1, 17, 70, 1),
            (2, 1, 1, 1, 1, 1),
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
            for gemm in [GemmBackend::Blas, GemmBackend::MatrixMultiply] {
                for &k in &kernels {
                    let wg = Winograd::new(o, c, &wts, gemm, k);
                    let mut y = vec![f32::NAN; y64.len()];
                    let mut seen = Vec::new();
                    wg.run(&srcs, [n, h, w], p, &mut y, |_, img| seen.push(img));
                    assert_eq!(seen, (0..n).collect::<Vec<_>>(), "after: images in order");
                    for (i, (&a, (&b, &tb))) in y.iter().zip(y64.iter().zip(&t)).enumerate() {
                        let err = (a as f64 - b).abs();
                        assert!(
                            err <= gamma * tb,
                            "case {case} {gemm} {k:?} at {i}: {a} vs {b}, bound {}",
                            gamma * tb
                        );
                        worst = worst.max(err / (gamma * tb).max(1e-300));
                    }
                    if gemm == GemmBackend::Blas {
                        match &first {
                            None => first = Some(y),
                            Some(f) => assert!(
                                f.iter().zip(&y).all(|(a, b)| a.to_bits() == b.to_bits()),
                                "case {case}: transforms' bits differ between kernels"
                            ),
                        }
                    }
                }
            }
        }
        // the bound is not vacuous: errors reach a visible fraction of it
        eprintln!("winograd: largest error / bound {worst:.3e}");
        assert!(worst > 1e-4, "largest error / bound {worst}");
    }
}
