//! Direct convolution for `f32` on AVX2 + FMA / AVX-512: the forward, R-forward,
//! transposed (dx) and weight-gradient passes without im2col.
//!
//! im2col + GEMM copies every input element k² times into the unfolded block and then
//! once more into the GEMM's packed panel; on ResNet shapes (C = 16–64, 3×3) those copies
//! cost about a third of the forward pass. Here the input of one image is copied once,
//! into a zero-padded buffer `[C, H + 2p, W + 2p]`, and the micro-kernels read their
//! operands straight from it: output positions (oh, ow..ow+8) of one row form a vector,
//! and for kernel tap (c, ki, kj) that vector's operand is the 8 contiguous floats at
//! `xpad[c, oh + ki, ow + kj ..]` — one unaligned load at a fixed offset from the
//! vector's base, the same offset for every vector (an "implicit GEMM" with the
//! `[C·k·k, ·]` operand never formed; cf. Chellapilla et al. 2006 for the explicit one,
//! Georganas et al. 2018, "Anatomy of high-performance deep learning convolutions on
//! SIMD architectures", for direct kernels). Stride s > 1 uses the same kernels on a
//! polyphase input (see [`DirectConv`]).
//!
//! Vectors: on AVX-512 a vector is 16 positions (a zmm register) when rows are a multiple
//! of 16 wide, or two rows of 8 (two 8-float loads joined) when rows are 8 wide; any
//! other width uses 8-wide ymm vectors. Intel cores with two 512-bit FMA units run zmm at
//! twice the ymm rate; AMD Zen 4 runs both at the same rate.
//!
//! Forward tile: 8 output channels × 3 vectors = 24 accumulators in AVX-512's 32
//! registers (4 × 3 with plain AVX2's 16, its tap loop in assembly: `avx::ymm2_4x3`),
//! summed over the taps in order (c, ki, kj); weights are packed per tile as
//! `[C·k·k, mr]` so each tap broadcasts `mr` consecutive floats. Every tile shape gives
//! each output the same FMA chain, hence the same bits. Weight-gradient tile
//! ([`weight_grad`]): 4 output channels × 6 taps (on AVX2, 3 × 4 in assembly where every
//! vector is full, else 2 × 6), each accumulator a vector of per-lane partial sums over
//! all positions of a batch of images, reduced across lanes at the end (the same sums in
//! the same order for any tile shape). With zmm, 3×3 convolutions of stride 1 and 2
//! vectorize the weight gradient over output channels instead (`Grad::by_channels`): dy is
//! transposed per batch, and each dw element is a running sum over each run of 256 of the
//! batch's positions, the runs' sums added in order.
//! Results equal the GEMM path's to f32 rounding (a different summation order), and are
//! the same bits on every call: nothing depends on threads or timing. The zmm
//! weight-gradient sums round differently from the 8-lane ones; [`Simd::Avx2`] caps the
//! vectors at 8 lanes (see [`Kernel::for_simd`]).

use std::mem::MaybeUninit;
use std::sync::OnceLock;

use crate::engine::options::Simd;

/// Lanes of one 256-bit vector.
const LANES: usize = 8;

/// Lanes of the widest vector (zmm); the padded buffer has this many floats of slack.
const WIDE: usize = 16;

/// The micro-kernel in use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kernel {
    /// AVX-512F/DQ: vectors of 16 lanes (only for rows 8 or 16·j wide).
    Zmm,
    /// AVX-512VL: 32 vector registers, vectors of 8 lanes (256-bit).
    Avx512,
    /// AVX2 + FMA: 16 registers, smaller tiles (a larger tile spills).
    Avx2,
    /// Portable scalar code (for the tests: where neither exists, the path is off).
    Scalar,
}

impl Kernel {
    /// The kernel for the CPU within the cap `simd`: 8-lane vectors under [`Simd::Avx2`]
    /// (the ymm kernels of AVX-512VL on AVX-512 machines: their sums are those of AVX2's,
    /// in the same order), AVX2's own 16-register kernels under [`Simd::Avx2Only`] (the
    /// same bits). [`Kernel::Scalar`] where the CPU has no AVX2 + FMA.
    pub(crate) fn for_simd(simd: Simd) -> Kernel {
        match (Kernel::detect(), simd) {
            (Kernel::Zmm, Simd::Avx2) => Kernel::Avx512,
            (Kernel::Zmm | Kernel::Avx512, Simd::Avx2Only) => Kernel::Avx2,
            (k, _) => k,
        }
    }

    /// Whether convolutions with output rows `wo` wide take the direct path: a SIMD
    /// kernel and rows of at least one full vector (narrower rows would leave most lanes
    /// idle).
    pub(crate) fn applies(self, wo: usize) -> bool {
        self != Kernel::Scalar && wo >= LANES
    }

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
    pub(super) fn available() -> Vec<Kernel> {
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

    /// Forward tile: (output channels, vectors).
    fn tile(self) -> (usize, usize) {
        match self {
            Kernel::Zmm | Kernel::Avx512 => (8, 3),
            Kernel::Avx2 => (4, 3),
            Kernel::Scalar => (4, 2),
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

/// The FMA peak of one core for the widest vectors the direct kernels use under `simd`
/// (flop/s, an FMA counting 2): a timed loop of independent FMA chains, the roof against
/// which `losscape bench` states its GFLOP/s. `None` without AVX2 + FMA.
pub fn fma_peak(simd: Simd) -> Option<f64> {
    let kernel = Kernel::for_simd(simd);
    #[cfg(target_arch = "x86_64")]
    {
        let (lanes, run): (usize, unsafe fn(usize) -> f32) = match kernel {
            Kernel::Zmm => (WIDE, avx::fma_chains_zmm),
            Kernel::Avx512 | Kernel::Avx2 => (LANES, avx::fma_chains_ymm),
            Kernel::Scalar => return None,
        };
        // SAFETY: the kernel exists only where its instructions were detected.
        let chains = |iters: usize| {
            std::hint::black_box(unsafe { run(std::hint::black_box(iters)) });
        };
        chains(1 << 20); // warm-up (clock ramp)
        let iters = 1 << 24;
        Some((iters * 12 * lanes * 2) as f64 / best_secs(3, || chains(iters)))
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = kernel;
        None
    }
}

/// The shortest of `runs` (at least one) timed calls of `f`, in seconds.
fn best_secs(runs: usize, mut f: impl FnMut()) -> f64 {
    (0..runs.max(1))
        .map(|_| {
            let t = std::time::Instant::now();
            f();
            t.elapsed().as_secs_f64()
        })
        .fold(f64::INFINITY, f64::min)
}

/// [`best_secs`] after one untimed warm-up call.
fn warm_best(runs: usize, mut f: impl FnMut()) -> f64 {
    f();
    best_secs(runs, f)
}

/// One direct kernel timed alone on one convolution shape ([`kernel_rates`]).
#[derive(Clone, Debug, serde::Serialize)]
pub struct KernelRate {
    /// `forward` (the tile kernel as the forward, dx and R-forward run it, with its padded
    /// copies), `weight-grad` (the weight-gradient kernel, with its padded copies), their
    /// Winograd forms, or `stride-2 forward` / `stride-2 weight-grad` (the direct kernels
    /// on ResNet's downsampling 3×3 convolutions).
    pub pass: &'static str,
    /// The kernel (`Zmm`, `Avx512`, `Avx2`, `Scalar`).
    pub kernel: String,
    /// Input channels C; output channels O (C, or 2C for the stride-2 shapes).
    pub channels: usize,
    pub out_channels: usize,
    /// Input image height and width, and the stride (1, or 2 for ResNet's downsampling).
    pub size: usize,
    pub stride: usize,
    pub images: usize,
    /// The fastest of the timed runs, ms, and its rate (2 × multiply-adds).
    pub best_ms: f64,
    pub gflops: f64,
    /// One core's FMA peak at the kernel's vector width ([`fma_peak`]), and the share of it
    /// reached.
    pub fma_peak_gflops: Option<f64>,
    pub of_peak: Option<f64>,
}

/// The direct kernels of `simd` timed alone, best of `reps` runs after a warm-up, on
/// ResNet-cifar's three 3×3 stride-1 convolutions (C = O = 16, 32, 64 on 32×32, 16×16 and
/// 8×8 images) and its two stride-2 ones (16 → 32 on 32×32, 32 → 64 on 16×16), 32 images,
/// one thread: what a kernel change does, without the rest of a
/// pass, and with the best of many short runs less exposed to a shared host's noise than a
/// pass's median.
pub fn kernel_rates(simd: Simd, reps: usize) -> Vec<KernelRate> {
    let kernel = Kernel::for_simd(simd);
    let peak = fma_peak(simd).map(|f| f / 1e9);
    let n = 32;
    // the bench's input pattern, in [-1, 1]
    let values = |len: usize, salt: usize| -> Vec<f32> {
        (0..len)
            .map(|i| ((i * 31 + salt) % 17) as f32 / 8.0 - 1.0)
            .collect()
    };
    let mut out = Vec::new();
    for (ch, size) in [(16, 32), (32, 16), (64, 8)] {
        let sh = Shape {
            o: ch,
            c: ch,
            k: 3,
            s: 1,
            p: 1,
            h: size,
            w: size,
        };
        let hw = size * size;
        let (wts, x, dy) = (
            values(ch * ch * 9, 1),
            values(ch * n * hw, 2),
            values(ch * n * hw, 3),
        );
        let flops = 2.0 * (ch * ch * 9 * n * hw) as f64;
        let (fwd, grad, name) = direct_times(kernel, sh, n, reps, (&wts, &x, &dy));
        let mut y = vec![MaybeUninit::<f32>::uninit(); ch * n * hw];
        let mut dw = vec![0.0f32; ch * ch * 9];
        // Winograd F(2×2, 3×3) on the same shapes (its rate in direct-convolution FLOPs)
        let wg = super::winograd::Winograd::new(ch, ch, &wts, kernel);
        let wfwd = warm_best(reps, || {
            wg.run(&[&x], [n, size, size], 1, None, &mut y, |_, _| {});
            std::hint::black_box(&y);
        });
        let wgrad = warm_best(reps, || {
            let dims = [n, size, size];
            super::winograd::weight_grad(kernel, (ch, ch), dims, 1, &[(&dy, &x)], &mut dw);
            std::hint::black_box(&dw);
        });
        // F(4×4, 3×3) (on all three shapes, though the passes take it for the two smaller)
        let wg4 = super::winograd::Winograd4::new(ch, ch, &wts, kernel);
        let w4fwd = warm_best(reps, || {
            wg4.run(&[&x], [n, size, size], None, &mut y, |_, _| {});
            std::hint::black_box(&y);
        });
        let w4grad = warm_best(reps, || {
            let dims = [n, size, size];
            super::winograd::grad4::weight_grad(kernel, (ch, ch), dims, &[(&dy, &x)], &mut dw);
            std::hint::black_box(&dw);
        });
        for (pass, secs) in [
            ("forward", fwd),
            ("weight-grad", grad),
            ("winograd forward", wfwd),
            ("winograd weight-grad", wgrad),
            ("winograd4 forward", w4fwd),
            ("winograd4 weight-grad", w4grad),
        ] {
            let gflops = flops / secs / 1e9;
            out.push(KernelRate {
                pass,
                kernel: name.clone(),
                channels: ch,
                out_channels: ch,
                size,
                stride: 1,
                images: n,
                best_ms: secs * 1e3,
                gflops,
                fma_peak_gflops: peak,
                of_peak: peak.map(|p| gflops / p),
            });
        }
    }
    // ResNet-cifar's two downsampling 3×3 stride-2 convolutions (C → 2C, 32×32 → 16×16
    // and 16×16 → 8×8), direct kernels only (Winograd takes no stride-2 sum)
    for (ch, size) in [(16, 32), (32, 16)] {
        let o = 2 * ch;
        let sh = Shape {
            o,
            c: ch,
            k: 3,
            s: 2,
            p: 1,
            h: size,
            w: size,
        };
        let hw_out = size * size / 4;
        let (wts, x, dy) = (
            values(o * ch * 9, 1),
            values(ch * n * size * size, 2),
            values(o * n * hw_out, 3),
        );
        let flops = 2.0 * (o * ch * 9 * n * hw_out) as f64;
        let (fwd, grad, kernel) = direct_times(kernel, sh, n, reps, (&wts, &x, &dy));
        for (pass, secs) in [("stride-2 forward", fwd), ("stride-2 weight-grad", grad)] {
            let gflops = flops / secs / 1e9;
            out.push(KernelRate {
                pass,
                kernel: kernel.clone(),
                channels: ch,
                out_channels: o,
                size,
                stride: 2,
                images: n,
                best_ms: secs * 1e3,
                gflops,
                fma_peak_gflops: peak,
                of_peak: peak.map(|p| gflops / p),
            });
        }
    }
    out
}

/// The direct forward (all `n` images) and weight gradient of `sh` timed alone (best of
/// `reps`, [`warm_best`]), in seconds, and the kernel the forward ran.
fn direct_times(
    kernel: Kernel,
    sh: Shape,
    n: usize,
    reps: usize,
    (wts, x, dy): (&[f32], &[f32], &[f32]),
) -> (f64, f64, String) {
    let mut conv = DirectConv::new(kernel, sh, wts);
    let mut y = vec![MaybeUninit::<f32>::uninit(); dy.len()];
    let fwd = warm_best(reps, || {
        let mut img = 0;
        while img < n {
            img += conv.images(&[x], n, img, &mut y);
        }
        std::hint::black_box(&y);
    });
    let mut dw = vec![0.0f32; wts.len()];
    let grad = warm_best(reps, || {
        weight_grad(kernel, sh, n, &[(dy, x)], &mut dw);
        std::hint::black_box(&dw);
    });
    (fwd, grad, format!("{:?}", conv.plan.kernel))
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

/// What every pass shares: the geometry of the padded polyphase image, the tap offsets
/// and the vectors covering one output image.
///
/// Stride `s` > 1 is the stride-1 kernel on a polyphase input: the padded image is split
/// into s² planes `x_ab[i, j] = xpad[s·i + a, s·j + b]`, and tap (ki, kj) of output
/// (oh, ow) reads plane (ki mod s, kj mod s) at (oh + ki div s, ow + kj div s) — again a
/// fixed offset from the vector's base, so contiguous loads serve every stride.
struct Plan {
    sh: Shape,
    /// Rows and columns of one phase plane: ⌈(h + 2p)/s⌉ × ⌈(w + 2p)/s⌉.
    hq: usize,
    wq: usize,
    /// Floats of one padded image, C·s²·hq·wq.
    img_len: usize,
    /// Output positions per image and channel, Ho·Wo.
    hw_out: usize,
    /// Offset of tap (c, ki, kj) in the padded image.
    offs: Vec<usize>,
    /// The largest tap offset plus 8: a vector reads within `[lo, lo + reach)` and
    /// `[hi, hi + reach)` (`hi = lo + 8` unless split).
    reach: usize,
    /// The vectors covering one output image, in order.
    vecs: Vec<Vector>,
    /// Whether zmm vectors join two rows of 8 (`hi` ≠ `lo + 8`).
    split: bool,
    kernel: Kernel,
}

/// Every tap `(ki, kj)` of a `k×k` kernel, row-major.
fn all_taps(k: usize) -> Vec<(usize, usize)> {
    (0..k * k).map(|t| (t / k, t % k)).collect()
}

impl Plan {
    /// The plan of every tap of the kernel.
    fn new(kernel: Kernel, sh: Shape) -> Plan {
        Plan::with_taps(kernel, sh, &all_taps(sh.k))
    }

    /// The plan of the taps `(ki, kj)` (each `< k`) of every input channel, in that order.
    fn with_taps(kernel: Kernel, sh: Shape, taps: &[(usize, usize)]) -> Plan {
        let Shape {
            c, k, s, p, h, w, ..
        } = sh;
        assert!(s >= 1, "direct conv: stride");
        assert!(
            taps.iter().all(|&(i, j)| i < k && j < k),
            "direct conv: taps"
        );
        let (ho, wo) = sh.out();
        let (hq, wq) = ((h + 2 * p).div_ceil(s), (w + 2 * p).div_ceil(s));
        let kernel = kernel.for_width(wo);
        let mut offs = Vec::with_capacity(c * taps.len());
        for ci in 0..c {
            for &(ki, kj) in taps {
                let plane = (ci * s + ki % s) * s + kj % s;
                offs.push(plane * hq * wq + (ki / s) * wq + kj / s);
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
                let lanes = if two { WIDE } else { LANES };
                vecs.push(Vector {
                    lo,
                    hi,
                    ob: oh * wo,
                    lanes,
                });
            }
        } else {
            let lanes = if kernel == Kernel::Zmm { WIDE } else { LANES };
            for oh in 0..ho {
                for ow in (0..wo).step_by(lanes) {
                    let lo = oh * wq + ow;
                    let ob = oh * wo + ow;
                    let lanes = (wo - ow).min(lanes);
                    vecs.push(Vector {
                        lo,
                        hi: lo + LANES,
                        ob,
                        lanes,
                    });
                }
            }
        }
        Plan {
            sh,
            hq,
            wq,
            img_len: c * s * s * hq * wq,
            hw_out: ho * wo,
            offs,
            reach,
            vecs,
            split,
            kernel,
        }
    }

    /// A zeroed scratch for `images` padded images, with slack for the widest vector.
    fn scratch(&self, images: usize) -> Vec<f32> {
        vec![0.0f32; images * self.img_len + WIDE]
    }

    /// Copies image `img` of the sources `xs` (each `[Cᵢ, N, H, W]`, ΣCᵢ = C, channels
    /// stacked in order) into the padded polyphase image `dst` (`img_len` floats). Only
    /// interior positions are written: the border stays as zeroed at construction. With
    /// `k < s`, rows of the phases no tap reads are skipped.
    fn fill(&self, xs: &[&[f32]], n: usize, img: usize, dst: &mut [f32]) {
        crate::engine::ops::vmath::wide!(self.fill_rows(xs, n, img, dst),)
    }

    /// [`Plan::fill`]'s loops (inlined into its AVX2 copy).
    #[inline(always)]
    fn fill_rows(&self, xs: &[&[f32]], n: usize, img: usize, dst: &mut [f32]) {
        let Shape {
            c, k, s, p, h, w, ..
        } = self.sh;
        let (hq, wq) = (self.hq, self.wq);
        let per = (n * h * w).max(1);
        let cs: usize = xs.iter().map(|x| x.len() / per).sum();
        assert!(
            cs == c && img < n && xs.iter().all(|x| x.len() % per == 0),
            "direct conv: input size"
        );
        let planes = xs.iter().flat_map(|x| x.chunks_exact(per));
        for (plane, dst) in planes.zip(dst.chunks_exact_mut(s * s * hq * wq)) {
            let src = &plane[img * h * w..][..h * w];
            if s == 1 {
                // Row r lands at (r + p, p): no divisions, no call per row.
                let lines = dst[p * wq + p..].chunks_mut(wq);
                for (row, line) in src.chunks_exact(w).zip(lines) {
                    copy_row(&mut line[..w], row);
                }
                continue;
            }
            for (r, row) in src.chunks_exact(w).enumerate() {
                let (a, i) = ((r + p) % s, (r + p) / s);
                // tap ki reads row phase ki mod s: with k < s, phases k.. are never read
                // (a 1×1 stride-2 convolution reads the even rows only)
                if a >= k {
                    continue;
                }
                if s == 2 {
                    // Both planes of the row in one pass over column pairs.
                    // Column j lands in plane (a, (j + p) mod 2) at (j + p) div 2: even
                    // columns in plane p mod 2 from p div 2, odd ones in the other plane
                    // from (p + 1) div 2.
                    let line = &mut dst[(a * 2 * hq + i) * wq..][..(hq + 1) * wq];
                    let (b0, b1) = line.split_at_mut(hq * wq);
                    let (ev, od) = if p % 2 == 0 { (b0, b1) } else { (b1, b0) };
                    let (ev, od) = (&mut ev[p / 2..wq], &mut od[p.div_ceil(2)..wq]);
                    // the row's whole pairs (in vectors on the SIMD kernels), then an odd
                    // last column
                    let n = (w / 2).min(ev.len()).min(od.len());
                    super::winograd::deinterleave(self.kernel, row, &mut ev[..n], od);
                    if w % 2 == 1 {
                        ev[w / 2] = row[w - 1];
                    }
                    continue;
                }
                for b in 0..s {
                    // Columns first, first + s, … (≡ b − p mod s) land in plane (a, b) at
                    // (first + p)/s, +1, …
                    let first = (b + s - p % s) % s;
                    let line = &mut dst[((a * s + b) * hq + i) * wq..][..wq];
                    let src = row.iter().skip(first).step_by(s);
                    for (d, &v) in line[(first + p) / s..].iter_mut().zip(src) {
                        *d = v;
                    }
                }
            }
        }
    }

    /// Asserts that every vector's reads lie in a scratch of `len` floats when the image
    /// starts at `base`, and its outputs inside one image.
    fn check(&self, base: usize, len: usize) {
        for v in &self.vecs {
            assert!(
                base + v.lo.max(v.hi) + self.reach <= len,
                "direct conv: reads"
            );
            assert!(v.ob + v.lanes <= self.hw_out, "direct conv: writes");
        }
    }
}

/// `d = s` for one short image row, eight floats at a time, inline (a `memcpy` call per
/// row of 8–32 floats costs about as much as the copy).
#[inline(always)]
fn copy_row(d: &mut [f32], s: &[f32]) {
    let (mut dc, mut sc) = (d.chunks_exact_mut(8), s.chunks_exact(8));
    for (a, b) in (&mut dc).zip(&mut sc) {
        let b: &[f32; 8] = b.try_into().expect("8 floats");
        a.copy_from_slice(b);
    }
    for (a, b) in dc.into_remainder().iter_mut().zip(sc.remainder()) {
        *a = *b;
    }
}

/// One prepared convolution: packed weights, the [`Plan`] and the padded-input scratch.
/// Build once per call, then run a few images at a time ([`DirectConv::images`]).
pub struct DirectConv {
    plan: Plan,
    /// Weights packed per tile of `mr` channels: `[tiles, C·k·k, mr]`, zero rows past O.
    packed: Vec<f32>,
    /// `batch` padded images.
    xpad: Vec<f32>,
    /// Images per pass: for small images, the fewest whose vectors fill whole tiles (an
    /// 8×8 image's 8 vectors leave a tile of 3 two short, which the slower tile of 2
    /// computes; three images make 8 full tiles); 1 where the image has many tiles.
    batch: usize,
    /// The vectors of `batch` consecutive images, image j's reading `j·img_len` and
    /// writing `j·Ho·Wo` further on.
    bvecs: Vec<Vector>,
}

impl DirectConv {
    /// `wts` is `[O, C, k, k]` row-major; the input is `[C, N, H, W]`.
    pub fn new(kernel: Kernel, sh: Shape, wts: &[f32]) -> Self {
        Self::with_taps(kernel, sh, &all_taps(sh.k), wts)
    }

    /// [`DirectConv::new`] summing only the taps `(ki, kj)` listed (each `< k`), in that
    /// order: `wts` is `[O, C, taps]` row-major.
    pub fn with_taps(kernel: Kernel, sh: Shape, taps: &[(usize, usize)], wts: &[f32]) -> Self {
        let plan = Plan::with_taps(kernel, sh, taps);
        let (o, kk) = (sh.o, plan.offs.len());
        assert_eq!(wts.len(), o * kk, "direct conv: weight size");
        let (mr, _) = plan.kernel.tile();
        let tiles = o.div_ceil(mr);
        let mut packed = vec![0.0f32; tiles * kk * mr];
        for oc in 0..o {
            let (t, m) = (oc / mr, oc % mr);
            for (q, &v) in wts[oc * kk..(oc + 1) * kk].iter().enumerate() {
                packed[(t * kk + q) * mr + m] = v;
            }
        }
        let (per, nv) = (plan.vecs.len(), plan.kernel.tile().1);
        let batch = if per >= 16 * nv {
            1
        } else {
            nv / gcd(per.max(1), nv)
        };
        let bvecs = (0..batch)
            .flat_map(|j| {
                let (dx, dy) = (j * plan.img_len, j * plan.hw_out);
                plan.vecs.iter().map(move |v| Vector {
                    lo: v.lo + dx,
                    hi: v.hi + dx,
                    ob: v.ob + dy,
                    lanes: v.lanes,
                })
            })
            .collect();
        let xpad = plan.scratch(batch);
        plan.check((batch - 1) * plan.img_len, xpad.len());
        DirectConv {
            plan,
            packed,
            xpad,
            batch,
            bvecs,
        }
    }

    /// Writes images `img..img + m` of y `[O, N·Ho·Wo]` from the same images of the input,
    /// `m` = min(batch, N − img), and returns `m`: the channels of the sources `xs` (each
    /// `[Cᵢ, N, H, W]`, ΣCᵢ = C) stacked in order, so that `W ⋆ x + V ⋆ x'` is one call
    /// with weights `[W | V]` and sources `[x, x']`. `y` may be uninitialized: this writes
    /// every output of those images and reads none.
    pub fn images(
        &mut self,
        xs: &[&[f32]],
        n: usize,
        img: usize,
        y: &mut [MaybeUninit<f32>],
    ) -> usize {
        let m = self.fill(xs, n, img);
        let cols = n * self.plan.hw_out;
        self.run_filled(&self.xpad, m, (cols, img * self.plan.hw_out), y);
        m
    }

    /// Images per [`DirectConv::fill`].
    pub fn batch(&self) -> usize {
        self.batch
    }

    /// The padded images of the last [`DirectConv::fill`].
    pub fn scratch(&self) -> &[f32] {
        &self.xpad
    }

    /// Frees the padded-image scratch of a convolution that only runs on another's
    /// ([`DirectConv::run_filled`]); its own [`DirectConv::fill`] must not be called after.
    pub fn without_scratch(mut self) -> Self {
        self.xpad = Vec::new();
        self
    }

    /// The padded copies of images `img..img + m` of the sources (as [`DirectConv::images`]
    /// reads them), `m` = min(batch, N − img), returned; [`DirectConv::run_filled`] then
    /// computes their outputs, with this convolution's weights or another's of the same
    /// shape (what [`DirectConv::images`] does in one call).
    pub fn fill(&mut self, xs: &[&[f32]], n: usize, img: usize) -> usize {
        let plan = &self.plan;
        let m = self.batch.min(n - img);
        assert!(!self.xpad.is_empty(), "direct conv: fill without scratch");
        for (j, slot) in self.xpad.chunks_exact_mut(plan.img_len).take(m).enumerate() {
            plan.fill(xs, n, img + j, slot);
        }
        m
    }

    /// The outputs of the first `m` padded images of `xpad` (a [`DirectConv::fill`] of this
    /// convolution or of one of the same `Shape`): `y [O, cols]` from column `out0` on,
    /// image `j`'s at `out0 + j·Ho·Wo`.
    pub fn run_filled(
        &self,
        xpad: &[f32],
        m: usize,
        (cols, out0): (usize, usize),
        y: &mut [MaybeUninit<f32>],
    ) {
        let plan = &self.plan;
        let o = plan.sh.o;
        // the length `Plan::check` covered at construction
        let len = self.batch * plan.img_len + WIDE;
        assert!(m <= self.batch && xpad.len() == len, "direct conv: scratch");
        // each channel's outputs of the `m` images inside its row of `cols`, all rows in y
        let span = out0 + m * plan.hw_out;
        assert!(
            span <= cols && (o == 0 || y.len() >= (o - 1) * cols + span),
            "direct conv: output size"
        );
        let kk = plan.offs.len();
        let (mr, nv) = plan.kernel.tile();
        let xp = xpad;
        for group in self.bvecs[..m * plan.vecs.len()].chunks(nv) {
            for t in 0..o.div_ceil(mr) {
                let rows = (o - t * mr).min(mr);
                let wt = &self.packed[t * kk * mr..(t + 1) * kk * mr];
                let yt = &mut y[t * mr * cols + out0..];
                let a = (plan, xp, group, wt, yt, cols, rows);
                // SAFETY (for the SIMD kernels, which exist only where detected): reads lie
                // in `xpad` (its length is the one `Plan::check` covered at construction)
                // and `wt` (kk·mr floats); writes go to rows <
                // `rows` of `yt` at `ob..ob + lanes`, inside y (asserted above).
                match (plan.kernel, group.len(), plan.split) {
                    #[cfg(target_arch = "x86_64")]
                    (Kernel::Zmm, 3, false) => unsafe { avx::zmm::<8, 3, false>(a) },
                    #[cfg(target_arch = "x86_64")]
                    (Kernel::Zmm, 3, true) => unsafe { avx::zmm::<8, 3, true>(a) },
                    #[cfg(target_arch = "x86_64")]
                    (Kernel::Zmm, 2, false) => unsafe { avx::zmm::<8, 2, false>(a) },
                    #[cfg(target_arch = "x86_64")]
                    (Kernel::Zmm, 2, true) => unsafe { avx::zmm::<8, 2, true>(a) },
                    #[cfg(target_arch = "x86_64")]
                    (Kernel::Zmm, _, false) => unsafe { avx::zmm::<8, 1, false>(a) },
                    #[cfg(target_arch = "x86_64")]
                    (Kernel::Zmm, _, true) => unsafe { avx::zmm::<8, 1, true>(a) },
                    #[cfg(target_arch = "x86_64")]
                    (Kernel::Avx512, 3, _) => unsafe { avx::ymm512::<8, 3, false>(a) },
                    #[cfg(target_arch = "x86_64")]
                    (Kernel::Avx512, 2, _) => unsafe { avx::ymm512::<8, 2, false>(a) },
                    #[cfg(target_arch = "x86_64")]
                    (Kernel::Avx512, _, _) => unsafe { avx::ymm512::<8, 1, false>(a) },
                    #[cfg(target_arch = "x86_64")]
                    (Kernel::Avx2, 3, _) => unsafe { avx::ymm2_4x3(a) },
                    #[cfg(target_arch = "x86_64")]
                    (Kernel::Avx2, 2, _) => unsafe { avx::ymm2::<4, 2, false>(a) },
                    #[cfg(target_arch = "x86_64")]
                    (Kernel::Avx2, _, _) => unsafe { avx::ymm2::<4, 1, false>(a) },
                    _ => scalar_tile(a, mr),
                }
            }
        }
    }
}

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// The arguments of one forward tile: plan, padded image, vectors, packed weights of the
/// tile, output (from the tile's first channel and the image's first column), columns
/// of y, valid channels.
type TileArgs<'a> = (
    &'a Plan,
    &'a [f32],
    &'a [Vector],
    &'a [f32],
    &'a mut [MaybeUninit<f32>],
    usize,
    usize,
);

/// The portable tile: `y[m, ob + l] = Σ_q wt[q·mr + m] · xpad[base(l) + offs[q]]`.
fn scalar_tile((plan, xpad, group, wt, y, cols, rows): TileArgs, mr: usize) {
    for v in group {
        for m in 0..rows {
            for l in 0..v.lanes {
                let base = v.base(l);
                let mut s = 0.0f32;
                for (q, &off) in plan.offs.iter().enumerate() {
                    s = wt[q * mr + m].mul_add(xpad[base + off], s);
                }
                y[m * cols + v.ob + l] = MaybeUninit::new(s);
            }
        }
    }
}

impl Vector {
    /// Where lane `l` reads the padded image (before the tap offset).
    fn base(&self, l: usize) -> usize {
        if l < LANES {
            self.lo + l
        } else {
            self.hi + l - LANES
        }
    }
}

#[path = "grad.rs"]
mod grad;
pub use grad::weight_grad;

#[cfg(target_arch = "x86_64")]
#[path = "avx.rs"]
mod avx;
#[cfg(target_arch = "x86_64")]
pub(super) use avx::{mask8, transpose16, transpose16_with};

#[cfg(test)]
#[path = "kernel_tests.rs"]
mod tests;
