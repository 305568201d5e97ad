//! The weight-gradient pass of the direct kernels ([`weight_grad`]): `dw += dy ⋆ x` without
//! im2col columns, by tiles of per-lane partial sums over output positions, or (zmm, 3×3
//! stride 1 or 2) by tiles vectorized over output channels on a transposed dy; see
//! [`super`]'s documentation for the tiles and their bits.

#[cfg(target_arch = "x86_64")]
use super::avx;
#[cfg(target_arch = "x86_64")]
use super::WIDE;
use super::{Kernel, Plan, Shape, Vector, LANES};

/// Positions per weight-gradient batch: images are batched until their outputs reach
/// this many, so the lane reductions are amortized over long sums.
const GRAD_POSITIONS: usize = 1024;

/// Positions per running sum of [`Grad::by_channels`]'s tiles (the runs' sums are added in
/// order).
#[cfg(target_arch = "x86_64")]
const CHANNEL_RUN: usize = 256;

/// The largest padded-input scratch of one weight-gradient batch, in floats (512 KiB).
const GRAD_SCRATCH: usize = 1 << 17;

/// `dw [O, C·k·k] += Σ_terms dy ⋆ x`: the weight gradient of a convolution, i.e. for each
/// (dy `[O, N·Ho·Wo]`, x `[C, N, H, W]`) term, `dw[o, (c, ki, kj)] += Σ_{n, oh, ow}
/// dy[o, n, oh, ow] · xpad[c, n, s·oh + ki, s·ow + kj]` — GEMM `dy · colsᵀ` without the
/// columns. Images are batched ([`GRAD_POSITIONS`]) and summed in order per tile.
pub fn weight_grad(
    kernel: Kernel,
    sh: Shape,
    n: usize,
    terms: &[(&[f32], &[f32])],
    dw: &mut [f32],
) {
    let plan = Plan::new(kernel, sh);
    let (o, kk, hw) = (sh.o, plan.offs.len(), plan.hw_out);
    assert!(dw.len() == o * kk, "direct conv: weight-gradient size");
    if n == 0 || hw == 0 || o == 0 || kk == 0 {
        return;
    }
    let mut batch = GRAD_POSITIONS.div_ceil(hw).clamp(1, n);
    while batch > 1 && batch * plan.img_len > GRAD_SCRATCH {
        batch /= 2;
    }
    let mut xpad = plan.scratch(batch);
    // the transposed dy and the positions' x offsets of `Grad::by_channels`
    let mut chan_scratch = (Vec::new(), Vec::new());
    plan.check((batch - 1) * plan.img_len, xpad.len());
    let cols = n * hw;
    for &(dy, x) in terms {
        assert!(dy.len() == o * cols, "direct conv: dy size");
        for img0 in (0..n).step_by(batch) {
            let nb = batch.min(n - img0);
            for (j, slot) in xpad.chunks_exact_mut(plan.img_len).take(nb).enumerate() {
                plan.fill(&[x], n, img0 + j, slot);
            }
            let imgs: Vec<(usize, usize)> = (0..nb)
                .map(|j| (j * plan.img_len, (img0 + j) * hw))
                .collect();
            let g = Grad {
                plan: &plan,
                xpad: &xpad,
                imgs: &imgs,
                dy,
                cols,
            };
            match (plan.kernel, plan.split) {
                #[cfg(target_arch = "x86_64")]
                (Kernel::Zmm, _) if sh.k == 3 && sh.s <= 2 => g.by_channels(dw, &mut chan_scratch),
                #[cfg(target_arch = "x86_64")]
                (Kernel::Zmm, false) => g.tiles::<4, 6>(dw, avx::gzmm::<4, 6, false>),
                #[cfg(target_arch = "x86_64")]
                (Kernel::Zmm, true) => g.tiles::<4, 6>(dw, avx::gzmm::<4, 6, true>),
                #[cfg(target_arch = "x86_64")]
                (Kernel::Avx2, _) if plan.vecs.iter().all(|v| v.lanes == LANES) => g.tiles_3x4(dw),
                #[cfg(target_arch = "x86_64")]
                (Kernel::Avx512, _) => g.tiles::<4, 6>(dw, avx::gymm512::<4, 6, false>),
                #[cfg(target_arch = "x86_64")]
                (Kernel::Avx2, _) => g.tiles::<2, 6>(dw, avx::gymm2::<2, 6, false>),
                _ => g.tiles::<2, 6>(dw, scalar_grad::<2, 6>),
            }
        }
    }
}

/// One weight-gradient batch: images at `imgs` = (offset in `xpad`, first column in dy).
pub(super) struct Grad<'a> {
    pub(super) plan: &'a Plan,
    pub(super) xpad: &'a [f32],
    pub(super) imgs: &'a [(usize, usize)],
    pub(super) dy: &'a [f32],
    pub(super) cols: usize,
}

/// A weight-gradient tile kernel: sums `MR × QT` (channel, tap) pairs over the batch.
/// Arguments: vectors, padded images base, images, tap offsets, dy row starts, sums.
type GradKernel<const MR: usize, const QT: usize> = unsafe fn(
    &[Vector],
    *const f32,
    &[(usize, usize)],
    &[usize; QT],
    &[*const f32; MR],
    &mut [[f32; QT]; MR],
);

impl Grad<'_> {
    pub(super) fn tiles<const MR: usize, const QT: usize>(
        &self,
        dw: &mut [f32],
        kernel: GradKernel<MR, QT>,
    ) {
        self.tiles_with::<MR, QT>(dw, |offs, dys, sums| {
            // SAFETY: x reads lie in `xpad` (checked for the last image slot by
            // `weight_grad`); dy reads are in row `< O` at columns `< cols` (image start +
            // `ob + lanes ≤ Ho·Wo`, checked), and dy is `[O, cols]`.
            unsafe {
                kernel(
                    &self.plan.vecs,
                    self.xpad.as_ptr(),
                    self.imgs,
                    offs,
                    dys,
                    sums,
                )
            }
        });
    }

    /// [`Grad::tiles`] by the AVX2 3 × 4 assembly tile (`avx::gymm2_3x4`), for batches
    /// whose vectors are all full: the same sums in the same order, hence the same bits.
    #[cfg(target_arch = "x86_64")]
    pub(super) fn tiles_3x4(&self, dw: &mut [f32]) {
        let f = std::mem::size_of::<f32>();
        let pairs: Vec<[usize; 2]> = self
            .imgs
            .iter()
            .flat_map(|&(xb, col)| {
                let vecs = self.plan.vecs.iter();
                vecs.map(move |v| [(xb + v.lo) * f, (col + v.ob) * f])
            })
            .collect();
        self.tiles_with::<3, 4>(dw, |offs, dys, sums| {
            let offs = offs.map(|o| o * f);
            // SAFETY: AVX2 + FMA were detected (Kernel::Avx2); the reads are those of
            // `tiles` (each pair is one full vector of one image of the batch).
            unsafe { avx::gymm2_3x4(&pairs, self.xpad.as_ptr(), &offs, dys, sums) }
        });
    }

    /// The zmm weight gradient of a 3×3 convolution of stride 1 or 2, vectorized over
    /// output channels (`avx::g3zmm`): dy is transposed to `[P, O']` for the batch's P
    /// positions (O' = O rounded up to 16, the extra channels zero), and each tile of
    /// `16·MR` output × `NC` input channels sums over the positions with one broadcast of
    /// x per tap (at stride 2 from the polyphase planes). The position-vectorized tile
    /// ([`Grad::tiles`]) reads x by unaligned vector loads at up to six taps per step and
    /// reduces its 16 lanes per tile: ~0.4 of the FMA peak at stride 2 against 0.5–0.55
    /// here (`bench --kernels`, ResNet-cifar's two downsampling layers).
    #[cfg(target_arch = "x86_64")]
    pub(super) fn by_channels(&self, dw: &mut [f32], (xs, dyt): &mut (Vec<usize>, Vec<f32>)) {
        let o = self.plan.sh.o;
        let op = o.next_multiple_of(WIDE);
        let p_all = self.imgs.len() * self.plan.hw_out;
        xs.clear();
        if dyt.len() != p_all * op {
            // channels O..O' stay zero: only channels < O are written below
            *dyt = vec![0.0f32; p_all * op];
        }
        for &(xb, col) in self.imgs {
            for v in &self.plan.vecs {
                let p0 = xs.len();
                xs.extend((0..v.lanes).map(|l| xb + v.base(l)));
                let full = if v.lanes == WIDE { o / WIDE * WIDE } else { 0 };
                for oc in (0..full).step_by(WIDE) {
                    // SAFETY: AVX-512F/DQ were detected (Kernel::Zmm); rows oc..oc + 16 < O
                    // of dy at columns col + ob..+16 ≤ cols, rows p0..p0 + 16 ≤ P of dyt.
                    unsafe {
                        avx::transpose16(
                            self.dy[oc * self.cols + col + v.ob..].as_ptr(),
                            self.cols,
                            dyt[p0 * op + oc..].as_mut_ptr(),
                            op,
                        )
                    };
                }
                for oc in full..o {
                    let row = &self.dy[oc * self.cols + col + v.ob..][..v.lanes];
                    for (l, &g) in row.iter().enumerate() {
                        dyt[(p0 + l) * op + oc] = g;
                    }
                }
            }
        }
        match op / WIDE {
            b if b % 3 == 0 => self.channel_tiles::<3, 1, 9>(dw, xs, dyt, op),
            b if b % 2 == 0 => self.channel_tiles::<2, 1, 9>(dw, xs, dyt, op),
            _ => self.channel_tiles::<1, 2, 18>(dw, xs, dyt, op),
        }
    }

    /// [`Grad::by_channels`]'s tiles: `16·MR` output channels (MR·16 divides O') × `NC`
    /// input channels (a last tile past C re-reads channel C − 1; its sums are dropped).
    #[cfg(target_arch = "x86_64")]
    pub(super) fn channel_tiles<const MR: usize, const NC: usize, const QT: usize>(
        &self,
        dw: &mut [f32],
        xs: &[usize],
        dyt: &[f32],
        op: usize,
    ) {
        let Shape { o, c, s, .. } = self.plan.sh;
        let (kk, pl) = (self.plan.offs.len(), self.plan.hq * self.plan.wq);
        let (plane, geometry) = (s * s * pl, (self.plan.wq, pl));
        for o0 in (0..op).step_by(MR * WIDE) {
            for c0 in (0..c).step_by(NC) {
                let chans = NC.min(c - c0);
                let x: [*const f32; NC] =
                    std::array::from_fn(|j| self.xpad[(c0 + j.min(chans - 1)) * plane..].as_ptr());
                let mut sums = [[[0.0f32; WIDE]; QT]; MR];
                // positions in runs of `CHANNEL_RUN`, each run's running sums added to
                // the tile's in order
                for (r, run) in xs.chunks(CHANNEL_RUN).enumerate() {
                    let d = dyt[r * CHANNEL_RUN * op + o0..].as_ptr();
                    // SAFETY: AVX-512F/DQ were detected (Kernel::Zmm); x reads are those of
                    // the position-vectorized tiles (checked by `weight_grad`), dy reads lie
                    // in row p < P at columns o0 + 16·MR ≤ O'.
                    unsafe {
                        match s {
                            1 => avx::g3zmm::<MR, NC, QT, 1>(run, x, geometry, d, op, &mut sums),
                            2 => avx::g3zmm::<MR, NC, QT, 2>(run, x, geometry, d, op, &mut sums),
                            _ => unreachable!("channel tiles: stride {s} (1 or 2 only)"),
                        }
                    };
                }
                for (m, taps) in sums.iter().enumerate() {
                    for (t, lanes) in taps.iter().enumerate().take(9 * chans) {
                        for (l, &v) in lanes.iter().enumerate() {
                            let oc = o0 + m * WIDE + l;
                            if oc < o {
                                dw[oc * kk + 9 * c0 + t] += v;
                            }
                        }
                    }
                }
            }
        }
    }

    /// For each tile of `MR` output channels × `QT` taps: `sums(tap offsets, dy rows,
    /// sums)` computes the tile's sums over the batch, which are added to dw.
    fn tiles_with<const MR: usize, const QT: usize>(
        &self,
        dw: &mut [f32],
        mut sums_of: impl FnMut(&[usize; QT], &[*const f32; MR], &mut [[f32; QT]; MR]),
    ) {
        let (o, kk) = (self.plan.sh.o, self.plan.offs.len());
        for o0 in (0..o).step_by(MR) {
            let rows = MR.min(o - o0);
            // Rows past O re-read the last channel; their sums are dropped.
            let dys: [*const f32; MR] =
                std::array::from_fn(|m| self.dy[(o0 + m).min(o - 1) * self.cols..].as_ptr());
            for q0 in (0..kk).step_by(QT) {
                let taps = QT.min(kk - q0);
                let offs: [usize; QT] =
                    std::array::from_fn(|t| self.plan.offs[q0 + t.min(taps - 1)]);
                let mut sums = [[0.0f32; QT]; MR];
                sums_of(&offs, &dys, &mut sums);
                for (m, row) in sums.iter().enumerate().take(rows) {
                    for (t, &v) in row.iter().enumerate().take(taps) {
                        dw[(o0 + m) * kk + q0 + t] += v;
                    }
                }
            }
        }
    }
}

/// The portable weight-gradient tile (same sums, lane by lane).
unsafe fn scalar_grad<const MR: usize, const QT: usize>(
    vecs: &[Vector],
    xpad: *const f32,
    imgs: &[(usize, usize)],
    offs: &[usize; QT],
    dys: &[*const f32; MR],
    sums: &mut [[f32; QT]; MR],
) {
    for &(xb, col) in imgs {
        for v in vecs {
            for l in 0..v.lanes {
                let base = xb + v.base(l);
                for (m, row) in sums.iter_mut().enumerate() {
                    let g = *dys[m].add(col + v.ob + l);
                    for (t, s) in row.iter_mut().enumerate() {
                        *s = g.mul_add(*xpad.add(base + offs[t]), *s);
                    }
                }
            }
        }
    }
}
