//! `integrations/docker/`: the Dockerfiles built for real without Docker
//! (every `RUN` line runs in a bubblewrap sandbox over a scratch root, see
//! `docker/image.rs`), then their images run: valid pycs whatever mtimes
//! the files get, and the read-only image served by `rcache exec` without
//! writing anything.

mod dockerfile;
mod image;

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use image::{BuildOptions, Image};

use crate::support::{Python, any_python, covered};

/// What the app prints.
const EXPECTED: &str = "{\"greeting\": \"hello, docker\", \"modules\": 3}\n";

/// A small app (a package run with `python -m app`) depending on a small
/// library from its `requirements.txt`.
fn write_context(dir: &Path) {
    let files = [
        ("requirements.txt", "tinyhelper==1.0\n"),
        ("app/__init__.py", "\"\"\"A small app.\"\"\"\n"),
        ("app/__main__.py", "from app.report import main\n\nmain()\n"),
        (
            "app/report.py",
            "import json\nimport sys\n\nimport tinyhelper\n\n\ndef main():\n    \
             modules = [name for name in sys.modules if name.startswith(('app', 'tinyhelper'))]\n    \
             print(json.dumps({'greeting': tinyhelper.greet('docker'), 'modules': len(modules)}))\n",
        ),
    ];
    for (path, text) in files {
        let path = dir.join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
}

/// The `tinyhelper` wheel, made here (a wheel is a zip with a
/// `.dist-info`), so that pip installs it with no index.
fn write_tinyhelper_wheel(python: &Python, dir: &Path) {
    let script = r#"
import base64, hashlib, sys, zipfile
files = {
    "tinyhelper/__init__.py": "def greet(name):\n    return 'hello, ' + name\n",
    "tinyhelper-1.0.dist-info/METADATA": "Metadata-Version: 2.1\nName: tinyhelper\nVersion: 1.0\n",
    "tinyhelper-1.0.dist-info/WHEEL": "Wheel-Version: 1.0\nGenerator: rcache-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
}
record = []
with zipfile.ZipFile(sys.argv[1] + "/tinyhelper-1.0-py3-none-any.whl", "w") as wheel:
    for name, text in files.items():
        data = text.encode()
        wheel.writestr(name, data)
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append("%s,sha256=%s,%d" % (name, digest, len(data)))
    record.append("tinyhelper-1.0.dist-info/RECORD,,")
    wheel.writestr("tinyhelper-1.0.dist-info/RECORD", "\n".join(record) + "\n")
"#;
    let output = python
        .command()
        .args(["-c", script])
        .arg(dir)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        crate::support::stderr(&output)
    );
}

/// A test's setup: interpreter, app, wheels, caches. `None` (after saying
/// why) when this machine cannot run the sandbox.
struct Setup {
    python: Python,
    dir: tempfile::TempDir,
}

impl Setup {
    fn new(test: &str) -> Option<Self> {
        if let Err(why) = image::bwrap_works() {
            eprintln!("{test}: {why}: skipped");
            return None;
        }
        let python = any_python();
        if !python.path.starts_with(crate::support::pyenv_root()?) {
            eprintln!(
                "{test}: the base image's Python must be a pyenv build (not under /usr): skipped"
            );
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        write_context(&dir.path().join("context"));
        let wheels = dir.path().join("wheels");
        std::fs::create_dir_all(&wheels).unwrap();
        write_tinyhelper_wheel(&python, &wheels);
        let rcache_wheel = crate::support::rcache_wheel();
        std::fs::copy(
            &rcache_wheel,
            wheels.join(rcache_wheel.file_name().unwrap()),
        )
        .unwrap();
        Some(Self { python, dir })
    }

    /// Builds `integrations/docker/NAME` into a fresh root `root_name`,
    /// with the cache mounts kept in `caches`.
    fn build(&self, name: &str, root_name: &str) -> Option<(Image, String)> {
        let dockerfile = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("integrations/docker")
            .join(name);
        let context = self.dir.path().join("context");
        let caches = self.dir.path().join("caches");
        let options = BuildOptions {
            context: &context,
            build_args: vec![(
                "PYTHON_VERSION".into(),
                format!("{}.{}", self.python.version.0, self.python.version.1),
            )],
            caches: &caches,
            // PyPI's stand-in: the wheels made here, rcache's among them.
            run_binds: vec![("/wheels".into(), self.dir.path().join("wheels"))],
            run_env: vec![
                ("PIP_NO_INDEX".into(), "1".into()),
                ("PIP_FIND_LINKS".into(), "/wheels".into()),
            ],
        };
        Image::build(
            &dockerfile,
            &self.dir.path().join(root_name),
            &self.python,
            &options,
        )
    }
}

/// The number of sources rcache compiled, summed over the `Warmed …` and
/// `Materialized …` lines of a build's output.
fn compiled(log: &str) -> usize {
    log.lines()
        .filter(|line| line.starts_with("Warmed ") || line.starts_with("Materialized "))
        .map(|line| {
            let (before, _) = line.split_once(" compiled").expect("a summary line");
            before.rsplit(' ').next().unwrap().parse::<usize>().unwrap()
        })
        .sum()
}

/// Gives every file under `dir` a new mtime, as an extraction of the layers
/// that does not keep them might (and BuildKit's `rewrite-timestamp` does).
fn touch_all(dir: &Path, when: SystemTime) -> usize {
    let mut count = 0;
    for entry in crate::support::walk(dir) {
        if std::fs::symlink_metadata(&entry).unwrap().is_file() {
            let file = std::fs::File::options().write(true).open(&entry).unwrap();
            file.set_modified(when).unwrap();
            count += 1;
        }
    }
    count
}

/// A date no build ran at: 2001-09-09.
fn layer_time() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000_000)
}

/// Both Dockerfiles, built one after the other with one cache mount, as
/// BuildKit shares a cache mount (same target) between builds: the second
/// build compiles nothing.
#[test]
fn the_images_carry_valid_bytecode_and_the_read_only_one_writes_nothing() {
    let test = "docker::the_images_carry_valid_bytecode_and_the_read_only_one_writes_nothing";
    let Some(setup) = Setup::new(test) else {
        return;
    };
    let Some((image, log)) = setup.build("Dockerfile", "materialized") else {
        return;
    };
    assert!(
        compiled(&log) > 100,
        "the first build compiles the app and the stdlib:\n{log}"
    );
    check_materialized_image(&setup.python, &image);
    drop(image);

    let (image, log) = setup.build("Dockerfile.readonly", "read-only").unwrap();
    assert_eq!(
        compiled(&log),
        0,
        "the second build compiles nothing:\n{log}"
    );
    check_read_only_image(&setup, &image);
    covered(test, std::slice::from_ref(&setup.python));
}

/// `python -m app` in the image of `Dockerfile`, after its files got new
/// mtimes, runs on the pycs rcache wrote and writes none.
fn check_materialized_image(python: &Python, image: &Image) {
    let (major, minor) = python.version;
    let stdlib = format!("/usr/local/lib/python{major}.{minor}");
    let site_packages = format!("/opt/venv/lib/python{major}.{minor}/site-packages");
    let touched: usize = ["/app", "/opt/venv", &stdlib]
        .iter()
        .map(|dir| touch_all(&image.host_path(dir).unwrap(), layer_time()))
        .sum();
    assert!(touched > 100, "{touched} files touched");

    // CPython finds each pyc matching its source (checked-hash: the
    // source's hash, not its mtime), and writes nothing.
    let before = image.files();
    let output = image.run(None, &[("PYTHONVERBOSE", "1")]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        EXPECTED,
        "{stderr}"
    );
    let cache_tag = format!("cpython-{major}{minor}");
    for (dir, module) in [
        ("/app/app", "__init__"),
        ("/app/app", "__main__"),
        ("/app/app", "report"),
        (&format!("{site_packages}/tinyhelper"), "__init__"),
        (&format!("{stdlib}/json"), "__init__"),
        (&format!("{stdlib}/json"), "encoder"),
    ] {
        let line =
            format!("# {dir}/__pycache__/{module}.{cache_tag}.pyc matches {dir}/{module}.py");
        assert!(stderr.contains(&line), "no `{line}` in\n{stderr}");
    }
    assert!(!stderr.contains("bytecode is stale"), "{stderr}");
    assert!(
        !stderr.contains("# created '"),
        "CPython wrote pycs:\n{stderr}"
    );
    assert_eq!(before, image.files(), "the run changed the image's files");

    // Every pyc of the app and the venv is a checked-hash pyc of its source.
    let check = "import importlib.util, pathlib, sys\n\
                 bad = []\n\
                 for top in sys.argv[1:]:\n    \
                     for source in pathlib.Path(top).rglob('*.py'):\n        \
                         data = pathlib.Path(importlib.util.cache_from_source(str(source))).read_bytes()\n        \
                         if data[4:8] != b'\\x03\\0\\0\\0' or data[8:16] != importlib.util.source_hash(source.read_bytes()):\n            \
                             bad.append(str(source))\n\
                 print(len(bad), bad[:5])\n";
    let output = image.run_args(&["python", "-c", check, "/app", &site_packages], &[]);
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        "0 []\n",
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The image of `Dockerfile.readonly`, run as `docker run --read-only
/// --tmpfs /tmp`: `rcache exec` serves every module from the image's store,
/// and nothing but rcache's private directory in /tmp is written.
fn check_read_only_image(setup: &Setup, image: &Image) {
    let pycache: Vec<PathBuf> = crate::support::walk(&image.host_path("/app").unwrap())
        .into_iter()
        .filter(|path| path.ends_with("__pycache__"))
        .collect();
    assert!(pycache.is_empty(), "pycs beside the sources: {pycache:?}");
    touch_all(&image.host_path("/app").unwrap(), layer_time());
    touch_all(&image.host_path("/opt").unwrap(), layer_time());
    let before = image.files();
    let tmp = setup.dir.path().join("tmpfs");
    std::fs::create_dir_all(&tmp).unwrap();
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o1777)).unwrap();

    let output = image.run(Some(&tmp), &[("RCACHE_LOG", "debug")]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        EXPECTED,
        "{stderr}"
    );
    assert!(
        !stderr.contains("WARN") && !stderr.contains("warning"),
        "{stderr}"
    );
    assert_eq!(before, image.files(), "the run changed the image's files");

    // The server, left behind, logs what it served when the program ends.
    let runtime = tmp.join(format!("rcache-{}", crate::support::NOBODY));
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while crate::support::walk(&runtime)
        .iter()
        .any(|path| path.extension().is_some_and(|e| e == "sock"))
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the server is still running"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let log = crate::support::walk(&runtime)
        .into_iter()
        .find(|path| path.extension().is_some_and(|e| e == "log"))
        .map(|path| std::fs::read_to_string(path).unwrap())
        .expect("the server's log");
    let numbers = crate::support::served_counts(&log);
    assert!(
        numbers.len() >= 2 && numbers[0] == numbers[1] && numbers[0] >= 6,
        "every module served from the store (the app, tinyhelper, json): {numbers:?}"
    );
    let written: Vec<PathBuf> = crate::support::walk(&tmp)
        .into_iter()
        .filter(|path| !path.starts_with(&runtime))
        .collect();
    assert!(
        written.is_empty(),
        "written outside rcache's directory: {written:?}"
    );
}
