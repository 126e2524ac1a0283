//! Ctrl-C: the first one asks the run to stop after committing what is
//! done; the pool notices within a poll interval and kills its workers.

use std::sync::atomic::{AtomicBool, Ordering};

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// Installs the handler; a failure only means Ctrl-C kills rcache at once.
pub fn install() {
    if let Err(err) = ctrlc::set_handler(|| INTERRUPTED.store(true, Ordering::SeqCst)) {
        tracing::debug!("no Ctrl-C handler: {err}");
    }
}

/// The flag the handler sets.
pub fn flag() -> &'static AtomicBool {
    &INTERRUPTED
}

/// Whether Ctrl-C was pressed.
pub fn requested() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}
