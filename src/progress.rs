//! Progress of long steps: one type for every one of them (surface points, H·v products,
//! sharpness evaluations, training steps), and the [`Reporter`] a job reports through.
//!
//! A [`Progress`] draws a bar (known length) or a spinner (unknown length) on stderr, only
//! when stderr is a terminal (indicatif hides itself otherwise, so pipes and logs stay
//! clean), and on [`Progress::finish_line`] prints one line saying what the stage did. A
//! quiet one draws and prints nothing. Counting is thread-safe: workers call
//! [`Progress::inc`] concurrently.
//!
//! Alternatives considered: a trait with an indicatif implementation and a silent one is
//! more general, but every caller wants the same two behaviours, and a struct keeps the
//! call sites free of generics.

use std::borrow::Cow;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle};

/// How often a spinner redraws while the work between ticks is long (an H·v can take
/// seconds), so that the elapsed time keeps moving.
const STEADY_TICK: Duration = Duration::from_millis(200);

/// Renames a config field for the person reading (see [`crate::error`]).
pub type FieldNames = Arc<dyn Fn(&str) -> Option<String> + Send + Sync>;

/// Where a job reports: bars for its long stages, notes and warnings on stderr. Built by
/// the edge that runs the job (the CLI with its flag names, the analysis runner with its
/// spec), so that warnings name fields the way the user set them.
#[derive(Clone)]
pub struct Reporter {
    quiet: bool,
    fields: Option<FieldNames>,
}

impl Reporter {
    /// Bars and notes unless `quiet`; fields in warnings renamed by `fields`.
    pub fn new(quiet: bool, fields: Option<FieldNames>) -> Self {
        Self { quiet, fields }
    }

    /// No bars, no notes (warnings still print).
    pub fn quiet() -> Self {
        Self::new(true, None)
    }

    /// A bar of `len` steps (see [`Progress::bar`]).
    pub fn bar(
        &self,
        len: u64,
        unit: &'static str,
        label: impl Into<Cow<'static, str>>,
    ) -> Progress {
        Progress::bar(self.quiet, len, unit, label)
    }

    /// A bar of `len` steps of which `done` are finished already (resumed from a journal;
    /// see [`Progress::resumed`]).
    pub fn bar_resumed(
        &self,
        len: u64,
        done: u64,
        unit: &'static str,
        label: impl Into<Cow<'static, str>>,
    ) -> Progress {
        Progress::resumed(self.quiet, len, done, unit, label)
    }

    /// A spinner (see [`Progress::spinner`]).
    pub fn spinner(&self, unit: &'static str, label: impl Into<Cow<'static, str>>) -> Progress {
        Progress::spinner(self.quiet, unit, label)
    }

    /// A message with its fields named for the reader.
    pub fn render(&self, message: &str) -> String {
        match &self.fields {
            Some(f) => crate::error::translate_fields(message, |name| f(name)),
            None => message.to_string(),
        }
    }

    /// Prints `message` on stderr unless quiet.
    pub fn note(&self, message: &str) {
        if !self.quiet {
            eprintln!("{}", self.render(message));
        }
    }

    /// Prints `warning: message` on stderr, quiet or not.
    pub fn warn(&self, message: &str) {
        eprintln!("warning: {}", self.render(message));
    }
}

/// `v` rounded to three significant digits, without exponent: `0.0123`, `1.23`, `45.7`,
/// `1230`; `0` for zero, `-` for no finite value.
pub fn three_significant(v: f64) -> String {
    if !v.is_finite() {
        return "-".to_string();
    }
    if v == 0.0 {
        return "0".to_string();
    }
    let e = v.abs().log10().floor() as i32;
    let rounded = {
        let unit = 10f64.powi(e - 2);
        (v / unit).round() * unit
    };
    // rounding up can add a digit (9.996 → 10.0): recount
    let e = rounded.abs().log10().floor() as i32;
    let decimals = (2 - e).max(0) as usize;
    format!("{rounded:.decimals$}")
}

/// Where the rate is measured from: the units done and the time when counting (re)started,
/// so that units resumed from a journal do not count as work done now.
type RateOrigin = Arc<Mutex<(u64, Instant)>>;

/// Units per second since `origin`, if any unit was done.
fn rate_since(origin: &RateOrigin, pos: u64) -> Option<f64> {
    let (base, t0) = *origin.lock().expect("rate origin lock");
    let secs = t0.elapsed().as_secs_f64();
    (pos > base && secs > 0.0).then(|| (pos - base) as f64 / secs)
}

/// The progress of one stage (see the module doc).
pub struct Progress {
    bar: ProgressBar,
    quiet: bool,
    unit: &'static str,
    start: Instant,
    origin: RateOrigin,
}

impl Progress {
    /// A bar of `len` steps counted in `unit` (`"points"`), with rate and ETA.
    pub fn bar(
        quiet: bool,
        len: u64,
        unit: &'static str,
        label: impl Into<Cow<'static, str>>,
    ) -> Self {
        Self::resumed(quiet, len, 0, unit, label)
    }

    /// A bar of `len` steps, `done` of them finished before it starts. Its length is right
    /// from the first frame; the rate (three significant digits) and the ETA count only the
    /// steps done after the start.
    pub fn resumed(
        quiet: bool,
        len: u64,
        done: u64,
        unit: &'static str,
        label: impl Into<Cow<'static, str>>,
    ) -> Self {
        let p = Self::with(Self::target(quiet, Some(len)), quiet, unit);
        p.bar.set_position(done);
        *p.origin.lock().expect("rate origin lock") = (done, Instant::now());
        let (rate_origin, eta_origin) = (p.origin.clone(), p.origin.clone());
        p.bar.set_style(
            ProgressStyle::with_template(&format!(
                "{{spinner}} {{msg}} [{{bar:30}}] {{pos}}/{{len}} {unit}  {{rate}} {unit}/s  ETA {{left}}"
            ))
            .expect("valid template")
            .with_key(
                "rate",
                move |s: &ProgressState, w: &mut dyn std::fmt::Write| {
                    let r = rate_since(&rate_origin, s.pos());
                    let _ = w.write_str(&r.map_or("-".into(), three_significant));
                },
            )
            .with_key("left", move |s: &ProgressState, w: &mut dyn std::fmt::Write| {
                let left = s.len().map(|l| l.saturating_sub(s.pos()));
                match (rate_since(&eta_origin, s.pos()), left) {
                    (Some(r), Some(l)) => {
                        let secs = (l as f64 / r).round() as u64;
                        let _ = write!(w, "{}", indicatif::FormattedDuration(Duration::from_secs(secs)));
                    }
                    _ => {
                        let _ = w.write_str("?");
                    }
                }
            })
            .progress_chars("=> "),
        );
        p.bar.set_message(label);
        if !quiet {
            p.bar.enable_steady_tick(STEADY_TICK);
        }
        p
    }

    /// A spinner counting `unit`s (`"H·v"`) with the elapsed time, for stages whose length
    /// is not known in advance.
    pub fn spinner(quiet: bool, unit: &'static str, label: impl Into<Cow<'static, str>>) -> Self {
        let p = Self::with(Self::target(quiet, None), quiet, unit);
        p.bar.set_style(
            ProgressStyle::with_template(&format!(
                "{{spinner}} {{msg}}: {{pos}} {unit}  {{elapsed}}"
            ))
            .expect("valid template"),
        );
        p.bar.set_message(label);
        if !quiet {
            p.bar.enable_steady_tick(STEADY_TICK);
        }
        p
    }

    fn target(quiet: bool, len: Option<u64>) -> ProgressBar {
        let target = if quiet {
            ProgressDrawTarget::hidden()
        } else {
            ProgressDrawTarget::stderr()
        };
        ProgressBar::with_draw_target(len, target)
    }

    fn with(bar: ProgressBar, quiet: bool, unit: &'static str) -> Self {
        Self {
            bar,
            quiet,
            unit,
            start: Instant::now(),
            origin: Arc::new(Mutex::new((0, Instant::now()))),
        }
    }

    /// Counts `n` more units done.
    pub fn inc(&self, n: u64) {
        self.bar.inc(n);
    }

    /// Sets the length and the units already done (e.g. resumed from a journal), and
    /// restarts the rate estimate.
    pub fn restart(&self, len: u64, done: u64) {
        self.bar.set_length(len);
        self.bar.set_position(done);
        self.bar.reset_eta();
        *self.origin.lock().expect("rate origin lock") = (done, Instant::now());
    }

    /// The bar's length (None for a spinner).
    pub fn length(&self) -> Option<u64> {
        self.bar.length()
    }

    /// Replaces the label.
    pub fn set_label(&self, label: impl Into<Cow<'static, str>>) {
        self.bar.set_message(label);
    }

    /// Seconds since the stage started.
    pub fn seconds(&self) -> f64 {
        self.start.elapsed().as_secs_f64()
    }

    /// Prints a line above the bar (or on stderr when there is no bar) unless quiet.
    pub fn println(&self, line: impl AsRef<str>) {
        if self.quiet {
            return;
        }
        if self.bar.is_hidden() {
            eprintln!("{}", line.as_ref());
        } else {
            self.bar.println(line);
        }
    }

    /// Clears the bar.
    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }

    /// Clears the bar and, unless quiet, prints `what: N units, T s` on stderr.
    pub fn finish_line(&self, what: &str) {
        self.bar.finish_and_clear();
        if !self.quiet {
            eprintln!(
                "{what}: {} {}, {:.1} s",
                self.bar.position(),
                self.unit,
                self.seconds()
            );
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        if !self.bar.is_finished() {
            self.bar.finish_and_clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_have_three_significant_digits() {
        let cases = [
            (0.0, "0"),
            (0.012345, "0.0123"),
            (0.18, "0.180"),
            (1.0, "1.00"),
            (1.2345, "1.23"),
            (9.996, "10.0"),
            (45.66, "45.7"),
            (999.6, "1000"),
            (1234.5, "1230"),
            (56789.0, "56800"),
            (f64::NAN, "-"),
        ];
        for (v, want) in cases {
            assert_eq!(three_significant(v), want, "{v}");
        }
    }

    #[test]
    fn a_resumed_bar_knows_its_length_and_counts_only_new_steps() {
        let p = Progress::resumed(true, 10, 4, "points", "x");
        assert_eq!(p.bar.length(), Some(10));
        assert_eq!(p.bar.position(), 4);
        assert_eq!(
            rate_since(&p.origin, 4),
            None,
            "resumed steps are no work done now"
        );
        std::thread::sleep(Duration::from_millis(20));
        p.inc(2);
        let r = rate_since(&p.origin, p.bar.position()).unwrap();
        // 2 steps in ≥ 20 ms: at most 100 per second, never the 6 of 4 + 2
        assert!(r > 0.0 && r <= 100.0, "{r}");
    }
}
