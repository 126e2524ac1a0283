//! Progress of long work. The pipeline reports through [`Reporter`]; only
//! this file knows about indicatif, and the bar is shown only on a terminal,
//! never with `--json`, `-q` or `-v`.

use std::io::IsTerminal;
use std::time::Duration;

/// Receives progress events from the pipeline.
pub trait Reporter: Sync {
    /// `total` items are about to be worked on: `what` says how, as a verb
    /// ("Compiling", "Fetching").
    fn started(&self, what: &'static str, total: u64);
    /// One more item is done (or failed).
    fn advanced(&self);
    /// The work started last is over.
    fn finished(&self);
}

/// Reports nothing.
pub struct Silent;

impl Reporter for Silent {
    fn started(&self, _what: &'static str, _total: u64) {}
    fn advanced(&self) {}
    fn finished(&self) {}
}

/// A progress bar on stderr.
pub struct Bar {
    bar: indicatif::ProgressBar,
}

impl Bar {
    /// A bar if stderr is a terminal, otherwise nothing.
    pub fn if_terminal() -> Box<dyn Reporter> {
        if std::io::stderr().is_terminal() {
            Box::new(Self {
                bar: indicatif::ProgressBar::hidden(),
            })
        } else {
            Box::new(Silent)
        }
    }
}

impl Reporter for Bar {
    fn started(&self, what: &'static str, total: u64) {
        self.bar.reset();
        self.bar.set_length(total);
        self.bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{prefix:>12.cyan.bold} [{bar:30}] {pos}/{len} {elapsed}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        self.bar.set_prefix(what);
        self.bar
            .set_draw_target(indicatif::ProgressDrawTarget::stderr());
        self.bar.enable_steady_tick(Duration::from_millis(200));
    }

    fn advanced(&self) {
        self.bar.inc(1);
    }

    fn finished(&self) {
        self.bar.finish_and_clear();
    }
}
