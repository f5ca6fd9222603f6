//! Build script: exports the git commit the binaries are built from as the compile-time variable
//! `SDWAND_COMMIT`, which `sdwand::cli::VERSION` (every binary's `--version`) carries.
//!
//! The commit is `SDWAND_BUILD_COMMIT` when set (distribution builds from a source tarball), else
//! `git rev-parse --short=12 HEAD`, else `unknown` (no git, or not a checkout). Cargo reruns this when the
//! checkout's HEAD or the branch it points at moves.

use std::path::Path;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=SDWAND_BUILD_COMMIT");
    let commit = match std::env::var("SDWAND_BUILD_COMMIT") {
        Ok(c) if !c.trim().is_empty() => c.trim().to_string(),
        _ => {
            watch_git_head();
            git(&["rev-parse", "--short=12", "HEAD"]).unwrap_or_else(|| "unknown".to_string())
        }
    };
    println!("cargo:rustc-env=SDWAND_COMMIT={commit}");
}

/// `git ARGS` in this crate's directory: its trimmed output when it succeeds and prints something.
fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git")
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()?;
    let text = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (out.status.success() && !text.is_empty()).then_some(text)
}

/// Asks cargo to rerun this script when HEAD moves: the HEAD file (a checkout or a switch), the loose
/// ref of the branch HEAD names (a commit), and packed-refs (where `git gc` moves refs). Paths come from
/// git itself, so a linked worktree (whose `.git` is a file) works too.
fn watch_git_head() {
    let mut files = vec!["HEAD".to_string(), "packed-refs".to_string()];
    if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"]) {
        files.push(branch);
    }
    for file in files {
        if let Some(path) = git(&["rev-parse", "--path-format=absolute", "--git-path", &file]) {
            if Path::new(&path).exists() {
                println!("cargo:rerun-if-changed={path}");
            }
        }
    }
}
