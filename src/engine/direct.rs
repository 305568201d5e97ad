//! Direct convolution for `f32`, stride 1, on AVX2 + FMA: the eval-forward fast path.
//!
//! im2col + GEMM copies every input element k² times into the unfolded block and then
//! once more into the GEMM's packed panel; on ResNet shapes (C = 16–64, 3×3) those copies
//! cost about a third of the forward pass. Here the input of one image is copied once,
//! into a zero-padded buffer `[C, H + 2p, W + 2p]`, and the micro-kernel reads its
//! operands straight from it: output positions (oh, ow..ow+8) of one row form a vector,
//! and for kernel tap (c, ki, kj) that vector's operand is the 8 contiguous floats at
//! `xpad[c, oh + ki, ow + kj ..]` — one unaligned load at a fixed offset from the
//! vector's base, the same offset for every vector (an "implicit GEMM" with the
//! `[C·k·k, ·]` operand never formed; cf. Chellapilla et al. 2006 for the explicit one,
//! Georganas et al. 2018, "Anatomy of high-performance deep learning convolutions on
//! SIMD architectures", for direct kernels).
//!
//! Micro-tile: 8 output channels × 3 vectors = 24 accumulators in AVX-512's 32 registers
//! (4 × 2 with plain AVX2's 16), summed over the taps in order (c, ki, kj). On AVX-512 a
//! vector is 16 positions (a zmm register) when rows are a multiple of 16 wide, or two
//! rows of 8 (two 8-float loads joined) when rows are 8 wide; any other width uses 8-wide
//! ymm vectors. Intel cores with two 512-bit FMA units run the zmm tile at twice the ymm
//! rate; AMD Zen 4 runs both at the same rate. Weights are packed per tile as `[C·k·k, mr]` so each tap broadcasts `mr`
//! consecutive floats. Results equal the
//! GEMM path's to f32 rounding (a different summation order), and are the same bits on
//! every call: nothing depends on threads or timing.

use std::sync::OnceLock;

/// Lanes of one 256-bit vector.
const LANES: usize = 8;

/// Lanes of the widest vector (zmm); the padded buffer has this many floats of slack.
const WIDE: usize = 16;

/// The micro-kernel in use: its tile is `mr` output channels × `nv` vectors.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kernel {
    /// AVX-512F/DQ: 8 × 3 accumulators of 16 lanes (only for rows 8 or 16·j wide).
    Zmm,
    /// AVX-512VL: 32 vector registers, 8 × 3 accumulators of 8 lanes (256-bit).
    Avx512,
    /// AVX2 + FMA: 16 registers, 4 × 2 accumulators (a larger tile spills).
    Avx2,
    /// Portable scalar code (only where neither exists; then the path is off anyway).
    Scalar,
}

impl Kernel {
    fn detect() -> Kernel {
        static K: OnceLock<Kernel> = OnceLock::new();
        *K.get_or_init(|| {
            #[cfg(target_arch = "x86_64")]
            {
                let avx2 = is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma");
                if avx2
                    && is_x86_feature_detected!("avx512f")
                    && is_x86_feature_detected!("avx512vl")
                    && is_x86_feature_detected!("avx512dq")
                {
                    return Kernel::Zmm;
                }
                if avx2 {
                    return Kernel::Avx2;
                }
            }
            Kernel::Scalar
        })
    }

    /// Every kernel this CPU can run (the tests check each).
    #[cfg(test)]
    fn available() -> Vec<Kernel> {
        let mut all = vec![Kernel::Scalar];
        #[cfg(target_arch = "x86_64")]
        {
            if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
                all.push(Kernel::Avx2);
            }
            if Kernel::detect() == Kernel::Zmm {
                all.push(Kernel::Avx512);
                all.push(Kernel::Zmm);
            }
        }
        all
    }

    /// (output channels, vectors) per tile.
    fn tile(self) -> (usize, usize) {
        match self {
            Kernel::Zmm | Kernel::Avx512 => (8, 3),
            Kernel::Avx2 | Kernel::Scalar => (4, 2),
        }
    }

    /// The kernel for output rows `wo` wide: zmm only where its vectors fit the rows.
    fn for_width(self, wo: usize) -> Kernel {
        match self {
            Kernel::Zmm if !wo.is_multiple_of(WIDE) && wo != LANES => Kernel::Avx512,
            other => other,
        }
    }
}

/// One vector of output positions: lanes `0..8` read the padded input from `lo`, lanes
/// `8..16` (zmm only) from `hi`; the outputs are `lanes` consecutive floats from `ob`.
#[derive(Clone, Copy, Debug)]
struct Vector {
    lo: usize,
    hi: usize,
    ob: usize,
    lanes: usize,
}

/// Whether the CPU has AVX2 and FMA and the path is not switched off with
/// `LOSSCAPE_CONV=im2col` (for comparisons); checked once.
pub fn enabled() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| {
        let off = std::env::var("LOSSCAPE_CONV").is_ok_and(|v| v.eq_ignore_ascii_case("im2col"));
        !off && Kernel::detect() != Kernel::Scalar
    })
}

/// Whether a convolution with output rows `wo` wide takes the direct path: rows of at
/// least one full vector (narrower rows would leave most lanes idle).
pub fn applies(wo: usize) -> bool {
    wo >= LANES && enabled()
}

/// The geometry of one convolution: `o` output and `c` input channels, a `k×k` kernel,
/// stride `s`, zero padding `p`, input images `h×w`.
#[derive(Clone, Copy, Debug)]
pub struct Shape {
    pub o: usize,
    pub c: usize,
    pub k: usize,
    pub s: usize,
    pub p: usize,
    pub h: usize,
    pub w: usize,
}

impl Shape {
    /// Output height and width, `(h + 2p − k)/s + 1` (0 where the kernel does not fit).
    pub fn out(&self) -> (usize, usize) {
        let o = |x: usize| {
            (x + 2 * self.p)
                .checked_sub(self.k)
                .map_or(0, |d| d / self.s + 1)
        };
        (o(self.h), o(self.w))
    }
}

/// One prepared convolution: packed weights, tap offsets, the vectors of an image, and
/// the padded-input scratch. Build once per call, then run image by image.
///
/// Stride `s` > 1 is the same kernel on a polyphase input: the padded image is split into
/// s² planes `x_ab[i, j] = xpad[s·i + a, s·j + b]`, and tap (ki, kj) of output (oh, ow)
/// reads plane (ki mod s, kj mod s) at (oh + ki div s, ow + kj div s) — again a fixed
/// offset from the vector's base, so contiguous loads serve every stride.
pub struct DirectConv {
    sh: Shape,
    /// Rows and columns of one phase plane: ⌈(h + 2p)/s⌉ × ⌈(w + 2p)/s⌉.
    hq: usize,
    wq: usize,
    /// Output positions per image and channel, Ho·Wo.
    hw_out: usize,
    /// Weights packed per tile of `mr` channels: `[tiles, C·k·k, mr]`, zero rows past O.
    packed: Vec<f32>,
    /// Offset of tap (c, ki, kj) in the padded buffer.
    offs: Vec<usize>,
    /// The largest tap offset plus 8: a vector reads within `[lo, lo + reach)` and
    /// `[hi, hi + reach)` (`hi = lo + 8` unless split).
    reach: usize,
    /// The vectors covering one output image, in order.
    vecs: Vec<Vector>,
    /// Whether zmm vectors join two rows of 8 (`hi` ≠ `lo + 8`).
    split: bool,
    xpad: Vec<f32>,
    kernel: Kernel,
}

impl DirectConv {
    /// `wts` is `[O, C, k, k]` row-major; the input is `[C, N, H, W]`.
    pub fn new(sh: Shape, wts: &[f32]) -> Self {
        Self::with_kernel(Kernel::detect(), sh, wts)
    }

    fn with_kernel(kernel: Kernel, sh: Shape, wts: &[f32]) -> Self {
        let Shape {
            o,
            c,
            k,
            s,
            p,
            h,
            w,
        } = sh;
        assert!(s >= 1, "direct conv: stride");
        let (ho, wo) = sh.out();
        let (hq, wq) = ((h + 2 * p).div_ceil(s), (w + 2 * p).div_ceil(s));
        let kernel = kernel.for_width(wo);
        let kk = c * k * k;
        assert_eq!(wts.len(), o * kk, "direct conv: weight size");
        let (mr, _) = kernel.tile();
        let tiles = o.div_ceil(mr);
        let mut packed = vec![0.0f32; tiles * kk * mr];
        for oc in 0..o {
            let (t, m) = (oc / mr, oc % mr);
            for (q, &v) in wts[oc * kk..(oc + 1) * kk].iter().enumerate() {
                packed[(t * kk + q) * mr + m] = v;
            }
        }
        let mut offs = Vec::with_capacity(kk);
        for ci in 0..c {
            for ki in 0..k {
                for kj in 0..k {
                    let plane = (ci * s + ki % s) * s + kj % s;
                    offs.push(plane * hq * wq + (ki / s) * wq + kj / s);
                }
            }
        }
        let reach = offs.iter().copied().max().unwrap_or(0) + LANES;
        let split = kernel == Kernel::Zmm && wo == LANES;
        let mut vecs = Vec::with_capacity(ho * wo.div_ceil(LANES));
        if split {
            // Rows oh and oh + 1 (contiguous in the output) form one vector.
            for oh in (0..ho).step_by(2) {
                let two = oh + 1 < ho;
                let lo = oh * wq;
                let hi = if two { lo + wq } else { lo };
                vecs.push(Vector {
                    lo,
                    hi,
                    ob: oh * wo,
                    lanes: if two { WIDE } else { LANES },
                });
            }
        } else {
            let lanes = if kernel == Kernel::Zmm { WIDE } else { LANES };
            for oh in 0..ho {
                for ow in (0..wo).step_by(lanes) {
                    let lo = oh * wq + ow;
                    let ob = oh * wo + ow;
                    vecs.push(Vector {
                        lo,
                        hi: lo + LANES,
                        ob,
                        lanes: (wo - ow).min(lanes),
                    });
                }
            }
        }
        // A partial last vector reads up to WIDE − 1 floats past the padded image.
        let xpad = vec![0.0f32; c * s * s * hq * wq + WIDE];
        DirectConv {
            sh,
            hq,
            wq,
            hw_out: ho * wo,
            packed,
            offs,
            reach,
            vecs,
            split,
            xpad,
            kernel,
        }
    }

    /// Writes image `img` of y `[O, N·Ho·Wo]` from image `img` of the input: the channels
    /// of the sources `xs` (each `[Cᵢ, N, H, W]`, ΣCᵢ = C) stacked in order, so that
    /// `W ⋆ x + V ⋆ x'` is one call with weights `[W | V]` and sources `[x, x']`.
    pub fn image(&mut self, xs: &[&[f32]], n: usize, img: usize, y: &mut [f32]) {
        let Shape {
            o, c, s, p, h, w, ..
        } = self.sh;
        let (hq, wq) = (self.hq, self.wq);
        let per = (n * h * w).max(1);
        let cs: usize = xs.iter().map(|x| x.len() / per).sum();
        assert!(
            cs == c && img < n && xs.iter().all(|x| x.len() % per == 0),
            "direct conv: input size"
        );
        let cols = n * self.hw_out;
        assert!(y.len() >= o * cols, "direct conv: output size");
        // The border stays zero from construction; only the interior is rewritten.
        let mut ci = 0;
        for x in xs {
            for plane in x.chunks_exact(per) {
                let src = &plane[img * h * w..][..h * w];
                let dst = &mut self.xpad[ci * s * s * hq * wq..][..s * s * hq * wq];
                for (r, row) in src.chunks_exact(w).enumerate() {
                    let (a, i) = ((r + p) % s, (r + p) / s);
                    if s == 1 {
                        dst[i * wq + p..][..w].copy_from_slice(row);
                        continue;
                    }
                    for b in 0..s {
                        // Columns col ≡ b − p (mod s) land in plane (a, b) at (col + p)/s.
                        let first = (b + s - p % s) % s;
                        let line = &mut dst[((a * s + b) * hq + i) * wq..][..wq];
                        for (col, &v) in row.iter().enumerate().skip(first).step_by(s) {
                            line[(col + p) / s] = v;
                        }
                    }
                }
                ci += 1;
            }
        }
        let kk = self.offs.len();
        let out0 = img * self.hw_out;
        let (mr, nv) = self.kernel.tile();
        for v in &self.vecs {
            assert!(v.lo.max(v.hi) + self.reach <= self.xpad.len());
            assert!(v.ob + v.lanes <= self.hw_out);
        }
        for group in self.vecs.chunks(nv) {
            for t in 0..o.div_ceil(mr) {
                let rows = (o - t * mr).min(mr);
                let wt = &self.packed[t * kk * mr..(t + 1) * kk * mr];
                let yt = &mut y[t * mr * cols + out0..];
                // SAFETY (for the SIMD kernels, which exist only where detected): reads lie
                // in `xpad` (reach asserted above) and `wt` (kk·mr floats); writes go to
                // rows < `rows` of `yt` at `ob..ob + lanes`, inside y (asserted above).
                match (self.kernel, group.len()) {
                    #[cfg(target_arch = "x86_64")]
                    (Kernel::Zmm, n) => unsafe {
                        match (n, self.split) {
                            (3, false) => avx::zmm::<8, 3, false>(self, group, wt, yt, cols, rows),
                            (3, true) => avx::zmm::<8, 3, true>(self, group, wt, yt, cols, rows),
                            (2, false) => avx::zmm::<8, 2, false>(self, group, wt, yt, cols, rows),
                            (2, true) => avx::zmm::<8, 2, true>(self, group, wt, yt, cols, rows),
                            (_, false) => avx::zmm::<8, 1, false>(self, group, wt, yt, cols, rows),
                            (_, true) => avx::zmm::<8, 1, true>(self, group, wt, yt, cols, rows),
                        }
                    },
                    #[cfg(target_arch = "x86_64")]
                    (Kernel::Avx512, 3) => unsafe {
                        avx::tile512::<8, 3, false>(self, group, wt, yt, cols, rows)
                    },
                    #[cfg(target_arch = "x86_64")]
                    (Kernel::Avx512, 2) => unsafe {
                        avx::tile512::<8, 2, false>(self, group, wt, yt, cols, rows)
                    },
                    #[cfg(target_arch = "x86_64")]
                    (Kernel::Avx512, _) => unsafe {
                        avx::tile512::<8, 1, false>(self, group, wt, yt, cols, rows)
                    },
                    #[cfg(target_arch = "x86_64")]
                    (Kernel::Avx2, 2) => unsafe {
                        avx::tile2::<4, 2, false>(self, group, wt, yt, cols, rows)
                    },
                    #[cfg(target_arch = "x86_64")]
                    (Kernel::Avx2, _) => unsafe {
                        avx::tile2::<4, 1, false>(self, group, wt, yt, cols, rows)
                    },
                    _ => scalar_tile(self, group, wt, mr, yt, cols, rows),
                }
            }
        }
    }
}

/// The portable tile: `y[m, ob + l] = Σ_q wt[q·mr + m] · xpad[base(l) + offs[q]]`.
fn scalar_tile(
    d: &DirectConv,
    group: &[Vector],
    wt: &[f32],
    mr: usize,
    y: &mut [f32],
    cols: usize,
    rows: usize,
) {
    for v in group {
        for m in 0..rows {
            for l in 0..v.lanes {
                let base = if l < LANES {
                    v.lo + l
                } else {
                    v.hi + l - LANES
                };
                let mut s = 0.0f32;
                for (q, &off) in d.offs.iter().enumerate() {
                    s = wt[q * mr + m].mul_add(d.xpad[base + off], s);
                }
                y[m * cols + v.ob + l] = s;
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx {
    use super::{DirectConv, Vector, LANES, WIDE};
    use std::arch::x86_64::*;

    /// One tile kernel per instruction set and vector width: `MR·V` accumulators stay in
    /// registers across all taps, then rows `< rows` are stored (masked for short vectors).
    /// `$load(lo, hi)` reads one vector (`SPLIT`: lanes 8.. from `hi`); `$store(dst,
    /// lanes, r)` writes one.
    macro_rules! tile_kernel {
        ($name:ident, $features:literal, $zero:ident, $bcast:ident, $fma:ident,
         $load:expr, $store:expr) => {
            // Index loops over the register tile: they unroll completely.
            #[allow(clippy::needless_range_loop)]
            #[target_feature(enable = $features)]
            pub unsafe fn $name<const MR: usize, const V: usize, const SPLIT: bool>(
                d: &DirectConv,
                group: &[Vector],
                wt: &[f32],
                y: &mut [f32],
                cols: usize,
                rows: usize,
            ) {
                let xp = d.xpad.as_ptr();
                let (mut lo, mut hi) = ([xp; V], [xp; V]);
                for v in 0..V {
                    lo[v] = xp.add(group[v].lo);
                    hi[v] = xp.add(group[v].hi);
                }
                let mut r = [[$zero(); V]; MR];
                let mut a = wt.as_ptr();
                for &off in &d.offs {
                    let mut b = [$zero(); V];
                    for v in 0..V {
                        b[v] = $load(lo[v].add(off), hi[v].add(off), SPLIT);
                    }
                    for m in 0..MR {
                        let am = $bcast(*a.add(m));
                        for v in 0..V {
                            r[m][v] = $fma(am, b[v], r[m][v]);
                        }
                    }
                    a = a.add(MR);
                }
                let yp = y.as_mut_ptr();
                for m in 0..rows.min(MR) {
                    for v in 0..V {
                        let Vector { ob, lanes, .. } = group[v];
                        $store(yp.add(m * cols + ob), lanes, r[m][v]);
                    }
                }
            }
        };
    }

    /// 8 lanes from `lo` (256-bit kernels never split).
    #[inline(always)]
    unsafe fn load8(lo: *const f32, _hi: *const f32, _split: bool) -> __m256 {
        _mm256_loadu_ps(lo)
    }

    #[inline(always)]
    unsafe fn store8(dst: *mut f32, lanes: usize, r: __m256) {
        if lanes == LANES {
            _mm256_storeu_ps(dst, r);
        } else {
            let idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
            let mask = _mm256_cmpgt_epi32(_mm256_set1_epi32(lanes as i32), idx);
            _mm256_maskstore_ps(dst, mask, r);
        }
    }

    /// 16 lanes: one load from `lo`, or 8 from `lo` joined with 8 from `hi`.
    #[inline(always)]
    unsafe fn load16(lo: *const f32, hi: *const f32, split: bool) -> __m512 {
        if split {
            let low = _mm512_castps256_ps512(_mm256_loadu_ps(lo));
            _mm512_insertf32x8::<1>(low, _mm256_loadu_ps(hi))
        } else {
            _mm512_loadu_ps(lo)
        }
    }

    #[inline(always)]
    unsafe fn store16(dst: *mut f32, lanes: usize, r: __m512) {
        if lanes == WIDE {
            _mm512_storeu_ps(dst, r);
        } else {
            _mm512_mask_storeu_ps(dst, ((1u32 << lanes) - 1) as __mmask16, r);
        }
    }

    tile_kernel!(
        zmm,
        "avx2,fma,avx512f,avx512vl,avx512dq",
        _mm512_setzero_ps,
        _mm512_set1_ps,
        _mm512_fmadd_ps,
        load16,
        store16
    );
    tile_kernel!(
        tile512,
        "avx2,fma,avx512f,avx512vl",
        _mm256_setzero_ps,
        _mm256_set1_ps,
        _mm256_fmadd_ps,
        load8,
        store8
    );
    tile_kernel!(
        tile2,
        "avx2,fma",
        _mm256_setzero_ps,
        _mm256_set1_ps,
        _mm256_fmadd_ps,
        load8,
        store8
    );
}

#[cfg(test)]
mod tests {
    use super::*;

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
            let n = 3;
            let x: Vec<f32> = (0..c * n * h * w)
                .map(|i| ((i * 37 % 101) as f32 - 50.0) / 25.0)
                .collect();
            let wts: Vec<f32> = (0..o * c * k * k)
                .map(|i| ((i * 53 % 97) as f32 - 48.0) / 60.0)
                .collect();
            let want = naive(&x, n, sh, &wts);
            for kernel in Kernel::available() {
                let mut d = DirectConv::with_kernel(kernel, sh, &wts);
                let mut y = vec![f32::NAN; want.len()];
                // The input split into two sources (channels stacked) must not matter.
                let (x0, x1) = x.split_at((c / 2) * n * h * w);
                for img in 0..n {
                    d.image(&[x0, x1], n, img, &mut y);
                }
                for (i, (a, b)) in y.iter().zip(&want).enumerate() {
                    assert!(
                        ((*a as f64) - b).abs() <= 1e-5 * (1.0 + b.abs()),
                        "{kernel:?} {sh:?} at {i}: {a} vs {b}"
                    );
                }
            }
        }
    }
}
