//! Reading a Python command line the way CPython's own option parser does,
//! to learn what it runs (a script, `-m`, `-c`, stdin or the REPL) and
//! whether environment-based hooks can work (`-E`, `-I` and `-S` turn them
//! off). Nothing is validated: CPython reports bad options itself.

use std::ffi::OsString;
use std::os::unix::ffi::OsStrExt;

/// What the interpreter will run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Program {
    /// A file or directory path, at this index of the arguments.
    Script(usize),
    /// `-m MODULE`.
    Module,
    /// `-c COMMAND`.
    Command,
    /// `-`: code from stdin.
    Stdin,
    /// No program: the REPL, or code from stdin when it is not a terminal.
    Nothing,
    /// `--help`, `--version` and friends: Python prints and exits.
    Information,
}

/// A parsed Python command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Invocation {
    pub program: Program,
    /// `-E` or `-I`: PYTHON* variables, PYTHONPATH among them, are ignored.
    pub ignores_environment: bool,
    /// `-S`: `site` is not imported, so neither is `sitecustomize`.
    pub no_site: bool,
    /// `-B`: no bytecode is written.
    pub no_bytecode: bool,
}

impl Invocation {
    /// Whether a hook installed through PYTHONPATH and `sitecustomize` runs.
    pub fn hook_runs(&self) -> bool {
        !self.ignores_environment && !self.no_site
    }
}

/// Options that take a value (attached, as in `-Wignore`, or next).
const WITH_VALUE: &[u8] = b"WX";

/// Parses the arguments given after the interpreter's name.
pub fn parse(args: &[OsString]) -> Invocation {
    let mut invocation = Invocation {
        program: Program::Nothing,
        ignores_environment: false,
        no_site: false,
        no_bytecode: false,
    };
    let mut index = 0;
    while index < args.len() {
        let arg = args[index].as_bytes();
        if arg == b"--" {
            index += 1;
            break;
        }
        if arg == b"-" {
            invocation.program = Program::Stdin;
            return invocation;
        }
        if let Some(long) = arg.strip_prefix(b"--") {
            if long == b"check-hash-based-pycs" {
                index += 2;
            } else {
                invocation.program = Program::Information;
                return invocation;
            }
            continue;
        }
        let Some(flags) = arg.strip_prefix(b"-") else {
            invocation.program = Program::Script(index);
            return invocation;
        };
        let mut skip_next = false;
        for (position, &flag) in flags.iter().enumerate() {
            let attached = position + 1 < flags.len();
            match flag {
                b'c' => {
                    invocation.program = Program::Command;
                    return invocation;
                }
                b'm' => {
                    invocation.program = Program::Module;
                    return invocation;
                }
                b'h' | b'?' | b'V' => invocation.program = Program::Information,
                b'E' | b'I' => invocation.ignores_environment = true,
                b'S' => invocation.no_site = true,
                b'B' => invocation.no_bytecode = true,
                _ if WITH_VALUE.contains(&flag) => {
                    skip_next = !attached;
                    break;
                }
                _ => {}
            }
        }
        if invocation.program == Program::Information {
            return invocation;
        }
        index += 1 + usize::from(skip_next);
    }
    if index < args.len() {
        invocation.program = Program::Script(index);
    }
    invocation
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_str(args: &[&str]) -> Invocation {
        let args: Vec<OsString> = args.iter().map(OsString::from).collect();
        parse(&args)
    }

    #[test]
    fn finds_the_script_after_options() {
        assert_eq!(parse_str(&["main.py", "-x"]).program, Program::Script(0));
        assert_eq!(
            parse_str(&["-O", "-X", "importtime", "-Wignore", "main.py"]).program,
            Program::Script(4)
        );
        assert_eq!(
            parse_str(&["-uB", "--check-hash-based-pycs", "never", "a.py"]).program,
            Program::Script(3)
        );
        assert_eq!(
            parse_str(&["-u", "--", "-odd.py"]).program,
            Program::Script(2)
        );
    }

    #[test]
    fn commands_modules_and_stdin() {
        assert_eq!(
            parse_str(&["-c", "print(1)", "x.py"]).program,
            Program::Command
        );
        assert_eq!(parse_str(&["-Oc", "pass"]).program, Program::Command);
        assert_eq!(parse_str(&["-mpytest", "-x"]).program, Program::Module);
        assert_eq!(parse_str(&["-", "a"]).program, Program::Stdin);
        assert_eq!(parse_str(&["-i"]).program, Program::Nothing);
        assert_eq!(parse_str(&["--version"]).program, Program::Information);
        assert_eq!(parse_str(&["-V"]).program, Program::Information);
    }

    #[test]
    fn flags_that_turn_hooks_off() {
        assert!(parse_str(&["main.py"]).hook_runs());
        assert!(!parse_str(&["-I", "main.py"]).hook_runs());
        assert!(!parse_str(&["-sE", "main.py"]).hook_runs());
        assert!(!parse_str(&["-S", "-m", "x"]).hook_runs());
        // Flags after the program belong to the program.
        assert!(parse_str(&["main.py", "-E"]).hook_runs());
        // A value is not a flag: `-X E` sets the X option "E".
        assert!(parse_str(&["-X", "E", "main.py"]).hook_runs());
    }
}
