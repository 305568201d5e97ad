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
use std::sync::Arc;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

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

/// The progress of one stage (see the module doc).
pub struct Progress {
    bar: ProgressBar,
    quiet: bool,
    unit: &'static str,
    start: Instant,
}

impl Progress {
    /// A bar of `len` steps counted in `unit` (`"points"`), with rate and ETA.
    pub fn bar(
        quiet: bool,
        len: u64,
        unit: &'static str,
        label: impl Into<Cow<'static, str>>,
    ) -> Self {
        let p = Self::with(Self::target(quiet, Some(len)), quiet, unit);
        p.bar.set_style(
            ProgressStyle::with_template(&format!(
                "{{spinner}} {{msg}} [{{bar:30}}] {{pos}}/{{len}} {unit}  {{per_sec}}  ETA {{eta}}"
            ))
            .expect("valid template")
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
        if quiet {
            ProgressBar::hidden()
        } else {
            ProgressBar::with_draw_target(len, ProgressDrawTarget::stderr())
        }
    }

    fn with(bar: ProgressBar, quiet: bool, unit: &'static str) -> Self {
        Self {
            bar,
            quiet,
            unit,
            start: Instant::now(),
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
