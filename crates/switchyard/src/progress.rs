//! The download progress bar (indicatif) for registry fetches: the model's size, bytes so far,
//! speed and time left on a terminal; one log line per stage when stderr is not a terminal.

use std::io::IsTerminal;
use std::sync::Mutex;

use indicatif::{ProgressBar, ProgressStyle};
use switchyard_runtime::registry::FetchProgress;

/// Shows fetch progress on stderr.
pub(crate) struct Bar {
    bar: Mutex<Option<ProgressBar>>,
    tty: bool,
}

impl Bar {
    pub(crate) fn new() -> Self {
        Self {
            bar: Mutex::new(None),
            tty: std::io::stderr().is_terminal(),
        }
    }
}

impl FetchProgress for Bar {
    fn stage(&self, alias: &str, stage: &str, total: u64) {
        let mut g = self.bar.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(b) = g.take() {
            b.finish();
        }
        if !self.tty {
            eprintln!(
                "switchyard: {stage} {alias} ({:.0} MiB)",
                total as f64 / (1 << 20) as f64
            );
            return;
        }
        let b = ProgressBar::new(total);
        b.set_style(
            ProgressStyle::with_template(
                "{msg:>24} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        b.set_message(format!("{stage} {alias}"));
        *g = Some(b);
    }

    fn advance(&self, done: u64) {
        if let Some(b) = self.bar.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
            b.set_position(done);
        }
    }

    fn finish(&self) {
        if let Some(b) = self.bar.lock().unwrap_or_else(|p| p.into_inner()).take() {
            b.finish();
        }
    }
}
