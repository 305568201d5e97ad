//! clap `ValueEnum` for the library's [`Choice`] enums (see [`crate::choice`] for the
//! rule): the names and help lines come from the enum's declaration.

use clap::builder::PossibleValue;
use clap::ValueEnum;

use crate::choice::Choice;

macro_rules! value_enum {
    ($($t:ty),+ $(,)?) => {$(
        impl ValueEnum for $t {
            fn value_variants<'a>() -> &'a [Self] {
                <$t as Choice>::ALL
            }
            fn to_possible_value(&self) -> Option<PossibleValue> {
                Some(PossibleValue::new(self.name()).help(self.help()))
            }
        }
    )+};
}

value_enum!(
    crate::engine::ConvAlgorithm,
    crate::engine::GemmBackend,
    crate::engine::Simd,
    crate::engine::TapeLayout,
    crate::jobs::BnMode,
    crate::jobs::Precision,
    crate::jobs::hessian::CurvatureOperator,
    crate::jobs::hessian::EigenMethod,
    crate::jobs::hessian::TraceMethod,
    crate::jobs::hessian::ParamSet,
    crate::jobs::surface::SurfaceDirType,
    crate::jobs::trajectory::ProjMethod,
    crate::landscape::directions::DirectionNorm,
    crate::landscape::directions::DirType,
);
