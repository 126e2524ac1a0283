//! Integration tests: the built `rcache` binary against the real CPython
//! interpreters installed on this machine (every 3.8–3.13 found), in
//! temporary directories. Each test says which versions it covered.

#![allow(clippy::print_stderr, reason = "tests report their coverage on stderr")]

mod support;

mod access;
mod aliases;
mod archive;
mod ci;
mod config;
mod crash;
mod docker;
mod doctor;
mod errors;
mod exec;
mod exec_loaders;
mod gc;
mod generated;
mod hook;
mod materialize;
mod pre_commit;
mod readonly_deploy;
mod remote;
mod scan;
mod servers;
mod stdlib;
mod store;
mod verify;
mod warm;
mod wheel;
