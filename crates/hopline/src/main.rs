//! `hopline`: the command line. Turns flags and config files into calls to the hop crates;
//! owns no networking of its own.

mod cert;
mod serve;

use clap::{Parser, Subcommand};

/// Every hop of a web request: DNS, edge (web server, reverse proxy, load balancer,
/// CDN cache, rate limits) and a browser-like page loader.
#[derive(Debug, Parser)]
#[command(name = "hopline", version, about, long_about = None, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run every site and DNS service a config file defines, in the foreground.
    Serve(serve::Args),
    /// Make (or reuse) a local certificate authority and a leaf certificate for names.
    Cert(cert::Args),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => serve::run(args),
        Command::Cert(args) => cert::run(args),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("hopline: error: {err:#}");
            std::process::ExitCode::from(1)
        }
    }
}
