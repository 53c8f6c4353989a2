//! `hopline`: the command line. Turns flags and config files into calls to the hop crates;
//! owns no networking of its own.

mod cert;
mod instances;
mod listen;
mod notify;
mod products;
mod resolve;
mod runtime;
mod serve;
mod trace;
mod up;
mod visit;

use clap::{Parser, Subcommand};

/// Every hop of a web request: DNS, edge (web server, reverse proxy, load balancer,
/// CDN cache, rate limits), real-time channels, notifications and a browser-like page
/// loader.
#[derive(Debug, Parser)]
#[command(name = "hopline", version, about, long_about = None, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Start the whole small internet (DNS, CDN PoPs, load balancer, origins) and visit it.
    Up(up::Args),
    /// Run every site and DNS service a config file defines, in the foreground.
    Serve(serve::Args),
    /// Make (or reuse) a local certificate authority and a leaf certificate for names.
    Cert(cert::Args),
    /// Resolve a name: hosts file, cache, then a resolver or the root (with --trace).
    Resolve(resolve::Args),
    /// Load a URL the way a browser does and show every hop as a waterfall.
    Visit(visit::Args),
    /// Show the hops one traced request took (from an edge's admin listener).
    Trace(trace::Args),
    /// Publish an event on a real-time channel.
    Publish(listen::PublishArgs),
    /// Subscribe to a real-time channel (poll, long-poll, SSE, WebSocket), or compare them.
    Listen(listen::ListenArgs),
    /// The notification service: apps, signed sends, message status.
    Notify(notify::Args),
}

/// mimalloc: the proxy path's many small, short-lived allocations stay on per-thread
/// free lists (glibc's bin management showed as ~11 % of a proxied request's CPU).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Up(args) => up::run(args),
        Command::Serve(args) => serve::run(args),
        Command::Cert(args) => cert::run(args),
        Command::Resolve(args) => resolve::run(args),
        Command::Visit(args) => visit::run(args),
        Command::Trace(args) => trace::run(args),
        Command::Publish(args) => listen::run_publish(args),
        Command::Listen(args) => listen::run_listen(args),
        Command::Notify(args) => notify::run(args),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("hopline: error: {err:#}");
            std::process::ExitCode::from(1)
        }
    }
}
