//! The process plumbing of `rcache exec`, the only place it needs `libc`.
//!
//! rcache turns itself into the interpreter (`exec`), so the program keeps
//! rcache's pid, terminal, signals and exit status exactly as if the caller
//! had started `python`. The server lives on in a detached grandchild
//! (double fork, own session): the program never sees it as a child (its
//! `os.wait()` finds only its own), Ctrl-C on the terminal does not reach
//! it, and it holds none of the caller's pipes open. It learns that the
//! program ended through a pidfd taken before the `exec`.

#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd, RawFd};

/// A pidfd of this very process, readable once it (as the program) exits.
pub fn pidfd_of_self() -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open(2) takes a pid and flags and returns a new fd
    // (close-on-exec) or -1; it touches no memory of ours.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, libc::getpid(), 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the fd was just returned to us and is owned by no one else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// Blocks until the process behind `pidfd` has exited.
pub fn wait_for_exit(pidfd: &OwnedFd) {
    let mut poll = libc::pollfd {
        fd: pidfd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    loop {
        // SAFETY: one valid pollfd, count 1, no timeout.
        let ready = unsafe { libc::poll(&raw mut poll, 1, -1) };
        if ready > 0 || io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
            return;
        }
    }
}

/// Runs `serve` in a detached grandchild that keeps only the fds in `keep`
/// (stdin and stdout become /dev/null, stderr too unless a `log` file is
/// given) and exits with its status.
/// Returns in the calling process once the intermediate child is reaped.
///
/// Must be called while the process has a single thread: after `fork` only
/// the calling thread exists, and any lock another thread held would stay
/// held forever.
pub fn spawn_detached(
    keep: &[RawFd],
    log: Option<&std::path::Path>,
    serve: impl FnOnce() -> i32,
) -> io::Result<()> {
    // SAFETY: single-threaded (see above), so the child is a consistent copy.
    let middle = unsafe { libc::fork() };
    if middle < 0 {
        return Err(io::Error::last_os_error());
    }
    if middle == 0 {
        // SAFETY: as above; the intermediate child only forks and exits.
        let server = unsafe { libc::fork() };
        if server == 0 {
            detach(keep, log);
            let status = serve();
            // SAFETY: _exit ends the process without running the parent's
            // atexit handlers or flushing its copies of stdio buffers.
            unsafe { libc::_exit(status) };
        }
        // SAFETY: as above.
        unsafe { libc::_exit(i32::from(server < 0)) };
    }
    let mut status = 0;
    // SAFETY: waits for our own child; `status` is a valid out pointer.
    if unsafe { libc::waitpid(middle, &raw mut status, 0) } < 0 {
        return Err(io::Error::last_os_error());
    }
    if libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0 {
        Ok(())
    } else {
        Err(io::Error::other("could not start the server process"))
    }
}

/// New session, stdio on /dev/null (or stderr on `log`), every other
/// inherited fd closed.
fn detach(keep: &[RawFd], log: Option<&std::path::Path>) {
    // SAFETY: setsid(2) has no memory arguments; failure (already a
    // group leader) cannot happen in a fresh child and is harmless.
    unsafe { libc::setsid() };
    if let Ok(null) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
    {
        for target in 0..3 {
            // SAFETY: dup2 onto the standard fds, from an fd we own.
            unsafe { libc::dup2(null.as_raw_fd(), target) };
        }
    }
    let log = log.and_then(|path| {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .ok()
    });
    if let Some(log) = log {
        // SAFETY: as above.
        unsafe { libc::dup2(log.as_raw_fd(), 2) };
    }
    let open: Vec<RawFd> = std::fs::read_dir("/proc/self/fd")
        .map(|entries| {
            entries
                .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    for fd in open {
        if fd > 2 && !keep.contains(&fd) {
            // SAFETY: closing an inherited fd nothing in this process uses
            // (the directory listing's own fd is already closed, and
            // closing it again only fails with EBADF).
            unsafe { libc::close(fd) };
        }
    }
}

/// The uid of the process at the other end of a Unix socket.
pub fn peer_uid(socket: &impl std::os::fd::AsRawFd) -> io::Result<u32> {
    let mut credentials = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut length = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: SO_PEERCRED fills a `ucred` of the given length.
    let result = unsafe {
        libc::getsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&raw mut credentials).cast(),
            &raw mut length,
        )
    };
    if result < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(credentials.uid)
}
