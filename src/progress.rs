//! Progress of long work. The pipeline reports through [`Reporter`]; only
//! this file knows about indicatif, and the bar is shown only on a terminal,
//! never with `--json`, `-q` or `-v`.

use std::io::IsTerminal;
use std::time::Duration;

/// Receives progress events from the pipeline.
pub trait Reporter: Sync {
    /// `total` sources are about to be compiled.
    fn compile_started(&self, total: u64);
    /// One more source is compiled (or failed).
    fn compiled(&self);
    /// Compiling is over.
    fn compile_finished(&self);
}

/// Reports nothing.
pub struct Silent;

impl Reporter for Silent {
    fn compile_started(&self, _total: u64) {}
    fn compiled(&self) {}
    fn compile_finished(&self) {}
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
    fn compile_started(&self, total: u64) {
        self.bar.set_length(total);
        self.bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{prefix:>12.cyan.bold} [{bar:30}] {pos}/{len} {elapsed}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        self.bar.set_prefix("Compiling");
        self.bar
            .set_draw_target(indicatif::ProgressDrawTarget::stderr());
        self.bar.enable_steady_tick(Duration::from_millis(200));
    }

    fn compiled(&self) {
        self.bar.inc(1);
    }

    fn compile_finished(&self) {
        self.bar.finish_and_clear();
    }
}
