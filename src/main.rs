//! The `rcache` binary: everything lives in the library, see `lib.rs`.

fn main() -> std::process::ExitCode {
    rcache::main()
}
