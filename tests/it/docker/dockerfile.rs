//! A Dockerfile read as BuildKit reads the instructions our Dockerfiles
//! use: `\` continuations, comment lines (also inside a continuation),
//! `ARG`, `FROM`, `ENV`, `WORKDIR`, `COPY`, `RUN` (shell form, with
//! `--mount=type=cache,target=…`), `USER` and `CMD` (exec form). Anything
//! else is an error: the tests must run every line, not skip one.

use std::path::Path;

/// One instruction, its arguments as written (variables not expanded).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Instruction {
    Arg {
        name: String,
        default: Option<String>,
    },
    From(String),
    /// `NAME=value` pairs, values still quoted.
    Env(Vec<(String, String)>),
    Workdir(String),
    Copy {
        sources: Vec<String>,
        dest: String,
    },
    Run {
        /// Targets of `--mount=type=cache` mounts.
        cache_targets: Vec<String>,
        /// The shell command, continuations joined.
        command: String,
    },
    User(String),
    Cmd(Vec<String>),
}

/// Reads and parses the Dockerfile at `path`.
pub fn parse_file(path: &Path) -> Vec<Instruction> {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|err| panic!("cannot read {}: {err}", path.display()));
    parse(&text).unwrap_or_else(|err| panic!("{}: {err}", path.display()))
}

/// Parses Dockerfile text.
pub fn parse(text: &str) -> Result<Vec<Instruction>, String> {
    logical_lines(text)
        .into_iter()
        .map(|(number, line)| instruction(&line).map_err(|err| format!("line {number}: {err}")))
        .collect()
}

/// Joins `\`-continued lines, dropping comment and blank lines, as
/// BuildKit does (a comment line inside a continuation is dropped too).
/// Each logical line comes with the number of its first physical line.
fn logical_lines(text: &str) -> Vec<(usize, String)> {
    let mut lines = Vec::new();
    let mut current: Option<(usize, String)> = None;
    for (index, raw) in text.lines().enumerate() {
        let trimmed = raw.trim();
        if trimmed.starts_with('#') || trimmed.is_empty() {
            continue;
        }
        let (body, continues) = match raw.trim_end().strip_suffix('\\') {
            Some(body) => (body, true),
            None => (raw.trim_end(), false),
        };
        let entry = current.get_or_insert_with(|| (index + 1, String::new()));
        entry.1.push_str(body);
        if continues {
            entry.1.push(' ');
        } else {
            lines.push(current.take().unwrap());
        }
    }
    lines.extend(current);
    lines
}

fn instruction(line: &str) -> Result<Instruction, String> {
    let line = line.trim();
    let (keyword, rest) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
    let rest = rest.trim();
    match keyword.to_ascii_uppercase().as_str() {
        "ARG" => Ok(match rest.split_once('=') {
            Some((name, default)) => Instruction::Arg {
                name: name.to_owned(),
                default: Some(default.to_owned()),
            },
            None => Instruction::Arg {
                name: rest.to_owned(),
                default: None,
            },
        }),
        "FROM" => Ok(Instruction::From(rest.to_owned())),
        "ENV" => env_pairs(rest).map(Instruction::Env),
        "WORKDIR" => Ok(Instruction::Workdir(rest.to_owned())),
        "COPY" => {
            let words: Vec<&str> = rest.split_whitespace().collect();
            if words.iter().any(|word| word.starts_with("--")) || words.len() < 2 {
                return Err(format!("unsupported COPY `{rest}`"));
            }
            let (dest, sources) = words.split_last().unwrap();
            Ok(Instruction::Copy {
                sources: sources.iter().map(|s| (*s).to_owned()).collect(),
                dest: (*dest).to_owned(),
            })
        }
        "RUN" => run(rest),
        "USER" => Ok(Instruction::User(rest.to_owned())),
        "CMD" => serde_json::from_str(rest)
            .map(Instruction::Cmd)
            .map_err(|err| format!("CMD must be the exec form (a JSON array): {err}")),
        other => Err(format!(
            "instruction `{other}` is not supported by the test harness"
        )),
    }
}

/// `RUN [--mount=type=cache,target=DIR[,…]]... COMMAND`.
fn run(rest: &str) -> Result<Instruction, String> {
    let mut cache_targets = Vec::new();
    let mut command = rest;
    while let Some(flag_and_rest) = command.strip_prefix("--") {
        let (flag, after) = flag_and_rest
            .split_once(char::is_whitespace)
            .ok_or("RUN with flags but no command")?;
        let options = flag
            .strip_prefix("mount=")
            .ok_or_else(|| format!("unsupported RUN flag `--{flag}`"))?;
        let mut target = None;
        let mut kind = None;
        for option in options.split(',') {
            match option.split_once('=') {
                Some(("type", value)) => kind = Some(value),
                Some(("target" | "dst" | "destination", value)) => target = Some(value),
                Some(("id" | "sharing" | "mode" | "uid" | "gid", _)) => {}
                _ => return Err(format!("unsupported mount option `{option}`")),
            }
        }
        if kind != Some("cache") {
            return Err(format!("only cache mounts are supported, not `--{flag}`"));
        }
        cache_targets.push(target.ok_or("cache mount without a target")?.to_owned());
        command = after.trim_start();
    }
    Ok(Instruction::Run {
        cache_targets,
        command: command.to_owned(),
    })
}

/// `NAME=value NAME2="value 2"` (values kept as written; `NAME value`, the
/// legacy form, is refused).
fn env_pairs(rest: &str) -> Result<Vec<(String, String)>, String> {
    let mut pairs = Vec::new();
    let mut chars = rest.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.peek().is_none() {
            return Ok(pairs);
        }
        let name: String =
            std::iter::from_fn(|| chars.next_if(|c| *c != '=' && !c.is_whitespace())).collect();
        if chars.next() != Some('=') {
            return Err(format!("ENV `{name}` without `=` is not supported"));
        }
        let mut value = String::new();
        let mut quote = None;
        while let Some(c) = chars.peek().copied() {
            if quote.is_none() && c.is_whitespace() {
                break;
            }
            chars.next();
            value.push(c);
            match (quote, c) {
                (None, '"' | '\'') => quote = Some(c),
                (Some(open), _) if c == open => quote = None,
                (_, '\\') => value.extend(chars.next()),
                _ => {}
            }
        }
        pairs.push((name, value));
    }
}

/// Expands `$NAME` and `${NAME}` from `vars` (unknown names expand to
/// nothing) and removes quotes, as BuildKit does in ENV, WORKDIR, COPY and
/// FROM.
pub fn expand(word: &str, vars: &dyn Fn(&str) -> Option<String>) -> String {
    let mut out = String::new();
    let mut chars = word.chars().peekable();
    let mut quote = None;
    while let Some(c) = chars.next() {
        match (quote, c) {
            (None, '"' | '\'') => quote = Some(c),
            (Some(open), _) if c == open => quote = None,
            (q, '\\') if q != Some('\'') => out.extend(chars.next()),
            (q, '$') if q != Some('\'') => {
                let name: String = if chars.next_if_eq(&'{').is_some() {
                    let name = std::iter::from_fn(|| chars.next_if(|c| *c != '}')).collect();
                    chars.next();
                    name
                } else {
                    std::iter::from_fn(|| chars.next_if(|c| c.is_ascii_alphanumeric() || *c == '_'))
                        .collect()
                };
                out.push_str(&vars(&name).unwrap_or_default());
            }
            _ => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn continuations_comments_mounts_and_env_are_read() {
        let text = "# syntax=docker/dockerfile:1\nARG V=3.12\nFROM python:${V}-slim\n\
                    ENV A=/x \\\n    B=\"two words\" \\\n    P=/x/bin:$PATH\n\
                    RUN --mount=type=cache,target=/root/.cache/rcache \\\n    # a comment\n    echo one \\\n && echo two\n\
                    CMD [\"python\", \"-m\", \"app\"]\n";
        let parsed = parse(text).unwrap();
        assert_eq!(
            parsed[2],
            Instruction::Env(vec![
                ("A".into(), "/x".into()),
                ("B".into(), "\"two words\"".into()),
                ("P".into(), "/x/bin:$PATH".into()),
            ])
        );
        assert_eq!(
            parsed[3],
            Instruction::Run {
                cache_targets: vec!["/root/.cache/rcache".into()],
                command: "echo one   && echo two".into(),
            }
        );
        let vars = |name: &str| (name == "PATH").then(|| "/bin".to_owned());
        assert_eq!(expand("/x/bin:$PATH", &vars), "/x/bin:/bin");
        assert_eq!(expand("\"two words\"", &vars), "two words");
        assert!(parse("HEALTHCHECK NONE\n").is_err());
    }
}
