//! `rcache config`: every setting's value and the layer it came from
//! (command line, environment, `[tool.rcache]`, default).

use std::io::Write as _;

use serde_json::{Value, json};

use crate::config::file::ProjectFile;
use crate::config::{GlobalConfig, Origin, Setting, Settings};
use crate::exit::ExitStatus;
use crate::interpreter;
use crate::remote::Location;

/// One line of the report.
struct Row {
    key: &'static str,
    shown: String,
    json: Value,
    origin: Origin,
}

impl Row {
    fn new<T>(
        key: &'static str,
        setting: &Setting<T>,
        shown: impl FnOnce(&T) -> String,
        json: impl FnOnce(&T) -> Value,
    ) -> Self {
        Self {
            key,
            shown: shown(&setting.value),
            json: json(&setting.value),
            origin: setting.origin,
        }
    }
}

pub fn config(
    global: &GlobalConfig,
    settings: &Settings,
    project: Option<&ProjectFile>,
) -> anyhow::Result<ExitStatus> {
    let rows = rows(global, settings);
    let mut stdout = std::io::stdout().lock();
    if global.json {
        let mut object = serde_json::Map::new();
        for row in rows {
            let mut entry = json!({ "value": row.json, "origin": row.origin.kind() });
            if let Origin::Env(variable) = row.origin {
                entry["variable"] = json!(variable);
            }
            object.insert(row.key.to_owned(), entry);
        }
        let report = json!({ "file": settings.file, "settings": object });
        serde_json::to_writer(&mut stdout, &report)?;
        writeln!(stdout)?;
        return Ok(ExitStatus::Success);
    }
    match &settings.file {
        Some(file) => writeln!(stdout, "project file: {} [tool.rcache]", file.display())?,
        None => writeln!(
            stdout,
            "project file: none (no pyproject.toml with [tool.rcache] from {} up)",
            global.cwd.display()
        )?,
    }
    let width = rows.iter().map(|row| row.shown.len()).max().unwrap_or(0);
    for row in &rows {
        writeln!(
            stdout,
            "{:<16} {:<width$}  ({})",
            row.key,
            row.shown,
            row.origin.describe(project)
        )?;
    }
    Ok(ExitStatus::Success)
}

fn rows(global: &GlobalConfig, settings: &Settings) -> Vec<Row> {
    let list = |items: Vec<String>| {
        if items.is_empty() {
            "(none)".to_owned()
        } else {
            items.join(", ")
        }
    };
    vec![
        Row::new(
            "store",
            &settings.store,
            |path| path.display().to_string(),
            |path| json!(path),
        ),
        Row::new(
            "python",
            &settings.python,
            |python| python_shown(python.as_deref(), global),
            |python| json!(python.as_ref().map(|p| p.to_string_lossy())),
        ),
        Row::new(
            "paths",
            &settings.paths,
            |paths| list(paths.iter().map(|p| p.display().to_string()).collect()),
            |paths| json!(paths),
        ),
        Row::new(
            "exclude",
            &settings.exclude,
            |globs| list(globs.clone()),
            |globs| json!(globs),
        ),
        Row::new(
            "mode",
            &settings.mode,
            |mode| mode.as_str().to_owned(),
            |mode| json!(mode.as_str()),
        ),
        Row::new(
            "optimize",
            &settings.optimize,
            |levels| list(levels.iter().map(u8::to_string).collect()),
            |levels| json!(levels),
        ),
        Row::new("jobs", &settings.jobs, usize::to_string, |jobs| json!(jobs)),
        Row::new(
            "max-size",
            &settings.max_size,
            |bytes| super::stats::human_bytes(*bytes),
            |bytes| json!(bytes),
        ),
        Row::new(
            "timeout",
            &settings.timeout,
            |timeout| {
                timeout.map_or_else(|| "none".to_owned(), |t| format!("{}s", t.as_secs_f64()))
            },
            |timeout| json!(timeout.map(|t| t.as_secs_f64())),
        ),
        Row::new(
            "remote",
            &settings.remote,
            |remotes| list(remotes.iter().map(Location::display).collect()),
            |remotes| json!(remotes.iter().map(Location::display).collect::<Vec<_>>()),
        ),
        Row::new(
            "remote-read-only",
            &settings.remote_read_only,
            bool::to_string,
            |read_only| json!(read_only),
        ),
        Row::new(
            "remote-timeout",
            &settings.remote_timeout,
            |timeout| format!("{}s", timeout.as_secs_f64()),
            |timeout| json!(timeout.as_secs_f64()),
        ),
    ]
}

/// The setting, and the interpreter it finds (nothing is started).
fn python_shown(python: Option<&std::ffi::OsStr>, global: &GlobalConfig) -> String {
    let found = match interpreter::discover(python, &global.cwd) {
        Ok(candidate) => candidate.path.display().to_string(),
        Err(err) => format!("none found: {err}"),
    };
    match python {
        Some(python) => format!("{} -> {found}", python.to_string_lossy()),
        None => format!("found: {found}"),
    }
}
