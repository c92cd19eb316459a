//! `etcd-sim`: runs seeds of the cluster simulation and reports which failed.
//!
//! `etcd-sim [--seeds N] [--seed S] [--first S] [--duration-ms MS] [--inject BUG]...`
//! `etcd-sim --list-bugs`
//! The last line is `N passed, M failed`; a failure prints its seed and the
//! first violated property. A seed replays bit for bit.

use std::process::ExitCode;
use std::time::Instant;

const DEFAULT_SEEDS: u64 = 100;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut seeds = DEFAULT_SEEDS;
    let mut first = 1u64;
    let mut only: Option<u64> = None;
    let mut inject = Vec::new();
    let mut options = etcd_sim::Options::default();
    let mut i = 0;
    let value = |i: usize, name: &str| -> Result<u64, String> {
        args.get(i + 1)
            .ok_or(format!("{name} needs a value"))?
            .parse()
            .map_err(|e| format!("{name}: {e}"))
    };
    while i < args.len() {
        let parsed = match args[i].as_str() {
            "--list-bugs" => {
                for bug in etcd_sim::BUGS {
                    println!("{bug}");
                }
                return ExitCode::SUCCESS;
            }
            "--seeds" => value(i, "--seeds").map(|v| seeds = v),
            "--first" => value(i, "--first").map(|v| first = v),
            "--seed" => value(i, "--seed").map(|v| only = Some(v)),
            "--duration-ms" => value(i, "--duration-ms").map(|v| options.duration_ms = v),
            "--inject" => match args.get(i + 1) {
                Some(bug) => {
                    inject.push(bug.clone());
                    Ok(())
                }
                None => Err("--inject needs a bug name (see --list-bugs)".into()),
            },
            other => Err(format!(
                "unknown argument {other:?}; usage: etcd-sim [--seeds N] [--first S] [--seed S] \
                 [--duration-ms MS] [--inject BUG]... | --list-bugs"
            )),
        };
        if let Err(err) = parsed {
            eprintln!("etcd-sim: {err}");
            return ExitCode::from(2);
        }
        i += 2;
    }
    options.bugs = match etcd_sim::bugs(&inject) {
        Ok(bugs) => bugs,
        Err(err) => {
            eprintln!("etcd-sim: {err}");
            return ExitCode::from(2);
        }
    };
    let list: Vec<u64> = match only {
        Some(seed) => vec![seed],
        None => (first..first + seeds).collect(),
    };
    let started = Instant::now();
    let (mut passed, mut failed) = (0u64, 0u64);
    for (n, seed) in list.iter().enumerate() {
        match etcd_sim::run(*seed, &options) {
            Ok(summary) => {
                passed += 1;
                eprintln!(
                    "seed {seed}: ok ({} ops, {} unknown, {} faults, index {}, {} watch batches, \
                     {} leases expired, digest {:016x}) [{}/{}]",
                    summary.completed,
                    summary.unknown,
                    summary.faults,
                    summary.last_index,
                    summary.watch_batches,
                    summary.leases_expired,
                    summary.digest,
                    n + 1,
                    list.len()
                );
            }
            Err(why) => {
                failed += 1;
                println!("seed {seed}: FAILED: {why}");
                println!(
                    "reproduce: etcd-sim --seed {seed}{}",
                    inject.iter().map(|b| format!(" --inject {b}")).collect::<String>()
                );
            }
        }
    }
    let minutes = started.elapsed().as_secs_f64() / 60.0;
    eprintln!("{:.1} seeds per minute", list.len() as f64 / minutes.max(1e-9));
    println!("{passed} passed, {failed} failed");
    if failed > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
