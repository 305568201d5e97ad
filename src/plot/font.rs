//! The embedded font. Plotters' default text path asks the system for fonts (fontconfig)
//! and fails on machines without them; `ab_glyph` with DejaVu Sans compiled into the binary
//! (`assets/fonts/`, licence beside it) draws the same glyphs, and so the same PNG bytes,
//! everywhere.

use std::sync::Once;

use plotters::style::{register_font, FontStyle};

/// The family name every plot asks for; it resolves to the embedded font.
pub const FAMILY: &str = "sans-serif";

const DEJAVU_SANS: &[u8] = include_bytes!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/assets/fonts/DejaVuSans.ttf"
));

static REGISTER: Once = Once::new();

/// Registers DejaVu Sans as [`FAMILY`] (normal style) once per process.
pub fn ensure_font() {
    REGISTER.call_once(|| {
        if register_font(FAMILY, FontStyle::Normal, DEJAVU_SANS).is_err() {
            panic!("the embedded DejaVu Sans is not a valid font file");
        }
    });
}
