//! Parse and validation tests of the command line: each flag that is checked before any
//! work names itself in the error, after the library's field is translated.

use clap::{CommandFactory, Parser};

use super::{Cli, Command};

mod parse {
    use super::*;

    #[test]
    fn verify_cli() {
        Cli::command().debug_assert();
        crate::cli::command().debug_assert();
    }

    /// `bench --kernels` times kernels alone on one thread: the pass options, which it
    /// would not use, are refused rather than ignored.
    #[test]
    fn bench_kernels_refuses_pass_options() {
        let parse = |extra: &[&str]| {
            let mut a = vec!["losscape", "bench", "--kernels"];
            a.extend_from_slice(extra);
            Cli::try_parse_from(a)
        };
        assert!(parse(&[]).is_ok());
        assert!(parse(&["--simd", "avx2", "--reps", "3", "--json"]).is_ok());
        for extra in [
            &["--threads", "2"][..],
            &["--depths", "20"],
            &["--model", "m.onnx"],
            &["--batch", "64"],
            &["--chunk", "8"],
            &["--forward-only"],
            &["--conv", "im2col"],
            &["--gemm", "matrixmultiply"],
        ] {
            let e = parse(extra).unwrap_err().to_string();
            assert!(e.contains("--kernels") && e.contains(extra[0]), "{e}");
        }
    }

    #[test]
    fn batch_size_must_be_positive() {
        assert!(Cli::try_parse_from([
            "losscape",
            "eval",
            "-m",
            "a.safetensors",
            "-d",
            "digits",
            "--batch-size",
            "0"
        ])
        .is_err());
        assert!(Cli::try_parse_from([
            "losscape",
            "eval",
            "-m",
            "a.safetensors",
            "-d",
            "digits",
            "--split",
            "valid"
        ])
        .is_err());
        let c = Cli::try_parse_from([
            "losscape",
            "eval",
            "-m",
            "a.safetensors",
            "-d",
            "digits",
            "--arch",
            "resnet-cifar:depth=20",
        ]);
        assert!(c.is_ok());
        assert!(Cli::try_parse_from([
            "losscape",
            "eval",
            "-m",
            "a.safetensors",
            "-d",
            "digits",
            "--arch",
            "resnet-cifar:depth=21"
        ])
        .is_err());
    }
}

mod hessian {
    use super::*;
    use crate::cli::hessian::*;
    use crate::jobs::hessian::HessianPlan;

    fn parse(extra: &[&str]) -> HessianArgs {
        let mut a = vec!["losscape", "hessian", "-m", "m.safetensors", "-d", "digits"];
        a.extend(["--out", "h.h5"]);
        a.extend(extra);
        match Cli::try_parse_from(a).unwrap().command {
            Command::Hessian(h) => h,
            _ => unreachable!(),
        }
    }

    fn plan_err(extra: &[&str]) -> String {
        let e = HessianPlan::new(&parse(extra).settings()).unwrap_err();
        let flags = crate::cli::flags_of("hessian");
        crate::error::translate_fields(&format!("{:#}", anyhow::Error::from(e)), |f| {
            flags.get(f).cloned()
        })
    }

    fn plan(extra: &[&str]) -> HessianPlan {
        HessianPlan::new(&parse(extra).settings()).unwrap()
    }

    #[test]
    fn plan_rejects_bad_options_by_flag() {
        assert!(plan_err(&["--top-k", "0"]).contains("--top-k"));
        assert!(plan_err(&["--tol", "0"]).contains("--tol"));
        assert!(plan_err(&["--top-k", "5", "--max-iter", "3"]).contains("--max-iter"));
        assert!(plan_err(&["--trace", "--probes", "0"]).contains("--probes"));
        assert!(
            plan_err(&["--trace", "--trace-method", "hutchpp", "--probes", "2"])
                .contains("--probes")
        );
        assert!(
            plan_err(&["--trace", "--trace-tol", "1e-2", "--min-probes", "1"])
                .contains("--min-probes")
        );
        assert!(plan_err(&["--density", "--slq-steps", "0"]).contains("--slq-steps"));
        assert!(plan_err(&["--density", "--slq-runs", "0"]).contains("--slq-runs"));
        assert!(plan_err(&["--density", "--grid-points", "1"]).contains("--grid-points"));
        assert!(plan_err(&["--density", "--sigma-squared=-1"]).contains("--sigma-squared"));
        assert!(plan_err(&["--weight-decay=-1"]).contains("--weight-decay"));
        // valid: SLQ steps are capped at the dimension, not rejected
        let p = plan(&["--density", "--slq-steps", "500"]);
        let p = p.for_dim(20).unwrap();
        assert_eq!(p.density.unwrap().0.steps, 20);
        let e = plan(&["--top-k", "30"]).for_dim(20).unwrap_err();
        let flags = crate::cli::flags_of("hessian");
        let msg = crate::error::translate_fields(&e.to_string(), |f| flags.get(f).cloned());
        assert!(msg.contains("--top-k"), "{msg}");
    }

    #[test]
    fn params_flags() {
        let p = plan(&["--params", "weights"]);
        assert_eq!(p.subset.describe(), "weights");
        let p = plan(&["--params-regex", "^layer3\\."]);
        assert_eq!(p.subset.describe(), "regex:^layer3\\.");
        assert!(Cli::try_parse_from([
            "losscape",
            "hessian",
            "-m",
            "m",
            "-d",
            "d",
            "--out",
            "o",
            "--params-regex",
            "("
        ])
        .is_err());
        assert!(Cli::try_parse_from([
            "losscape", "hessian", "-m", "m", "-d", "d", "--out", "o", "--params", "biases"
        ])
        .is_err());
    }
}

mod sharpness {
    use super::*;
    use crate::cli::sharpness::*;

    fn parse(extra: &[&str]) -> Result<SharpnessArgs, clap::Error> {
        let mut a = vec![
            "losscape",
            "sharpness",
            "-m",
            "m.safetensors",
            "-d",
            "digits",
        ];
        a.extend(extra);
        Cli::try_parse_from(a).map(|c| match c.command {
            Command::Sharpness(s) => s,
            _ => unreachable!(),
        })
    }

    fn plan_err(extra: &[&str]) -> String {
        let e = parse(extra).unwrap().config().unwrap_err();
        let flags = crate::cli::flags_of("sharpness");
        crate::error::translate_fields(&e.to_string(), |f| flags.get(f).cloned())
    }

    #[test]
    fn options_are_validated_by_flag() {
        assert!(plan_err(&["--eps", "0"]).contains("--eps"));
        assert!(plan_err(&["--eps=-1e-3"]).contains("--eps"));
        assert!(plan_err(&["--eps", "NaN"]).contains("--eps"));
        assert!(plan_err(&["--iters", "0"]).contains("--iters"));
        assert!(plan_err(&["--step", "3"]).contains("--step"));
        assert!(plan_err(&["--etas", "0.1,nan"]).contains("--etas"));
        assert!(plan_err(&["--etas=0.1,-1"]).contains("--etas"));
        assert!(plan_err(&["--split", "train,test"]).contains("--split"));
        assert!(parse(&["--etas", "a"]).is_err());
        assert!(parse(&["--no-eps", "--no-beta"]).is_err());
        let p = parse(&["--etas", "0.5,1"]).unwrap().config().unwrap().plan;
        assert_eq!(p.etas.unwrap(), vec![0.5, 1.0]);
        let p = parse(&["--no-beta"]).unwrap().config().unwrap().plan;
        assert!(p.etas.is_none() && p.eps.is_some());
    }
}

mod stdout {
    use std::io::{self, Write};

    use crate::cli::{is_closed_pipe, write_line, StdoutError};

    /// Standard output on a full disk (or a closed pipe): every write fails with `errno`
    /// after `room` bytes.
    struct Failing {
        room: usize,
        errno: i32,
    }

    impl Write for Failing {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            if self.room == 0 {
                return Err(io::Error::from_raw_os_error(self.errno));
            }
            let n = b.len().min(self.room);
            self.room -= n;
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_full_disk_is_an_error_and_a_closed_pipe_a_quiet_exit() {
        let mut full = Failing {
            room: 10,
            errno: libc::ENOSPC,
        };
        write_line(&mut full, format_args!("{}", "fits")).unwrap();
        let e = write_line(&mut full, format_args!("{}", "does not fit")).unwrap_err();
        assert_eq!(e.0.raw_os_error(), Some(libc::ENOSPC));
        let e = anyhow::Error::new(e);
        assert!(!is_closed_pipe(&e));
        let shown = crate::cli::render_error(&e);
        assert!(
            shown.contains("standard output") && shown.contains("No space left"),
            "{shown}"
        );

        let mut pipe = Failing {
            room: 0,
            errno: libc::EPIPE,
        };
        let e = write_line(&mut pipe, format_args!("x")).unwrap_err();
        let e: anyhow::Error = anyhow::Error::new(e).context("printing the table");
        assert!(is_closed_pipe(&e));
        let _: &StdoutError = e.downcast_ref().unwrap();
    }
}
