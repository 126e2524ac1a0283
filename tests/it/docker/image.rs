//! Builds an "image" from a Dockerfile without Docker: every `RUN` line runs
//! for real with `bwrap` (bubblewrap) in a scratch root, and the `CMD` runs
//! in that root as `docker run` would start it.
//!
//! The root: the host's `/usr`, `/etc` and friends read-only (the base
//! system); at `/usr/local`, the base image's Python, a real CPython of this
//! machine seen through an overlay mount, stripped of its test suites and
//! pycs as the official `python:X-slim` images are; and scratch directories
//! for the rest of the image (`/app`, `/opt`, `/root`, `/tmp`, …), which
//! persist from one `RUN` to the next like layers. A `--mount=type=cache`
//! target is a directory the caller keeps between builds, as BuildKit keeps
//! a cache mount.

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use super::dockerfile::{Instruction, expand, parse_file};
use crate::support::Python;

/// Top-level directories of the image that live in scratch directories.
const IMAGE_DIRS: [&str; 7] = ["app", "opt", "root", "srv", "home", "var", "tmp"];

/// `PATH` and `LANG` as the python images set them; `HOME` comes from the
/// user.
const BASE_PATH: &str = "/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Whether bubblewrap is installed and can build a sandbox here.
pub fn bwrap_works() -> Result<(), String> {
    match Command::new("bwrap")
        .args(["--ro-bind", "/", "/", "true"])
        .output()
    {
        Ok(output) if output.status.success() => Ok(()),
        Ok(output) => Err(format!(
            "bwrap cannot make a sandbox here: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        )),
        Err(err) => Err(format!(
            "bwrap (Debian package bubblewrap) is not installed: {err}"
        )),
    }
}

/// What a build gets from outside the Dockerfile.
pub struct BuildOptions<'a> {
    /// The build context.
    pub context: &'a Path,
    /// `--build-arg NAME=VALUE`s.
    pub build_args: Vec<(String, String)>,
    /// Where cache mounts live between builds (one directory per target).
    pub caches: &'a Path,
    /// Host directories visible read-only in every `RUN` (sandbox path, host path).
    pub run_binds: Vec<(String, PathBuf)>,
    /// Environment every `RUN` gets on top of the image's.
    pub run_env: Vec<(String, String)>,
}

/// A built image: its scratch root and its runtime configuration.
pub struct Image {
    root: PathBuf,
    usr_local: Overlay,
    python_prefix: PathBuf,
    env: Vec<(String, String)>,
    workdir: String,
    user: String,
    cmd: Vec<String>,
}

impl Image {
    /// Builds `dockerfile` into `root` (a fresh directory) on `python` as the
    /// base image's interpreter. Returns the image and the output of every
    /// `RUN`; panics with that output when a `RUN` fails. `None` when this
    /// machine cannot mount the base image's overlay (not root).
    pub fn build(
        dockerfile: &Path,
        root: &Path,
        python: &Python,
        options: &BuildOptions,
    ) -> Option<(Self, String)> {
        let python_prefix = python.path.parent().unwrap().parent().unwrap().to_owned();
        let usr_local = Overlay::mount(&python_prefix, &root.join("usr-local"))?;
        strip_like_the_official_images(usr_local.merged());
        for dir in IMAGE_DIRS {
            std::fs::create_dir_all(root.join("rootfs").join(dir)).unwrap();
        }
        std::fs::set_permissions(
            root.join("rootfs/tmp"),
            std::fs::Permissions::from_mode(0o1777),
        )
        .unwrap();
        let mut image = Self {
            root: root.to_owned(),
            usr_local,
            python_prefix,
            env: vec![
                ("PATH".into(), BASE_PATH.into()),
                ("LANG".into(), "C.UTF-8".into()),
            ],
            workdir: "/".into(),
            user: "root".into(),
            cmd: Vec::new(),
        };
        // The Python's own directory (its libpython's run path), seen at its
        // host path too: its mount point must exist before `/root` is
        // mounted read-only.
        if let Some(inside) = image.host_path(&image.python_prefix.to_string_lossy()) {
            std::fs::create_dir_all(inside).unwrap();
        }
        let mut log = String::new();
        let mut meta_args: Vec<(String, String)> = Vec::new();
        let mut from_seen = false;
        for instruction in parse_file(dockerfile) {
            let vars = image.vars(&meta_args, from_seen);
            match instruction {
                Instruction::Arg { name, default } => {
                    let value = options
                        .build_args
                        .iter()
                        .find(|(arg, _)| *arg == name)
                        .map(|(_, value)| value.clone())
                        .or_else(|| default.map(|d| expand(&d, &vars)))
                        .unwrap_or_default();
                    if from_seen {
                        image.env.push((name, value));
                    } else {
                        meta_args.push((name, value));
                    }
                }
                Instruction::From(base) => {
                    let base = expand(&base, &vars);
                    let expected = format!("python:{}.{}-slim", python.version.0, python.version.1);
                    assert_eq!(base, expected, "the harness stands in for {expected} only");
                    from_seen = true;
                }
                Instruction::Env(pairs) => {
                    // All values see the environment before this ENV.
                    let values: Vec<(String, String)> = pairs
                        .into_iter()
                        .map(|(name, value)| (name, expand(&value, &vars)))
                        .collect();
                    for (name, value) in values {
                        image.set_env(&name, value);
                    }
                }
                Instruction::Workdir(dir) => {
                    let dir = image.absolute(&expand(&dir, &vars));
                    std::fs::create_dir_all(image.host_path(&dir).expect("WORKDIR in the image"))
                        .unwrap();
                    image.workdir = dir;
                }
                Instruction::Copy { sources, dest } => {
                    image.copy(options.context, &sources, &expand(&dest, &vars));
                }
                Instruction::Run {
                    cache_targets,
                    command,
                } => {
                    log.push_str(&image.run_step(options, &cache_targets, &command));
                }
                Instruction::User(user) => image.user = expand(&user, &vars),
                Instruction::Cmd(cmd) => image.cmd = cmd,
            }
        }
        Some((image, log))
    }

    /// Runs the image's `CMD` as `docker run` would, with `extra_env`. With
    /// `tmp`, as `docker run --read-only --tmpfs /tmp`: every directory is
    /// mounted read-only but `/tmp`, which is `tmp`. Without it, the
    /// container's root is writable.
    pub fn run(&self, tmp: Option<&Path>, extra_env: &[(&str, &str)]) -> Output {
        let mut command = self.sandbox(tmp.is_none(), tmp);
        for (name, value) in extra_env {
            command.arg("--setenv").arg(name).arg(value);
        }
        self.as_user(&mut command);
        command.args(&self.cmd);
        command.output().expect("running bwrap")
    }

    /// Runs `args` in the image as its user, writable, as `docker run IMAGE
    /// ARGS...` does; for checks from inside.
    pub fn run_args(&self, args: &[&str], extra_env: &[(&str, &str)]) -> Output {
        let mut command = self.sandbox(true, None);
        for (name, value) in extra_env {
            command.arg("--setenv").arg(name).arg(value);
        }
        self.as_user(&mut command);
        command.args(args);
        command.output().expect("running bwrap")
    }

    /// Every file of the image that is not the host's (path, size, mtime):
    /// the scratch directories and what the build changed in `/usr/local`.
    pub fn files(&self) -> std::collections::BTreeMap<PathBuf, (u64, std::time::SystemTime)> {
        let mut files = crate::support::snapshot(&self.root.join("rootfs"));
        files.extend(crate::support::snapshot(&self.root.join("usr-local/upper")));
        files
    }

    /// Where the image's `path` lives on the host, for the scratch part of
    /// the image and `/usr/local`.
    pub fn host_path(&self, path: &str) -> Option<PathBuf> {
        let relative = path.strip_prefix('/')?;
        if let Some(rest) = relative.strip_prefix("usr/local") {
            return Some(self.usr_local.merged().join(rest.trim_start_matches('/')));
        }
        let top = relative.split('/').next()?;
        IMAGE_DIRS
            .contains(&top)
            .then(|| self.root.join("rootfs").join(relative))
    }

    fn run_step(&self, options: &BuildOptions, cache_targets: &[String], command: &str) -> String {
        let mut sandbox = self.sandbox(true, None);
        for target in cache_targets {
            let cache = options
                .caches
                .join(target.trim_start_matches('/').replace('/', "_"));
            std::fs::create_dir_all(&cache).unwrap();
            sandbox.arg("--bind").arg(&cache).arg(target);
        }
        for (inside, host) in &options.run_binds {
            sandbox.arg("--ro-bind").arg(host).arg(inside);
        }
        for (name, value) in &options.run_env {
            sandbox.arg("--setenv").arg(name).arg(value);
        }
        self.as_user(&mut sandbox);
        let output = sandbox
            .args(["/bin/sh", "-c", command])
            .output()
            .expect("running bwrap");
        let text = format!(
            "$ {command}\n{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(
            output.status.success(),
            "RUN failed ({}):\n{text}",
            output.status
        );
        text
    }

    /// bwrap with the image's file systems, environment and working dir.
    fn sandbox(&self, writable: bool, tmp: Option<&Path>) -> Command {
        let bind = if writable { "--bind" } else { "--ro-bind" };
        let mut command = Command::new("bwrap");
        command.arg("--die-with-parent");
        for dir in ["usr", "etc", "bin", "sbin", "lib", "lib64"] {
            let host = Path::new("/").join(dir);
            if let Ok(target) = std::fs::read_link(&host) {
                command.arg("--symlink").arg(target).arg(&host);
            } else if host.exists() {
                command.arg("--ro-bind").arg(&host).arg(&host);
            }
        }
        command
            .arg(bind)
            .arg(self.usr_local.merged())
            .arg("/usr/local");
        for dir in IMAGE_DIRS {
            let host = self.root.join("rootfs").join(dir);
            match (dir, tmp) {
                ("tmp", Some(tmp)) => command.arg("--bind").arg(tmp).arg("/tmp"),
                _ => command.arg(bind).arg(host).arg(format!("/{dir}")),
            };
        }
        command
            .arg("--ro-bind")
            .arg(&self.python_prefix)
            .arg(&self.python_prefix);
        command.args(["--proc", "/proc", "--dev", "/dev", "--clearenv"]);
        for (name, value) in &self.env {
            command.arg("--setenv").arg(name).arg(value);
        }
        let (_, _, home) = passwd(&self.user);
        if !self.env.iter().any(|(name, _)| name == "HOME") {
            command.arg("--setenv").arg("HOME").arg(home);
        }
        command.arg("--chdir").arg(&self.workdir);
        command
    }

    /// Drops to the image's `USER` inside the sandbox (setpriv), as Docker
    /// starts the process.
    fn as_user(&self, command: &mut Command) {
        let (uid, gid, _) = passwd(&self.user);
        if uid != 0 {
            command.args([
                "setpriv",
                &format!("--reuid={uid}"),
                &format!("--regid={gid}"),
                "--clear-groups",
                "--",
            ]);
        }
    }

    fn copy(&self, context: &Path, sources: &[String], dest: &str) {
        let dest = self.absolute(dest);
        let into_dir = dest.ends_with('/') || sources.len() > 1;
        let host_dest = self.host_path(&dest).expect("COPY into the image");
        for source in sources {
            let from = context.join(source);
            if from.is_dir() {
                crate::support::copy_tree(&from, &host_dest);
            } else if into_dir || host_dest.is_dir() {
                std::fs::create_dir_all(&host_dest).unwrap();
                std::fs::copy(&from, host_dest.join(from.file_name().unwrap())).unwrap();
            } else {
                std::fs::create_dir_all(host_dest.parent().unwrap()).unwrap();
                std::fs::copy(&from, &host_dest).unwrap();
            }
        }
    }

    fn absolute(&self, path: &str) -> String {
        if path.starts_with('/') {
            return path.to_owned();
        }
        let joined = Path::new(&self.workdir).join(path);
        let mut parts: Vec<&str> = Vec::new();
        for part in joined.to_str().unwrap().split('/') {
            match part {
                "" | "." => {}
                ".." => {
                    parts.pop();
                }
                part => parts.push(part),
            }
        }
        format!("/{}", parts.join("/"))
    }

    fn set_env(&mut self, name: &str, value: String) {
        self.env.retain(|(existing, _)| existing != name);
        self.env.push((name.to_owned(), value));
    }

    /// Variables for expansion: the image's environment, and before FROM
    /// the meta `ARG`s.
    fn vars(
        &self,
        meta_args: &[(String, String)],
        from_seen: bool,
    ) -> impl Fn(&str) -> Option<String> + use<> {
        let mut vars = self.env.clone();
        if !from_seen {
            vars.extend(meta_args.iter().cloned());
        }
        move |name: &str| {
            vars.iter()
                .rev()
                .find(|(var, _)| var == name)
                .map(|(_, value)| value.clone())
        }
    }
}

/// uid, gid and home of `user` (a name or a number) in /etc/passwd (the
/// image's /etc is the host's).
fn passwd(user: &str) -> (u32, u32, String) {
    let text = std::fs::read_to_string("/etc/passwd").unwrap();
    let fields = text
        .lines()
        .map(|line| line.split(':').collect::<Vec<_>>())
        .find(|fields| fields.len() > 5 && (fields[0] == user || fields[2] == user))
        .unwrap_or_else(|| panic!("USER {user}: not in /etc/passwd"));
    (
        fields[2].parse().unwrap(),
        fields[3].parse().unwrap(),
        fields[5].to_owned(),
    )
}

/// Removes what the official python images remove from /usr/local: test
/// suites and every pyc.
fn strip_like_the_official_images(usr_local: &Path) {
    let status = Command::new("find")
        .arg(usr_local)
        .args([
            "-depth", "(", "(", "-type", "d", "-a", "(", "-name", "test", "-o", "-name", "tests",
            "-o",
        ])
        .args([
            "-name",
            "idle_test",
            ")",
            ")",
            "-o",
            "(",
            "-type",
            "f",
            "-a",
            "-name",
            "*.pyc",
            ")",
            ")",
        ])
        .args(["-exec", "rm", "-rf", "{}", "+"])
        .status()
        .unwrap();
    assert!(status.success(), "stripping the base image");
}

/// An overlay mount of a read-only directory with a writable upper layer,
/// unmounted when dropped.
struct Overlay {
    merged: PathBuf,
}

impl Overlay {
    fn mount(lower: &Path, dir: &Path) -> Option<Self> {
        let (upper, work, merged) = (dir.join("upper"), dir.join("work"), dir.join("merged"));
        for path in [&upper, &work, &merged] {
            std::fs::create_dir_all(path).unwrap();
        }
        let output = Command::new("mount")
            .args(["-t", "overlay", "overlay", "-o"])
            .arg(format!(
                "lowerdir={},upperdir={},workdir={}",
                lower.display(),
                upper.display(),
                work.display()
            ))
            .arg(&merged)
            .output()
            .expect("running mount");
        if !output.status.success() {
            eprintln!(
                "cannot mount an overlay here ({}): skipped",
                String::from_utf8_lossy(&output.stderr).trim()
            );
            return None;
        }
        Some(Self { merged })
    }

    fn merged(&self) -> &Path {
        &self.merged
    }
}

impl Drop for Overlay {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.merged).status();
    }
}
