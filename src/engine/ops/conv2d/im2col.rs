//! The blocked im2col + GEMM path (see the [module docs](super)): output rows cut into
//! blocks, each block of x unfolded into a small buffer, and the column gradients folded
//! back block by block (col2im).

use super::super::vmath::wide;
use super::Plan;
use crate::engine::gemm::Mat;
use crate::engine::Scalar;

impl Plan<'_> {
    /// 1×1, stride 1, no padding: x `[C, N·H·W]` is its own im2col.
    pub(super) fn pointwise(&self) -> bool {
        let c = self.conv;
        c.kernel == 1 && c.stride == 1 && c.padding == 0
    }

    /// Calls `f(r0, r1)` for consecutive blocks of `rb` output rows (n, oh).
    pub(super) fn for_blocks(&self, mut f: impl FnMut(usize, usize)) {
        let rows = self.g.n * self.g.ho;
        let rb = self.rb.max(1);
        let mut r0 = 0;
        while r0 < rows {
            let r1 = (r0 + rb).min(rows);
            f(r0, r1);
            r0 = r1;
        }
    }

    /// Output columns of the block of rows `[r0, r1)`: (first column, count).
    pub(super) fn cols_of(&self, r0: usize, r1: usize) -> (usize, usize) {
        (r0 * self.g.wo, (r1 - r0) * self.g.wo)
    }

    /// Scratch for `copies` unfolded blocks (empty for pointwise convolutions, which need
    /// none, and where there is no block to unfold: `copies` = 0).
    pub(super) fn block_buf<T: Scalar>(&self, copies: usize) -> Vec<T> {
        let g = &self.g;
        if self.pointwise() || copies == 0 {
            Vec::new()
        } else {
            vec![T::zero(); copies * g.kk * self.rb.min(g.n * g.ho) * g.wo]
        }
    }

    /// The columns of output rows `[r0, r1)` of im2col(x), as a GEMM operand: unfolded into
    /// `buf`, or, for a pointwise convolution, a view of x itself.
    pub(super) fn lower<'a, T: Scalar>(
        &self,
        xs: &'a [T],
        r0: usize,
        r1: usize,
        buf: &'a mut [T],
    ) -> Mat<'a, T> {
        let g = &self.g;
        if self.pointwise() {
            Mat::new(&xs[r0 * g.wo..], g.cols)
        } else {
            let nb = (r1 - r0) * g.wo;
            self.im2col_block(xs, r0, r1, &mut buf[..g.kk * nb]);
            Mat::new(&buf[..g.kk * nb], nb)
        }
    }

    /// dx[block] += col2im(Aᵀ · B) for the block `[r0, r1)` of B (inner dimension `k`:
    /// rows of B, columns of A); `dbuf` is scratch for one block.
    pub(super) fn col_grad<T: Scalar>(
        &self,
        r0: usize,
        r1: usize,
        k: usize,
        (a, b): (Mat<T>, Mat<T>),
        dbuf: &mut [T],
        dx: &mut [T],
    ) {
        let g = &self.g;
        let (c0, nb) = self.cols_of(r0, r1);
        let (zero, one) = (T::zero(), T::one());
        if self.pointwise() {
            // Blocks are disjoint column ranges of dx [C, N·H·W]: write them directly.
            let dx = &mut dx[c0..];
            self.gemm
                .gemm_slices(g.kk, nb, k, one, a.t(), b, zero, dx, g.cols);
        } else {
            let dbuf = &mut dbuf[..g.kk * nb];
            self.gemm
                .gemm_slices(g.kk, nb, k, one, a.t(), b, zero, dbuf, nb);
            self.col2im_block(dbuf, r0, r1, dx);
        }
    }

    /// For each output column (n, oh, ow) the valid `ow` range of kernel column `kj`.
    #[inline]
    fn ow_range(&self, kj: usize) -> (usize, usize) {
        let (s, p, w, wo) = (self.conv.stride, self.conv.padding, self.g.w, self.g.wo);
        // iw = ow·s + kj − p must lie in [0, w)
        let lo = if kj >= p { 0 } else { (p - kj).div_ceil(s) };
        let hi = if w + p > kj {
            ((w + p - kj - 1) / s + 1).min(wo)
        } else {
            0
        };
        (lo.min(hi), hi)
    }

    /// The input row `ih` that output row `oh` reads through kernel row `ki`, if inside.
    #[inline]
    fn in_row(&self, oh: usize, ki: usize) -> Option<usize> {
        (oh * self.conv.stride + ki)
            .checked_sub(self.conv.padding)
            .filter(|&ih| ih < self.g.h)
    }

    /// Unfolds output rows `[r0, r1)` (row r = n·Ho + oh) of x `[C, N, H, W]` into
    /// `buf [C·k·k, (r1 − r0)·Wo]`, zero padding; every element of `buf` is written.
    fn im2col_block<T: Scalar>(&self, xs: &[T], r0: usize, r1: usize, buf: &mut [T]) {
        let g = &self.g;
        let (k, s, p) = (self.conv.kernel, self.conv.stride, self.conv.padding);
        let nb = (r1 - r0) * g.wo;
        let zero = T::zero();
        for (rr, row) in buf[..g.kk * nb].chunks_exact_mut(nb).enumerate() {
            let (ci, ki, kj) = (rr / (k * k), (rr / k) % k, rr % k);
            let (lo, hi) = self.ow_range(kj);
            let plane = &xs[ci * g.n * g.h * g.w..(ci + 1) * g.n * g.h * g.w];
            if self.same_size() {
                // Consecutive valid output rows read consecutive input rows shifted by
                // kj − p: one copy per image run, then re-zero the wrapped-around padding.
                self.image_runs(r0, r1, |ni, oa, ob, d0| {
                    let (va, vb) = self.valid_rows(ki, oa, ob);
                    let out = &mut row[d0 * g.wo..(d0 + ob - oa) * g.wo];
                    if va >= vb || lo >= hi {
                        out.fill(zero);
                        return;
                    }
                    out[..(va - oa) * g.wo].fill(zero);
                    out[(vb - oa) * g.wo..].fill(zero);
                    let dst0 = (va - oa) * g.wo + lo;
                    let len = (vb - va - 1) * g.wo + hi - lo;
                    let src0 = (ni * g.h + va + ki - p) * g.w + lo + kj - p;
                    out[dst0..dst0 + len].copy_from_slice(&plane[src0..src0 + len]);
                    for o in out[(va - oa) * g.wo..(vb - oa) * g.wo].chunks_exact_mut(g.wo) {
                        o[..lo].fill(zero);
                        o[hi..].fill(zero);
                    }
                });
                continue;
            }
            let (mut ni, mut oh) = (r0 / g.ho, r0 % g.ho);
            for out in row.chunks_exact_mut(g.wo) {
                match self.in_row(oh, ki) {
                    Some(ih) if lo < hi => {
                        let src = &plane[(ni * g.h + ih) * g.w..][..g.w];
                        out[..lo].fill(zero);
                        out[hi..].fill(zero);
                        if s == 1 {
                            let iw0 = lo + kj - p;
                            out[lo..hi].copy_from_slice(&src[iw0..iw0 + hi - lo]);
                        } else {
                            let iw0 = lo * s + kj - p;
                            for (o, &v) in out[lo..hi].iter_mut().zip(src[iw0..].iter().step_by(s))
                            {
                                *o = v;
                            }
                        }
                    }
                    _ => out.fill(zero),
                }
                oh += 1;
                if oh == g.ho {
                    oh = 0;
                    ni += 1;
                }
            }
        }
    }

    /// Adjoint of [`Self::im2col_block`]: adds `buf [C·k·k, (r1 − r0)·Wo]` into
    /// dx `[C, N, H, W]`, summing overlaps.
    /// `buf` is scratch: its entries that fall on the padding are zeroed on the way.
    fn col2im_block<T: Scalar>(&self, buf: &mut [T], r0: usize, r1: usize, dx: &mut [T]) {
        let g = &self.g;
        let (k, s, p) = (self.conv.kernel, self.conv.stride, self.conv.padding);
        let nb = (r1 - r0) * g.wo;
        let zero = T::zero();
        if matches!((k, s, p), (3, 2, 1) | (1, 2, 0)) && g.w == 2 * g.wo && g.wo > 0 {
            return self.col2im_s2(&buf[..g.kk * nb], r0, r1, dx);
        }
        for (rr, row) in buf[..g.kk * nb].chunks_exact_mut(nb).enumerate() {
            let (ci, ki, kj) = (rr / (k * k), (rr / k) % k, rr % k);
            let (lo, hi) = self.ow_range(kj);
            if lo >= hi {
                continue;
            }
            let plane = &mut dx[ci * g.n * g.h * g.w..(ci + 1) * g.n * g.h * g.w];
            if self.same_size() {
                // Mirror of im2col's fast path: zero the padding columns, then one
                // contiguous accumulation per image run (the zeros land on neighbours).
                self.image_runs(r0, r1, |ni, oa, ob, d0| {
                    let (va, vb) = self.valid_rows(ki, oa, ob);
                    if va >= vb {
                        return;
                    }
                    let src = &mut row[(d0 + va - oa) * g.wo..(d0 + vb - oa) * g.wo];
                    for o in src.chunks_exact_mut(g.wo) {
                        o[..lo].fill(zero);
                        o[hi..].fill(zero);
                    }
                    let len = (vb - va - 1) * g.wo + hi - lo;
                    let dst0 = (ni * g.h + va + ki - p) * g.w + lo + kj - p;
                    let dst = &mut plane[dst0..dst0 + len];
                    for (d, &v) in dst.iter_mut().zip(&src[lo..lo + len]) {
                        *d += v;
                    }
                });
                continue;
            }
            let (mut ni, mut oh) = (r0 / g.ho, r0 % g.ho);
            for src in row.chunks_exact(g.wo) {
                if let Some(ih) = self.in_row(oh, ki) {
                    let dst = &mut plane[(ni * g.h + ih) * g.w..][..g.w];
                    let iw0 = lo * s + kj - p;
                    if s == 1 {
                        for (d, &v) in dst[iw0..iw0 + hi - lo].iter_mut().zip(&src[lo..hi]) {
                            *d += v;
                        }
                    } else {
                        for (d, &v) in dst[iw0..].iter_mut().step_by(s).zip(&src[lo..hi]) {
                            *d += v;
                        }
                    }
                }
                oh += 1;
                if oh == g.ho {
                    oh = 0;
                    ni += 1;
                }
            }
        }
    }

    /// [`Plan::col2im_block`] for ResNet's downsampling on an even width: a 3×3 stride-2
    /// convolution with padding 1, whose kernel columns 0, 1, 2 of output column ow land
    /// on input columns 2·ow − 1, 2·ow, 2·ow + 1, so each (channel, kernel row) adds its
    /// three rows into one output row at once (its even columns, then its odd ones), with
    /// no per-column range checks, instead of three passes of the general loop; or a 1×1
    /// stride-2 projection (column 2·ow). Each element gets the same additions in the same
    /// order (kernel row, then column), so the same bits.
    fn col2im_s2<T: Scalar>(&self, buf: &[T], r0: usize, r1: usize, dx: &mut [T]) {
        let g = &self.g;
        let (k, wo, nb) = (self.conv.kernel, g.wo, (r1 - r0) * g.wo);
        for (cr, rows) in buf.chunks_exact(k * nb).enumerate() {
            let (ci, ki) = (cr / k, cr % k);
            let plane = &mut dx[ci * g.n * g.h * g.w..(ci + 1) * g.n * g.h * g.w];
            let (mut ni, mut oh) = (r0 / g.ho, r0 % g.ho);
            for q in 0..r1 - r0 {
                if let Some(ih) = self.in_row(oh, ki) {
                    let dst = &mut plane[(ni * g.h + ih) * g.w..][..g.w];
                    let src = |kj: usize| &rows[kj * nb + q * wo..][..wo];
                    if k == 1 {
                        wide!(evens_s2(dst, src(0)));
                    } else {
                        wide!(pairs_s2(dst, src(0), src(1), src(2)));
                    }
                }
                oh += 1;
                if oh == g.ho {
                    oh = 0;
                    ni += 1;
                }
            }
        }
    }

    /// Stride 1 with "same" padding (2p = k − 1): Ho = H, Wo = W, so output row oh of
    /// image n reads input rows of the same image at a fixed offset.
    fn same_size(&self) -> bool {
        let g = &self.g;
        self.conv.stride == 1 && g.wo == g.w && g.ho == g.h
    }

    /// Output rows `[oa, ob)` whose input row oh + ki − p lies inside the image.
    #[inline]
    fn valid_rows(&self, ki: usize, oa: usize, ob: usize) -> (usize, usize) {
        let p = self.conv.padding;
        let va = oa.max(p.saturating_sub(ki));
        let vb = ob.min((self.g.h + p).saturating_sub(ki));
        (va, vb.max(va))
    }

    /// Splits output rows `[r0, r1)` by image: `f(n, oh_begin, oh_end, block_row_of_oh_begin)`.
    fn image_runs(&self, r0: usize, r1: usize, mut f: impl FnMut(usize, usize, usize, usize)) {
        let ho = self.g.ho;
        let mut r = r0;
        while r < r1 {
            let (ni, oa) = (r / ho, r % ho);
            let ob = ho.min(oa + (r1 - r));
            f(ni, oa, ob, r - r0);
            r += ob - oa;
        }
    }

    /// Unfolds x `[C, N, H, W]` into `[C·k·k, N·Ho·Wo]`; zero padding. (The passes unfold
    /// block by block; this whole-batch form is for tests.)
    #[cfg(test)]
    pub(super) fn im2col<T: Scalar>(&self, x: &ndarray::ArrayD<T>) -> ndarray::Array2<T> {
        let g = &self.g;
        let xs = self.input(x);
        let mut cols = vec![T::zero(); g.kk * g.cols];
        if g.cols > 0 {
            self.im2col_block(&xs, 0, g.n * g.ho, &mut cols);
        }
        ndarray::Array2::from_shape_vec((g.kk, g.cols), cols).expect("size")
    }

    /// Folds `[C·k·k, N·Ho·Wo]` back into `[C, N, H, W]`, summing overlaps (adjoint of
    /// im2col; for tests).
    #[cfg(test)]
    pub(super) fn col2im<T: Scalar>(&self, cols: &ndarray::Array2<T>) -> ndarray::ArrayD<T> {
        let g = &self.g;
        let mut cs: Vec<T> = cols.iter().copied().collect();
        let mut x = vec![T::zero(); g.c * g.n * g.h * g.w];
        if g.cols > 0 {
            self.col2im_block(&mut cs, 0, g.n * g.ho, &mut x);
        }
        ndarray::ArrayD::from_shape_vec(ndarray::IxDyn(&[g.c, g.n, g.h, g.w]), x).expect("size")
    }
}

/// One output row of [`Plan::col2im_s2`]: `dst[2·ow] += b[ow]`, then
/// `dst[2·ow + 1] += a[ow + 1]` (for ow + 1 < Wo) and `+= c[ow]`, with `dst` 2·Wo long.
#[inline(always)]
fn pairs_s2<T: Scalar>(dst: &mut [T], a: &[T], b: &[T], c: &[T]) {
    let wo = b.len();
    let (dst, a, c) = (&mut dst[..2 * wo], &a[..wo], &c[..wo]);
    evens_s2(dst, b);
    for ow in 0..wo - 1 {
        dst[2 * ow + 1] = (dst[2 * ow + 1] + a[ow + 1]) + c[ow];
    }
    dst[2 * wo - 1] += c[wo - 1];
}

/// One output row of [`Plan::col2im_s2`]'s 1×1 case: `dst[2·ow] += b[ow]`.
#[inline(always)]
fn evens_s2<T: Scalar>(dst: &mut [T], b: &[T]) {
    for (d, &bv) in dst.chunks_exact_mut(2).zip(b) {
        d[0] += bv;
    }
}
