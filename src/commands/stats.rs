//! `rcache stats`: what the store holds.

use std::io::Write;

use crate::config::GlobalConfig;
use crate::exit::ExitStatus;

pub fn stats(global: &GlobalConfig) -> anyhow::Result<ExitStatus> {
    let store = super::open_store(global, super::StoreUse::Read)?;
    let stats = store.stats()?;
    let mut stdout = std::io::stdout().lock();
    if global.json {
        let mut value = serde_json::to_value(&stats)?;
        value["store"] = store.path().display().to_string().into();
        serde_json::to_writer(&mut stdout, &value)?;
        writeln!(stdout)?;
        return Ok(ExitStatus::Success);
    }
    let lookups = stats.lifetime_hits + stats.lifetime_misses;
    writeln!(stdout, "store:     {}", store.path().display())?;
    writeln!(
        stdout,
        "size:      {} on disk",
        human_bytes(stats.bytes_file)
    )?;
    writeln!(
        stdout,
        "entries:   {} ({} of bytecode, {} compressed)",
        stats.entries,
        human_bytes(stats.bytes_raw),
        human_bytes(stats.bytes_stored)
    )?;
    writeln!(stdout, "failures:  {} remembered", stats.failures)?;
    if lookups > 0 {
        writeln!(
            stdout,
            "hit rate:  {:.1}% of {lookups} lookups",
            100.0 * stats.lifetime_hits as f64 / lookups as f64
        )?;
    }
    let remote = &stats.remote;
    if remote.hits + remote.misses + remote.errors + remote.uploaded > 0 {
        writeln!(
            stdout,
            "remote:    {} hits, {} misses, {} errors; {} uploaded; {} down, {} up",
            remote.hits,
            remote.misses,
            remote.errors,
            remote.uploaded,
            human_bytes(remote.bytes_down),
            human_bytes(remote.bytes_up)
        )?;
    }
    for profile in &stats.profiles {
        writeln!(
            stdout,
            "  {:<12} {:<8} {:>7} entries {:>7} failures {:>10}",
            profile.cache_tag,
            profile.version,
            profile.entries,
            profile.failures,
            human_bytes(profile.bytes_stored)
        )?;
    }
    Ok(ExitStatus::Success)
}

/// Sizes in binary units, as `du -h` shows them.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn human_bytes() {
        assert_eq!(super::human_bytes(512), "512 B");
        assert_eq!(super::human_bytes(1536), "1.5 KiB");
        assert_eq!(super::human_bytes(3 * 1024 * 1024 * 1024), "3.0 GiB");
    }
}
