//! Shell completions and man pages generated from the clap definitions:
//! bash really completes with the script, and `man` renders the pages.

use std::path::Path;
use std::process::{Command, Stdio};

use crate::support::{code, rcache_command, stderr};

/// What bash's completion function offers for `words` (the last one is
/// being completed), with the script `rcache completions bash` prints.
fn bash_completes(words: &[&str]) -> Vec<String> {
    let script = r#"
source <("$RCACHE" completions bash)
COMP_WORDS=("$@")
COMP_CWORD=$(( ${#COMP_WORDS[@]} - 1 ))
COMP_LINE="${COMP_WORDS[*]}"
COMP_POINT=${#COMP_LINE}
_rcache rcache "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD-1]}"
printf '%s\n' "${COMPREPLY[@]}"
"#;
    let output = Command::new("bash")
        .args(["--noprofile", "--norc", "-c", script, "bash"])
        .args(words)
        .env("RCACHE", env!("CARGO_BIN_EXE_rcache"))
        .output()
        .unwrap();
    assert_eq!(code(&output), 0, "{}", stderr(&output));
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn bash_completes_commands_flags_and_values() {
    assert_eq!(bash_completes(&["rcache", "mat"]), ["materialize"]);
    let commands = bash_completes(&["rcache", ""]);
    for command in ["warm", "materialize", "exec", "doctor", "config", "hook"] {
        assert!(
            commands.iter().any(|c| c == command),
            "{command}: {commands:?}"
        );
    }
    assert_eq!(bash_completes(&["rcache", "warm", "--st"]), ["--store"]);
    assert_eq!(
        bash_completes(&["rcache", "materialize", "--mode", "che"]),
        ["checked-hash"]
    );
    assert_eq!(bash_completes(&["rcache", "hook", "un"]), ["uninstall"]);
    // Every shell clap supports gets a script.
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let output = rcache_command(Path::new("/"))
            .args(["completions", shell])
            .output()
            .unwrap();
        assert_eq!(code(&output), 0, "{shell}: {}", stderr(&output));
        assert!(output.stdout.len() > 1000, "{shell}");
    }
}

/// `rcache man ARGS | man -l -`, as text.
fn rendered_man(args: &[&str]) -> String {
    let roff = rcache_command(Path::new("/"))
        .arg("man")
        .args(args)
        .output()
        .unwrap();
    assert_eq!(code(&roff), 0, "{}", stderr(&roff));
    let mut man = Command::new("man")
        .args(["-l", "-"])
        .env("MANWIDTH", "100")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("man (man-db) is installed");
    std::io::Write::write_all(&mut man.stdin.take().unwrap(), &roff.stdout).unwrap();
    let output = man.wait_with_output().unwrap();
    assert_eq!(code(&output), 0, "{}", stderr(&output));
    // Bold and underline are overstruck (`X\x08X`): keep the last of each.
    let mut text = String::new();
    for c in String::from_utf8_lossy(&output.stdout).chars() {
        if c == '\x08' {
            text.pop();
        } else {
            text.push(c);
        }
    }
    text
}

#[test]
fn man_pages_render_and_name_every_command() {
    let page = rendered_man(&[]);
    for text in ["rcache(1)", "SYNOPSIS", "--no-config", "SUBCOMMANDS"] {
        assert!(page.contains(text), "{text:?} not in\n{page}");
    }
    for command in [
        "warm",
        "materialize",
        "clean",
        "doctor",
        "stats",
        "gc",
        "verify",
        "export",
        "import",
        "hook",
        "config",
        "exec",
        "completions",
        "man",
    ] {
        assert!(
            page.contains(&format!("rcache-{command}(1)")),
            "{command} not in\n{page}"
        );
    }
    let warm = rendered_man(&["warm"]);
    assert!(
        warm.contains("rcache-warm(1)") && warm.contains("--timeout"),
        "{warm}"
    );
    let output = rcache_command(Path::new("/"))
        .args(["man", "nonsense"])
        .output()
        .unwrap();
    assert_eq!(code(&output), 2);
    assert!(stderr(&output).contains("no command `nonsense`"));
}
