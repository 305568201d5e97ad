//! Options with a fixed set of values (direction norms, precisions, eigen methods, …),
//! shared by the command line, analysis specs and file attributes.
//!
//! The rule: such an enum is declared once, in the library module it belongs to, with the
//! `choice!` macro, which gives it its names (kebab-case, as typed on the command line and
//! in specs, and written to files), a one-line help per value, `Display` and a
//! case-insensitive `FromStr`. The library never imports the argument parser:
//! `src/cli/choices.rs` turns every [`Choice`] into a `ValueEnum` in one line each, so
//! `--help` lists the same names and helps.

/// An option with a fixed set of named values (see the module doc).
pub trait Choice: Sized + Copy + PartialEq + 'static {
    /// Every value, in the order `--help` lists them.
    const ALL: &'static [Self];
    /// The value's name: `filter`, `f32`, `lanczos`.
    fn name(self) -> &'static str;
    /// One line on what the value means.
    fn help(self) -> &'static str;
    /// The value named `s` (ASCII case ignored).
    fn from_name(s: &str) -> Option<Self> {
        Self::ALL
            .iter()
            .copied()
            .find(|v| v.name().eq_ignore_ascii_case(s))
    }
    /// `a, b, c`: the names, for messages.
    fn names() -> String {
        Self::ALL
            .iter()
            .map(|v| v.name())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Occurs when a name is not one of a [`Choice`]'s values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("'{got}' is not one of: {expected}")]
pub struct UnknownChoice {
    /// The rejected name.
    pub got: String,
    /// The accepted names.
    pub expected: String,
}

/// Declares an enum whose variants each carry a name and a help line, and implements
/// [`Choice`], `Display` and `FromStr` for it:
///
/// ```ignore
/// choice! {
///     /// Floating-point precision of the computation.
///     #[derive(Default)]
///     pub enum Precision {
///         #[default]
///         F32 = "f32": "single precision (as models are trained), f64 sums",
///         F64 = "f64": "double precision end to end (reference checks)",
///     }
/// }
/// ```
macro_rules! choice {
    (
        $(#[$meta:meta])*
        $vis:vis enum $name:ident {
            $( $(#[$vmeta:meta])* $variant:ident = $vname:literal : $help:literal ),+ $(,)?
        }
    ) => {
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        $(#[$meta])*
        $vis enum $name {
            $( #[doc = $help] $(#[$vmeta])* $variant ),+
        }

        impl $crate::choice::Choice for $name {
            const ALL: &'static [Self] = &[$($name::$variant),+];
            fn name(self) -> &'static str {
                match self { $($name::$variant => $vname),+ }
            }
            fn help(self) -> &'static str {
                match self { $($name::$variant => $help),+ }
            }
        }

        impl ::std::fmt::Display for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.write_str($crate::choice::Choice::name(*self))
            }
        }

        impl ::std::str::FromStr for $name {
            type Err = $crate::choice::UnknownChoice;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                <Self as $crate::choice::Choice>::from_name(s).ok_or_else(|| {
                    $crate::choice::UnknownChoice {
                        got: s.to_string(),
                        expected: <Self as $crate::choice::Choice>::names(),
                    }
                })
            }
        }
    };
}
pub(crate) use choice;

#[cfg(test)]
mod tests {
    use super::*;

    choice! {
        /// A test enum.
        #[derive(Default)]
        pub enum Colour {
            #[default]
            Red = "red": "the first",
            DarkBlue = "dark-blue": "the second",
        }
    }

    #[test]
    fn names_parse_and_display() {
        assert_eq!(Colour::default(), Colour::Red);
        assert_eq!(Colour::DarkBlue.to_string(), "dark-blue");
        assert_eq!("DARK-BLUE".parse::<Colour>().unwrap(), Colour::DarkBlue);
        let e = "green".parse::<Colour>().unwrap_err();
        assert_eq!(e.to_string(), "'green' is not one of: red, dark-blue");
        assert_eq!(Colour::Red.help(), "the first");
    }
}
