//! A small GitHub Actions runner for one job: runs each `run:` step for real
//! with bash, in order, as the hosted runner does — expressions evaluated
//! (`expressions.rs`), `if:` honoured, `env:` blocks, and the
//! `$GITHUB_OUTPUT` / `$GITHUB_ENV` / `$GITHUB_PATH` files read after each
//! step — and runs local composite actions (`uses: ./DIR`) step by step in
//! their own scope. `actions/checkout`, `actions/setup-python` and
//! `actions/cache/{restore,save}` are local stand-ins. Every key, input or
//! `uses:` it does not know fails the test.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use yaml_rust2::Yaml;

use super::actions_cache::ActionsCache;
use super::expressions::{self, Context, Value};
use crate::support::Python;

/// A runner machine: a workspace and temp dir that each job gets afresh
/// (at the same paths, as on GitHub), and a cache that outlives jobs.
pub struct Runner {
    pub workspace: PathBuf,
    pub temp: PathBuf,
    home: PathBuf,
    /// Where step files (`$GITHUB_OUTPUT`, scripts) go.
    files: PathBuf,
    cache: ActionsCache,
    /// The interpreter `actions/setup-python` provides.
    python: Python,
    /// The repository `actions/checkout` checks out.
    origin: PathBuf,
    /// The machine's environment (PATH, pip settings) before any step.
    machine_env: BTreeMap<String, String>,
    /// Set by steps through `$GITHUB_ENV`.
    job_env: BTreeMap<String, String>,
    /// Added by steps through `$GITHUB_PATH`, newest first.
    job_path: Vec<String>,
    step_count: usize,
    /// Everything the steps printed, for failure messages.
    pub log: String,
}

/// Names an expression can see in one scope: the workflow job's (matrix)
/// or a composite action's (inputs).
struct Scope {
    workspace: PathBuf,
    temp: PathBuf,
    matrix: Option<BTreeMap<String, String>>,
    inputs: Option<BTreeMap<String, String>>,
    steps: BTreeMap<String, BTreeMap<String, String>>,
}

impl Context for Scope {
    fn lookup(&self, path: &[String]) -> Result<Value, String> {
        let parts: Vec<&str> = path.iter().map(String::as_str).collect();
        let known = |map: Option<&BTreeMap<String, String>>, name: &str| {
            map.and_then(|map| map.get(name))
                .map(|value| Value::Text(value.clone()))
                .ok_or_else(|| format!("unknown name `{}`", path.join(".")))
        };
        match parts.as_slice() {
            ["inputs", name] => known(self.inputs.as_ref(), name),
            ["matrix", name] => known(self.matrix.as_ref(), name),
            ["steps", id, "outputs", name] => {
                let outputs = self
                    .steps
                    .get(*id)
                    .ok_or_else(|| format!("no step `{id}` ran before `{}`", path.join(".")))?;
                Ok(outputs
                    .get(*name)
                    .map_or(Value::Null, |value| Value::Text(value.clone())))
            }
            ["runner", "os"] => Ok(Value::Text("Linux".into())),
            ["runner", "temp"] => Ok(Value::Text(self.temp.display().to_string())),
            ["github", "workspace"] => Ok(Value::Text(self.workspace.display().to_string())),
            _ => Err(format!(
                "the stand-in runner does not know `{}`",
                path.join(".")
            )),
        }
    }

    fn hash_files(&self, patterns: &[String]) -> String {
        hash_files(&self.workspace, patterns)
    }
}

impl Runner {
    pub fn new(
        root: &Path,
        python: &Python,
        origin: &Path,
        machine_env: BTreeMap<String, String>,
    ) -> Self {
        Self {
            workspace: root.join("work/project"),
            temp: root.join("work/_temp"),
            home: root.join("home"),
            files: root.join("work/_steps"),
            cache: ActionsCache::new(&root.join("actions-cache")),
            python: python.clone(),
            origin: origin.to_owned(),
            machine_env,
            job_env: BTreeMap::new(),
            job_path: Vec::new(),
            step_count: 0,
            log: String::new(),
        }
    }

    /// Runs job `job` of `workflow` on a fresh runner (empty workspace,
    /// temp and home; the cache kept), with `matrix` as its matrix values.
    /// Returns each step's outputs by id.
    pub fn run_job(
        &mut self,
        workflow: &Yaml,
        job: &str,
        matrix: BTreeMap<String, String>,
    ) -> BTreeMap<String, BTreeMap<String, String>> {
        for dir in [&self.workspace, &self.temp, &self.home, &self.files] {
            let _ = std::fs::remove_dir_all(dir);
            std::fs::create_dir_all(dir).unwrap();
        }
        self.job_env.clear();
        self.job_path.clear();
        self.log.clear();
        let job = &workflow["jobs"][job];
        check_keys(job, &["runs-on", "strategy", "steps"], "job");
        for (name, value) in &matrix {
            let declared = job["strategy"]["matrix"][name.as_str()]
                .as_vec()
                .unwrap_or_else(|| panic!("matrix.{name} is not declared"));
            assert!(
                declared.iter().any(|v| &scalar(v) == value),
                "matrix.{name} has no value {value}"
            );
        }
        let mut scope = Scope {
            workspace: self.workspace.clone(),
            temp: self.temp.clone(),
            matrix: Some(matrix),
            inputs: None,
            steps: BTreeMap::new(),
        };
        self.run_steps(job["steps"].as_vec().expect("job steps"), &mut scope, false);
        scope.steps
    }

    fn run_steps(&mut self, steps: &[Yaml], scope: &mut Scope, composite: bool) {
        for step in steps {
            check_keys(
                step,
                &["name", "id", "if", "run", "shell", "env", "uses", "with"],
                "step",
            );
            let id = step["id"].as_str().map(str::to_owned);
            let label = step["name"]
                .as_str()
                .or(step["uses"].as_str())
                .or(id.as_deref())
                .unwrap_or("run")
                .to_owned();
            let wanted = step["if"]
                .as_str()
                .map_or(Ok(true), |cond| expressions::condition(cond, scope))
                .unwrap_or_else(|err| panic!("step `{label}`, if: {err}"));
            let _ = writeln!(
                self.log,
                "\n== {label}{}",
                if wanted { "" } else { " (skipped)" }
            );
            let outputs = if !wanted {
                BTreeMap::new()
            } else if let Some(script) = step["run"].as_str() {
                self.run_script(step, script, scope, composite, &label)
            } else {
                let uses = step["uses"].as_str().expect("a step runs or uses");
                let with = evaluated_map(&step["with"], scope, &label);
                self.uses(uses, &with)
            };
            if let Some(id) = id {
                scope.steps.insert(id, outputs);
            }
        }
    }

    fn run_script(
        &mut self,
        step: &Yaml,
        script: &str,
        scope: &Scope,
        composite: bool,
        label: &str,
    ) -> BTreeMap<String, String> {
        let shell = step["shell"].as_str();
        assert!(
            shell.is_some() || !composite,
            "step `{label}`: composite actions need `shell:`"
        );
        // What the hosted runner runs for `shell: bash`, and for no shell
        // on Linux.
        let shell_args: &[&str] = match shell {
            Some("bash") => &["--noprofile", "--norc", "-eo", "pipefail"],
            None => &["-e"],
            Some(other) => panic!("step `{label}`: shell `{other}` is not supported"),
        };
        let script = expressions::substitute(script, scope)
            .unwrap_or_else(|err| panic!("step `{label}`: {err}"));
        self.step_count += 1;
        let step_files = self.files.join(self.step_count.to_string());
        std::fs::create_dir_all(&step_files).unwrap();
        let script_path = step_files.join("script.sh");
        std::fs::write(&script_path, script).unwrap();
        let [output_file, env_file, path_file] =
            ["output", "env", "path"].map(|name| step_files.join(name));
        for file in [&output_file, &env_file, &path_file] {
            std::fs::write(file, "").unwrap();
        }

        let mut env = self.machine_env.clone();
        let path = self
            .job_path
            .iter()
            .chain(env.get("PATH"))
            .cloned()
            .collect::<Vec<_>>()
            .join(":");
        env.insert("PATH".into(), path);
        let file_text = |file: &Path| file.display().to_string();
        env.extend([
            ("HOME".to_owned(), file_text(&self.home)),
            ("CI".to_owned(), "true".to_owned()),
            ("GITHUB_ACTIONS".to_owned(), "true".to_owned()),
            ("GITHUB_WORKSPACE".to_owned(), file_text(&self.workspace)),
            ("RUNNER_OS".to_owned(), "Linux".to_owned()),
            ("RUNNER_TEMP".to_owned(), file_text(&self.temp)),
            ("GITHUB_OUTPUT".to_owned(), file_text(&output_file)),
            ("GITHUB_ENV".to_owned(), file_text(&env_file)),
            ("GITHUB_PATH".to_owned(), file_text(&path_file)),
        ]);
        env.extend(self.job_env.clone());
        env.extend(evaluated_map(&step["env"], scope, label));

        let output = Command::new("bash")
            .args(shell_args)
            .arg(&script_path)
            .env_clear()
            .envs(&env)
            .current_dir(&self.workspace)
            .output()
            .unwrap();
        self.log.push_str(&String::from_utf8_lossy(&output.stdout));
        self.log.push_str(&String::from_utf8_lossy(&output.stderr));
        assert!(
            output.status.success(),
            "step `{label}` failed ({}):{}",
            output.status,
            self.log
        );
        self.job_env.extend(parse_command_file(
            &std::fs::read_to_string(&env_file).unwrap(),
        ));
        for line in std::fs::read_to_string(&path_file).unwrap().lines().rev() {
            self.job_path.insert(0, line.to_owned());
        }
        parse_command_file(&std::fs::read_to_string(&output_file).unwrap())
    }

    fn uses(&mut self, uses: &str, with: &BTreeMap<String, String>) -> BTreeMap<String, String> {
        match uses {
            "actions/checkout@v4" => {
                assert!(with.is_empty(), "checkout stand-in takes no inputs");
                crate::support::copy_tree(&self.origin, &self.workspace);
                BTreeMap::new()
            }
            "actions/setup-python@v5" => {
                let wanted = with.get("python-version").expect("python-version");
                let (major, minor) = self.python.version;
                assert_eq!(wanted, &format!("{major}.{minor}"), "setup-python stand-in");
                let bin = self.python.path.parent().unwrap();
                self.job_path.insert(0, bin.display().to_string());
                BTreeMap::from([
                    ("python-version".into(), self.python.full_version.clone()),
                    ("python-path".into(), self.python.path.display().to_string()),
                ])
            }
            "actions/cache/restore@v4" => {
                let outputs = self.cache.restore(with, &self.workspace);
                let _ = writeln!(self.log, "actions/cache/restore: {outputs:?}");
                outputs
            }
            "actions/cache/save@v4" => {
                let saved = self.cache.save(with, &self.workspace);
                let _ = writeln!(self.log, "actions/cache/save: saved {saved}");
                BTreeMap::new()
            }
            local if local.starts_with("./") => {
                self.run_composite(&self.workspace.join(local).join("action.yml"), with)
            }
            other => panic!("no stand-in for `uses: {other}`"),
        }
    }

    /// Runs a composite action with inputs `with`; returns its outputs.
    fn run_composite(
        &mut self,
        action_file: &Path,
        with: &BTreeMap<String, String>,
    ) -> BTreeMap<String, String> {
        let action = load(action_file);
        check_keys(
            &action,
            &[
                "name",
                "description",
                "branding",
                "inputs",
                "outputs",
                "runs",
            ],
            "action",
        );
        assert_eq!(action["runs"]["using"].as_str(), Some("composite"));
        let declared = action["inputs"].as_hash().expect("inputs");
        for name in with.keys() {
            assert!(
                declared.contains_key(&Yaml::String(name.clone())),
                "the action has no input `{name}`"
            );
        }
        let inputs: BTreeMap<String, String> = declared
            .iter()
            .map(|(name, spec)| {
                let name = scalar(name);
                let value = with
                    .get(&name)
                    .cloned()
                    .unwrap_or_else(|| scalar(&spec["default"]));
                (name, value)
            })
            .collect();
        let mut scope = Scope {
            workspace: self.workspace.clone(),
            temp: self.temp.clone(),
            matrix: None,
            inputs: Some(inputs),
            steps: BTreeMap::new(),
        };
        self.run_steps(
            action["runs"]["steps"].as_vec().expect("steps"),
            &mut scope,
            true,
        );
        action["outputs"]
            .as_hash()
            .expect("outputs")
            .iter()
            .map(|(name, spec)| {
                let value = expressions::substitute(spec["value"].as_str().unwrap(), &scope)
                    .unwrap_or_else(|err| panic!("output {}: {err}", scalar(name)));
                (scalar(name), value)
            })
            .collect()
    }
}

/// Loads the one YAML document in `file`.
pub fn load(file: &Path) -> Yaml {
    let text = std::fs::read_to_string(file).unwrap();
    let mut docs = yaml_rust2::YamlLoader::load_from_str(&text)
        .unwrap_or_else(|err| panic!("{}: {err}", file.display()));
    assert_eq!(docs.len(), 1, "{}: one document", file.display());
    docs.remove(0)
}

/// A scalar as the string GitHub (and GitLab) hands to scripts.
pub fn scalar(value: &Yaml) -> String {
    match value {
        Yaml::String(text) | Yaml::Real(text) => text.clone(),
        Yaml::Integer(number) => number.to_string(),
        Yaml::Boolean(b) => b.to_string(),
        Yaml::Null | Yaml::BadValue => String::new(),
        other => panic!("not a scalar: {other:?}"),
    }
}

/// Fails on a key of `node` that is not in `known`.
pub fn check_keys(node: &Yaml, known: &[&str], what: &str) {
    for key in node
        .as_hash()
        .unwrap_or_else(|| panic!("{what} is not a mapping"))
        .keys()
    {
        let key = scalar(key);
        assert!(
            known.contains(&key.as_str()),
            "{what} key `{key}` is not implemented by the stand-in"
        );
    }
}

/// An `env:` or `with:` mapping, its values evaluated.
fn evaluated_map(node: &Yaml, scope: &Scope, label: &str) -> BTreeMap<String, String> {
    let Some(hash) = node.as_hash() else {
        assert!(node.is_badvalue(), "step `{label}`: not a mapping");
        return BTreeMap::new();
    };
    hash.iter()
        .map(|(name, value)| {
            let value = expressions::substitute(&scalar(value), scope)
                .unwrap_or_else(|err| panic!("step `{label}`, {}: {err}", scalar(name)));
            (scalar(name), value)
        })
        .collect()
}

/// `NAME=VALUE` lines and `NAME<<DELIMITER` blocks, as in `$GITHUB_OUTPUT`
/// and `$GITHUB_ENV`.
fn parse_command_file(text: &str) -> BTreeMap<String, String> {
    let mut values = BTreeMap::new();
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        if line.is_empty() {
            continue;
        }
        if let Some((name, delimiter)) = line.split_once("<<") {
            let body: Vec<&str> = lines.by_ref().take_while(|l| *l != delimiter).collect();
            values.insert(name.to_owned(), body.join("\n"));
        } else {
            let (name, value) = line
                .split_once('=')
                .unwrap_or_else(|| panic!("malformed command file line {line:?}"));
            values.insert(name.to_owned(), value.to_owned());
        }
    }
    values
}

/// `hashFiles(patterns)`: a hash of the files under `workspace` matching the
/// patterns (one per line, `!` excludes), in path order; empty when none
/// match. (GitHub's is a SHA-256 of SHA-256s; any content hash serves.)
fn hash_files(workspace: &Path, patterns: &[String]) -> String {
    let mut include = globset::GlobSetBuilder::new();
    let mut exclude = globset::GlobSetBuilder::new();
    for pattern in patterns.iter().flat_map(|p| p.lines()).map(str::trim) {
        if pattern.is_empty() {
            continue;
        }
        let (set, pattern) = match pattern.strip_prefix('!') {
            Some(negated) => (&mut exclude, negated),
            None => (&mut include, pattern),
        };
        set.add(
            globset::GlobBuilder::new(pattern)
                .literal_separator(true)
                .build()
                .unwrap(),
        );
    }
    let (include, exclude) = (include.build().unwrap(), exclude.build().unwrap());
    let mut files: Vec<PathBuf> = crate::support::walk(workspace)
        .into_iter()
        .filter(|path| std::fs::symlink_metadata(path).unwrap().is_file())
        .filter_map(|path| path.strip_prefix(workspace).ok().map(Path::to_owned))
        .filter(|relative| !relative.starts_with(".git"))
        .filter(|relative| include.is_match(relative) && !exclude.is_match(relative))
        .collect();
    if files.is_empty() {
        return String::new();
    }
    files.sort();
    let mut hasher = blake3::Hasher::new();
    for file in files {
        hasher.update(blake3::hash(&std::fs::read(workspace.join(file)).unwrap()).as_bytes());
    }
    hasher.finalize().to_hex().to_string()
}
