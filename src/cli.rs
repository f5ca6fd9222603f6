//! What the three binaries (`sdwand`, `sdwanctl`, `sdwan-registry`) share on their command lines: the
//! version string, which names the commit they were built from, and the hidden `generate DIR` subcommand
//! that writes a binary's man pages and shell completion scripts from its clap definition
//! (`scripts/package` puts them in the Debian packages).
//!
//! `generate` is added by [`parse`] at parse time, not declared in the binaries' definitions: the pages and
//! completions describe only what an operator uses (clap_complete would list a hidden subcommand).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap_complete::Shell;

/// The git commit the binaries were built from (12 hex digits), or `unknown` outside a git checkout; a
/// distribution build sets it with `SDWAND_BUILD_COMMIT` (see `build.rs`).
pub const COMMIT: &str = env!("SDWAND_COMMIT");

/// Every binary's `--version` text after its name: `0.1.0 (commit 1a2b3c4d5e6f)`. The workspace's
/// packages share one version, so it is the registry's too.
pub const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (commit ", env!("SDWAND_COMMIT"), ")");

/// The man page section of all three binaries: system administration.
pub const MAN_SECTION: &str = "8";

/// Writes the documentation of the command `cmd` (the binary's whole clap definition, named as the
/// binary) into `dir`: `man/NAME.8` and a page per visible subcommand (`man/NAME-SUB.8`, which the
/// parent's page lists), and `completions/NAME.bash`, `completions/_NAME` (zsh), `completions/NAME.fish`.
/// Creates the directories; overwrites those files.
pub fn write_docs(cmd: clap::Command, dir: &Path) -> std::io::Result<()> {
    let mut cmd = cmd.disable_help_subcommand(true);
    cmd.build();
    let man = dir.join("man");
    std::fs::create_dir_all(&man)?;
    write_man_pages(cmd.clone(), &man)?;
    let completions = dir.join("completions");
    std::fs::create_dir_all(&completions)?;
    let name = cmd.get_name().to_string();
    for (shell, file) in [
        (Shell::Bash, format!("{name}.bash")),
        (Shell::Zsh, format!("_{name}")),
        (Shell::Fish, format!("{name}.fish")),
    ] {
        let mut out = Vec::new();
        clap_complete::generate(shell, &mut cmd, &name, &mut out);
        std::fs::write(completions.join(file), out)?;
    }
    Ok(())
}

/// The man page of `cmd` and, recursively, of its visible subcommands, into `dir`.
fn write_man_pages(cmd: clap::Command, dir: &Path) -> std::io::Result<()> {
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        write_man_pages(sub.clone(), dir)?;
    }
    clap_mangen::Man::new(cmd).section(MAN_SECTION).generate_to(dir)?;
    Ok(())
}

/// The name of the hidden subcommand [`parse`] adds.
pub const GENERATE: &str = "generate";

/// What [`parse`] found on the command line.
pub enum Invocation<P> {
    /// The binary's own arguments: run.
    Run(P),
    /// `generate DIR` was asked and is done: exit with this code.
    Done(ExitCode),
}

/// Parses the process's arguments as `P` (the binary's clap definition) does, with the hidden
/// `generate DIR` subcommand added; answers `generate` itself ([`write_docs`] of `P`'s definition into
/// `DIR`). Like `P::parse()`, prints help, the version or the usage error and exits when clap says so.
pub fn parse<P: clap::Parser>() -> Invocation<P> {
    let cmd = P::command().subcommand(
        clap::Command::new(GENERATE)
            .hide(true)
            .about("Write the man pages and shell completions into DIR (for packaging)")
            .arg(
                clap::Arg::new("dir")
                    .required(true)
                    .value_parser(clap::value_parser!(PathBuf)),
            ),
    );
    let mut matches = cmd.get_matches();
    if let Some((GENERATE, sub)) = matches.subcommand() {
        let Some(dir) = sub.get_one::<PathBuf>("dir") else {
            return Invocation::Done(ExitCode::from(2));
        };
        let cmd = P::command();
        let name = cmd.get_name().to_string();
        return Invocation::Done(match write_docs(cmd, dir) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!(
                    "{name}: cannot write the man pages and completions to {}: {e}",
                    dir.display()
                );
                ExitCode::FAILURE
            }
        });
    }
    match P::from_arg_matches_mut(&mut matches) {
        Ok(parsed) => Invocation::Run(parsed),
        Err(e) => e.format(&mut P::command()).exit(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_names_the_commit() {
        assert!(VERSION.starts_with(env!("CARGO_PKG_VERSION")));
        assert!(VERSION.ends_with(&format!("(commit {COMMIT})")));
        assert!(!COMMIT.is_empty());
    }

    #[test]
    fn writes_a_page_per_subcommand_and_every_completion() {
        let cmd = clap::Command::new("demo")
            .version(VERSION)
            .subcommand(clap::Command::new("status").about("Show the status"));
        let dir = tempfile::tempdir().unwrap();
        write_docs(cmd, dir.path()).unwrap();
        let read = |p: &str| std::fs::read_to_string(dir.path().join(p)).unwrap();
        let man = read("man/demo.8");
        assert!(man.contains(".TH demo 8") && man.contains("demo\\-status(8)"), "{man}");
        assert!(read("man/demo-status.8").contains(".TH demo-status 8"));
        let mut pages: Vec<_> = std::fs::read_dir(dir.path().join("man"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        pages.sort();
        assert_eq!(pages, ["demo-status.8", "demo.8"]);
        for file in ["completions/demo.bash", "completions/_demo", "completions/demo.fish"] {
            let script = read(file);
            assert!(
                script.contains("status") && !script.contains("secret"),
                "{file}: {script}"
            );
        }
    }
}
