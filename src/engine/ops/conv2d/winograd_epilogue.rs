//! The fused epilogue of [`super::Winograd`]'s output transform: eval-mode batch norm
//! `γ·((y − μ)·s) + β` per output channel, then a residual term, then ReLU (the graph's
//! `ChannelAffine` in f32), applied by the zmm transform in registers
//! (`at_tiles_zmm`) or to each block's outputs while in cache ([`ChannelEpi::apply`]),
//! in the operations and order of the closures it stands for, so the same bits.

use super::super::kernels::Kernel;
#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

/// A fused epilogue's numbers in f32 for [`super::Winograd::run`] (see `ChannelAffine`
/// in the engine's ops): `[μ, s, γ, β]` per output channel, ReLU last, and a residual term
/// laid out as the output `[O, N·Ho·Wo]`.
#[derive(Clone, Copy, Debug)]
pub(in super::super) struct Epi<'a> {
    pub(in super::super) channels: &'a [[f32; 4]],
    pub(in super::super) relu: bool,
    pub(in super::super) residual: Option<&'a [f32]>,
}

impl<'a> Epi<'a> {
    /// Output channel `oc`'s part, its outputs `cols` long.
    pub(super) fn channel(&self, oc: usize, cols: usize) -> ChannelEpi<'a> {
        ChannelEpi {
            k: self.channels[oc],
            relu: self.relu,
            residual: self.residual.map(|r| &r[oc * cols..][..cols]),
        }
    }
}

/// One output channel's fused epilogue: `[μ, s, γ, β]`, then `+ r` from `residual` (laid
/// out as the channel's output), then ReLU.
#[derive(Clone, Copy, Debug)]
pub(super) struct ChannelEpi<'a> {
    pub(super) k: [f32; 4],
    pub(super) relu: bool,
    pub(super) residual: Option<&'a [f32]>,
}

impl ChannelEpi<'_> {
    /// The epilogue of one output `t` (`r`: its residual term, if any): `relu?(γ·((t −
    /// μ)·s) + β [+ r])`, the operations of batch norm's epilogue and the residual add in
    /// their order.
    #[inline(always)]
    pub(super) fn one(&self, t: f32, r: f32) -> f32 {
        let [mu, sc, g, b] = self.k;
        let mut v = g * ((t - mu) * sc) + b;
        if self.residual.is_some() {
            v += r;
        }
        if self.relu {
            v = crate::engine::ops::relu::relu(v);
        }
        v
    }

    /// The epilogue in place on the outputs `y`, which lie at `at` in the channel's
    /// output (where its residual term is read): eight at a time with AVX2 on the vector
    /// kernels, the same operations, so the same bits.
    pub(super) fn apply(&self, kernel: Kernel, y: &mut [f32], at: usize) {
        let r = self.residual.map(|r| &r[at..][..y.len()]);
        let done = match kernel {
            // SAFETY: the vector kernels imply AVX2 (detected); `r` is as long as `y`.
            #[cfg(target_arch = "x86_64")]
            Kernel::Zmm | Kernel::Avx2 | Kernel::Avx512 => unsafe { self.apply_avx2(y, at) },
            _ => 0,
        };
        for (k, t) in y.iter_mut().enumerate().skip(done) {
            *t = self.one(*t, r.map_or(0.0, |r| r[k]));
        }
    }

    /// [`ChannelEpi::apply`]'s whole vectors of 8 (`y` at `at` in the channel's output);
    /// returns how many outputs were done.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    unsafe fn apply_avx2(&self, y: &mut [f32], at: usize) -> usize {
        let k = self.k.map(|v| _mm256_set1_ps(v));
        let full = y.len() / 8 * 8;
        let p = y.as_mut_ptr();
        for j in (0..full).step_by(8) {
            let t = _mm256_loadu_ps(p.add(j));
            _mm256_storeu_ps(p.add(j), self.ymm(&k, t, at + j, |r| _mm256_loadu_ps(r)));
        }
        full
    }

    /// The epilogue on one ymm vector `y` of outputs at `at` in the channel's output (`k`:
    /// `[μ, s, γ, β]` broadcast; `load` reads the residual terms at a pointer): the
    /// operations of [`ChannelEpi::one`] in their order, so its bits.
    ///
    /// # Safety
    /// AVX2 is present; with a residual, `load` may read 8 floats at `at` in it.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    #[inline]
    pub(super) unsafe fn ymm(
        &self,
        &[mu, sc, g, b]: &[__m256; 4],
        y: __m256,
        at: usize,
        load: impl FnOnce(*const f32) -> __m256,
    ) -> __m256 {
        let mut v = _mm256_add_ps(_mm256_mul_ps(g, _mm256_mul_ps(_mm256_sub_ps(y, mu), sc)), b);
        if let Some(r) = self.residual {
            v = _mm256_add_ps(v, load(r.as_ptr().add(at)));
        }
        // max(v, 0) is 0 for v ≤ 0 (either zero) and for NaN, as `relu`
        if self.relu {
            v = _mm256_max_ps(v, _mm256_setzero_ps());
        }
        v
    }

    /// [`ChannelEpi::ymm`] on a zmm vector.
    ///
    /// # Safety
    /// AVX-512F is present; with a residual, `load` may read 16 floats at `at` in it.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    #[inline]
    pub(super) unsafe fn zmm(
        &self,
        &[mu, sc, g, b]: &[__m512; 4],
        y: __m512,
        at: usize,
        load: impl FnOnce(*const f32) -> __m512,
    ) -> __m512 {
        let mut v = _mm512_add_ps(_mm512_mul_ps(g, _mm512_mul_ps(_mm512_sub_ps(y, mu), sc)), b);
        if let Some(r) = self.residual {
            v = _mm512_add_ps(v, load(r.as_ptr().add(at)));
        }
        // max(v, 0) is 0 for v ≤ 0 (either zero) and for NaN, as `relu`
        if self.relu {
            v = _mm512_max_ps(v, _mm512_setzero_ps());
        }
        v
    }
}
