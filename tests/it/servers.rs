//! Servers for the remote-cache tests, each on its own free loopback port
//! with its own temp dir, so tests in parallel processes never share one:
//!
//! - [`Nginx`]: the real nginx (Debian's, with the WebDAV module) serving
//!   `GET`/`HEAD`/`PUT`/`DELETE` under `/cache/`, optionally behind basic auth,
//!   with an access log the tests read back;
//! - [`Redis`]: the real redis-server, no persistence, inspected through
//!   redis-cli;
//! - [`FaultyServer`]: a small HTTP/1.1 server of our own that fails in one
//!   chosen way ([`Fault`]): errors, truncated or wrong or garbage bodies, or
//!   no answer at all.
//!
//! Each stops (the process killed, or the threads joined) on `stop` or drop.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// How long a server may take to answer after it is started.
const READY_TIMEOUT: Duration = Duration::from_secs(5);

/// Attempts at starting a server on a fresh port when another process took
/// the port between our probe and the server's bind.
const PORT_ATTEMPTS: usize = 5;

/// A port free at the time of asking: bound to port 0, then released.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("bind a probe socket on loopback")
        .port()
}

/// Starts a server with `spawn(port)` on a free port and waits until
/// `ready(port, pid)`; tries another port when the first was taken in the
/// meantime (the server's `log` then says so).
fn on_a_free_port(
    what: &str,
    log: &Path,
    mut spawn: impl FnMut(u16) -> Child,
    ready: impl Fn(u16, u32) -> bool,
) -> (u16, Child) {
    for attempt in 1..=PORT_ATTEMPTS {
        let port = free_port();
        let mut child = spawn(port);
        let pid = child.id();
        if wait_until(&mut child, || ready(port, pid)) {
            return (port, child);
        }
        kill(&mut Some(child));
        let text = std::fs::read_to_string(log).unwrap_or_default();
        assert!(
            attempt < PORT_ATTEMPTS && text.contains("Address already in use"),
            "{what} did not start on port {port}:\n{text}"
        );
    }
    unreachable!("the last attempt returns or panics")
}

/// Polls `ready` every 20 ms until it holds, `child` exits, or
/// [`READY_TIMEOUT`] passes; true when `ready` held with `child` running.
fn wait_until(child: &mut Child, mut ready: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + READY_TIMEOUT;
    while Instant::now() < deadline {
        if child.try_wait().expect("poll the server process").is_some() {
            return false;
        }
        if ready() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// Whether something accepts TCP connections on `port`.
fn answers(port: u16) -> bool {
    TcpStream::connect(("127.0.0.1", port)).is_ok()
}

/// Kills `child` (SIGKILL) and reaps it; nothing when already taken.
fn kill(child: &mut Option<Child>) {
    if let Some(mut child) = child.take() {
        // It may have exited by itself already; either way it is reaped.
        let _ = child.kill();
        child.wait().expect("reap the server process");
    }
}

/// A real nginx on loopback with WebDAV `PUT`/`DELETE` under `/cache/`, as
/// integrations/remote/nginx.conf sets it up, running in the foreground
/// (`daemon off; master_process off;`, one process, so killing it stops the
/// service) with its config, logs, temp files and objects in its own temp dir.
pub struct Nginx {
    dir: TempDir,
    port: u16,
    /// The URL path objects live under: `/cache` or `/rcache`.
    base: &'static str,
    /// `http` or `https`.
    scheme: &'static str,
    child: Option<Child>,
}

impl Nginx {
    /// Starts nginx open to everyone.
    pub fn start() -> Nginx {
        Nginx::start_with(None)
    }

    /// Starts nginx requiring HTTP basic auth as `user`:`password` for every
    /// request (401 without).
    pub fn start_with_basic_auth(user: &str, password: &str) -> Nginx {
        Nginx::start_with(Some((user, password)))
    }

    /// Starts nginx with the `location` block rcache ships
    /// (`integrations/remote/nginx.conf`, at `/rcache`), its writers being
    /// `user`:`password`.
    pub fn start_shipped(user: &str, password: &str) -> Nginx {
        let dir = tempfile::tempdir().expect("nginx temp dir");
        let users = dir.path().join("rcache.htpasswd");
        std::fs::write(&users, format!("{user}:{{PLAIN}}{password}\n")).unwrap();
        let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("integrations/remote/nginx.conf");
        let location = format!("include {};", shipped.display());
        Nginx::start_in(dir, &location, "/rcache", None)
    }

    fn start_with(auth: Option<(&str, &str)>) -> Nginx {
        let dir = tempfile::tempdir().expect("nginx temp dir");
        let auth_lines = match auth {
            Some((user, password)) => {
                let users = dir.path().join("htpasswd");
                std::fs::write(&users, format!("{user}:{{PLAIN}}{password}\n")).unwrap();
                format!(
                    "auth_basic \"rcache\";\n            auth_basic_user_file {};",
                    users.display()
                )
            }
            None => String::new(),
        };
        let location = format!(
            "location /cache/ {{
            dav_methods PUT DELETE;
            create_full_put_path on;
            client_max_body_size 64m;
            dav_access user:rw;
            {auth_lines}
        }}"
        );
        Nginx::start_in(dir, &location, "/cache", None)
    }

    /// Starts nginx as [`Nginx::start`] does, serving https only, with the
    /// certificate chain and key in these PEM files.
    pub fn start_tls(certificate: &Path, key: &Path) -> Nginx {
        let dir = tempfile::tempdir().expect("nginx temp dir");
        let location = "location /cache/ {
            dav_methods PUT;
            create_full_put_path on;
            client_max_body_size 64m;
        }";
        Nginx::start_in(dir, location, "/cache", Some((certificate, key)))
    }

    /// Starts nginx in `dir` serving `location`, objects under `base`.
    fn start_in(
        dir: TempDir,
        location: &str,
        base: &'static str,
        tls: Option<(&Path, &Path)>,
    ) -> Nginx {
        let listen = match tls {
            Some((certificate, key)) => format!(
                " ssl;\n        ssl_certificate {};\n        ssl_certificate_key {};",
                certificate.display(),
                key.display()
            ),
            None => ";".to_owned(),
        };
        let pid_file = dir.path().join("nginx.pid");
        let spawn = |port| {
            let config = dir.path().join("nginx.conf");
            std::fs::write(&config, nginx_config(dir.path(), port, &listen, location)).unwrap();
            let _ = std::fs::remove_file(&pid_file);
            Command::new(nginx_binary())
                .arg("-p")
                .arg(dir.path())
                .arg("-c")
                .arg(&config)
                .arg("-e")
                .arg(dir.path().join("error.log"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start nginx (Debian package nginx-light)")
        };
        // nginx writes its pid file once its sockets are bound, so a
        // connection then reaches this nginx, not a port thief.
        let ready = |port, pid: u32| {
            std::fs::read_to_string(&pid_file).is_ok_and(|text| text.trim() == pid.to_string())
                && answers(port)
        };
        let (port, child) = on_a_free_port("nginx", &dir.path().join("error.log"), spawn, ready);
        Nginx {
            dir,
            port,
            base,
            scheme: if tls.is_some() { "https" } else { "http" },
            child: Some(child),
        }
    }

    /// The remote URL to give rcache: `http://127.0.0.1:PORT/cache`.
    pub fn url(&self) -> String {
        format!("{}://127.0.0.1:{}{}", self.scheme, self.port, self.base)
    }

    /// Where `PUT <url>/ac/<key>` lands on disk: `<objects_dir>/<key>`.
    pub fn objects_dir(&self) -> PathBuf {
        self.dir
            .path()
            .join("root")
            .join(&self.base[1..])
            .join("ac")
    }

    /// Every request answered so far, oldest first, as (method, path with
    /// query as the client sent it, status).
    ///
    /// nginx writes a request's log line just after sending its response, so
    /// this reads the log until two reads 50 ms apart agree.
    pub fn requests(&self) -> Vec<(String, String, u16)> {
        let log = self.dir.path().join("access.log");
        let read = || std::fs::read_to_string(&log).unwrap_or_default();
        let mut text = read();
        loop {
            std::thread::sleep(Duration::from_millis(50));
            let again = read();
            if again == text {
                break;
            }
            text = again;
        }
        text.lines()
            .map(|line| {
                let mut fields = line.splitn(3, ' ');
                let mut field = || fields.next().expect("access log line has 3 fields");
                let status = field().parse().expect("access log status");
                (field().to_owned(), field().to_owned(), status)
            })
            .collect()
    }

    /// Kills nginx (SIGKILL, as a crash or a pulled cable would end it) and
    /// waits for it; later calls do nothing. Connections then are refused.
    pub fn stop(&mut self) {
        kill(&mut self.child);
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        self.stop();
    }
}

/// nginx's path: /usr/sbin is not on every user's PATH.
fn nginx_binary() -> PathBuf {
    let debian = PathBuf::from("/usr/sbin/nginx");
    if debian.exists() {
        debian
    } else {
        PathBuf::from("nginx")
    }
}

/// An nginx.conf keeping every file nginx writes under `dir`.
fn nginx_config(dir: &Path, port: u16, listen: &str, location: &str) -> String {
    let dir = dir.display();
    format!(
        r"daemon off;
master_process off;
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log;
events {{
    worker_connections 256;
}}
http {{
    log_format rcache '$status $request_method $request_uri';
    access_log {dir}/access.log rcache;
    client_body_temp_path {dir}/client_body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    server {{
        listen 127.0.0.1:{port}{listen}
        root {dir}/root;
        {location}
    }}
}}
"
    )
}

/// A real redis-server on loopback, without persistence (`--save ""
/// --appendonly no`), its working dir a temp dir of its own.
pub struct Redis {
    /// Its working dir, removed once the server is gone.
    _dir: TempDir,
    port: u16,
    child: Option<Child>,
}

impl Redis {
    /// Starts redis-server and waits until it answers `PING`.
    pub fn start() -> Redis {
        let dir = tempfile::tempdir().expect("redis temp dir");
        let spawn = |port: u16| {
            Command::new("redis-server")
                .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
                .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
                .arg("--dir")
                .arg(dir.path())
                .arg("--logfile")
                .arg(dir.path().join("redis.log"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start redis-server (Debian package redis-server)")
        };
        // The working dir tells this redis from one that took the port.
        let cwd = std::fs::canonicalize(dir.path()).unwrap();
        let dir_reply = format!("dir\n{}\n", cwd.display());
        let ready = |port, _pid| {
            redis_cli(port, &["ping"]) == "PONG\n"
                && redis_cli(port, &["config", "get", "dir"]) == dir_reply
        };
        let log = dir.path().join("redis.log");
        let (port, child) = on_a_free_port("redis-server", &log, spawn, ready);
        Redis {
            _dir: dir,
            port,
            child: Some(child),
        }
    }

    /// The remote URL to give rcache: `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// `redis-cli -p PORT ARGS...`'s standard output (raw: one reply
    /// element a line); empty when the server does not answer.
    pub fn cli(&self, args: &[&str]) -> String {
        redis_cli(self.port, args)
    }

    /// Every key in database 0, sorted.
    pub fn keys(&self) -> Vec<String> {
        let mut keys: Vec<String> = self
            .cli(&["keys", "*"])
            .lines()
            .map(str::to_owned)
            .collect();
        keys.sort();
        keys
    }

    /// `TTL key`: seconds left, -1 without expiry, -2 when absent.
    pub fn ttl(&self, key: &str) -> i64 {
        let reply = self.cli(&["ttl", key]);
        reply
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("TTL {key}: {reply:?}"))
    }

    /// Kills redis-server (SIGKILL) and waits for it; later calls do nothing.
    pub fn stop(&mut self) {
        kill(&mut self.child);
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `redis-cli -p PORT ARGS...`'s standard output.
fn redis_cli(port: u16, args: &[&str]) -> String {
    let output = Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run redis-cli (Debian package redis-tools)");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// How a [`FaultyServer`] fails. Paths are `/cache/ac/<name>`, objects the
/// files `<dir>/ac/<name>`; other paths answer 404. `PUT` stores its body
/// (201) except under [`Fault::Status500`] and [`Fault::Hang`], so a run can
/// still upload what a later run fetches. `HEAD` answers what `GET` would,
/// without the body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Every request answers 500 with a short body.
    Status500,
    /// `GET` of a stored object answers 200 with its full Content-Length but
    /// sends only the first half of the body, then closes the connection.
    Truncate,
    /// `GET` of any key, stored or not, answers 200 with the bytes of another
    /// object (the first by name that is not the one asked for); 404 when
    /// there is none.
    OtherObject,
    /// Requests are read but never answered; the connection stays open until
    /// the client closes it or the server stops.
    Hang,
    /// `GET` of any key answers 200 with 100 bytes of junk.
    Garbage,
}

/// An HTTP/1.1 server of our own on loopback (keep-alive, a thread per
/// connection) serving a directory and failing as its [`Fault`] says.
pub struct FaultyServer {
    port: u16,
    shared: Arc<Shared>,
    acceptor: Option<JoinHandle<()>>,
}

/// What the accepting thread and the connection threads share.
struct Shared {
    fault: Fault,
    dir: PathBuf,
    requests: AtomicUsize,
    stopping: AtomicBool,
    /// Every connection accepted, to shut down on stop.
    connections: Mutex<Vec<TcpStream>>,
}

impl FaultyServer {
    /// Starts serving `<dir>/ac/<name>` as `<url>/ac/<name>`, failing with
    /// `fault`. `dir` need not exist yet; `PUT` creates `<dir>/ac`.
    pub fn start(fault: Fault, dir: &Path) -> FaultyServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the faulty server");
        let port = listener.local_addr().unwrap().port();
        let shared = Arc::new(Shared {
            fault,
            dir: dir.to_path_buf(),
            requests: AtomicUsize::new(0),
            stopping: AtomicBool::new(false),
            connections: Mutex::new(Vec::new()),
        });
        let acceptor = {
            let shared = Arc::clone(&shared);
            std::thread::spawn(move || accept(&listener, &shared))
        };
        FaultyServer {
            port,
            shared,
            acceptor: Some(acceptor),
        }
    }

    /// The remote URL to give rcache: `http://127.0.0.1:PORT/cache`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/cache", self.port)
    }

    /// Where objects are read from and `PUT` stores them: `<dir>/ac`.
    pub fn objects_dir(&self) -> PathBuf {
        self.shared.dir.join("ac")
    }

    /// How many requests were read so far, answered or not.
    pub fn requests(&self) -> usize {
        self.shared.requests.load(Ordering::SeqCst)
    }

    /// Stops accepting, shuts every connection down and joins the threads;
    /// later calls do nothing. Connections then are refused.
    pub fn stop(&mut self) {
        if let Some(acceptor) = self.acceptor.take() {
            self.shared.stopping.store(true, Ordering::SeqCst);
            // Wakes the accepting thread, which then sees `stopping`.
            let _ = TcpStream::connect(("127.0.0.1", self.port));
            acceptor.join().expect("faulty server's accepting thread");
        }
    }
}

impl Drop for FaultyServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Serves each connection on a thread of its own until stopped, then shuts
/// the connections down and waits for their threads.
fn accept(listener: &TcpListener, shared: &Arc<Shared>) {
    let mut handlers = Vec::new();
    for stream in listener.incoming() {
        if shared.stopping.load(Ordering::SeqCst) {
            break;
        }
        let Ok(stream) = stream else { continue };
        let Ok(clone) = stream.try_clone() else {
            continue;
        };
        shared.connections.lock().unwrap().push(clone);
        let shared = Arc::clone(shared);
        handlers.push(std::thread::spawn(move || serve(stream, &shared)));
    }
    for connection in shared.connections.lock().unwrap().drain(..) {
        let _ = connection.shutdown(Shutdown::Both);
    }
    for handler in handlers {
        handler.join().expect("faulty server's connection thread");
    }
}

/// One request as read off the wire.
struct Request {
    method: String,
    path: String,
    body: Vec<u8>,
    /// The client sent `Connection: close`.
    close: bool,
}

/// One answer: `status` with `body`, or its first half when `truncate`.
struct Reply {
    status: u16,
    body: Vec<u8>,
    truncate: bool,
}

impl Reply {
    fn new(status: u16, body: impl Into<Vec<u8>>) -> Reply {
        Reply {
            status,
            body: body.into(),
            truncate: false,
        }
    }
}

/// Answers the requests of one connection until it closes.
fn serve(stream: TcpStream, shared: &Shared) {
    let Ok(reading) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(reading);
    let mut writer = stream;
    while let Some(request) = read_request(&mut reader) {
        let count = shared.requests.fetch_add(1, Ordering::SeqCst);
        if shared.fault == Fault::Hang {
            // Reads on, never answering, until the client or stop closes.
            let _ = std::io::copy(&mut reader, &mut std::io::sink());
            break;
        }
        let reply = shared.reply(&request, count);
        if send(&mut writer, &reply, request.method == "HEAD").is_err()
            || reply.truncate
            || request.close
        {
            break;
        }
    }
    // Other handles on the socket (the stop list) keep it open otherwise.
    let _ = writer.shutdown(Shutdown::Both);
}

/// The next request on the connection; `None` at its end or on bad input.
fn read_request(reader: &mut impl BufRead) -> Option<Request> {
    let mut line = String::new();
    if reader.read_line(&mut line).ok()? == 0 {
        return None;
    }
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_owned();
    let path = parts.next()?.to_owned();
    let (mut length, mut chunked, mut close) = (0, false, false);
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header).ok()? == 0 {
            return None;
        }
        let Some((name, value)) = header.trim_end().split_once(':') else {
            break; // The empty line ending the headers.
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            length = value.parse().ok()?;
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value.eq_ignore_ascii_case("chunked");
        } else if name.eq_ignore_ascii_case("connection") {
            close = value.eq_ignore_ascii_case("close");
        }
    }
    let body = if chunked {
        read_chunked(reader)?
    } else {
        let mut body = vec![0; length];
        reader.read_exact(&mut body).ok()?;
        body
    };
    Some(Request {
        method,
        path,
        body,
        close,
    })
}

/// A `Transfer-Encoding: chunked` body (without trailers).
fn read_chunked(reader: &mut impl BufRead) -> Option<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let mut size = String::new();
        reader.read_line(&mut size).ok()?;
        let size = usize::from_str_radix(size.trim().split(';').next()?, 16).ok()?;
        let start = body.len();
        body.resize(start + size, 0);
        reader.read_exact(&mut body[start..]).ok()?;
        let mut end = String::new();
        reader.read_line(&mut end).ok()?;
        if size == 0 {
            return Some(body);
        }
    }
}

/// Writes `reply` (only its headers for `HEAD`).
fn send(writer: &mut TcpStream, reply: &Reply, head: bool) -> std::io::Result<()> {
    let reason = match reply.status {
        200 => "OK",
        201 => "Created",
        404 => "Not Found",
        405 => "Method Not Allowed",
        _ => "Internal Server Error",
    };
    let header = format!(
        "HTTP/1.1 {} {reason}\r\nContent-Length: {}\r\n\r\n",
        reply.status,
        reply.body.len()
    );
    writer.write_all(header.as_bytes())?;
    if !head {
        let end = if reply.truncate {
            reply.body.len() / 2
        } else {
            reply.body.len()
        };
        writer.write_all(&reply.body[..end])?;
    }
    writer.flush()
}

impl Shared {
    /// The answer to `request`, the `count`th of the server (0-based).
    fn reply(&self, request: &Request, count: usize) -> Reply {
        if self.fault == Fault::Status500 {
            return Reply::new(500, "fault: status 500\n");
        }
        let Some(name) = request
            .path
            .strip_prefix("/cache/ac/")
            .filter(|name| !name.is_empty() && !name.starts_with('.') && !name.contains('/'))
        else {
            return Reply::new(404, "no such path\n");
        };
        let objects = self.dir.join("ac");
        match request.method.as_str() {
            "PUT" => match store(&objects, name, &request.body) {
                Ok(()) => Reply::new(201, ""),
                Err(error) => Reply::new(500, error.to_string()),
            },
            "GET" | "HEAD" => match self.fault {
                Fault::Garbage => Reply::new(200, junk(count)),
                Fault::OtherObject => match other_object(&objects, name) {
                    Some(bytes) => Reply::new(200, bytes),
                    None => Reply::new(404, "no other object\n"),
                },
                Fault::Truncate | Fault::Status500 | Fault::Hang => {
                    match std::fs::read(objects.join(name)) {
                        Ok(body) => Reply {
                            status: 200,
                            body,
                            truncate: self.fault == Fault::Truncate,
                        },
                        Err(_) => Reply::new(404, "no such object\n"),
                    }
                }
            },
            _ => Reply::new(405, "GET, HEAD and PUT only\n"),
        }
    }
}

/// Writes `<objects>/<name>` whole (a temp file renamed into place).
fn store(objects: &Path, name: &str, body: &[u8]) -> std::io::Result<()> {
    std::fs::create_dir_all(objects)?;
    let mut file = tempfile::NamedTempFile::new_in(objects)?;
    file.write_all(body)?;
    file.persist(objects.join(name))?;
    Ok(())
}

/// The bytes of the first object by name in `objects` other than `name`.
fn other_object(objects: &Path, name: &str) -> Option<Vec<u8>> {
    let mut names: Vec<String> = std::fs::read_dir(objects)
        .ok()?
        .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
        .filter(|other| other != name && !other.starts_with('.'))
        .collect();
    names.sort();
    std::fs::read(objects.join(names.first()?)).ok()
}

/// 100 bytes of junk (xorshift), different for each `seed`.
fn junk(seed: usize) -> Vec<u8> {
    let mut state = 0x9E37_79B9_7F4A_7C15_u64 ^ (seed as u64 + 1);
    (0..100)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 56) as u8
        })
        .collect()
}

/// A 64-hex key name as rcache uses them.
fn key(byte: u8) -> String {
    format!("{byte:02x}").repeat(32)
}

/// An answer as a client sees it.
struct Answer {
    status: u16,
    /// The Content-Length the server announced.
    length: usize,
    /// What arrived of the body before its end or the connection's.
    body: Vec<u8>,
}

/// A keep-alive HTTP/1.1 client on one connection, enough to check the
/// servers.
struct Client {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
    base: String,
}

impl Client {
    /// Connects to a server's `http://HOST:PORT/BASE` URL.
    fn connect(url: &str) -> Client {
        let (address, base) = url
            .strip_prefix("http://")
            .unwrap()
            .split_once('/')
            .unwrap();
        let writer = TcpStream::connect(address).unwrap();
        writer
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        Client {
            reader: BufReader::new(writer.try_clone().unwrap()),
            writer,
            base: format!("/{base}"),
        }
    }

    /// Sends `METHOD <base>/PATH` with `body` and `headers`; reads the answer
    /// (`None` when the connection ended or timed out before one).
    fn send(&mut self, method: &str, path: &str, body: &[u8], headers: &[&str]) -> Option<Answer> {
        let mut request = format!(
            "{method} {}/{path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {}\r\n",
            self.base,
            body.len()
        );
        for header in headers {
            request.push_str(header);
            request.push_str("\r\n");
        }
        request.push_str("\r\n");
        self.writer.write_all(request.as_bytes()).unwrap();
        self.writer.write_all(body).unwrap();
        let mut line = String::new();
        if self.reader.read_line(&mut line).ok()? == 0 {
            return None;
        }
        let status = line.split_whitespace().nth(1)?.parse().ok()?;
        let mut length = 0;
        loop {
            let mut header = String::new();
            self.reader.read_line(&mut header).ok()?;
            let Some((name, value)) = header.trim_end().split_once(':') else {
                break;
            };
            if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse().ok()?;
            }
        }
        let mut body = Vec::new();
        if method != "HEAD" {
            let _ = (&mut self.reader)
                .take(length as u64)
                .read_to_end(&mut body);
        }
        Some(Answer {
            status,
            length,
            body,
        })
    }

    /// `send` on a fresh connection, expecting an answer.
    fn once(url: &str, method: &str, path: &str, body: &[u8], headers: &[&str]) -> Answer {
        Client::connect(url)
            .send(method, path, body, headers)
            .unwrap_or_else(|| panic!("{method} {url}/{path}: no answer"))
    }
}

#[test]
fn nginx_stores_serves_and_logs_objects() {
    let mut nginx = Nginx::start();
    let url = nginx.url();
    let (stored, missing) = (key(1), key(2));
    let body = b"object bytes\0\xff".repeat(1000);
    let mut client = Client::connect(&url);
    let put = client
        .send("PUT", &format!("ac/{stored}"), &body, &[])
        .unwrap();
    assert_eq!(put.status, 201);
    let get = client
        .send("GET", &format!("ac/{stored}"), b"", &[])
        .unwrap();
    assert_eq!((get.status, get.body == body), (200, true));
    let head = client
        .send("HEAD", &format!("ac/{stored}"), b"", &[])
        .unwrap();
    assert_eq!((head.status, head.length), (200, body.len()));
    assert_eq!(
        client
            .send("GET", &format!("ac/{missing}"), b"", &[])
            .unwrap()
            .status,
        404
    );
    assert_eq!(
        std::fs::read(nginx.objects_dir().join(&stored)).unwrap(),
        body
    );
    let path = |key: &str| format!("/cache/ac/{key}");
    assert_eq!(
        nginx.requests(),
        [
            ("PUT".to_owned(), path(&stored), 201),
            ("GET".to_owned(), path(&stored), 200),
            ("HEAD".to_owned(), path(&stored), 200),
            ("GET".to_owned(), path(&missing), 404),
        ]
    );
    nginx.stop();
    nginx.stop();
    assert!(
        TcpStream::connect(
            url.strip_prefix("http://")
                .unwrap()
                .trim_end_matches("/cache")
        )
        .is_err()
    );
}

#[test]
fn nginx_with_basic_auth_wants_the_password() {
    use base64::Engine as _;
    let nginx = Nginx::start_with_basic_auth("ci", "s3cret");
    let path = format!("ac/{}", key(3));
    let basic = |credentials: &str| {
        format!(
            "Authorization: Basic {}",
            base64::engine::general_purpose::STANDARD.encode(credentials)
        )
    };
    let (right, wrong) = (basic("ci:s3cret"), basic("ci:guess"));
    assert_eq!(
        Client::once(&nginx.url(), "GET", &path, b"", &[]).status,
        401
    );
    assert_eq!(
        Client::once(&nginx.url(), "PUT", &path, b"x", &[&wrong]).status,
        401
    );
    assert_eq!(
        Client::once(&nginx.url(), "PUT", &path, b"x", &[&right]).status,
        201
    );
    let get = Client::once(&nginx.url(), "GET", &path, b"", &[&right]);
    assert_eq!((get.status, get.body), (200, b"x".to_vec()));
}

#[test]
fn redis_keeps_keys_and_their_ttl() {
    let mut redis = Redis::start();
    assert!(redis.url().starts_with("redis://127.0.0.1:"));
    assert_eq!(redis.cli(&["set", "b", "two", "ex", "100"]), "OK\n");
    assert_eq!(redis.cli(&["set", "a", "one"]), "OK\n");
    assert_eq!(redis.cli(&["get", "b"]), "two\n");
    assert_eq!(redis.keys(), ["a", "b"]);
    assert!((90..=100).contains(&redis.ttl("b")), "{}", redis.ttl("b"));
    assert_eq!((redis.ttl("a"), redis.ttl("missing")), (-1, -2));
    redis.stop();
    redis.stop();
    assert_eq!(redis.cli(&["ping"]), "");
}

/// A faulty server over a dir holding two objects, `key(1)` and `key(2)`.
fn faulty(fault: Fault) -> (FaultyServer, TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let server = FaultyServer::start(fault, dir.path());
    std::fs::create_dir(server.objects_dir()).unwrap();
    std::fs::write(server.objects_dir().join(key(1)), "first object").unwrap();
    std::fs::write(server.objects_dir().join(key(2)), "second object").unwrap();
    (server, dir)
}

#[test]
fn faulty_status500_fails_everything() {
    let (server, _dir) = faulty(Fault::Status500);
    let mut client = Client::connect(&server.url());
    for method in ["GET", "PUT", "HEAD"] {
        let answer = client
            .send(method, &format!("ac/{}", key(1)), b"x", &[])
            .unwrap();
        assert_eq!(answer.status, 500, "{method}");
    }
    assert_eq!(server.requests(), 3);
    assert_eq!(
        std::fs::read(server.objects_dir().join(key(1))).unwrap(),
        b"first object"
    );
}

#[test]
fn faulty_truncate_sends_half_and_closes() {
    let (server, _dir) = faulty(Fault::Truncate);
    let mut client = Client::connect(&server.url());
    let put = client
        .send("PUT", &format!("ac/{}", key(3)), b"uploaded!!", &[])
        .unwrap();
    assert_eq!(put.status, 201);
    assert_eq!(
        std::fs::read(server.objects_dir().join(key(3))).unwrap(),
        b"uploaded!!"
    );
    let get = client
        .send("GET", &format!("ac/{}", key(3)), b"", &[])
        .unwrap();
    assert_eq!(
        (get.status, get.length, get.body),
        (200, 10, b"uploa".to_vec())
    );
    assert!(
        client
            .send("GET", &format!("ac/{}", key(3)), b"", &[])
            .is_none(),
        "closed"
    );
    assert_eq!(
        Client::once(&server.url(), "GET", &format!("ac/{}", key(4)), b"", &[]).status,
        404
    );
}

#[test]
fn faulty_other_object_answers_with_the_wrong_bytes() {
    let (server, _dir) = faulty(Fault::OtherObject);
    let mut client = Client::connect(&server.url());
    let mut get = |key: &str| client.send("GET", &format!("ac/{key}"), b"", &[]).unwrap();
    assert_eq!(
        (get(&key(1)).status, get(&key(1)).body),
        (200, b"second object".to_vec())
    );
    assert_eq!(get(&key(2)).body, b"first object");
    assert_eq!(get(&key(9)).body, b"first object");
    assert_eq!(server.requests(), 4);

    let empty = tempfile::tempdir().unwrap();
    let lonely = FaultyServer::start(Fault::OtherObject, empty.path());
    assert_eq!(
        Client::once(&lonely.url(), "GET", &format!("ac/{}", key(1)), b"", &[]).status,
        404
    );
}

#[test]
fn faulty_garbage_answers_junk() {
    let (server, _dir) = faulty(Fault::Garbage);
    let mut client = Client::connect(&server.url());
    let first = client
        .send("GET", &format!("ac/{}", key(1)), b"", &[])
        .unwrap();
    let second = client
        .send("GET", &format!("ac/{}", key(9)), b"", &[])
        .unwrap();
    assert_eq!(
        (first.status, first.body.len(), second.status),
        (200, 100, 200)
    );
    assert_ne!(first.body, second.body);
    assert_ne!(first.body, b"first object");
}

#[test]
fn faulty_hang_never_answers_until_stopped() {
    let (mut server, _dir) = faulty(Fault::Hang);
    let mut client = Client::connect(&server.url());
    client
        .writer
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    assert!(
        client
            .send("GET", &format!("ac/{}", key(1)), b"", &[])
            .is_none()
    );
    assert_eq!(server.requests(), 1);
    let started = Instant::now();
    server.stop();
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    let mut rest = Vec::new();
    assert_eq!(
        client.reader.read_to_end(&mut rest).unwrap(),
        0,
        "closed by stop"
    );
    assert!(
        TcpStream::connect(
            server
                .url()
                .strip_prefix("http://")
                .unwrap()
                .trim_end_matches("/cache")
        )
        .is_err()
    );
}
