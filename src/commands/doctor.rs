//! `rcache doctor`: what the selected Python will do with the pycs under
//! some paths, and what the store holds for them. Writes nothing: no pyc,
//! no store row, no store (an absent store stays absent).

use std::collections::HashSet;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use crate::config::{DoctorConfig, GlobalConfig, Verbosity};
use crate::doctor::report::{DirAlias, Python, Report, Suggested};
use crate::doctor::store_report::StoreReport;
use crate::doctor::unused::Finder;
use crate::doctor::verdict::Judge;
use crate::exit::ExitStatus;
use crate::report::Failure;
use crate::{interrupt, parallel, scan};

pub fn doctor(global: &GlobalConfig, config: &DoctorConfig) -> anyhow::Result<ExitStatus> {
    let start = std::time::Instant::now();
    let (mut store_report, store) = StoreReport::inspect(&global.store);
    let interpreter = super::find_interpreter(global, store.as_deref())?.interpreter;
    let profile = &interpreter.profile;
    let mut found = scan::scan(&config.paths, &global.cwd, &config.scan);
    let files = found.take_pyc_sources(config.prefix.as_deref());
    let judge = Judge {
        profile,
        check: config.check_hash_based_pycs,
        prefix: config.prefix.as_deref(),
    };
    let work: Vec<(&Path, u8)> = files
        .iter()
        .flat_map(|file| {
            global
                .levels
                .iter()
                .map(move |&level| (file.as_path(), level))
        })
        .collect();
    let mut verdicts = Vec::with_capacity(work.len());
    let mut failures: Vec<Failure> = found.errors.iter().cloned().map(Failure::from).collect();
    let mut failed_sources = HashSet::new();
    for result in parallel::map(&work, global.jobs, |&(source, level)| {
        judge.judge(source, level)
    }) {
        match result {
            Ok(verdict) => verdicts.push(verdict),
            // One report per source, not one per level.
            Err(error) => {
                if failed_sources.insert(error.path.clone()) {
                    failures.push(error.into());
                }
            }
        }
    }
    if let Some(store) = &store {
        store_report.read(store, profile, &global.levels, global.jobs, &mut verdicts);
    }
    let walked: HashSet<&Path> = files.iter().map(PathBuf::as_path).collect();
    let unused = Finder {
        cache_tag: &profile.cache_tag,
        magic: profile.magic,
        levels: &global.levels,
        walked: &walked,
        prefix: config.prefix.as_deref(),
    }
    .find(&found.pyc_dirs(config.prefix.as_deref()));
    if interrupt::requested() {
        return Ok(ExitStatus::Interrupted);
    }
    let report = Report {
        python: Python {
            executable: interpreter.executable.clone(),
            version: profile.version.clone(),
            cache_tag: profile.cache_tag.clone(),
        },
        levels: global.levels.clone(),
        prefix: config.prefix.as_deref().map(crate::doctor::shown),
        check_hash_based_pycs: config.check_hash_based_pycs.as_str(),
        files: files.len() as u64,
        aliases: DirAlias::of(&found),
        counts: Report::count(&verdicts),
        sources: verdicts,
        unused: unused.unused,
        sourceless: unused.sourceless,
        store: store_report,
        failures,
        seconds: start.elapsed().as_secs_f64(),
        cwd: global.cwd.clone(),
    };
    print(global, config, &report)?;
    Ok(if report.failures.is_empty() {
        ExitStatus::Success
    } else {
        ExitStatus::Failure
    })
}

/// Failures on stderr; then the report as JSON, or the summary, on stdout
/// (a report, as `rcache stats` prints it), unless `-q`.
fn print(global: &GlobalConfig, config: &DoctorConfig, report: &Report) -> anyhow::Result<()> {
    let mut stderr = std::io::stderr().lock();
    for failure in &report.failures {
        writeln!(stderr, "{failure}")?;
    }
    let mut stdout = std::io::stdout().lock();
    if global.json {
        serde_json::to_writer(&mut stdout, report)?;
        writeln!(stdout)?;
    } else if global.verbosity != Verbosity::Quiet {
        let suggested = Suggested::new(&global.levels, config.prefix.as_deref(), &config.paths);
        let text = report.render(global.verbosity == Verbosity::Verbose, &suggested);
        stdout.write_all(text.as_bytes())?;
    }
    Ok(())
}
