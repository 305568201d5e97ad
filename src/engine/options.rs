//! How the engine computes, where there is a choice that changes result bits.
//!
//! Every choice gives the same mathematics; they differ in the order of floating-point
//! sums, so in the last bits of f32 results (f64 only through the GEMM backend). The
//! defaults are the fastest; the others exist for comparisons (`losscape bench --conv
//! im2col`) and for the same bits on different machines ([`Simd::Avx2`]). A [`Graph`]
//! carries its options ([`Graph::options`], [`Graph::with_options`]); the passes hand
//! them down to the convolution and GEMM calls. Nothing is read from the environment.
//!
//! [`Graph`]: super::Graph
//! [`Graph::options`]: super::Graph::options
//! [`Graph::with_options`]: super::Graph::with_options

use std::fmt;

/// Engine settings that change result bits (see the module docs).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct EngineOptions {
    pub conv: ConvAlgorithm,
    pub gemm: GemmBackend,
    pub simd: Simd,
    pub tape: TapeLayout,
}

crate::choice::choice! {
    /// How f32 convolutions are computed (f64 ones always take im2col + GEMM).
    #[derive(Default, Hash)]
    pub enum ConvAlgorithm {
        #[default]
        Auto = "auto": "The direct SIMD kernels where they apply (AVX2 + FMA, output rows of at least 8), im2col + GEMM elsewhere.",
        Im2col = "im2col": "im2col + GEMM everywhere.",
        Winograd = "winograd": "Winograd F(2×2, 3×3) for 3×3 stride-1 sums (forward, R-forward, dx, and the weight gradient with 8+ input channels), auto elsewhere; f32 error up to ~20× direct's (bound in the engine docs).",
        Winograd4 = "winograd4": "Winograd F(4×4, 3×3) for 3×3 stride-1 padding-1 sums on images whose sides are multiples of 4 (forward, R-forward and dx up to 16 wide, sixteen images to a vector; the weight gradients up to 32 wide); F(2×2) for the other 3×3 stride-1 sums, auto elsewhere; f32 error up to ~100× direct's (bound in the engine docs).",
    }
}

crate::choice::choice! {
    /// Who multiplies matrices.
    #[derive(Default, Hash)]
    pub enum GemmBackend {
        #[default]
        Blas = "blas": "OpenBLAS (one thread) for operands with a unit stride, `matrixmultiply` for others.",
        MatrixMultiply = "matrixmultiply": "The `matrixmultiply` crate everywhere.",
    }
}

crate::choice::choice! {
    /// The widest vectors the direct convolution kernels may use: a cap, never more than
    /// the CPU has.
    #[derive(Default, Hash)]
    pub enum Simd {
        #[default]
        Native = "native": "The widest the CPU has (16-lane zmm on AVX-512).",
        Avx2 = "avx2": "8-lane ymm vectors: the bits of any AVX2 machine, also on AVX-512 ones (whose 16-lane weight-gradient sums round differently).",
        Avx2Only = "avx2-only": "The kernels of an AVX2-only CPU (16 ymm registers, smaller tiles), also on AVX-512 ones, where `avx2` runs AVX-512VL's 32-register tiles: the bits of `avx2` (recorded as it), for timing an AVX2 machine on an AVX-512 one.",
    }
}

crate::choice::choice! {
    /// What the tape keeps of conv → batch norm (eval mode) [→ ReLU] for the reverse and
    /// R-passes (f32 only; f64 always keeps the full tape).
    #[derive(Default, Hash)]
    pub enum TapeLayout {
        #[default]
        Full = "full": "The conv's output and batch norm's (or the ReLU's): x̂ = (x − μ)·s from the conv's output, as the forward formed it.",
        Lean = "lean": "Batch norm's (or the ReLU's) output only, written in place by the conv's epilogue: x̂ = (y − β)/γ from it (one activation less per layer to write and keep; layers with γ = 0 or |β| > 16|γ| keep the full tape). At a residual block's end (conv → batch norm → add → ReLU) only the block's output z = relu(y + r) is kept, and y = z − r. dγ and H·v round differently (x̂ within ~(5|x̂| + |β/γ|)·2⁻²⁴, at a block's end ~(7|x̂| + 3|β/γ| + |r/γ|)·2⁻²⁴); values and dx are the full tape's bits.",
    }
}

impl EngineOptions {
    /// Whether these are the defaults.
    pub fn is_default(&self) -> bool {
        *self == Self::default()
    }

    /// A short stable description, `conv=auto,gemm=blas,simd=native` (then `,tape=lean`
    /// where lean, so older descriptions stay what they were), for fingerprints and file
    /// attributes.
    pub fn describe(&self) -> String {
        // the AVX2-only kernels give `avx2`'s bits: the same results, the same description
        let simd = match self.simd {
            Simd::Avx2Only => Simd::Avx2,
            s => s,
        };
        EngineOptions { simd, ..*self }.to_string()
    }
}

impl fmt::Display for EngineOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "conv={},gemm={},simd={}",
            self.conv, self.gemm, self.simd
        )?;
        if self.tape != TapeLayout::Full {
            write!(f, ",tape={}", self.tape)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describe_is_stable() {
        assert!(EngineOptions::default().is_default());
        assert_eq!(
            EngineOptions::default().describe(),
            "conv=auto,gemm=blas,simd=native"
        );
        let o = EngineOptions {
            conv: ConvAlgorithm::Im2col,
            gemm: GemmBackend::MatrixMultiply,
            simd: Simd::Avx2,
            tape: TapeLayout::Full,
        };
        assert!(!o.is_default());
        assert_eq!(o.describe(), "conv=im2col,gemm=matrixmultiply,simd=avx2");
        let only = EngineOptions {
            simd: Simd::Avx2Only,
            ..o
        };
        assert_eq!(only.describe(), o.describe());
        assert_eq!(
            only.to_string(),
            "conv=im2col,gemm=matrixmultiply,simd=avx2-only"
        );
        let w = EngineOptions {
            conv: ConvAlgorithm::Winograd,
            ..Default::default()
        };
        assert_eq!(w.describe(), "conv=winograd,gemm=blas,simd=native");
        let lean = EngineOptions {
            tape: TapeLayout::Lean,
            ..w
        };
        assert_eq!(
            lean.describe(),
            "conv=winograd,gemm=blas,simd=native,tape=lean"
        );
        assert_eq!(
            "Winograd".parse::<ConvAlgorithm>(),
            Ok(ConvAlgorithm::Winograd)
        );
    }
}
