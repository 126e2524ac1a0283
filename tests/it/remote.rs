//! Remote caches: stores on "different machines" (different store files)
//! sharing code through a directory, a real nginx with WebDAV and a real
//! redis-server on loopback, and servers that fail in every way a network
//! can. Whatever a remote does, the pycs are the ones a local compile
//! writes and the exit status is the one the sources call for.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::servers::{Fault, FaultyServer, Nginx, Redis};
use crate::support::{Python, TestEnv, code, covered, module_source, pycs, run_json, stderr};

/// Modules that compile, and one that does not.
const MODULES: usize = 12;

/// A project of [`MODULES`] modules and `bad.py`, a syntax error.
fn project(env: &TestEnv, name: &str) -> PathBuf {
    for index in 0..MODULES {
        env.write(&format!("{name}/pkg/m{index}.py"), module_source(index));
    }
    env.write(&format!("{name}/pkg/__init__.py"), "");
    env.write(&format!("{name}/bad.py"), "def broken(:\n");
    env.path().join(name)
}

/// `rcache --store STORE --json [ARGS] materialize TREE` with `remote`;
/// returns its summary and output.
fn materialize(
    env: &TestEnv,
    python: &Python,
    store: &str,
    remote: &str,
    args: &[&str],
    tree: &Path,
) -> (Value, std::process::Output) {
    let store = env.path().join(store).join("store.sqlite3");
    let mut command = env.rcache_with_store(&store, python, &["--json", "--remote", remote]);
    command.args(args).arg("materialize").arg(tree);
    run_json(&mut command)
}

/// Removes every `__pycache__` under `tree`.
fn remove_pycaches(tree: &Path) {
    for path in pycs(tree).keys() {
        let dir = path.parent().unwrap();
        if dir.exists() {
            std::fs::remove_dir_all(dir).unwrap();
        }
    }
}

/// The lines of `stderr` that warn about a remote.
fn remote_warnings(stderr: &str) -> Vec<&str> {
    stderr
        .lines()
        .filter(|line| line.starts_with("warning: remote"))
        .collect()
}

/// Two stores share code through a `file://` directory: the second
/// compiles nothing (the syntax error included) and writes the same pycs.
/// Objects tampered with on the share (another object's bytes, cut short,
/// junk, a flipped byte) are refused with one warning, compiled locally
/// instead, and the pycs are still the same.
#[test]
fn a_shared_directory_serves_a_second_store_and_refuses_tampered_objects() {
    let python = crate::support::any_python();
    let env = TestEnv::new();
    let tree = project(&env, "proj");
    let share = env.path().join("share");
    let remote = format!("file://{}", share.display());

    let (first, output) = materialize(&env, &python, "one", &remote, &[], &tree);
    assert_eq!(code(&output), 1, "bad.py fails: {}", stderr(&output));
    assert_eq!(first["compiled"], MODULES as u64 + 1, "{first}");
    assert_eq!(first["remote"]["uploaded"], MODULES as u64 + 2, "{first}");
    let objects: Vec<PathBuf> = std::fs::read_dir(share.join("ac"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .collect();
    assert_eq!(objects.len(), MODULES + 2, "code, __init__ and the failure");
    assert!(objects.iter().all(|object| {
        let name = object.file_name().unwrap().to_string_lossy().into_owned();
        name.len() == 64 && name.bytes().all(|byte| byte.is_ascii_hexdigit())
    }));
    let expected = pycs(&tree);
    assert_eq!(expected.len(), MODULES + 1);

    remove_pycaches(&tree);
    let (second, output) = materialize(&env, &python, "two", &remote, &[], &tree);
    let text = stderr(&output);
    assert_eq!(code(&output), 1, "{text}");
    assert!(
        text.contains("bad.py:1:"),
        "the failure, from the remote: {text}"
    );
    assert_eq!(second["compiled"], 0, "{second}");
    assert_eq!(second["workers_started"], 0, "{second}");
    assert_eq!(second["from_remote"], MODULES as u64 + 1, "{second}");
    assert_eq!(second["remote"]["hits"], MODULES as u64 + 2, "{second}");
    assert_eq!(second["remote"]["uploaded"], 0, "{second}");
    assert!(remote_warnings(&text).is_empty(), "{text}");
    assert_eq!(pycs(&tree), expected);

    // Tamper with four objects on the share.
    let mut code_objects: Vec<&PathBuf> = objects
        .iter()
        .filter(|object| {
            !std::fs::read_to_string(object).is_ok_and(|text| text.contains(r#""kind":"failure""#))
        })
        .collect();
    code_objects.sort();
    let [other, cut, junk, flipped, ..] = code_objects[..] else {
        panic!("{code_objects:?}");
    };
    std::fs::copy(code_objects[4], other).unwrap();
    let bytes = std::fs::read(cut).unwrap();
    std::fs::write(cut, &bytes[..bytes.len() / 2]).unwrap();
    std::fs::write(junk, b"<html><body>502 Bad Gateway</body></html>\n").unwrap();
    let mut bytes = std::fs::read(flipped).unwrap();
    *bytes.last_mut().unwrap() ^= 0x40;
    std::fs::write(flipped, bytes).unwrap();

    remove_pycaches(&tree);
    let (third, output) = materialize(&env, &python, "three", &remote, &["-j", "2"], &tree);
    let text = stderr(&output);
    assert_eq!(code(&output), 1, "only bad.py fails: {text}");
    let compiled = third["compiled"].as_u64().unwrap();
    assert!(compiled >= 4, "the four tampered ones at least: {third}");
    assert_eq!(
        compiled + third["from_remote"].as_u64().unwrap(),
        MODULES as u64 + 1,
        "{third}"
    );
    assert!(third["remote"]["errors"].as_u64().unwrap() >= 1, "{third}");
    assert_eq!(remote_warnings(&text).len(), 1, "warned once: {text}");
    assert_eq!(
        pycs(&tree),
        expected,
        "the same pycs whatever the share holds"
    );
    let verify = env
        .rcache_with_store(
            &env.path().join("three/store.sqlite3"),
            &python,
            &["verify"],
        )
        .output()
        .unwrap();
    assert_eq!(code(&verify), 0, "{}", stderr(&verify));
    covered(
        "remote::a_shared_directory_serves_a_second_store_and_refuses_tampered_objects",
        &[python],
    );
}

/// The whole standard library through a real nginx (WebDAV PUT) and a real
/// redis-server: the first machine compiles and uploads to both; a second
/// and a third machine, with empty stores, each materialize a fresh checkout
/// from one of them with no compile and no worker, one request per object,
/// and write the first machine's pycs byte for byte.
#[test]
fn second_machines_materialize_a_standard_library_from_nginx_and_redis() {
    let python = crate::support::any_python();
    let env = TestEnv::new();
    let lib = env.path().join("lib");
    let files = crate::support::copy_stdlib(&python, &lib) as u64;
    let nginx = Nginx::start();
    let redis = Redis::start();
    let store = |name: &str| env.path().join(name).join("store.sqlite3");

    let mut first = env.rcache_with_store(&store("one"), &python, &["--json"]);
    first
        .args([
            "--remote",
            &nginx.url(),
            "--remote",
            &format!("{}?ttl=1h", redis.url()),
        ])
        .arg("materialize")
        .arg(&lib);
    let (first, output) = run_json(&mut first);
    assert!(code(&output) <= 1, "{}", stderr(&output));
    let objects = first["compiled"].as_u64().unwrap() + first["failed"].as_u64().unwrap();
    assert_eq!(first["remote"]["errors"], 0, "{first}");
    assert!(
        first["remote"]["uploaded"].as_u64().unwrap() >= 2 * first["compiled"].as_u64().unwrap(),
        "every object to both: {first}"
    );
    let stored_keys = redis.keys();
    assert_eq!(
        std::fs::read_dir(nginx.objects_dir()).unwrap().count(),
        stored_keys.len(),
        "nginx and redis hold the same objects"
    );
    let ttl = redis.ttl(&stored_keys[0]);
    assert!((3000..=3600).contains(&ttl), "ttl {ttl}");
    let expected = pycs(&lib);
    assert!(expected.len() as u64 + first["failed"].as_u64().unwrap() >= files);

    for (name, remote) in [("two", nginx.url()), ("three", redis.url())] {
        remove_pycaches(&lib);
        let gets_before = nginx.requests().len();
        let mut command = env.rcache_with_store(&store(name), &python, &["--json"]);
        command.args(["--remote", &remote, "materialize"]).arg(&lib);
        let (summary, output) = run_json(&mut command);
        assert_eq!(code(&output), code_of(&first), "{}", stderr(&output));
        assert_eq!(summary["compiled"], 0, "{name}: {summary}");
        assert_eq!(summary["workers_started"], 0, "{name}: {summary}");
        assert_eq!(summary["failed"], first["failed"], "{name}: {summary}");
        assert_eq!(summary["remote"]["errors"], 0, "{name}: {summary}");
        assert_eq!(summary["remote"]["misses"], 0, "{name}: {summary}");
        let hits = summary["remote"]["hits"].as_u64().unwrap();
        assert_eq!(
            summary["remote"]["requests"], hits,
            "one request per object"
        );
        assert!(hits <= objects, "{name}: {summary}");
        if name == "two" {
            let gets = nginx.requests()[gets_before..]
                .iter()
                .filter(|(method, _, status)| method == "GET" && *status == 200)
                .count();
            assert_eq!(gets as u64, hits, "nginx served each object once");
        }
        assert_eq!(pycs(&lib), expected, "{name}: the first machine's pycs");
    }
    covered(
        "remote::second_machines_materialize_a_standard_library_from_nginx_and_redis",
        &[python],
    );
}

/// The exit status a summary's run had: 1 when something failed.
fn code_of(summary: &Value) -> i32 {
    i32::from(summary["failed"].as_u64().unwrap() > 0)
}

/// Servers answering 500, cutting bodies short, sending another object's
/// bytes or junk, or never answering: each run warns once, compiles what
/// it could not trust, writes the pycs a run without remote writes, and
/// exits 1 only for `bad.py`.
#[test]
fn failing_servers_never_break_a_run() {
    let python = crate::support::any_python();
    let env = TestEnv::new();
    let tree = project(&env, "proj");
    // The objects the faulty servers serve (or mangle): a real run's.
    let share = env.path().join("share");
    let (_, output) = materialize(
        &env,
        &python,
        "seed",
        &format!("file://{}", share.display()),
        &[],
        &tree,
    );
    assert_eq!(code(&output), 1, "{}", stderr(&output));
    let expected = pycs(&tree);

    for fault in [
        Fault::Status500,
        Fault::Truncate,
        Fault::OtherObject,
        Fault::Garbage,
        Fault::Hang,
    ] {
        let server = FaultyServer::start(fault, &share);
        remove_pycaches(&tree);
        let store = env.path().join(format!("{fault:?}")).join("store.sqlite3");
        let mut command = env.rcache_with_store(&store, &python, &["--json"]);
        command
            .env("RCACHE_REMOTE_TIMEOUT", "1")
            .args(["--remote", &server.url(), "materialize"])
            .arg(&tree);
        let started = std::time::Instant::now();
        let (summary, output) = run_json(&mut command);
        let text = stderr(&output);
        assert_eq!(code(&output), 1, "{fault:?}: only bad.py fails: {text}");
        assert_eq!(
            summary["compiled"],
            MODULES as u64 + 1,
            "{fault:?}: {summary}"
        );
        assert_eq!(summary["from_remote"], 0, "{fault:?}: {summary}");
        assert!(
            summary["remote"]["errors"].as_u64().unwrap() >= 1,
            "{fault:?}"
        );
        assert_eq!(
            remote_warnings(&text).len(),
            1,
            "{fault:?}: warned once: {text}"
        );
        assert_eq!(
            summary["remote"]["skipped"],
            serde_json::json!([server.url()]),
            "{fault:?}: {summary}"
        );
        assert!(
            started.elapsed() < std::time::Duration::from_secs(30),
            "{fault:?}: a dead remote costs a few timeouts, not one per file"
        );
        assert_eq!(pycs(&tree), expected, "{fault:?}");
        eprintln!("{fault:?}: {}", remote_warnings(&text)[0]);
    }
    covered("remote::failing_servers_never_break_a_run", &[python]);
}

/// nginx killed while a cold run uploads: the run finishes with every pyc
/// (those a run without remote writes) and its own exit status; the next
/// run, with the server gone, compiles nothing it has and warns once.
#[test]
fn a_server_killed_mid_run_leaves_correct_pycs() {
    let python = crate::support::any_python();
    let env = TestEnv::new();
    let tree = env.path().join("big");
    for index in 0..400 {
        env.write(
            &format!("big/pkg{}/m{index}.py", index % 8),
            module_source(index),
        );
    }
    env.write("big/bad.py", "def broken(:\n");
    let mut nginx = Nginx::start();
    let store = env.path().join("one/store.sqlite3");
    let mut command = env.rcache_with_store(&store, &python, &["--json", "-j", "1"]);
    command
        .args(["--remote", &nginx.url(), "materialize"])
        .arg(&tree)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let child = command.spawn().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while std::fs::read_dir(nginx.objects_dir()).map_or(0, Iterator::count) < 5 {
        assert!(std::time::Instant::now() < deadline, "no upload arrived");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    nginx.stop();
    let output = child.wait_with_output().unwrap();
    let text = stderr(&output);
    assert_eq!(code(&output), 1, "only bad.py fails: {text}");
    let summary: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(summary["compiled"], 400, "{summary}");
    assert!(
        summary["remote"]["uploaded"].as_u64().unwrap() < 401,
        "{summary}"
    );
    assert_eq!(remote_warnings(&text).len(), 1, "{text}");
    let with_remote = pycs(&tree);
    assert_eq!(with_remote.len(), 400);

    remove_pycaches(&tree);
    let mut command = env.rcache_with_store(&store, &python, &["--json"]);
    command
        .args(["--remote", &nginx.url(), "materialize"])
        .arg(&tree);
    let (again, output) = run_json(&mut command);
    assert_eq!(code(&output), 1, "{}", stderr(&output));
    assert_eq!(again["compiled"], 0, "all in the local store: {again}");
    assert_eq!(again["remote"]["requests"], 0, "local hits ask no remote");
    assert_eq!(pycs(&tree), with_remote);

    remove_pycaches(&tree);
    let reference = env.path().join("ref/store.sqlite3");
    let output = env
        .rcache_with_store(&reference, &python, &["materialize"])
        .arg(&tree)
        .output()
        .unwrap();
    assert_eq!(code(&output), 1);
    assert_eq!(
        pycs(&tree),
        with_remote,
        "the pycs a run without remote writes"
    );
    covered(
        "remote::a_server_killed_mid_run_leaves_correct_pycs",
        &[python],
    );
}

/// The shipped nginx `location` (`integrations/remote/nginx.conf`) lets
/// anyone read and only its writers write: without credentials uploads
/// fail (401, one warning, the run is unaffected); with them from the
/// environment, from `~/.netrc`, or in the URL, they land; a wrong password
/// in the URL is never printed, even in debug logs; `--remote-read-only`
/// sends no `PUT`.
#[test]
fn the_shipped_nginx_location_takes_writes_only_with_credentials() {
    let python = crate::support::any_python();
    let env = TestEnv::new();
    let nginx = Nginx::start_shipped("ci", "s3cret");
    let url = nginx.url();
    let run = |name: &str, edit: usize, configure: &dyn Fn(&mut std::process::Command)| {
        let tree = env.path().join(name);
        if !tree.exists() {
            project(&env, name);
        }
        env.write(&format!("{name}/pkg/m0.py"), format!("EDIT = {edit}\n"));
        let store = env.path().join(name).with_extension("store");
        let mut command =
            env.rcache_with_store(&store.join("s.sqlite3"), &python, &["--json", "-vv"]);
        configure(&mut command);
        command.arg("materialize").arg(&tree);
        let (summary, output) = run_json(&mut command);
        assert_eq!(code(&output), 1, "only bad.py fails: {}", stderr(&output));
        (summary, stderr(&output))
    };
    let with_url = |command: &mut std::process::Command| {
        command.args(["--remote", &url]);
    };

    let (anonymous, text) = run("anonymous", 0, &with_url);
    assert_eq!(anonymous["remote"]["uploaded"], 0, "{anonymous}");
    assert_eq!(remote_warnings(&text).len(), 1, "{text}");
    assert!(remote_warnings(&text)[0].contains("HTTP 401"), "{text}");
    assert!(!nginx.objects_dir().exists());

    let (from_env, text) = run("env", 1, &|command| {
        with_url(command);
        command
            .env("RCACHE_REMOTE_USER", "ci")
            .env("RCACHE_REMOTE_PASSWORD", "s3cret");
    });
    assert_eq!(
        from_env["remote"]["uploaded"],
        MODULES as u64 + 2,
        "{from_env}"
    );
    assert!(remote_warnings(&text).is_empty(), "{text}");
    assert!(!text.contains("s3cret"), "{text}");

    let netrc = env.write("dot-netrc", "machine 127.0.0.1 login ci password s3cret\n");
    let (from_netrc, _) = run("netrc", 2, &|command| {
        with_url(command);
        command.env("NETRC", &netrc);
    });
    assert_eq!(from_netrc["compiled"], 1, "m0.py edited: {from_netrc}");
    assert_eq!(from_netrc["remote"]["uploaded"], 1, "{from_netrc}");

    let in_url = url.replace("http://", "http://ci:s3cret@");
    let (from_url, text) = run("url", 3, &|command| {
        command.args(["--remote", &in_url]);
    });
    assert_eq!(from_url["remote"]["uploaded"], 1, "{from_url}");
    assert!(!text.contains("s3cret"), "{text}");
    let wrong = url.replace("http://", "http://ci:hunter2@");
    let (wrong_password, text) = run("wrong", 4, &|command| {
        command.args(["--remote", &wrong]);
    });
    assert_eq!(wrong_password["remote"]["uploaded"], 0, "{wrong_password}");
    assert!(remote_warnings(&text)[0].contains("HTTP 401"), "{text}");
    assert!(!text.contains("hunter2"), "{text}");

    let puts_before = nginx
        .requests()
        .iter()
        .filter(|(method, ..)| method == "PUT")
        .count();
    let (read_only, text) = run("readonly", 5, &|command| {
        with_url(command);
        command
            .arg("--remote-read-only")
            .env("RCACHE_REMOTE_USER", "ci")
            .env("RCACHE_REMOTE_PASSWORD", "s3cret");
    });
    assert_eq!(read_only["compiled"], 1, "{read_only}");
    assert_eq!(read_only["from_remote"], MODULES as u64, "{read_only}");
    assert_eq!(read_only["remote"]["uploaded"], 0, "{read_only}");
    assert!(remote_warnings(&text).is_empty(), "{text}");
    let puts_after = nginx
        .requests()
        .iter()
        .filter(|(method, ..)| method == "PUT")
        .count();
    assert_eq!(puts_after, puts_before, "no PUT when read-only");
    covered(
        "remote::the_shipped_nginx_location_takes_writes_only_with_credentials",
        &[python],
    );
}

/// `rcache exec` on a machine with an empty store: the program runs as
/// usual, and the server fills the store with what it missed from the
/// remote (compiling nothing), so the next run is served; on the first
/// machine the server uploaded what it compiled.
#[test]
fn exec_fills_the_store_from_the_remote() {
    let python = crate::support::any_python();
    let nginx = Nginx::start();
    let run = |exec: &crate::exec::Exec| {
        exec.write("helper.py", "VALUE = 41 + 1\n");
        exec.write("main.py", "import helper\nprint(helper.VALUE)\n");
        let mut command = exec.exec(&["main.py"]);
        command.env("RCACHE_REMOTE", nginx.url());
        let output = exec.run_exec(&mut command);
        assert!(output.status.success(), "{}", stderr(&output));
        assert_eq!(String::from_utf8_lossy(&output.stdout), "42\n");
        let mut stats = crate::support::rcache_command(exec.env.path());
        stats
            .arg("--json")
            .arg("--store")
            .arg(&exec.env.store)
            .arg("stats");
        run_json(&mut stats).0
    };
    let first = crate::exec::Exec::new(&python);
    let stats = run(&first);
    assert_eq!(
        stats["remote"]["uploaded"], 2,
        "main.py and helper.py: {stats}"
    );
    assert_eq!(std::fs::read_dir(nginx.objects_dir()).unwrap().count(), 2);

    let second = crate::exec::Exec::new(&python);
    let stats = run(&second);
    assert_eq!(stats["remote"]["hits"], 2, "{stats}");
    assert_eq!(stats["remote"]["uploaded"], 0, "{stats}");
    assert_eq!(stats["entries"], 2, "{stats}");
    let stats = run(&second);
    assert!(
        stats["lifetime_hits"].as_u64().unwrap() >= 2,
        "served: {stats}"
    );
    assert_eq!(stats["remote"]["hits"], 2, "no more fetches: {stats}");
    covered("remote::exec_fills_the_store_from_the_remote", &[python]);
}

/// A CA and a certificate it signed for 127.0.0.1, made with openssl in
/// `dir`: (CA certificate, server certificate, server key).
fn certificates(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let openssl = |args: &[&str]| {
        let output = std::process::Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("openssl (Debian package openssl)");
        assert!(output.status.success(), "{}", stderr(&output));
    };
    std::fs::write(dir.join("ext.cnf"), "subjectAltName=IP:127.0.0.1\n").unwrap();
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=rcache test CA",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
    ]);
    openssl(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=127.0.0.1",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
    ]);
    openssl(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
        "-out",
        "server.pem",
    ]);
    (
        dir.join("ca.pem"),
        dir.join("server.pem"),
        dir.join("server.key"),
    )
}

/// An https remote whose certificate the system does not trust is refused
/// (one warning, the run unaffected, nothing sent); trusted through
/// `SSL_CERT_FILE`, as curl and pip allow, it takes uploads and serves a
/// second store.
#[test]
fn https_remotes_are_verified_against_the_system_certificates() {
    let python = crate::support::any_python();
    let env = TestEnv::new();
    let (ca, certificate, key) = certificates(env.path());
    let nginx = Nginx::start_tls(&certificate, &key);
    assert!(nginx.url().starts_with("https://"));
    let tree = project(&env, "proj");

    let (untrusted, output) = materialize(&env, &python, "one", &nginx.url(), &[], &tree);
    let text = stderr(&output);
    assert_eq!(code(&output), 1, "only bad.py fails: {text}");
    assert_eq!(untrusted["remote"]["uploaded"], 0, "{untrusted}");
    assert_eq!(remote_warnings(&text).len(), 1, "{text}");
    assert!(remote_warnings(&text)[0].contains("certificate"), "{text}");
    assert!(nginx.requests().is_empty(), "no request got through");

    remove_pycaches(&tree);
    let store = env.path().join("two/store.sqlite3");
    let mut command = env.rcache_with_store(&store, &python, &["--json", "--remote", &nginx.url()]);
    command
        .env("SSL_CERT_FILE", &ca)
        .arg("materialize")
        .arg(&tree);
    let (trusted, output) = run_json(&mut command);
    assert_eq!(code(&output), 1, "{}", stderr(&output));
    assert_eq!(
        trusted["remote"]["uploaded"],
        MODULES as u64 + 2,
        "{trusted}"
    );
    assert!(remote_warnings(&stderr(&output)).is_empty());

    remove_pycaches(&tree);
    let store = env.path().join("three/store.sqlite3");
    let mut command = env.rcache_with_store(&store, &python, &["--json", "--remote", &nginx.url()]);
    command
        .env("SSL_CERT_FILE", &ca)
        .arg("materialize")
        .arg(&tree);
    let (served, output) = run_json(&mut command);
    assert_eq!(code(&output), 1, "{}", stderr(&output));
    assert_eq!(served["compiled"], 0, "{served}");
    assert_eq!(served["from_remote"], MODULES as u64 + 1, "{served}");
    covered(
        "remote::https_remotes_are_verified_against_the_system_certificates",
        &[python],
    );
}

/// A store warmed before the remote existed seeds it with `rcache push`:
/// every object the sources use is uploaded once (the failure included),
/// a second push finds them all there (one `HEAD` each) and uploads
/// nothing, and another machine then compiles nothing. Without a writable
/// remote, push refuses to run.
#[test]
fn push_seeds_a_remote_from_a_warm_store() {
    let python = crate::support::any_python();
    let env = TestEnv::new();
    let tree = project(&env, "proj");
    let nginx = Nginx::start();
    let mut warm = env.rcache(&python, &["warm"]);
    assert_eq!(code(&warm.arg(&tree).output().unwrap()), 1);

    let push = || {
        let mut command = env.rcache(&python, &["--json", "--remote", &nginx.url(), "push"]);
        let (summary, output) = run_json(command.arg(&tree));
        assert_eq!(
            code(&output),
            1,
            "bad.py fails, as in warm: {}",
            stderr(&output)
        );
        assert_eq!(summary["compiled"], 0, "{summary}");
        summary
    };
    let first = push();
    assert_eq!(first["remote"]["uploaded"], MODULES as u64 + 2, "{first}");
    assert_eq!(first["remote"]["present"], 0, "{first}");
    let second = push();
    assert_eq!(second["remote"]["uploaded"], 0, "{second}");
    assert_eq!(second["remote"]["present"], MODULES as u64 + 2, "{second}");
    assert_eq!(second["remote"]["requests"], MODULES as u64 + 2, "{second}");
    let heads = nginx
        .requests()
        .iter()
        .filter(|(method, _, status)| method == "HEAD" && *status == 200)
        .count();
    assert_eq!(heads, MODULES + 2);

    let (other, output) = materialize(&env, &python, "two", &nginx.url(), &[], &tree);
    assert_eq!(code(&output), 1, "{}", stderr(&output));
    assert_eq!(other["compiled"], 0, "{other}");

    for args in [
        vec!["push"],
        vec!["--remote", &nginx.url(), "--remote-read-only", "push"],
    ] {
        let output = env.rcache(&python, &args).arg(&tree).output().unwrap();
        assert_eq!(code(&output), 2, "{args:?}: {}", stderr(&output));
    }
    covered("remote::push_seeds_a_remote_from_a_warm_store", &[python]);
}
