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
//! call runs on the calling worker, block after block in a fixed order. The transforms
//! only add and subtract, so their bits are the same with or without AVX2; the GEMMs' are
//! OpenBLAS's (its kernel is chosen by `OPENBLAS_CORETYPE`, not by [`Simd`]).
//!
//! Speed (ResNet-20, batch 128, 1 thread, 2-core Zen 3): slower than the direct kernels —
//! forward 247 vs 213 CPU ms — the 16 small GEMMs (K = C = 16–64) and the transforms'
//! memory traffic cost more than the 2.25× fewer multiplications save; hence not the
//! default.
//!
//! [`Simd`]: crate::engine::Simd

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
                          // input: 4 parity planes of (th + 1) × (tw + 1), 8 column-parity rows of th × (tw + 1);
                          // output: 4 rows of one block's tiles
        let lw = tw + 1;
        let mut scratch = vec![0.0f32; (4 * (th + 1) * lw + 8 * th * lw).max(4 * rb * tw)];
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

/// See [`Winograd::input`]. The tile rows `ty0..ty1` of one image need padded rows
/// `2·ty0 .. 2·ty1 + 2`; they are copied once into four planes by row and column parity
/// (padded row `2(ty0 + t) + rp`, column `2k + cp`, zero outside the image), `(nt + 1) ×
/// (tw + 1)` each. Then `Bᵀ` down the columns is four flat loops per column parity over
/// all tile rows at once (rows `d₀..d₃` of tile row t are even t, odd t, even t+1, odd
/// t+1), and `·B` along the rows one loop per tile row (columns `d₀..d₃` are even k,
/// odd k, even k+1, odd k+1). `s`: scratch of `(4·(nt + 1) + 8·nt)·(tw + 1)` floats.
#[allow(clippy::needless_range_loop)]
#[inline(always)]
fn input_rows(g: &Geo, blk: &Block, plane: &[f32], v: &mut [f32], stride: usize, s: &mut [f32]) {
    let (tw, lw) = (g.tw, g.tw + 1);
    let mut r = blk.r0;
    while r < blk.r1 {
        // one image's tile rows ty0..ty1 within the block
        let (img, ty0) = (r / blk.th, r % blk.th);
        let nt = (blk.th - ty0).min(blk.r1 - r);
        let at = (r - blk.r0) * tw;
        let src = &plane[img * g.h * g.w..][..g.h * g.w];
        let pr = nt + 1;
        let (pl, z) = s.split_at_mut(4 * pr * lw);
        let z = &mut z[..8 * nt * lw];
        pl.fill(0.0);
        for rp in 0..2 {
            for t in 0..pr {
                let ih = (2 * (ty0 + t) + rp) as isize - g.p as isize;
                if ih < 0 || ih as usize >= g.h {
                    continue;
                }
                let row = &src[ih as usize * g.w..][..g.w];
                let (pe, po) = pl[rp * 2 * pr * lw..][..2 * pr * lw].split_at_mut(pr * lw);
                let (pe, po) = (&mut pe[t * lw..][..lw], &mut po[t * lw..][..lw]);
                for (j, &x) in row.iter().enumerate() {
                    let col = j + g.p;
                    if col & 1 == 0 {
                        pe[col >> 1] = x;
                    } else {
                        po[col >> 1] = x;
                    }
                }
            }
        }
        let n = nt * lw;
        for cp in 0..2 {
            let e = &pl[cp * pr * lw..][..pr * lw];
            let o = &pl[(2 + cp) * pr * lw..][..pr * lw];
            let (e0, e1, o0, o1) = (&e[..n], &e[lw..lw + n], &o[..n], &o[lw..lw + n]);
            let (z0, rest) = z[cp * 4 * n..][..4 * n].split_at_mut(n);
            let (z1, rest) = rest.split_at_mut(n);
            let (z2, z3) = rest.split_at_mut(n);
            for i in 0..n {
                z0[i] = e0[i] - e1[i];
                z1[i] = o0[i] + e1[i];
                z2[i] = e1[i] - o0[i];
                z3[i] = o0[i] - o1[i];
            }
        }
        for a in 0..4 {
            for t in 0..nt {
                let ze = &z[a * n + t * lw..][..lw];
                let zo = &z[(4 + a) * n + t * lw..][..lw];
                let (e0, e1, o0, o1) = (&ze[..tw], &ze[1..], &zo[..tw], &zo[1..]);
                let col = at + t * tw;
                let base = a * 4 * stride + col;
                let (v0, rest) = v[base..].split_at_mut(stride);
                let (v1, rest) = rest.split_at_mut(stride);
                let (v2, v3) = rest.split_at_mut(stride);
                let (v0, v1, v2, v3) = (&mut v0[..tw], &mut v1[..tw], &mut v2[..tw], &mut v3[..tw]);
                for k in 0..tw {
                    v0[k] = e0[k] - e1[k];
                    v1[k] = o0[k] + e1[k];
                    v2[k] = e1[k] - o0[k];
                    v3[k] = o0[k] - o1[k];
                }
            }
        }
        r += nt;
    }
}

/// See [`Winograd::output`]: `t = Aᵀ M` down the columns, then `Y = t A` along the rows,
/// one flat loop over the block's tiles into four rows `Y_ij` (`s`: `4·tiles` floats),
/// then scattered to the output rows.
#[allow(clippy::needless_range_loop)]
#[inline(always)]
fn output_rows(g: &Geo, blk: &Block, m: &[f32], stride: usize, dst: &mut [f32], s: &mut [f32]) {
    let tw = g.tw;
    let pb = (blk.r1 - blk.r0) * tw;
    let mr: [&[f32]; XI] = std::array::from_fn(|xi| &m[xi * stride..][..pb]);
    let (y00, rest) = s[..4 * pb].split_at_mut(pb);
    let (y01, rest) = rest.split_at_mut(pb);
    let (y10, y11) = rest.split_at_mut(pb);
    for j in 0..pb {
        let t0: [f32; 4] = std::array::from_fn(|b| mr[b][j] + mr[4 + b][j] + mr[8 + b][j]);
        let t1: [f32; 4] = std::array::from_fn(|b| mr[4 + b][j] - mr[8 + b][j] - mr[12 + b][j]);
        y00[j] = t0[0] + t0[1] + t0[2];
        y01[j] = t0[1] - t0[2] - t0[3];
        y10[j] = t1[0] + t1[1] + t1[2];
        y11[j] = t1[1] - t1[2] - t1[3];
    }
    let ys = [[&y00[..], &y01[..]], [&y10[..], &y11[..]]];
    let pairs = g.wo / 2;
    for r in blk.r0..blk.r1 {
        let (img, ty) = (r / blk.th, r % blk.th);
        let at = (r - blk.r0) * tw;
        for (i, [ya, yb]) in ys.iter().enumerate() {
            let oh = 2 * ty + i;
            if oh >= g.ho {
                break;
            }
            let (ya, yb) = (&ya[at..at + tw], &yb[at..at + tw]);
            let row = &mut dst[(img * g.ho + oh) * g.wo..][..g.wo];
            for (k, pair) in row.chunks_exact_mut(2).enumerate() {
                pair[0] = ya[k];
                pair[1] = yb[k];
            }
            if g.wo % 2 == 1 {
                row[g.wo - 1] = ya[pairs];
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
