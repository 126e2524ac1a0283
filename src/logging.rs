//! Debug logs on stderr through `tracing`: `-vv` or `RCACHE_LOG=...`.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

use crate::env_vars;

/// Sets up logging; `verbose` is the number of `-v` flags.
pub fn init(verbose: u8) {
    let default = if verbose >= 2 {
        "rcache=debug"
    } else {
        "rcache=warn"
    };
    let filter = std::env::var(env_vars::RCACHE_LOG)
        .ok()
        .and_then(|spec| EnvFilter::try_new(spec).ok())
        .unwrap_or_else(|| EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .without_time()
        .with_target(false)
        .try_init();
}
