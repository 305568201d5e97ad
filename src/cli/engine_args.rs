//! `--conv`, `--gemm`, `--simd`: the engine settings that change result bits (see
//! [`crate::engine::options`]), as a flattenable argument group. The clap-facing enums
//! live here; the engine's own are clap-free.

use clap::{Args, ValueEnum};

use crate::engine::{ConvAlgorithm, EngineOptions, GemmBackend, Simd};

/// Engine settings (defaults: the fastest; others change the last bits of results).
#[derive(Debug, Args, Clone, Copy, Default)]
pub struct EngineArgs {
    /// Convolutions in f32: direct SIMD kernels where they apply, or im2col + GEMM everywhere.
    #[arg(long, value_enum, default_value_t = ConvArg::Auto)]
    pub conv: ConvArg,
    /// Matrix products: OpenBLAS, or the `matrixmultiply` crate everywhere.
    #[arg(long, value_enum, default_value_t = GemmArg::Blas)]
    pub gemm: GemmArg,
    /// Widest vectors of the direct kernels: the CPU's, or AVX2's 8 lanes (the bits of
    /// AVX2 machines on AVX-512 ones).
    #[arg(long, value_enum, default_value_t = SimdArg::Native)]
    pub simd: SimdArg,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum ConvArg {
    #[default]
    Auto,
    Im2col,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum GemmArg {
    #[default]
    Blas,
    #[value(name = "matrixmultiply")]
    MatrixMultiply,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum SimdArg {
    #[default]
    Native,
    Avx2,
}

impl EngineArgs {
    pub fn options(&self) -> EngineOptions {
        EngineOptions {
            conv: match self.conv {
                ConvArg::Auto => ConvAlgorithm::Auto,
                ConvArg::Im2col => ConvAlgorithm::Im2col,
            },
            gemm: match self.gemm {
                GemmArg::Blas => GemmBackend::Blas,
                GemmArg::MatrixMultiply => GemmBackend::MatrixMultiply,
            },
            simd: match self.simd {
                SimdArg::Native => Simd::Native,
                SimdArg::Avx2 => Simd::Avx2,
            },
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
        ]);
        assert_eq!(o.describe(), "conv=im2col,gemm=matrixmultiply,simd=avx2");
    }
}
