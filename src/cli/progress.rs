//! Progress of long operations: a bar (on stderr) when a person watches the terminal, a plain line
//! every `every` items otherwise (logs, scripts).

use std::io::IsTerminal;

#[derive(Debug)]
pub struct Reporter {
    what: &'static str,
    unit: &'static str,
    every: u64,
    last_line: u64,
    bar: Option<indicatif::ProgressBar>,
}

impl Reporter {
    pub fn new(what: &'static str, unit: &'static str, every: u64) -> Reporter {
        Reporter {
            what,
            unit,
            every: every.max(1),
            last_line: 0,
            bar: std::io::stdout()
                .is_terminal()
                .then(|| indicatif::ProgressBar::new(0)),
        }
    }

    /// A spinner with a count, for totals not known in advance.
    pub fn open_ended(what: &'static str, unit: &'static str, every: u64) -> Reporter {
        Reporter {
            what,
            unit,
            every: every.max(1),
            last_line: 0,
            bar: std::io::stdout()
                .is_terminal()
                .then(indicatif::ProgressBar::new_spinner),
        }
    }

    pub fn update(&mut self, done: u64, total: u64) {
        match &self.bar {
            Some(b) => {
                b.set_length(total);
                b.set_position(done);
            }
            None if done >= self.last_line + self.every
                || (done == total && done > self.last_line) =>
            {
                self.last_line = done;
                eprintln!("vitals-hub {}: {done} of {total} {}", self.what, self.unit);
            }
            None => {}
        }
    }

    /// Progress with no known total (records arriving from a device).
    pub fn count(&mut self, done: u64) {
        match &self.bar {
            Some(b) => {
                b.set_message(format!("{done} {}", self.unit));
                b.tick();
            }
            None if done >= self.last_line + self.every => {
                self.last_line = done;
                eprintln!("vitals-hub {}: {done} {}", self.what, self.unit);
            }
            None => {}
        }
    }

    pub fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}
