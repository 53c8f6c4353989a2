//! `hopline serve`: run a config file's sites and DNS services.

#[derive(Debug, clap::Args)]
pub struct Args {}

pub fn run(_args: Args) -> anyhow::Result<std::process::ExitCode> {
    anyhow::bail!("serve is being built")
}
