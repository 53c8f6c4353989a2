//! `hopline`: the command line. Turns flags and config files into calls to the hop crates;
//! owns no networking of its own.

mod ca;
mod cert;
mod dns;
mod doh;
mod instances;
mod listen;
mod notify;
mod products;
mod purge;
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
    /// Serve the local certificate authority over ACME (certbot, lego, hopline's client).
    Ca(ca::Args),
    /// Resolve a name: hosts file, cache, then a resolver or the root (with --trace).
    Resolve(resolve::Args),
    /// DNSSEC keys of signed zones: DS records for the parent, the keys.
    Dns(dns::Args),
    /// Load a URL the way a browser does and show every hop as a waterfall.
    Visit(visit::Args),
    /// Purge a node's CDN caches: by tag (surrogate key), URL, prefix, host or all.
    Purge(purge::Args),
    /// Show the hops one traced request took (from an edge's admin listener).
    Trace(trace::Args),
    /// Publish an event on a real-time channel.
    Publish(listen::PublishArgs),
    /// Subscribe to a real-time channel (poll, long-poll, SSE, WebSocket), or compare them.
    Listen(listen::ListenArgs),
    /// The notification service: apps, signed sends, message status.
    Notify(notify::Args),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    #[command(after_help = "\
Examples:
  hopline completions bash > ~/.local/share/bash-completion/completions/hopline
  hopline completions zsh > ~/.zfunc/_hopline      # with fpath+=~/.zfunc in .zshrc
  hopline completions fish > ~/.config/fish/completions/hopline.fish")]
    Completions {
        /// The shell to complete for.
        shell: clap_complete::Shell,
    },
    /// Print the man page, or write one page per command into a folder.
    #[command(after_help = "\
Examples:
  hopline man | man -l -
  hopline man --dir ~/.local/share/man/man1 && man hopline-up")]
    Man {
        /// Write hopline.1 and hopline-COMMAND.1 for every command into this folder.
        #[arg(long, value_name = "DIR")]
        dir: Option<std::path::PathBuf>,
    },
}

/// `hopline completions SHELL`: the script on stdout.
fn completions(shell: clap_complete::Shell) -> anyhow::Result<std::process::ExitCode> {
    let mut cmd = <Cli as clap::CommandFactory>::command();
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut cmd, "hopline", &mut out);
    print_all(&out)
}

/// `out` on stdout; a reader that stops early (`| head`) is not an error.
fn print_all(out: &[u8]) -> anyhow::Result<std::process::ExitCode> {
    use std::io::Write;
    match std::io::stdout().lock().write_all(out) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(std::process::ExitCode::SUCCESS),
    }
}

/// `hopline man [--dir DIR]`: hopline(1) on stdout, or every page into DIR.
fn man(dir: Option<std::path::PathBuf>) -> anyhow::Result<std::process::ExitCode> {
    use anyhow::Context;
    let cmd = <Cli as clap::CommandFactory>::command();
    let Some(dir) = dir else {
        let mut out = Vec::new();
        clap_mangen::Man::new(cmd).render(&mut out)?;
        return print_all(&out);
    };
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut written = Vec::new();
    let mut write = |name: String, page: clap::Command| -> anyhow::Result<()> {
        let file = dir.join(format!("{name}.1"));
        let mut out = Vec::new();
        clap_mangen::Man::new(page).title(&name).render(&mut out)?;
        std::fs::write(&file, out).with_context(|| format!("writing {}", file.display()))?;
        written.push(file);
        Ok(())
    };
    for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
        let name = format!("hopline-{}", sub.get_name());
        let page = sub
            .clone()
            .display_name(name.clone())
            .bin_name(format!("hopline {}", sub.get_name()));
        write(name, page)?;
    }
    write("hopline".into(), cmd)?;
    for f in &written {
        println!("{}", f.display());
    }
    Ok(std::process::ExitCode::SUCCESS)
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
        Command::Ca(args) => ca::run(args),
        Command::Resolve(args) => resolve::run(args),
        Command::Dns(args) => dns::run(args),
        Command::Visit(args) => visit::run(args),
        Command::Purge(args) => purge::run(args),
        Command::Trace(args) => trace::run(args),
        Command::Publish(args) => listen::run_publish(args),
        Command::Listen(args) => listen::run_listen(args),
        Command::Notify(args) => notify::run(args),
        Command::Completions { shell } => completions(shell),
        Command::Man { dir } => man(dir),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("hopline: error: {err:#}");
            std::process::ExitCode::from(1)
        }
    }
}
