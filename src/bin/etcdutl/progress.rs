//! Progress of a long operation on standard error: a bar redrawn in place on a
//! terminal, a plain line every tenth of the way (or every so many items when
//! the total is unknown) otherwise, so logs stay readable.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

/// Reports one phase of an operation ("verifying", "restoring", ...).
pub struct Progress {
    phase: &'static str,
    unit: Unit,
    terminal: bool,
    started: Instant,
    last_draw: Option<Instant>,
    last_tenth: u64,
    drew: bool,
}

/// What the counts are.
#[derive(Debug, Clone, Copy)]
pub enum Unit {
    /// Bytes, shown as etcd shows sizes (kB, MB, GB).
    Bytes,
    /// Entries of the backend.
    Entries,
}

/// Items between plain lines when the total is unknown.
const LINE_EVERY_ENTRIES: u64 = 1_000_000;

impl Progress {
    /// Starts a phase.
    pub fn new(phase: &'static str, unit: Unit) -> Progress {
        Progress {
            phase,
            unit,
            terminal: std::io::stderr().is_terminal(),
            started: Instant::now(),
            last_draw: None,
            last_tenth: 0,
            drew: false,
        }
    }

    fn amount(&self, n: u64) -> String {
        match self.unit {
            Unit::Bytes => crate::status::human_bytes(n),
            Unit::Entries => format!("{n} entries"),
        }
    }

    /// `done` of `total` (`None`: not known in advance).
    pub fn update(&mut self, done: u64, total: Option<u64>) {
        if self.terminal {
            let now = Instant::now();
            if self.last_draw.is_some_and(|t| now - t < Duration::from_millis(100)) {
                return;
            }
            self.last_draw = Some(now);
            let line = match total {
                Some(total) if total > 0 => {
                    let width = 30u64;
                    let filled = (done.min(total) * width / total) as usize;
                    format!(
                        "{:<10} [{}{}] {:>3}% {} / {}",
                        self.phase,
                        "#".repeat(filled),
                        " ".repeat(width as usize - filled),
                        done.min(total) * 100 / total,
                        self.amount(done),
                        self.amount(total)
                    )
                }
                _ => format!("{:<10} {}", self.phase, self.amount(done)),
            };
            eprint!("\r{line}\x1b[K");
            let _ = std::io::stderr().flush();
            self.drew = true;
            return;
        }
        let step = match total {
            Some(total) if total > 0 => done.min(total) * 10 / total,
            _ => done / LINE_EVERY_ENTRIES,
        };
        if step > self.last_tenth {
            self.last_tenth = step;
            match total {
                Some(total) if total > 0 => eprintln!(
                    "{}: {}% ({} of {})",
                    self.phase,
                    step * 10,
                    self.amount(done),
                    self.amount(total)
                ),
                _ => eprintln!("{}: {}", self.phase, self.amount(done)),
            }
        }
    }

    /// Ends the phase with its total and time.
    pub fn finish(self, done: u64) {
        if self.drew {
            eprint!("\r\x1b[K");
        }
        eprintln!(
            "{}: done, {} in {:.1}s",
            self.phase,
            self.amount(done),
            self.started.elapsed().as_secs_f64()
        );
    }
}
