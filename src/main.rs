//! The `losscape` binary: parse arguments, dispatch, map errors to exit codes.
//! Bad input (files, shapes, options) exits with 2 after one message; a closed stdout
//! (e.g. piping into `head`) exits 0 without a message; any other failed write to stdout
//! (a full disk) exits 2 with one.

use std::process::ExitCode;

use clap::FromArgMatches;
use losscape::cli::{self, Cli, Command};

fn run(cli: Cli) -> anyhow::Result<()> {
    match &cli.command {
        Command::Info(a) => cli::info::run(a),
        Command::Eval(a) => cli::eval::run(a),
        Command::Convert(a) => cli::convert::run(a),
        Command::Bench(a) => cli::bench::run(a),
        Command::Train(a) => cli::train::run(a),
        Command::Trajectory(a) => cli::trajectory::run(a),
        Command::Surface(a) => cli::surface::run(a),
        Command::Merge(a) => cli::merge::run(a),
        Command::Metrics(a) => cli::metrics::run(a),
        Command::Hessian(a) => cli::hessian::run(a),
        Command::Probe(a) => cli::probe::run(a),
        Command::Sharpness(a) => cli::sharpness::run(a),
        Command::Run(a) => cli::run::run(a),
        Command::Plot(a) => cli::plot::run(a),
        Command::ExportVtp(a) => cli::plot::run_export_vtp(a),
        Command::Completions(a) => cli::completions::run(a),
    }
}

/// Keeps freed activation buffers in the heap instead of returning them to the kernel.
/// The engine allocates and frees megabyte-sized arrays in every pass; with glibc's
/// defaults each is a fresh `mmap` (page faults, zeroing) and `munmap` (a TLB shoot-down
/// on the other cores), which serializes the threads. Measured on ResNet-20/56 forward,
/// 2 threads: 5–10 % faster. The cost: the process keeps its peak heap until it exits.
fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets allocator parameters; called once, before any thread starts.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 256 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30);
        libc::mallopt(libc::M_TOP_PAD, 64 << 20);
    }
}

/// The commands that run over every MPI rank (the others run on rank 0 alone).
fn distributed(c: &Command) -> bool {
    matches!(
        c,
        Command::Eval(_)
            | Command::Hessian(_)
            | Command::Surface(_)
            | Command::Sharpness(_)
            | Command::Probe(_)
            | Command::Run(_)
    )
}

/// Ranks other than 0 of an MPI job print no results (rank 0 prints the job's); their
/// errors and warnings still go to stderr.
fn silence_stdout() {
    use std::os::fd::AsRawFd;
    if let Ok(null) = std::fs::OpenOptions::new().write(true).open("/dev/null") {
        // SAFETY: dup2 onto fd 1 before any output; `null` stays open until the copy exists.
        unsafe {
            libc::dup2(null.as_raw_fd(), 1);
        }
    }
}

fn main() -> ExitCode {
    tune_allocator();
    losscape::io::hdf5_init();
    let matches = match cli::command().try_get_matches() {
        Ok(m) => m,
        Err(e) => {
            // value parsers' messages (grid axes, shards, schedules) name fields too
            if let Some(sub) = std::env::args().nth(1) {
                cli::set_running(&sub);
            }
            let code = e.exit_code();
            if code != 2 {
                e.exit(); // --help, --version
            }
            eprint!("{}", cli::render_message(&e.render().to_string()));
            return ExitCode::from(2);
        }
    };
    if let Some(name) = matches.subcommand_name() {
        cli::set_running(name);
    }
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    // under mpirun/srun: MPI up (finalized when `_launch` drops at the end of main)
    let _launch = match losscape::dist::init() {
        Ok(l) => l,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let world = losscape::dist::world();
    if world.size() > 1 {
        if world.rank() > 0 {
            silence_stdout();
        }
        if !distributed(&cli.command) {
            // the other commands are not split over ranks: rank 0 runs them alone
            if world.rank() > 0 {
                return ExitCode::SUCCESS;
            }
            eprintln!(
                "note: `{}` is not distributed over MPI ranks; rank 0 runs it alone (the other {} ranks exit)",
                matches.subcommand_name().unwrap_or("this command"),
                world.size() - 1
            );
        }
    }
    // what is still buffered must reach stdout too: a failure there is reported, not lost
    let flushed = |r: anyhow::Result<()>| {
        r.and_then(|()| {
            std::io::Write::flush(&mut std::io::stdout())
                .map_err(|e| anyhow::Error::new(cli::StdoutError(e)))
        })
    };
    match flushed(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if cli::is_closed_pipe(&e) {
                return ExitCode::SUCCESS;
            }
            if world.size() > 1 {
                // one rank's error ends every rank: the others may wait in a collective
                eprintln!(
                    "error (rank {} of {}): {}",
                    world.rank(),
                    world.size(),
                    cli::render_error(&e)
                );
                world.abort(2);
            }
            eprintln!("error: {}", cli::render_error(&e));
            ExitCode::from(2)
        }
    }
}
