//! Mutation fuzzer over every reader of untrusted bytes (see `losscape::fuzz`), on stable
//! Rust: `make fuzz` (FUZZ_SECONDS, default 600).
//!
//! Each execution mutates a seed of `tests/fuzz-corpus/<reader>/`, writes it to a scratch
//! folder and runs the reader in a forked child with a deadline and an address-space
//! limit. Panics, signals and hangs are failures: their inputs are saved under
//! `--failures` (default `outputs/fuzz/failures/<reader>/`) to be fixed and then added to
//! the corpus, which `cargo test --test fuzz_corpus` replays.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use sha2::{Digest, Sha256};

use losscape::fuzz::{self, Limits, Outcome};

#[derive(Default)]
struct Stats {
    execs: u64,
    accepted: u64,
    rejected: u64,
    panics: u64,
    signals: u64,
    hangs: u64,
    contained: u64,
    peak_rss_kib: u64,
    busy: Duration,
}

fn main() {
    let mut seconds = 600u64;
    let mut corpus = PathBuf::from("tests/fuzz-corpus");
    let mut failures = PathBuf::from("outputs/fuzz/failures");
    let mut seed = 1u64;
    let mut only: Option<Vec<String>> = None;
    let mut write_seeds = false;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = || {
            args.next()
                .unwrap_or_else(|| usage(&format!("{a} needs a value")))
        };
        match a.as_str() {
            "--seconds" => seconds = val().parse().unwrap_or_else(|_| usage("--seconds N")),
            "--corpus" => corpus = val().into(),
            "--failures" => failures = val().into(),
            "--seed" => seed = val().parse().unwrap_or_else(|_| usage("--seed N")),
            "--only" => only = Some(val().split(',').map(str::to_owned).collect()),
            "--write-seeds" => write_seeds = true,
            _ => usage(&format!("unknown argument {a}")),
        }
    }
    if write_seeds {
        if let Err(e) = fuzz::write_library_seeds(&corpus) {
            eprintln!("error: {e}");
            std::process::exit(2);
        }
        return;
    }
    // HDF5 reads are contained in grandchildren: a short deadline keeps a libhdf5 loop from
    // costing the fuzzer's whole per-execution deadline.
    losscape::io::contain::set_containment(losscape::io::contain::Containment::Fork {
        deadline: Duration::from_secs(3),
    });
    let limits = Limits::default();
    let readers: Vec<_> = fuzz::readers()
        .into_iter()
        .filter(|r| only.as_ref().is_none_or(|o| o.iter().any(|n| n == r.name)))
        .collect();
    let seeds: Vec<Vec<Vec<u8>>> = readers
        .iter()
        .map(|r| {
            fuzz::corpus_files(&corpus, r)
                .iter()
                .filter_map(|p| std::fs::read(p).ok())
                .collect()
        })
        .collect();
    for (r, s) in readers.iter().zip(&seeds) {
        if s.is_empty() {
            eprintln!(
                "warning: no seeds in {} — reader '{}' is skipped",
                fuzz::corpus_dir(&corpus, r).display(),
                r.name
            );
        }
    }
    let work = std::env::temp_dir().join(format!("losscape-fuzz-{}", std::process::id()));
    let mut stats: BTreeMap<&str, Stats> = BTreeMap::new();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let start = Instant::now();
    let end = start + Duration::from_secs(seconds);
    let mut last_report = start;
    eprintln!(
        "fuzzing {} readers for {seconds} s (seed {seed}); failures go to {}",
        readers.len(),
        failures.display()
    );
    // Equal time per reader (not equal executions): the reader that has used the least
    // time runs next, so fast readers are not held back by HDF5's double fork.
    let mut busy = vec![Duration::ZERO; readers.len()];
    loop {
        if Instant::now() >= end {
            break;
        }
        let Some(i) = (0..readers.len())
            .filter(|&i| !seeds[i].is_empty())
            .min_by_key(|&i| busy[i])
        else {
            break;
        };
        let (r, s) = (&readers[i], &seeds[i]);
        {
            let base = &s[rng.random_range(0..s.len())];
            let other = &s[rng.random_range(0..s.len())];
            let input = fuzz::mutate(&mut rng, base, other);
            let dir = work.join(r.name);
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).expect("scratch folder");
            let path = dir.join(r.file_name);
            std::fs::write(&path, &input).expect("scratch file");
            let ex = match fuzz::run_isolated(r, &path, &limits) {
                Ok(ex) => ex,
                Err(e) => {
                    eprintln!("error: cannot run {}: {e}", r.name);
                    std::process::exit(2);
                }
            };
            busy[i] += ex.wall;
            let st = stats.entry(r.name).or_default();
            st.execs += 1;
            st.busy += ex.wall;
            st.peak_rss_kib = st.peak_rss_kib.max(ex.peak_rss_kib);
            match &ex.outcome {
                Outcome::Accepted => st.accepted += 1,
                Outcome::Rejected(_) => st.rejected += 1,
                Outcome::Panicked(_) => st.panics += 1,
                Outcome::Signal(_) => st.signals += 1,
                Outcome::Hung => st.hangs += 1,
            }
            if ex.outcome.is_contained() {
                st.contained += 1;
                // keep the first few: regression inputs for the containment itself
                if st.contained <= 5 {
                    let hash = format!("{:x}", Sha256::digest(&input));
                    let out = failures.join(r.name);
                    let _ = std::fs::create_dir_all(&out);
                    let file = out.join(format!("contained-{}-{}", &hash[..16], r.file_name));
                    let _ = std::fs::write(&file, &input);
                    eprintln!(
                        "contained {}: {:?} -> {}",
                        r.name,
                        ex.outcome,
                        file.display()
                    );
                }
            }
            if ex.outcome.is_failure() {
                let hash = format!("{:x}", Sha256::digest(&input));
                let out = failures.join(r.name);
                let _ = std::fs::create_dir_all(&out);
                let file = out.join(format!("{}-{}", &hash[..16], r.file_name));
                let _ = std::fs::write(&file, &input);
                let _ = std::fs::write(file.with_extension("txt"), format!("{:?}\n", ex.outcome));
                eprintln!("FAIL {}: {:?} -> {}", r.name, ex.outcome, file.display());
            }
        }
        if last_report.elapsed() > Duration::from_secs(60) {
            last_report = Instant::now();
            let total: u64 = stats.values().map(|s| s.execs).sum();
            eprintln!(
                "{:>5.0} s: {total} executions ({:.0}/s)",
                start.elapsed().as_secs_f64(),
                total as f64 / start.elapsed().as_secs_f64()
            );
        }
    }
    let _ = std::fs::remove_dir_all(&work);
    let secs = start.elapsed().as_secs_f64();
    println!(
        "{:<12} {:>8} {:>8} {:>8} {:>9} {:>6} {:>7} {:>5} {:>9} {:>7}",
        "reader",
        "execs",
        "accepted",
        "rejected",
        "contained",
        "panics",
        "signals",
        "hangs",
        "peak MiB",
        "exec/s"
    );
    let mut total = Stats::default();
    for (name, s) in &stats {
        println!(
            "{:<12} {:>8} {:>8} {:>8} {:>9} {:>6} {:>7} {:>5} {:>9.1} {:>7.1}",
            name,
            s.execs,
            s.accepted,
            s.rejected,
            s.contained,
            s.panics,
            s.signals,
            s.hangs,
            s.peak_rss_kib as f64 / 1024.0,
            s.execs as f64 / s.busy.as_secs_f64().max(1e-9)
        );
        total.execs += s.execs;
        total.accepted += s.accepted;
        total.rejected += s.rejected;
        total.contained += s.contained;
        total.panics += s.panics;
        total.signals += s.signals;
        total.hangs += s.hangs;
        total.peak_rss_kib = total.peak_rss_kib.max(s.peak_rss_kib);
    }
    let failed = total.panics + total.signals + total.hangs;
    println!(
        "{:<12} {:>8} {:>8} {:>8} {:>9} {:>6} {:>7} {:>5} {:>9.1} {:>7.1}",
        "total",
        total.execs,
        total.accepted,
        total.rejected,
        total.contained,
        total.panics,
        total.signals,
        total.hangs,
        total.peak_rss_kib as f64 / 1024.0,
        total.execs as f64 / secs
    );
    println!("{failed} failures in {secs:.0} s");
    if failed > 0 {
        std::process::exit(1);
    }
}

fn usage(why: &str) -> ! {
    eprintln!(
        "error: {why}\nusage: losscape-fuzz [--seconds N] [--corpus DIR] [--failures DIR] \
         [--seed N] [--only READER,...] [--write-seeds]"
    );
    std::process::exit(2)
}
