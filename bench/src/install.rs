//! Finding the peers' binaries, and installing Debian's packages with
//! `apt-get` when they are missing.

use std::path::PathBuf;

use anyhow::Context;
use tokio::process::Command;

/// Installs `packages` with `apt-get install` (through sudo unless root);
/// if that fails, refreshes the package lists once and tries again.
pub async fn apt_install(packages: &[&str]) -> anyhow::Result<()> {
    eprintln!("installing {}", packages.join(" "));
    if apt_get(&["install", "-y", "-qq"], packages).await? {
        return Ok(());
    }
    // The package lists may be missing or stale: refresh them once.
    apt_get(&["update", "-qq"], &[]).await?;
    anyhow::ensure!(
        apt_get(&["install", "-y", "-qq"], packages).await?,
        "apt-get could not install {}",
        packages.join(" ")
    );
    Ok(())
}

/// Runs `apt-get <args> <packages>`, through sudo unless root; whether it
/// succeeded.
async fn apt_get(args: &[&str], packages: &[&str]) -> anyhow::Result<bool> {
    let mut command = if is_root().await? {
        Command::new("apt-get")
    } else {
        let mut sudo = Command::new("sudo");
        sudo.arg("apt-get");
        sudo
    };
    command
        .args(args)
        .args(packages)
        .env("DEBIAN_FRONTEND", "noninteractive");
    let status = command.status().await.context("running apt-get")?;
    Ok(status.success())
}

/// Whether the harness runs as root.
pub async fn is_root() -> anyhow::Result<bool> {
    Ok(user_ids("").await?.0 == 0)
}

/// The uid and gid of `user` (of the current user when empty), from `id`.
pub async fn user_ids(user: &str) -> anyhow::Result<(u32, u32)> {
    let id = |flag: &'static str| async move {
        let mut command = Command::new("id");
        command.arg(flag);
        if !user.is_empty() {
            command.arg(user);
        }
        let output = command.output().await.context("running id")?;
        anyhow::ensure!(output.status.success(), "no user `{user}`");
        let text = String::from_utf8_lossy(&output.stdout);
        text.trim()
            .parse::<u32>()
            .with_context(|| format!("`id {flag} {user}` printed {text:?}"))
    };
    Ok((id("-u").await?, id("-g").await?))
}

/// The first file called `name` in a directory of the PATH.
pub fn on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}
