//! A small GitLab runner for one job: `include: local:` and `extends:`
//! resolved (hashes merged deeply, as GitLab does), variables expanded,
//! the cache restored by key then `fallback_keys`, `before_script` +
//! `script` run in one bash, `after_script` in another (with
//! `CI_JOB_STATUS`), and the cache saved under its key after a successful
//! job (GitLab caches are overwritten, not immutable). Unknown keys and
//! undefined variables fail the test.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use yaml_rust2::Yaml;
use yaml_rust2::yaml::Hash;

use super::github::{check_keys, load, scalar};

/// A runner machine: the project dir and `$TMPDIR` are new for each job,
/// the cache directory outlives jobs.
pub struct GitLabRunner {
    pub project_dir: PathBuf,
    pub tmp: PathBuf,
    home: PathBuf,
    cache_root: PathBuf,
    origin: PathBuf,
    machine_env: BTreeMap<String, String>,
    pub log: String,
}

impl GitLabRunner {
    pub fn new(root: &Path, origin: &Path, machine_env: BTreeMap<String, String>) -> Self {
        Self {
            project_dir: root.join("builds/group/project"),
            tmp: root.join("tmp"),
            home: root.join("home"),
            cache_root: root.join("gitlab-cache"),
            origin: origin.to_owned(),
            machine_env,
            log: String::new(),
        }
    }

    /// Runs `job` of the project's `ci_file` on branch `branch` of a project
    /// whose default branch is `main`.
    pub fn run_job(&mut self, ci_file: &str, job: &str, branch: &str) {
        for dir in [&self.project_dir, &self.tmp, &self.home] {
            let _ = std::fs::remove_dir_all(dir);
            std::fs::create_dir_all(dir).unwrap();
        }
        self.log.clear();
        crate::support::copy_tree(&self.origin, &self.project_dir);
        let config = self.load_with_includes(ci_file);
        let job_spec = resolve_extends(&config, job);
        check_keys(
            &job_spec,
            &[
                "image",
                "variables",
                "cache",
                "before_script",
                "script",
                "after_script",
            ],
            "job",
        );

        let mut variables = BTreeMap::from([
            ("CI".to_owned(), "true".to_owned()),
            ("GITLAB_CI".to_owned(), "true".to_owned()),
            (
                "CI_PROJECT_DIR".to_owned(),
                self.project_dir.display().to_string(),
            ),
            ("CI_COMMIT_REF_NAME".to_owned(), branch.to_owned()),
            (
                "CI_COMMIT_REF_SLUG".to_owned(),
                branch.to_lowercase().replace(['/', '_', '.'], "-"),
            ),
            ("CI_DEFAULT_BRANCH".to_owned(), "main".to_owned()),
            ("CI_JOB_NAME".to_owned(), job.to_owned()),
        ]);
        for source in [&config["variables"], &job_spec["variables"]] {
            for (name, value) in source.as_hash().into_iter().flatten() {
                let value = expand(&scalar(value), &variables);
                variables.insert(scalar(name), value);
            }
        }

        let cache = &job_spec["cache"];
        check_keys(cache, &["key", "fallback_keys", "paths"], "cache");
        let key = expand(cache["key"].as_str().expect("cache key"), &variables);
        assert!(!key.contains('/'), "GitLab refuses the cache key {key}");
        let fallbacks: Vec<String> = cache["fallback_keys"]
            .as_vec()
            .into_iter()
            .flatten()
            .map(|k| expand(&scalar(k), &variables))
            .collect();
        let restored = std::iter::once(&key)
            .chain(&fallbacks)
            .find(|k| self.cache_root.join(k.as_str()).join("cache.tar").is_file());
        if let Some(restored) = restored {
            tar(
                &self.project_dir,
                &[
                    "-xf",
                    self.cache_root
                        .join(restored)
                        .join("cache.tar")
                        .to_str()
                        .unwrap(),
                ],
            );
        }
        let _ = writeln!(self.log, "cache {key}: restored {restored:?}");

        let main = [&job_spec["before_script"], &job_spec["script"]]
            .map(lines)
            .concat();
        let succeeded = self.shell(&main, &variables);
        assert!(succeeded, "job `{job}` failed:\n{}", self.log);
        variables.insert("CI_JOB_STATUS".to_owned(), "success".to_owned());
        assert!(
            self.shell(&lines(&job_spec["after_script"]), &variables),
            "after_script:\n{}",
            self.log
        );

        let paths: Vec<String> = cache["paths"]
            .as_vec()
            .expect("cache paths")
            .iter()
            .map(scalar)
            .filter(|path| self.project_dir.join(path).exists())
            .collect();
        assert!(
            !paths.is_empty(),
            "no cache path exists after the job:\n{}",
            self.log
        );
        let dir = self.cache_root.join(&key);
        std::fs::create_dir_all(&dir).unwrap();
        let archive = dir.join("cache.tar").display().to_string();
        let mut args = vec!["-cf", archive.as_str(), "--"];
        args.extend(paths.iter().map(String::as_str));
        tar(&self.project_dir, &args);
    }

    /// The CI file with its `include: - local:` files merged under it.
    fn load_with_includes(&self, ci_file: &str) -> Yaml {
        let top = load(&self.project_dir.join(ci_file));
        let mut merged = Yaml::Hash(Hash::new());
        for include in top["include"].as_vec().into_iter().flatten() {
            check_keys(include, &["local"], "include");
            let included = load(&self.project_dir.join(include["local"].as_str().unwrap()));
            merged = deep_merge(&merged, &included);
        }
        let mut top = top.into_hash().unwrap();
        top.remove(&Yaml::String("include".into()));
        deep_merge(&merged, &Yaml::Hash(top))
    }

    /// Runs `commands` in one bash as the runner does; returns success.
    fn shell(&mut self, commands: &[String], variables: &BTreeMap<String, String>) -> bool {
        let script = format!("set -eo pipefail\n{}\n", commands.join("\n"));
        let mut env = self.machine_env.clone();
        env.insert("HOME".into(), self.home.display().to_string());
        env.insert("TMPDIR".into(), self.tmp.display().to_string());
        env.extend(variables.clone());
        let output = Command::new("bash")
            .args(["--noprofile", "--norc", "-c", &script])
            .env_clear()
            .envs(&env)
            .current_dir(&self.project_dir)
            .output()
            .unwrap();
        self.log.push_str(&String::from_utf8_lossy(&output.stdout));
        self.log.push_str(&String::from_utf8_lossy(&output.stderr));
        output.status.success()
    }
}

/// `job` with its `extends:` chain merged under it.
fn resolve_extends(config: &Yaml, job: &str) -> Yaml {
    let spec = &config[job];
    assert!(!spec.is_badvalue(), "no job `{job}`");
    let mut own = spec.as_hash().unwrap().clone();
    let Some(parent) = own.remove(&Yaml::String("extends".into())) else {
        return spec.clone();
    };
    let base = resolve_extends(config, parent.as_str().expect("one extends"));
    deep_merge(&base, &Yaml::Hash(own))
}

/// GitLab's merge for `extends` and `include`: hashes merged key by key,
/// anything else replaced.
fn deep_merge(base: &Yaml, over: &Yaml) -> Yaml {
    match (base, over) {
        (Yaml::Hash(base), Yaml::Hash(over)) => {
            let mut merged = base.clone();
            for (key, value) in over {
                let value = match base.get(key) {
                    Some(old) => deep_merge(old, value),
                    None => value.clone(),
                };
                merged.insert(key.clone(), value);
            }
            Yaml::Hash(merged)
        }
        _ => over.clone(),
    }
}

/// A script list (nested lists flattened, as `!reference` makes them).
fn lines(node: &Yaml) -> Vec<String> {
    match node {
        Yaml::Array(items) => items.iter().flat_map(lines).collect(),
        Yaml::BadValue => Vec::new(),
        other => vec![scalar(other)],
    }
}

/// `$NAME` and `${NAME}` replaced from `variables`; an undefined name
/// fails the test.
fn expand(text: &str, variables: &BTreeMap<String, String>) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        let (name, tail) = if let Some(braced) = after.strip_prefix('{') {
            let end = braced.find('}').expect("closing brace");
            (&braced[..end], &braced[end + 1..])
        } else {
            let end = after
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(after.len());
            (&after[..end], &after[end..])
        };
        let value = variables
            .get(name)
            .unwrap_or_else(|| panic!("`{text}` uses undefined variable {name}"));
        out.push_str(value);
        rest = tail;
    }
    out.push_str(rest);
    out
}

fn tar(dir: &Path, args: &[&str]) {
    let status = Command::new("tar")
        .args(args)
        .current_dir(dir)
        .status()
        .unwrap();
    assert!(status.success(), "tar {args:?}");
}
