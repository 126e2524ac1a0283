//! Directories reached by two paths: every virtualenv's `lib64 -> lib`, a
//! symlink into the tree, a root named twice, a bind mount. Beside the
//! sources each pyc is one physical file, written once per run for one
//! path chosen whatever `-j`, root order or store history; under a pycache
//! prefix each path has its own; a symlinked file keeps its own pyc.

use std::collections::BTreeMap;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use crate::support::{
    Mount, Python, TestEnv, any_python, code, covered, parallel_filter_map, py_files, pycs,
    python_with_input, pythons, run_json, running_as_root, stderr, stdlib_dir,
};

/// `rcache --json -j JOBS ARGS` in `env` with `store`; the summary.
fn json_run(env: &TestEnv, store: &Path, python: &Python, jobs: &str, args: &[&str]) -> Value {
    let mut command = env.rcache_with_store(store, python, &["--json", "-j", jobs]);
    command.args(args);
    let (summary, output) = run_json(&mut command);
    assert_eq!(code(&output), 0, "{summary}\n{}", stderr(&output));
    summary
}

/// The `co_filename` of each pyc, by pyc path, as `python` unmarshals it.
fn co_filenames(python: &Python, pycs: &[&PathBuf]) -> BTreeMap<PathBuf, String> {
    let script = "import marshal, sys\n\
        for line in sys.stdin.read().splitlines():\n\
        \x20   with open(line, 'rb') as f:\n\
        \x20       print(marshal.loads(f.read()[16:]).co_filename)\n";
    let input: Vec<String> = pycs.iter().map(|p| p.display().to_string()).collect();
    let out = python_with_input(python, &["-S", "-s"], script, &input.join("\n"));
    pycs.iter()
        .map(|p| (*p).clone())
        .zip(out.lines().map(str::to_owned))
        .collect()
}

/// The pip wheel `python` bundles for `ensurepip`.
fn bundled_pip_wheels(python: &Python) -> PathBuf {
    let bundled = stdlib_dir(python).join("ensurepip").join("_bundled");
    if bundled.is_dir() {
        bundled
    } else {
        PathBuf::from("/usr/share/python-wheels") // Debian's python3.X
    }
}

/// A virtualenv of `python` at `dir` as uv makes it, with pip installed by
/// uv from the wheel `python` bundles (no network, no pycs).
fn uv_venv_with_pip(python: &Python, dir: &Path) {
    crate::support::uv_venv(python, dir);
    crate::support::uv_pip_install(dir, &bundled_pip_wheels(python), &["pip".as_ref()]);
}

/// A virtualenv of `python` at `dir` made by `python -m venv` (pip
/// installed by ensurepip, as users get it), without the pycs pip wrote.
fn python_venv(python: &Python, dir: &Path) {
    let made = python
        .command()
        .args(["-m", "venv"])
        .arg(dir)
        .output()
        .unwrap();
    assert!(made.status.success(), "{}", stderr(&made));
    for pyc in pycs(dir).keys() {
        std::fs::remove_file(pyc).unwrap();
    }
}

/// Materializes the virtualenv `venv` (its root, as users name it) and
/// checks: each pyc written once, under `lib/`, named for `lib/`; a second
/// run writes nothing; a fresh store at `-j 1` builds the same bytes;
/// CPython uses them and writes nothing; under a prefix both paths get
/// their own pycs. Returns the number of sources.
fn check_venv(python: &Python, env: &TestEnv, venv: &Path) -> usize {
    let label = python.label();
    let lib = venv.join("lib");
    assert!(
        std::fs::symlink_metadata(venv.join("lib64"))
            .unwrap()
            .file_type()
            .is_symlink(),
        "{label}: no lib64 symlink"
    );
    // uv puts `bin/activate_this.py` beside the `lib/` ones.
    let sources = py_files(venv).len();
    let in_lib = py_files(&lib).len();
    assert!(in_lib > 100, "{label}: {in_lib} sources");
    let venv_arg = venv.to_str().unwrap();

    let first = json_run(env, &env.store, python, "2", &["materialize", venv_arg]);
    assert_eq!(first["files"], sources, "{label}: {first}");
    assert_eq!(first["aliases"], in_lib, "{label}: lib64 paths: {first}");
    assert_eq!(first["written"], sources, "{label}: each pyc once: {first}");
    let written = pycs(venv);
    assert_eq!(written.len(), sources, "{label}");
    let paths: Vec<&PathBuf> = written.keys().collect();
    for (pyc, filename) in co_filenames(python, &paths) {
        let source = Path::new(&filename);
        assert!(
            !source.starts_with(venv.join("lib64")),
            "{label}: {} names {filename}",
            pyc.display()
        );
        assert_eq!(
            pyc.parent().unwrap().parent().unwrap(),
            source.parent().unwrap(),
            "{label}"
        );
    }

    let second = json_run(env, &env.store, python, "2", &["materialize", venv_arg]);
    assert_eq!(second["written"], 0, "{label}: a no-op: {second}");
    assert_eq!(second["up_to_date"], sources, "{label}: {second}");

    // Another store, another -j: the very same bytes (nothing to write).
    let other_store = env.path().join("other.sqlite3");
    let other = json_run(env, &other_store, python, "1", &["materialize", venv_arg]);
    assert_eq!(other["written"], 0, "{label}: same bytes: {other}");
    assert_eq!(pycs(venv), written, "{label}");

    // CPython, importing through its own sys.path, takes them as they are.
    let imported = Command::new(venv.join("bin/python"))
        .args([
            "-c",
            "import pip._internal.cli.main, pip._vendor.rich.console",
        ])
        .env_remove("PYTHONDONTWRITEBYTECODE")
        .output()
        .unwrap();
    assert!(imported.status.success(), "{label}: {}", stderr(&imported));
    assert_eq!(pycs(venv), written, "{label}: CPython rewrote a pyc");

    // Under a prefix each path has its own pyc, named for itself.
    let prefix = env.path().join("prefix");
    let prefix_arg = prefix.to_str().unwrap();
    let args = ["materialize", "--prefix", prefix_arg, venv_arg];
    let mirrored = json_run(env, &env.store, python, "2", &args);
    assert_eq!(mirrored["files"], sources + in_lib, "{label}: {mirrored}");
    assert_eq!(mirrored["aliases"], 0, "{label}: {mirrored}");
    assert_eq!(mirrored["written"], sources + in_lib, "{label}: {mirrored}");
    let in_prefix = pycs(&prefix);
    let paths: Vec<&PathBuf> = in_prefix.keys().collect();
    for (pyc, filename) in co_filenames(python, &paths) {
        let source_dir = Path::new(&filename).parent().unwrap();
        assert_eq!(
            pyc.parent().unwrap(),
            prefix.join(source_dir.strip_prefix("/").unwrap()),
            "{label}: {} names {filename}",
            pyc.display()
        );
    }
    let mirrored_lib64 = prefix.join(venv.join("lib64").strip_prefix("/").unwrap());
    assert_eq!(pycs(&mirrored_lib64).len(), in_lib, "{label}");
    let again = json_run(env, &env.store, python, "2", &args);
    assert_eq!(again["written"], 0, "{label}: {again}");

    // `clean` removes each pyc once.
    let cleaned = json_run(env, &env.store, python, "2", &["clean", venv_arg]);
    assert_eq!(cleaned["removed"], sources, "{label}: {cleaned}");
    assert!(pycs(venv).is_empty(), "{label}");
    sources
}

/// `python -m venv`, on every installed CPython.
#[test]
fn python_venvs_get_each_pyc_once() {
    let covered_pythons = parallel_filter_map(pythons(), |python| {
        let env = TestEnv::new();
        let venv = env.path().join(".venv");
        python_venv(python, &venv);
        check_venv(python, &env, &venv);
        Some(python.clone())
    });
    covered("python_venvs_get_each_pyc_once", &covered_pythons);
}

/// `uv venv` (uv from PyPI), on every installed CPython.
#[test]
fn uv_venvs_get_each_pyc_once() {
    let covered_pythons = parallel_filter_map(pythons(), |python| {
        let env = TestEnv::new();
        let venv = env.path().join(".venv");
        uv_venv_with_pip(python, &venv);
        check_venv(python, &env, &venv);
        Some(python.clone())
    });
    covered("uv_venvs_get_each_pyc_once", &covered_pythons);
}

/// The `co_filename` of the pyc of `source` (relative to `env`).
fn pyc_names(python: &Python, env: &TestEnv, source: &str) -> String {
    let source = env.path().join(source);
    let pyc = source.parent().unwrap().join("__pycache__").join(format!(
        "{}.cpython-{}{}.pyc",
        source.file_stem().unwrap().to_str().unwrap(),
        python.version.0,
        python.version.1
    ));
    let names = co_filenames(python, &[&pyc]);
    let name = names.into_values().next().unwrap();
    name.strip_prefix(&format!("{}/", env.path().display()))
        .unwrap_or(&name)
        .to_owned()
}

/// A project whose `src/compat` is a symlink to `vendor/compat`, named
/// directly and through a symlink to the project, in either order: one pyc
/// per physical file, named for the path without a symlink; a symlinked
/// file keeps a pyc of its own; a second run writes nothing.
#[test]
fn a_symlinked_directory_or_root_gets_each_pyc_once() {
    let python = any_python();
    let env = TestEnv::new();
    env.write("vendor/compat/__init__.py", "X = 1\n");
    env.write("vendor/compat/six.py", "Y = 2\n");
    env.write("src/app.py", "import compat\n");
    symlink("../vendor/compat", env.path().join("src/compat")).unwrap();
    symlink("app.py", env.path().join("src/entry.py")).unwrap();
    let outside = tempfile::tempdir().unwrap();
    let project_link = outside.path().join("project");
    symlink(env.path(), &project_link).unwrap();
    let link = project_link.to_str().unwrap();

    for (jobs, roots) in [("2", [".", link]), ("1", [link, "."])] {
        let _ = std::fs::remove_file(&env.store);
        for pyc in pycs(env.path()).keys() {
            std::fs::remove_file(pyc).unwrap();
        }
        let mut args = vec!["materialize"];
        args.extend(roots);
        let first = json_run(&env, &env.store, &python, jobs, &args);
        assert_eq!(first["files"], 4, "{roots:?}: {first}");
        assert_eq!(first["written"], 4, "{roots:?}: {first}");
        // src/compat's two, and all six through the link to the project.
        assert_eq!(first["aliases"], 8, "{roots:?}: {first}");
        assert_eq!(pycs(env.path()).len(), 4);
        assert_eq!(
            pyc_names(&python, &env, "vendor/compat/six.py"),
            "vendor/compat/six.py"
        );
        assert_eq!(pyc_names(&python, &env, "src/app.py"), "src/app.py");
        assert_eq!(pyc_names(&python, &env, "src/entry.py"), "src/entry.py");
        let second = json_run(&env, &env.store, &python, jobs, &args);
        assert_eq!(second["written"], 0, "{roots:?}: {second}");
    }
    covered(
        "a_symlinked_directory_or_root_gets_each_pyc_once",
        &[python],
    );
}

/// Only walked paths compete: when ignore rules or `--exclude` hide the
/// real directory (or one file in it), the symlinked path is taken.
#[test]
fn a_hidden_path_never_wins_over_a_walked_one() {
    let python = any_python();
    let env = TestEnv::new();
    env.write("real/a.py", "A = 1\n");
    env.write("real/b.py", "B = 1\n");
    symlink("real", env.path().join("link")).unwrap();

    let excluded = json_run(
        &env,
        &env.store,
        &python,
        "2",
        &["materialize", "--exclude", "real/b.py", "."],
    );
    assert_eq!(excluded["files"], 2, "{excluded}");
    assert_eq!(pyc_names(&python, &env, "real/a.py"), "real/a.py");
    assert_eq!(pyc_names(&python, &env, "real/b.py"), "link/b.py");

    env.write(".gitignore", "/real/\n");
    let ignored = json_run(&env, &env.store, &python, "2", &["materialize", "."]);
    assert_eq!(ignored["files"], 2, "{ignored}");
    assert_eq!(ignored["aliases"], 0, "{ignored}");
    assert_eq!(pyc_names(&python, &env, "real/a.py"), "link/a.py");
    assert_eq!(pyc_names(&python, &env, "real/b.py"), "link/b.py");
    covered("a_hidden_path_never_wins_over_a_walked_one", &[python]);
}

/// Two symlinks to one directory outside the tree, and one to a directory
/// inside that one: each pyc once, for the lexically first of the paths
/// with the fewest symlinks (one each here), whatever `-j`.
#[test]
fn many_symlinks_to_one_directory_settle_on_one_path() {
    let python = any_python();
    let env = TestEnv::new();
    let outside = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(outside.path().join("lib/sub")).unwrap();
    std::fs::write(outside.path().join("lib/top.py"), "T = 1\n").unwrap();
    std::fs::write(outside.path().join("lib/sub/deep.py"), "D = 1\n").unwrap();
    env.write("proj/main.py", "M = 1\n");
    symlink(outside.path().join("lib"), env.path().join("proj/b_lib")).unwrap();
    symlink(outside.path().join("lib"), env.path().join("proj/a_lib")).unwrap();
    symlink(
        outside.path().join("lib/sub"),
        env.path().join("proj/c_sub"),
    )
    .unwrap();

    let mut seen = None;
    for jobs in ["1", "2"] {
        let _ = std::fs::remove_file(&env.store);
        for tree in [outside.path(), env.path()] {
            for pyc in pycs(tree).keys() {
                std::fs::remove_file(pyc).unwrap();
            }
        }
        let first = json_run(&env, &env.store, &python, jobs, &["materialize", "proj"]);
        assert_eq!(first["files"], 3, "{first}");
        assert_eq!(first["written"], 3, "{first}");
        assert_eq!(first["aliases"], 3, "{first}");
        let names = co_filenames(&python, &pycs(outside.path()).keys().collect::<Vec<_>>());
        let mut names: Vec<String> = names.into_values().collect();
        names.sort();
        let proj = env.path().join("proj");
        assert_eq!(
            names,
            [
                proj.join("a_lib/sub/deep.py").display().to_string(),
                proj.join("a_lib/top.py").display().to_string(),
            ]
        );
        let bytes = pycs(outside.path());
        assert!(seen.as_ref().is_none_or(|seen| *seen == bytes), "-j {jobs}");
        seen = Some(bytes);
    }
    covered(
        "many_symlinks_to_one_directory_settle_on_one_path",
        &[python],
    );
}

/// A directory bind-mounted inside the tree is walked under both paths
/// but its pycs are written once (root only: mounting needs it).
#[test]
fn a_bind_mount_gets_each_pyc_once() {
    let python = any_python();
    if !running_as_root() {
        eprintln!("a_bind_mount_gets_each_pyc_once: not root, skipped");
        return;
    }
    let env = TestEnv::new();
    env.write("tree/pkg/mod.py", "X = 1\n");
    let Some(_mount) = Mount::bind(&env.path().join("tree/pkg"), &env.path().join("tree/zz"))
    else {
        return;
    };
    let first = json_run(&env, &env.store, &python, "2", &["materialize", "tree"]);
    assert_eq!(first["files"], 1, "{first}");
    assert_eq!(first["aliases"], 1, "{first}");
    assert_eq!(first["written"], 1, "{first}");
    assert_eq!(
        pyc_names(&python, &env, "tree/pkg/mod.py"),
        "tree/pkg/mod.py"
    );
    let second = json_run(&env, &env.store, &python, "2", &["materialize", "tree"]);
    assert_eq!(second["written"], 0, "{second}");
    covered("a_bind_mount_gets_each_pyc_once", &[python]);
}

/// `doctor` names each directory reached twice once, with the path whose
/// name the pycs carry, and judges each pyc once.
#[test]
fn doctor_reports_each_alias_once() {
    let python = any_python();
    let env = TestEnv::new();
    let venv = env.path().join(".venv");
    uv_venv_with_pip(&python, &venv);
    let sources = py_files(&venv).len();
    let in_lib = py_files(&venv.join("lib")).len();
    let (report, _) = run_json(&mut env.rcache(&python, &["--json", "doctor", ".venv"]));
    assert_eq!(report["files"], sources, "{}", report["aliases"]);
    assert_eq!(
        report["aliases"],
        serde_json::json!([{
            "path": venv.join("lib64").display().to_string(),
            "chosen": venv.join("lib").display().to_string(),
            "sources": in_lib,
        }])
    );
    assert_eq!(report["counts"]["missing"], sources);

    let output = env.rcache(&python, &["doctor", ".venv"]).output().unwrap();
    let text = String::from_utf8_lossy(&output.stdout);
    let line = format!(
        "aliases:  `.venv/lib64` is `.venv/lib` ({in_lib} sources; one pyc each, named for the path chosen)"
    );
    assert_eq!(text.matches(&line).count(), 1, "{text}");
    assert_eq!(text.matches("lib64").count(), 1, "{text}");
    covered("doctor_reports_each_alias_once", &[python]);
}

/// Files named on their own are settled too (the git hooks name changed
/// files): one named through a symlinked directory and directly is taken
/// once; a symlink to a file elsewhere under the same name, or a hard
/// link, is another file to CPython and gets a pyc of its own.
#[test]
fn named_files_reached_twice_are_taken_once() {
    let python = any_python();
    let env = TestEnv::new();
    env.write("real/a.py", "A = 1\n");
    env.write("shared/util.py", "U = 1\n");
    std::fs::create_dir_all(env.path().join("pkg")).unwrap();
    symlink("real", env.path().join("link")).unwrap();
    symlink("../shared/util.py", env.path().join("pkg/util.py")).unwrap();
    std::fs::hard_link(env.path().join("real/a.py"), env.path().join("pkg/hard.py")).unwrap();

    let args = [
        "materialize",
        "link/a.py",
        "real/a.py",
        "pkg/util.py",
        "shared/util.py",
        "pkg/hard.py",
    ];
    let first = json_run(&env, &env.store, &python, "2", &args);
    assert_eq!(first["files"], 4, "{first}");
    assert_eq!(first["aliases"], 1, "{first}");
    assert_eq!(first["written"], 4, "{first}");
    assert_eq!(pyc_names(&python, &env, "real/a.py"), "real/a.py");
    assert_eq!(pyc_names(&python, &env, "pkg/util.py"), "pkg/util.py");
    assert_eq!(pyc_names(&python, &env, "shared/util.py"), "shared/util.py");
    assert_eq!(pyc_names(&python, &env, "pkg/hard.py"), "pkg/hard.py");
    let walked = json_run(&env, &env.store, &python, "2", &["materialize", "."]);
    assert_eq!(walked["written"], 0, "{walked}");
    covered("named_files_reached_twice_are_taken_once", &[python]);
}

/// Each physical source is read once per run, whatever the paths to it: a
/// directory reached twice (both paths keyed under a prefix), a symlinked
/// file; a file changed just before the run is read under each path.
#[test]
fn each_physical_source_is_read_once() {
    let python = any_python();
    let env = TestEnv::new();
    env.write("proj/real/a.py", "A = 1\n");
    symlink("real", env.path().join("proj/link")).unwrap();
    symlink("real/a.py", env.path().join("proj/alias.py")).unwrap();
    // Files changed less than 100 ms before they are read (src/source.rs,
    // RACY_MARGIN) are never taken as unchanged.
    std::thread::sleep(std::time::Duration::from_millis(150));
    let keyed = |args: &[&str]| {
        let mut command = env.rcache(&python, &[&["--json"], args, &["proj"]].concat());
        command.env("RCACHE_LOG", "debug");
        let (summary, output) = run_json(&mut command);
        assert_eq!(code(&output), 0, "{}", stderr(&output));
        let log = stderr(&output);
        let line = log.lines().find(|line| line.contains("keyed ")).unwrap();
        (summary, line[line.find("keyed ").unwrap()..].to_owned())
    };
    let (warmed, line) = keyed(&["warm"]);
    assert_eq!(warmed["files"], 2, "{warmed}");
    assert!(
        line.starts_with("keyed 2 sources: 1 read, 1 read under another path, 0 unchanged"),
        "{line}"
    );
    let prefix = env.path().join("prefix");
    let prefix_args = ["materialize", "--prefix", prefix.to_str().unwrap()];
    let _ = std::fs::remove_file(&env.store);
    let (mirrored, line) = keyed(&prefix_args);
    assert_eq!(mirrored["written"], 3, "{mirrored}");
    assert!(
        line.starts_with("keyed 3 sources: 1 read, 2 read under another path, 0 unchanged"),
        "{line}"
    );
    let (_, line) = keyed(&prefix_args);
    assert!(
        line.starts_with("keyed 3 sources: 0 read, 0 read under another path"),
        "{line}"
    );

    // Changed "just now" (an mtime ahead of the clock counts as that,
    // however slow this machine is): not to be trusted by its identity, so
    // read under each path.
    let edited = env.write("proj/real/a.py", "A = 2\n");
    std::fs::File::options()
        .write(true)
        .open(&edited)
        .unwrap()
        .set_modified(std::time::SystemTime::now() + std::time::Duration::from_secs(60))
        .unwrap();
    let (changed, line) = keyed(&prefix_args);
    assert_eq!(changed["written"], 3, "{changed}");
    assert!(
        line.starts_with("keyed 3 sources: 3 read, 0 read under another path"),
        "{line}"
    );
    covered("each_physical_source_is_read_once", &[python]);
}
