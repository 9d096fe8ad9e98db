//! Names the git commit the binary is built from, for `ringcast --version`
//! and `ringcast_build_info`: `RINGCAST_COMMIT` when set (the Dockerfile
//! sets it, as its build has no `.git`), else git's answer, else `unknown`.

use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=RINGCAST_COMMIT");
    if let Some(commit) = std::env::var("RINGCAST_COMMIT")
        .ok()
        .filter(|c| !c.trim().is_empty())
    {
        println!("cargo:rustc-env=RINGCAST_COMMIT={}", commit.trim());
        println!("cargo:rerun-if-changed=build.rs");
        return;
    }
    let git = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .map(|s| s.trim().to_owned())
    };
    let commit = git(&["rev-parse", "--short=12", "HEAD"]).unwrap_or_else(|| "unknown".into());
    let dirty =
        git(&["status", "--porcelain", "--untracked-files=no"]).is_some_and(|s| !s.is_empty());
    let suffix = if dirty { "-modified" } else { "" };
    println!("cargo:rustc-env=RINGCAST_COMMIT={commit}{suffix}");
    // Rebuild when HEAD moves or the index changes.
    if let Some(dir) = git(&["rev-parse", "--git-dir"]) {
        println!("cargo:rerun-if-changed={dir}/HEAD");
        println!("cargo:rerun-if-changed={dir}/index");
        if let Some(head) = git(&["symbolic-ref", "-q", "HEAD"]) {
            println!("cargo:rerun-if-changed={dir}/{head}");
        }
    }
    println!("cargo:rerun-if-changed=build.rs");
}
