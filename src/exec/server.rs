//! The code server: one thread per connected interpreter, answering
//! requests in order, until the program has exited and the last connection
//! (from children that outlive it) has closed. Then what was learnt goes
//! into the store and the misses are compiled there.
//!
//! Wire format (all integers little-endian), spoken by `sitecustomize.py`:
//! - hello: `RCX1`, the interpreter's 4-byte magic number, its cache tag
//!   (1-byte length, then bytes); answer `Y`, or `E`, u32 length, message
//!   (the store is unusable: the interpreter warns once and loads on its own).
//! - request: optimization level (1 byte), u32 length, the source's path as
//!   OS bytes; answer status (`H` hit, `M` miss), u32 length, marshalled code
//!   (`session.rs`).

use std::io::{BufReader, Read as _, Write as _};
use std::os::fd::OwnedFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};

use crossbeam_channel::Sender;

use super::background::Background;
use super::daemon;
use super::lookup::{Learnt, Missed};
use super::session::Session;
use crate::interpreter::Interpreter;
use crate::store::Store;

const HELLO: &[u8; 4] = b"RCX1";
/// Longest path a request may carry.
const MAX_PATH: usize = 64 * 1024;

/// What the server serves from and compiles with.
pub struct Config {
    pub store_path: PathBuf,
    /// The interpreter `rcache exec` runs: misses of other interpreters
    /// (children running another Python) are not compiled.
    pub interpreter: Interpreter,
    pub profile_id: i64,
    pub socket_path: PathBuf,
    /// Size the store is kept under (`--max-size`).
    pub max_size: u64,
    /// Where misses are fetched from (and compiled code uploaded to).
    pub remote: crate::remote::Options,
}

/// State every connection thread shares.
struct Shared {
    config: Config,
    /// Taken away at shutdown, so that the background compiler sees the
    /// end of its queue.
    misses: Mutex<Option<Sender<Box<Missed>>>>,
    learnt: Mutex<Learnt>,
    hits: AtomicU64,
    busy_ns: AtomicU64,
    lookups: AtomicU64,
    /// Set once the program has exited and every connection closed.
    shutting_down: AtomicBool,
    /// Open connections, and a signal when one closes.
    connections: Mutex<usize>,
    closed: Condvar,
}

/// Serves until the program (behind `pidfd`) has exited and every
/// connection has closed; returns the process exit status.
pub fn serve(listener: UnixListener, pidfd: &OwnedFd, config: Config) -> i32 {
    let background = Background::start(
        config.store_path.clone(),
        config.interpreter.executable.clone(),
        config.interpreter.profile.clone(),
        config.profile_id,
        &config.remote,
    );
    let shared = Arc::new(Shared {
        misses: Mutex::new(Some(background.sender())),
        config,
        learnt: Mutex::new(Learnt::default()),
        hits: AtomicU64::new(0),
        busy_ns: AtomicU64::new(0),
        lookups: AtomicU64::new(0),
        shutting_down: AtomicBool::new(false),
        connections: Mutex::new(0),
        closed: Condvar::new(),
    });
    let acceptor = Arc::clone(&shared);
    std::thread::spawn(move || accept(&listener, &acceptor));
    daemon::wait_for_exit(pidfd);
    {
        let mut open = shared.connections.lock().expect("connection count");
        while *open > 0 {
            open = shared.closed.wait(open).expect("connection count");
        }
        // Latecomers (children started from now on) are turned away: they
        // load as CPython would.
        shared.shutting_down.store(true, Ordering::SeqCst);
    }
    shared.misses.lock().expect("misses").take();
    let stored = background.finish();
    let learnt = std::mem::take(&mut *shared.learnt.lock().expect("learnt"));
    let lookups = shared.lookups.load(Ordering::Relaxed);
    let hits = shared.hits.load(Ordering::Relaxed);
    tracing::debug!(
        "served {hits} of {lookups} lookups in {:.1} ms; stored {stored}",
        shared.busy_ns.load(Ordering::Relaxed) as f64 / 1e6
    );
    let status = match record(&shared.config, &learnt, hits, lookups - hits) {
        Ok(()) => 0,
        Err(err) => {
            tracing::warn!("cannot record the run: {err}");
            1
        }
    };
    // Last: whoever waits for this run's work sees the socket go.
    let _ = std::fs::remove_file(&shared.config.socket_path);
    status
}

/// What the run learnt: sources hashed, keys used, hit counts.
fn record(
    config: &Config,
    learnt: &Learnt,
    hits: u64,
    misses: u64,
) -> Result<(), crate::store::Error> {
    let mut store = Store::open(&config.store_path)?;
    store.record_sources(&learnt.to_remember)?;
    store.record_import_sequences(&learnt.sequences)?;
    store.finish_run(&learnt.used, &[("hits", hits), ("misses", misses)])?;
    store.end_run(config.max_size);
    Ok(())
}

fn accept(listener: &UnixListener, shared: &Arc<Shared>) {
    let me = crate::store::current_uid();
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        // The directory is private already; the peer check also holds if
        // its mode is ever loosened.
        if daemon::peer_uid(&stream).ok() != Some(me) {
            continue;
        }
        let mut open = shared.connections.lock().expect("connection count");
        if shared.shutting_down.load(Ordering::SeqCst) {
            continue;
        }
        *open += 1;
        drop(open);
        let shared = Arc::clone(shared);
        std::thread::spawn(move || {
            if let Err(err) = connection(&stream, &shared) {
                tracing::debug!("connection ended: {err}");
            }
            *shared.connections.lock().expect("connection count") -= 1;
            shared.closed.notify_all();
        });
    }
}

/// Serves one interpreter process.
fn connection(stream: &UnixStream, shared: &Shared) -> std::io::Result<()> {
    let mut input = BufReader::new(stream);
    let mut output = stream;
    let mut hello = [0u8; 9];
    input.read_exact(&mut hello)?;
    if &hello[..4] != HELLO {
        return Ok(());
    }
    let magic: [u8; 4] = hello[4..8].try_into().expect("4 bytes");
    let mut tag = vec![0u8; usize::from(hello[8])];
    input.read_exact(&mut tag)?;
    let Ok(cache_tag) = String::from_utf8(tag) else {
        return Ok(());
    };
    let store = match Store::open(&shared.config.store_path) {
        Ok(store) => store,
        Err(err) => {
            let message = format!("cannot use the store: {err}");
            output.write_all(&reply(b'E', message.as_bytes()))?;
            return Ok(());
        }
    };
    output.write_all(b"Y")?;
    let profile = &shared.config.interpreter.profile;
    let compile_queue = if profile.cache_tag == cache_tag && profile.magic == magic {
        shared.misses.lock().expect("misses").clone()
    } else {
        None // another interpreter: its misses are not compiled here
    };
    let mut session = Session::new(
        store,
        shared.config.store_path.clone(),
        cache_tag,
        magic,
        compile_queue,
    )?;
    let mut header = [0u8; 5];
    let mut path = Vec::new();
    let result = loop {
        match input.read_exact(&mut header) {
            Ok(()) => {}
            Err(err) if err.kind() == std::io::ErrorKind::UnexpectedEof => break Ok(()),
            Err(err) => break Err(err),
        }
        let length = u32::from_le_bytes(header[1..5].try_into().expect("4 bytes")) as usize;
        if length > MAX_PATH {
            break Ok(());
        }
        path.resize(length, 0);
        input.read_exact(&mut path)?;
        shared.lookups.fetch_add(1, Ordering::Relaxed);
        let started = std::time::Instant::now();
        let (hit, frame) = session.answer(header[0], &path);
        if hit {
            shared.hits.fetch_add(1, Ordering::Relaxed);
        }
        let written = output.write_all(frame);
        shared
            .busy_ns
            .fetch_add(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
        if let Err(err) = written {
            break Err(err);
        }
    };
    shared
        .learnt
        .lock()
        .expect("learnt")
        .append(&mut session.finish());
    result
}

/// One framed answer.
fn reply(status: u8, body: &[u8]) -> Vec<u8> {
    let mut frame = Vec::with_capacity(5 + body.len());
    frame.push(status);
    frame.extend_from_slice(&(body.len() as u32).to_le_bytes());
    frame.extend_from_slice(body);
    frame
}
