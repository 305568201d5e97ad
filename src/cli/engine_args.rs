//! `--conv`, `--gemm`, `--simd`: the engine settings that change result bits (see
//! [`crate::engine::options`]), as a flattenable argument group.

use clap::Args;

use crate::engine::{ConvAlgorithm, EngineOptions, GemmBackend, Simd, TapeLayout};

/// Engine settings (defaults: the fastest at the direct sums' accuracy; others change the
/// last bits of results).
#[derive(Debug, Args, Clone, Copy, Default)]
pub struct EngineArgs {
    /// Convolutions in f32: direct SIMD kernels where they apply, im2col + GEMM everywhere,
    /// or Winograd F(2×2, 3×3) for 3×3 stride-1 sums (forwards 4–23% and gradients ~4%
    /// faster on ResNets; rounding error up to ~20× the direct sums').
    #[arg(long, value_enum, default_value_t = ConvAlgorithm::Auto)]
    pub conv: ConvAlgorithm,
    /// Matrix products: OpenBLAS, or the `matrixmultiply` crate everywhere.
    #[arg(long, value_enum, default_value_t = GemmBackend::Blas)]
    pub gemm: GemmBackend,
    /// Widest vectors of the direct kernels: the CPU's, or AVX2's 8 lanes (the bits of
    /// AVX2 machines on AVX-512 ones).
    #[arg(long, value_enum, default_value_t = Simd::Native)]
    pub simd: Simd,
    /// What the tape keeps of conv → batch norm (eval) → ReLU in f32: both outputs, or
    /// batch norm's alone with x̂ formed from it (one activation less per layer, and at a
    /// residual block's end only the block's output: faster gradients and H·v, smaller
    /// kept state; dγ and H·v round differently).
    #[arg(long, value_enum, default_value_t = TapeLayout::Full)]
    pub tape: TapeLayout,
}

impl EngineArgs {
    pub fn options(&self) -> EngineOptions {
        EngineOptions {
            conv: self.conv,
            gemm: self.gemm,
            simd: self.simd,
            tape: self.tape,
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        engine: EngineArgs,
    }

    #[test]
    fn flags_set_the_options() {
        let parse = |args: &[&str]| {
            let all = std::iter::once("x").chain(args.iter().copied());
            Cli::parse_from(all).engine.options()
        };
        assert!(parse(&[]).is_default());
        let o = parse(&[
            "--conv",
            "im2col",
            "--gemm",
            "matrixmultiply",
            "--simd",
            "avx2",
            "--tape",
            "lean",
        ]);
        assert_eq!(
            o.describe(),
            "conv=im2col,gemm=matrixmultiply,simd=avx2,tape=lean"
        );
    }
}
