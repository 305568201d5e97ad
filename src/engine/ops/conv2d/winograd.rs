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
//! additions per element), the 16 products (`winograd_simd.rs`: register tiles over the
//! transformed input as the input transform lays it out, no packing) and the output
//! transform (four additions)
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
//! call runs on the calling worker, block after block in a fixed order. Nor on the
//! instruction set ([`Simd`]) or the GEMM backend: the transforms only add and subtract,
//! and each product is one chain of fused multiply-adds over the channels in order, in
//! the zmm, ymm and scalar kernels alike.
//!
//! Speed (ResNet-20, batch 128, 1 thread, 2-core Xeon with AVX-512, `losscape bench
//! --conv winograd`): forward 56 ms against the direct kernels' 64 ms (128 ms with
//! OpenBLAS's GEMMs and the earlier transforms). Per layer of 128 images (C = O = 16 to
//! 64) the 16 products take 1.3–1.6 ms, under half the direct kernel's ~3 ms; the
//! transforms take most of the rest. The weight gradient (`winograd_grad.rs`) takes
//! 0.75–1.10 ms per layer of 32 images against the direct kernel's 1.17–1.35 ms (`losscape
//! bench --kernels`). Not the default: its error bound is ~20× the direct sums', and it is
//! opt-in where that trade is wanted.
//!
//! F(4×4, 3×3) (`winograd_f4.rs`, `--conv winograd4`) takes the forward, R-forward and dx
//! sums on images at most 16 wide, sixteen images to a vector: 36 multiplications per
//! 16 outputs and channel where F(2×2) needs 64, at an error bound ~5× F(2×2)'s; and
//! the weight gradients of those on images at most 32 wide by the dual of F(4×4)
//! (`winograd_grad4.rs`, tiles along the rows).
//!
//! [`Simd`]: crate::engine::Simd

use super::kernels::Kernel;
use std::mem::MaybeUninit;

#[path = "winograd_epilogue.rs"]
mod epilogue;
#[path = "winograd_f4.rs"]
mod f4;
#[path = "winograd_grad.rs"]
mod grad;
#[path = "winograd_grad4.rs"]
pub(super) mod grad4;
#[path = "winograd_scratch.rs"]
mod scratch;
#[path = "winograd_simd.rs"]
mod simd;
#[path = "winograd_transforms.rs"]
mod transforms;
pub(super) use epilogue::Epi;
pub(super) use f4::Winograd4;
pub(super) use grad::weight_grad;
use scratch::Aligned;
pub(super) use transforms::{deinterleave, interleave};

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
    /// The SIMD kernels of the products and transforms (same bits in every one).
    kernel: Kernel,
}

/// `G a` for one column `a` of three: `[a₀, ½((a₀ + a₁) + a₂), ½((a₀ − a₁) + a₂), a₂]`,
/// the rows of `G` written out. Scaling by ½ is exact, so these are the bits of the
/// products with `G`'s entries summed in order, without the products by 0 and 1.
#[inline(always)]
fn g3(a0: f64, a1: f64, a2: f64) -> [f64; 4] {
    [a0, 0.5 * ((a0 + a1) + a2), 0.5 * ((a0 - a1) + a2), a2]
}

/// `G g Gᵀ` of one 3×3 filter in f64, one filter at a time: the tests' reference for
/// [`transform_filters`].
#[cfg(test)]
fn filter_transform(g: &[f32]) -> [f64; XI] {
    let g: [f64; 9] = std::array::from_fn(|i| g[i] as f64);
    let cols: [[f64; 4]; 3] = std::array::from_fn(|j| g3(g[j], g[3 + j], g[6 + j])); // G g
    let mut u = [0.0f64; XI];
    for a in 0..4 {
        u[a * 4..][..4].copy_from_slice(&g3(cols[0][a], cols[1][a], cols[2][a]));
    }
    u
}

/// `G g Gᵀ` in f64 of `L` 3×3 filters at once, lane by lane, in a layout the loops
/// vectorize: `g[k][l]` is tap k of filter l; `gr` is `G a` for one column `a` of three
/// (`R` rows: F(2×2)'s [`g3`], F(4×4)'s `g6`), `X = R²`.
#[inline(always)]
fn filter_lanes<const L: usize, const R: usize, const X: usize>(
    g: &[[f64; L]; 9],
    gr: impl Fn(f64, f64, f64) -> [f64; R] + Copy,
) -> [[f64; L]; X] {
    let grl = |a0: &[f64; L], a1: &[f64; L], a2: &[f64; L]| {
        let mut r = [[0.0f64; L]; R];
        for l in 0..L {
            let v = gr(a0[l], a1[l], a2[l]);
            for (ra, va) in r.iter_mut().zip(v) {
                ra[l] = va;
            }
        }
        r
    };
    let mut cols = [[[0.0f64; L]; R]; 3]; // G g (no `array::from_fn`: it runs out of line)
    for (j, col) in cols.iter_mut().enumerate() {
        *col = grl(&g[j], &g[3 + j], &g[6 + j]);
    }
    let mut u = [[0.0f64; L]; X];
    for a in 0..R {
        u[a * R..][..R].copy_from_slice(&grl(&cols[0][a], &cols[1][a], &cols[2][a]));
    }
    u
}

/// The filter transforms ([`filter_lanes`]) of input channels `from..c` of all `o`
/// output channels, rounded once to f32 into `u [X, O, C]`: eight input channels of one
/// output channel at a time, each ξ's eight values stored together.
#[inline(always)]
fn transform_filters<const R: usize, const X: usize>(
    (o, c, from): (usize, usize, usize),
    wts: &[f32],
    u: &mut [MaybeUninit<f32>],
    gr: impl Fn(f64, f64, f64) -> [f64; R] + Copy,
) {
    const L: usize = 8;
    for oc in 0..o {
        for ci0 in (from..c).step_by(L) {
            let n = (c - ci0).min(L);
            let mut g = [[0.0f64; L]; 9];
            for l in 0..n {
                let f = &wts[(oc * c + ci0 + l) * 9..][..9];
                for (gk, &v) in g.iter_mut().zip(f) {
                    gk[l] = v as f64;
                }
            }
            for (xi, t) in filter_lanes::<L, R, X>(&g, gr).iter().enumerate() {
                let row = &mut u[(xi * o + oc) * c + ci0..][..n];
                for (d, &v) in row.iter_mut().zip(t) {
                    d.write(v as f32);
                }
            }
        }
    }
}

/// The filter transforms of all `o·c` filters ([`transform_filters`]) as `u [X, O, C]`:
/// whole groups of sixteen input channels in explicit AVX-512 for the zmm kernel (from
/// sixteen channels on; 0.98–0.99 of ResNet-20's forward and gradient at 2 threads, paired,
/// against eight in AVX2), else of eight in explicit AVX2 where the kernel implies it (the
/// same f64 operations, so the same bits), the rest (all of it without AVX2) in the
/// generic loop; `u` is written once, never zeroed first.
fn filters<const R: usize, const X: usize>(
    (o, c): (usize, usize),
    wts: &[f32],
    kernel: Kernel,
    gr: impl Fn(f64, f64, f64) -> [f64; R] + Copy,
) -> Vec<f32> {
    let len = X * o * c;
    let mut u: Vec<f32> = Vec::with_capacity(len);
    let spare = &mut u.spare_capacity_mut()[..len];
    #[allow(unused_mut)]
    let mut vector = 0;
    #[cfg(target_arch = "x86_64")]
    if kernel == Kernel::Zmm && c >= 16 {
        // SAFETY: Kernel::Zmm implies AVX-512F and DQ (detected at its choice); the sizes
        // as below.
        vector = unsafe { transforms::filters_zmm::<R, X>(o, c, wts, spare) };
    } else if kernel != Kernel::Scalar {
        // SAFETY: the vector kernels imply AVX2 (detected at their choice); `wts` holds
        // `o·c·9` floats (asserted by the callers) and `spare` `X·o·c`.
        vector = unsafe { transforms::filters_avx2::<R, X>(o, c, wts, spare) };
    }
    crate::engine::ops::vmath::wide!(transform_filters::<R, X>((o, c, vector), wts, spare, gr));
    // SAFETY: for every output channel and ξ, `filters_zmm` or `filters_avx2` wrote input
    // channels `0..vector` and `transform_filters` `vector..c`: all `len` values.
    unsafe { u.set_len(len) };
    u
}

impl Winograd {
    /// Filters `[O, C, 3, 3]` row-major.
    pub(super) fn new(o: usize, c: usize, wts: &[f32], kernel: Kernel) -> Self {
        assert_eq!(wts.len(), o * c * 9, "winograd: weight size");
        let u = filters::<4, XI>((o, c), wts, kernel, g3);
        Winograd { o, c, u, kernel }
    }

    /// `y [O, N·Ho·Wo] = W ⋆ x` with zero padding `p` (`Ho = H + 2p − 2`), the input the
    /// channels of the sources `xs` (each `[Cᵢ, N, H, W]`, ΣCᵢ = C) stacked in order;
    /// `after(y, image)` is called once each image is complete, in order. With `epi`, the
    /// outputs are stored with the epilogue applied: by the zmm output transform in
    /// registers where it applies (rows of even width ≤ 32), else on each block's outputs
    /// while in cache.
    pub(super) fn run(
        &self,
        xs: &[&[f32]],
        [n, h, w]: [usize; 3],
        p: usize,
        epi: Option<Epi>,
        y: &mut [MaybeUninit<f32>],
        mut after: impl FnMut(&mut [MaybeUninit<f32>], usize),
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
        assert!(
            epi.is_none_or(
                |e| e.channels.len() >= o && e.residual.is_none_or(|r| r.len() >= o * cols)
            ),
            "winograd: epilogue"
        );
        if cols == 0 {
            return;
        }
        let (th, tw) = (ho.div_ceil(2), wo.div_ceil(2));
        // Blocks of whole tile rows (image, ty), about BLOCK_FLOATS floats of V and M.
        let rows = n * th;
        let rb = (BLOCK_FLOATS / (XI * (c + o) * tw).max(1)).clamp(1, rows);
        // rows of V and M padded to whole vectors
        let ld_of = |pb: usize| pb.next_multiple_of(16);
        // V and M start on a cache line, so that each vector of a row is one line; ξ's
        // matrices one line further apart than their size, so that the 16 written together
        // do not fall into one set of the L1 cache (their sizes are multiples of 4 KiB)
        let (vs_of, ms_of) = (|ld: usize| c * ld + 16, |ld: usize| o * ld + 16);
        let (mut v_buf, mut m_buf) = (
            Aligned::new(XI * vs_of(ld_of(rb * tw))),
            Aligned::new(XI * ms_of(ld_of(rb * tw))),
        );
        let (v, m) = (v_buf.get(), m_buf.get());
        let geo = Geo {
            kernel: self.kernel,
            h,
            w,
            ho,
            wo,
            p,
            tw,
        };
        // images passed to `after`
        let mut done = 0;
        // input: 8 planes of (th + 1) × tw and a padded line; output: 4 rows of one block's
        // tiles
        let mut scratch = vec![0.0f32; (8 * (th + 1) * tw + 2 * tw + 2).max(4 * rb * tw)];
        for blk in Block::split(rows, rb, th) {
            let pb = blk.tiles(tw);
            let ld = ld_of(pb);
            let (vs, ms) = (vs_of(ld), ms_of(ld));
            let v = &mut v[..XI * vs];
            let m = &mut m[..XI * ms];
            for (ci, plane) in planes.iter().enumerate() {
                input(&geo, &blk, plane, &mut v[ci * ld..], vs, &mut scratch);
            }
            simd::products(
                self.kernel,
                XI,
                (o, c),
                (&self.u, o * c, c),
                (v, vs),
                (m, ms),
                (pb, ld),
                false,
            );
            for oc in 0..o {
                let dst = &mut y[oc * cols..][..cols];
                let Some(e) = epi else {
                    self.output(&geo, &blk, &m[oc * ld..], ms, dst, &mut scratch);
                    continue;
                };
                let ce = e.channel(oc, cols);
                #[cfg(target_arch = "x86_64")]
                if geo.at_tiles() {
                    // SAFETY: the zmm kernel was detected.
                    unsafe {
                        let rows = (blk.r0, blk.r1, th);
                        transforms::at_tiles_zmm(&m[oc * ld..], ms, rows, (tw, ho), dst, Some(ce));
                    }
                    continue;
                }
                // else on the block's outputs of the channel while in cache: tile rows
                // r0..r1 are the output rows from (image, 2·ty) of r0 on, contiguous
                self.output(&geo, &blk, &m[oc * ld..], ms, dst, &mut scratch);
                let row_of = |r: usize| (r / th) * ho + 2 * (r % th);
                let last = blk.r1 - 1;
                let (from, to) = (
                    row_of(blk.r0) * wo,
                    (row_of(last) + 2).min((last / th + 1) * ho) * wo,
                );
                // SAFETY: `output` wrote the block's outputs, from..to; f32 and
                // MaybeUninit<f32> share their layout.
                let ys =
                    unsafe { &mut *(&mut dst[from..to] as *mut [MaybeUninit<f32>] as *mut [f32]) };
                ce.apply(self.kernel, ys, from);
            }
            // images whose tile rows are all done
            while done < blk.r1 / th {
                after(y, done);
                done += 1;
            }
        }
    }

    /// The 2×2 outputs of the block's tiles of one output channel from
    /// `m[ξ·stride + tile]` into the channel's output `dst [N, Ho, Wo]`.
    fn output(
        &self,
        g: &Geo,
        blk: &Block,
        m: &[f32],
        stride: usize,
        dst: &mut [MaybeUninit<f32>],
        s: &mut [f32],
    ) {
        match self.kernel {
            // SAFETY: AVX-512F is present (the kernel was detected).
            #[cfg(target_arch = "x86_64")]
            Kernel::Zmm => unsafe { output_zmm(g, blk, m, dst, stride, s) },
            // SAFETY: AVX2 is present.
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2 | Kernel::Avx512 => unsafe { output_avx2(g, blk, m, dst, stride, s) },
            _ => output_rows(g, blk, m, dst, stride, s),
        }
    }
}

/// `V_ξ` of the block's tiles of one input channel `plane [N, H, W]`, written to
/// `v[ξ·stride + tile]`.
fn input(g: &Geo, blk: &Block, plane: &[f32], v: &mut [f32], stride: usize, s: &mut [f32]) {
    match g.kernel {
        // SAFETY: AVX-512F is present (the kernel was detected).
        #[cfg(target_arch = "x86_64")]
        Kernel::Zmm => unsafe { input_zmm(g, blk, plane, v, stride, s) },
        // SAFETY: AVX2 is present.
        #[cfg(target_arch = "x86_64")]
        Kernel::Avx2 | Kernel::Avx512 => unsafe { input_avx2(g, blk, plane, v, stride, s) },
        _ => input_rows(g, blk, plane, v, stride, s),
    }
}

/// The geometry of one call: input `h × w`, output `ho × wo`, padding, tiles per row;
/// the kernel of the (de)interleaving.
struct Geo {
    kernel: Kernel,
    h: usize,
    w: usize,
    ho: usize,
    wo: usize,
    p: usize,
    tw: usize,
}

impl Geo {
    /// Whether the output transform takes the zmm register path
    /// (`transforms::at_tiles_zmm`): output rows of even width ≤ 32.
    fn at_tiles(&self) -> bool {
        self.kernel == Kernel::Zmm && self.wo == 2 * self.tw && self.tw <= 16
    }
}

/// One block: tile rows `r0..r1` (row r = image r / th, tile row r % th).
struct Block {
    r0: usize,
    r1: usize,
    th: usize,
}

impl Block {
    /// Tile rows `0..rows` in blocks of `rb` (the last one shorter), in order.
    fn split(rows: usize, rb: usize, th: usize) -> impl Iterator<Item = Block> {
        (0..rows).step_by(rb).map(move |r0| Block {
            r0,
            r1: (r0 + rb).min(rows),
            th,
        })
    }

    /// Tiles in the block, `tw` per tile row.
    fn tiles(&self, tw: usize) -> usize {
        (self.r1 - self.r0) * tw
    }
}

/// `$name`: `$inner` compiled for `$features` (the transforms' loops, the same bits).
macro_rules! with_features {
    ($name:ident, $features:literal, $inner:ident, $dst:ty) => {
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = $features)]
        unsafe fn $name(
            g: &Geo,
            blk: &Block,
            src: &[f32],
            dst: &mut [$dst],
            stride: usize,
            s: &mut [f32],
        ) {
            $inner(g, blk, src, dst, stride, s)
        }
    };
}

with_features!(input_avx2, "avx2", input_rows, f32);
with_features!(input_zmm, "avx512f", input_rows, f32);
with_features!(output_avx2, "avx2", output_rows, MaybeUninit<f32>);
with_features!(output_zmm, "avx512f", output_rows, MaybeUninit<f32>);

/// See [`Winograd::input`]: [`input_pad1`] where it applies, else [`input_lines`] (the
/// same bits).
#[inline(always)]
fn input_rows(g: &Geo, blk: &Block, plane: &[f32], v: &mut [f32], stride: usize, s: &mut [f32]) {
    if g.p == 1 && g.w == 2 * g.tw {
        input_pad1(g, blk, plane, v, stride, s)
    } else {
        input_lines(g, blk, plane, v, stride, s)
    }
}

/// The input transform for any padding and width. The tile rows `ty0..ty1` of one image
/// need padded rows `2·ty0 .. 2·ty1 + 2` (zero outside the image). Each is split once,
/// through a padded line, into four planes of
/// `tw` columns, `q = 0..3`: column `2k + q` for tile k. With the planes of even and odd
/// rows apart, tile row t reads rows t and t + 1 of them, so `Bᵀ` down the columns and
/// `·B` along the rows are one flat loop per row of `Bᵀ` over all the tile rows at once,
/// writing `V` directly. `s`: scratch of `8·(nt + 1)·tw + 2·tw + 2` floats.
#[inline(always)]
fn input_lines(g: &Geo, blk: &Block, plane: &[f32], v: &mut [f32], stride: usize, s: &mut [f32]) {
    let (tw, kernel) = (g.tw, g.kernel);
    let mut r = blk.r0;
    while r < blk.r1 {
        // one image's tile rows ty0..ty1 within the block
        let (img, ty0) = (r / blk.th, r % blk.th);
        let nt = (blk.th - ty0).min(blk.r1 - r);
        let at = (r - blk.r0) * tw;
        let src = &plane[img * g.h * g.w..][..g.h * g.w];
        let pr = nt + 1;
        let (pl, line) = s.split_at_mut(8 * pr * tw);
        let line = &mut line[..2 * tw + 2];
        // the image's columns within the padded line
        let cols = g.w.min(line.len() - g.p);
        for rp in 0..2 {
            for t in 0..pr {
                let ih = (2 * (ty0 + t) + rp) as isize - g.p as isize;
                let at_q = |q: usize| ((rp * 4 + q) * pr + t) * tw;
                if ih < 0 || ih as usize >= g.h {
                    for q in 0..4 {
                        pl[at_q(q)..][..tw].fill(0.0);
                    }
                    continue;
                }
                line[..g.p].fill(0.0);
                line[g.p..g.p + cols].copy_from_slice(&src[ih as usize * g.w..][..cols]);
                line[g.p + cols..].fill(0.0);
                for q in 0..2 {
                    let lo = &line[2 * q..];
                    let (p0, p1) = pl.split_at_mut(at_q(2 * q + 1));
                    let (d0, d1) = (&mut p0[at_q(2 * q)..][..tw], &mut p1[..tw]);
                    transforms::deinterleave(g.kernel, lo, d0, d1);
                }
            }
        }
        let n = nt * tw;
        // row a of Bᵀ: z = x ± y from the rows (parity, offset) of each plane
        let rows = |rp: usize, dt: usize| -> [&[f32]; 4] {
            let at = |q: usize| &pl[((rp * 4 + q) * pr + dt) * tw..][..n];
            [at(0), at(1), at(2), at(3)]
        };
        for a in 0..4 {
            let base = a * 4 * stride + at;
            let (v0, rest) = v[base..].split_at_mut(stride);
            let (v1, rest) = rest.split_at_mut(stride);
            let (v2, v3) = rest.split_at_mut(stride);
            let out = [&mut v0[..n], &mut v1[..n], &mut v2[..n], &mut v3[..n]];
            match a {
                0 => transforms::bt_row(kernel, false, rows(0, 0), rows(0, 1), out),
                1 => transforms::bt_row(kernel, true, rows(1, 0), rows(0, 1), out),
                2 => transforms::bt_row(kernel, false, rows(0, 1), rows(1, 0), out),
                _ => transforms::bt_row(kernel, false, rows(1, 0), rows(1, 1), out),
            }
        }
        r += nt;
    }
}

/// [`input_rows`] for padding 1 and even widths (every 3×3 stride-1 layer of
/// ResNet-cifar), with the same arithmetic and so the same bits. A padded row `[0, x, 0]`
/// is `2·tw + 2` wide, so its planes q = 1, 2 (columns 2k + 1, 2k + 2) are the source row's
/// even and odd columns, and planes 0 and 3 are those shifted by one (a zero where
/// they reach the padding). The split is one flat pass over all the block's rows of the
/// image, not one per row.
#[inline(always)]
fn input_pad1(g: &Geo, blk: &Block, plane: &[f32], v: &mut [f32], stride: usize, s: &mut [f32]) {
    let (tw, w) = (g.tw, g.w);
    let mut r = blk.r0;
    while r < blk.r1 {
        let (img, ty0) = (r / blk.th, r % blk.th);
        let nt = (blk.th - ty0).min(blk.r1 - r);
        let at = (r - blk.r0) * tw;
        let src = &plane[img * g.h * w..][..g.h * w];
        #[cfg(target_arch = "x86_64")]
        if g.kernel == Kernel::Zmm && tw <= 16 {
            // SAFETY: the zmm kernel was detected.
            unsafe { transforms::pad1_zmm(src, (g.h, tw), (ty0, nt), &mut v[at..], stride) };
            r += nt;
            continue;
        }
        #[cfg(target_arch = "x86_64")]
        if matches!(g.kernel, Kernel::Avx2 | Kernel::Avx512) {
            // SAFETY: AVX2 was detected.
            unsafe { transforms::pad1_avx2(src, (g.h, tw), (ty0, nt), &mut v[at..], stride) };
            r += nt;
            continue;
        }
        // padded rows first .. first + rows; padded row R is source row R − 1
        let (first, rows) = (2 * ty0, 2 * nt + 2);
        let n = rows * tw;
        let (pa, rest) = s.split_at_mut(n);
        let (pb, rest) = rest.split_at_mut(n);
        let (pc, rest) = rest.split_at_mut(n);
        let pd = &mut rest[..n];
        let (lo, hi) = (first.max(1), (first + rows).min(g.h + 1));
        let (lo, hi) = ((lo - first) * tw, (hi.max(lo) - first) * tw);
        for q in [&mut *pb, &mut *pc] {
            q[..lo].fill(0.0);
            q[hi..].fill(0.0);
        }
        let from = (first + lo / tw).saturating_sub(1) * w;
        transforms::deinterleave(g.kernel, &src[from..], &mut pb[lo..hi], &mut pc[lo..hi]);
        // column 2k is column 2k + 2 of the tile before; 2k + 3 that of the tile after
        pa[1..].copy_from_slice(&pc[..n - 1]);
        pd[..n - 1].copy_from_slice(&pb[1..]);
        for row in 0..rows {
            pa[row * tw] = 0.0;
            pd[row * tw + tw - 1] = 0.0;
        }
        let planes = [&*pa, &*pb, &*pc, &*pd];
        let v = &mut v[at..];
        transforms::bt_tiles(g.kernel, planes, (nt, tw), v, stride);
        r += nt;
    }
}

/// See [`Winograd::output`]: `t = Aᵀ M` down the columns, then `Y = t A` along the rows,
/// one flat loop over the block's tiles into four rows `Y_ij` (`s`: `4·tiles` floats),
/// then scattered to the output rows.
#[allow(clippy::needless_range_loop)]
#[inline(always)]
fn output_rows(
    g: &Geo,
    blk: &Block,
    m: &[f32],
    dst: &mut [MaybeUninit<f32>],
    stride: usize,
    s: &mut [f32],
) {
    let tw = g.tw;
    #[cfg(target_arch = "x86_64")]
    if g.at_tiles() {
        // SAFETY: the zmm kernel was detected.
        unsafe {
            transforms::at_tiles_zmm(m, stride, (blk.r0, blk.r1, blk.th), (tw, g.ho), dst, None)
        };
        return;
    }
    let pb = (blk.r1 - blk.r0) * tw;
    let (y00, rest) = s[..4 * pb].split_at_mut(pb);
    let (y01, rest) = rest.split_at_mut(pb);
    let (y10, y11) = rest.split_at_mut(pb);
    // (a loop, not `array::from_fn`, which runs out of line once per call)
    let mut ms: [&[f32]; XI] = [&[]; XI];
    for (xi, mx) in ms.iter_mut().enumerate() {
        *mx = &m[xi * stride..][..pb];
    }
    transforms::at_rows(g.kernel, ms, [&mut *y00, &mut *y01, &mut *y10, &mut *y11]);
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
            transforms::interleave(g.kernel, &ya[..pairs], &yb[..pairs], row);
            if g.wo % 2 == 1 {
                row[g.wo - 1].write(ya[pairs]);
            }
        }
    }
}

#[cfg(test)]
#[path = "winograd_tests.rs"]
mod tests;
