//! Progress on stderr while a run goes: a bar on a terminal, one line per
//! case otherwise (CI logs), nothing with `--quiet`.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::report::CaseReport;
use crate::verdict::Status;

pub struct Progress {
    bar: Option<indicatif::ProgressBar>,
    total: u64,
    done: AtomicU64,
    quiet: bool,
}

impl Progress {
    pub fn new(total: u64, quiet: bool) -> Progress {
        let bar = (!quiet && std::io::stderr().is_terminal()).then(|| {
            let bar = indicatif::ProgressBar::new(total);
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "{bar:30} {pos}/{len} cases {elapsed} {wide_msg}",
                )
                .expect("a valid template"),
            );
            bar
        });
        Progress {
            bar,
            total,
            done: AtomicU64::new(0),
            quiet,
        }
    }

    /// One case finished.
    pub fn done(&self, r: &CaseReport) {
        let n = self.done.fetch_add(1, Ordering::Relaxed) + 1;
        let line = format!(
            "{} {} ({:.1} ms)",
            r.id,
            r.verdict.status.name(),
            r.duration_ms
        );
        match &self.bar {
            Some(bar) => {
                if matches!(r.verdict.status, Status::Fail | Status::Error) {
                    bar.println(&line);
                }
                bar.set_message(line);
                bar.inc(1);
            }
            None if !self.quiet => eprintln!("[{n}/{}] {line}", self.total),
            None => {}
        }
    }

    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
