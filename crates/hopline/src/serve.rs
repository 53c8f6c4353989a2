//! `hopline serve CONFIG.toml`: run every site (and DNS service) a config file defines,
//! in the foreground. SIGHUP reloads the file (a bad file is refused, the old config
//! keeps serving); SIGTERM or Ctrl-C drains in-flight requests and exits 0.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use hopline_edge::{Config, Server, Shutdown};

/// Run the sites and DNS services of a config file.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Signals: SIGHUP reloads CONFIG without dropping connections; SIGUSR1 reopens the access log
(logrotate); SIGTERM / Ctrl-C drain, write every buffered log line and exit 0.

With an [admin] listener, its GET / is a live dashboard of the running config (sites,
pools, [[stream]] TCP/UDP proxies, DNS, services).

Example:
  hopline serve examples/site/hopline.toml
  curl -i http://127.0.0.1:8080/")]
pub struct Args {
    /// The config file (TOML). Relative paths in it resolve against its folder.
    pub config: PathBuf,
    /// Worker threads (default: `threads` in the file, else one per core).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Check the config file and exit (0 = good), like `nginx -t`.
    #[arg(long)]
    pub check: bool,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let config = Config::load(&args.config)?;
    crate::products::check(&args.config)?;
    if args.check {
        // load everything `serve` loads (zones, certificates, roots, products), bind nothing
        hopline_dns::service::DnsServices::check(&config.dns, &config.base_dir)
            .with_context(|| format!("{}", args.config.display()))?;
        crate::runtime::runtime(1)?.block_on(async {
            let products = crate::products::Products::new();
            let services = products.load(&args.config)?;
            hopline_edge::Server::check(&config, &services)
                .with_context(|| format!("{}", args.config.display()))
        })?;
        if let Some(w) = only_admin(&args.config, &config) {
            eprintln!("hopline: warning: {w}");
        }
        eprintln!("hopline: {} is valid", args.config.display());
        return Ok(ExitCode::SUCCESS);
    }
    crate::runtime::init_logging();
    let threads = args
        .threads
        .or(config.threads)
        .unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        })
        .max(1);
    let runtime = crate::runtime::runtime(threads)?;
    runtime.block_on(serve(args.config, config, threads))
}

async fn serve(path: PathBuf, config: Config, threads: usize) -> anyhow::Result<ExitCode> {
    use tokio::signal::unix::{SignalKind, signal};
    // Handlers first: a signal that arrives while listeners start must not kill us.
    let mut hup = signal(SignalKind::hangup())?;
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut usr1 = signal(SignalKind::user_defined1())?;
    let shutdown_timeout = Duration::from_millis(config.limits.shutdown_timeout_ms);
    let base = config.base_dir.clone();
    let idle = only_admin(&path, &config);
    let dns = hopline_dns::service::DnsServices::start(&config.dns, &base)
        .await
        .with_context(|| format!("starting the DNS services of {}", path.display()))?;
    let products = crate::products::Products::new();
    let services = products.load(&path)?;
    let server = Server::start_with(config, services)
        .await
        .with_context(|| format!("starting {}", path.display()))?;
    server.set_extras(dns_boxes(dns.listeners()));
    tracing::info!(
        target: "hopline",
        "serving {} with {threads} worker thread(s); SIGHUP reloads, SIGTERM/Ctrl-C stops",
        path.display()
    );
    if let Some(w) = idle {
        tracing::warn!(target: "hopline", "{w}");
    }
    loop {
        tokio::select! {
            _ = hup.recv() => {
                match Config::load(&path) {
                    Ok(new) => match dns.reload(&new.dns, &new.base_dir).map_err(|e| e.to_string()) {
                        Err(e) => tracing::error!(target: "hopline", "reload refused, still serving the old config: {e}"),
                        Ok(()) => match async {
                            let services = products.load(&path).map_err(|e| format!("{e:#}"))?;
                            let idle = only_admin(&path, &new);
                            server.reload_with(new, services).await.map_err(|e| e.to_string())?;
                            Ok::<_, String>(idle)
                        }.await {
                        Ok(idle) => {
                            tracing::info!(target: "hopline", "reloaded {}", path.display());
                            if let Some(w) = idle {
                                tracing::warn!(target: "hopline", "{w}");
                            }
                        }
                        Err(e) => tracing::error!(target: "hopline", "reload refused, still serving the old config: {e}"),
                    }},
                    Err(e) => tracing::error!(target: "hopline", "reload refused, still serving the old config: {e}"),
                }
            }
            _ = usr1.recv() => match server.reopen_logs() {
                Ok(()) => tracing::info!(target: "hopline", "reopened the access log"),
                Err(e) => tracing::error!(target: "hopline", "{e}"),
            },
            _ = term.recv() => break,
            _ = int.recv() => break,
        }
    }
    tracing::info!(target: "hopline", "shutting down: draining in-flight requests");
    dns.shutdown().await;
    match server.shutdown(shutdown_timeout).await {
        Shutdown::Drained => tracing::info!(target: "hopline", "all requests finished; bye"),
        Shutdown::TimedOut => {
            tracing::warn!(target: "hopline", "shutdown timeout passed; closed the remaining connections")
        }
    }
    // the edge has drained: the products stop what runs behind it (workers, hubs)
    products.shutdown();
    Ok(ExitCode::SUCCESS)
}

/// The warning for a file that serves nothing but its `[admin]` listener (a file with not
/// even that is refused by [`Config::load`]): a dashboard of nothing, until a reload adds
/// something to serve.
fn only_admin(path: &std::path::Path, config: &Config) -> Option<String> {
    (!config.serves_anything()).then(|| {
        format!(
            "{} serves nothing but its [admin] listener: no [[site]], [[stream]], [[dns.resolver]], [[dns.authoritative]] or product section ([KIND.NAME]); add one and reload (SIGHUP)",
            path.display()
        )
    })
}

/// The DNS listeners as boxes of the admin dashboard: a resolver points at the servers it
/// forwards to, an authoritative server at the addresses of its DNS pools; a resolver's
/// box also shows what its cache holds of the names served beside it (pools first).
pub fn dns_boxes(
    listeners: std::sync::Arc<Vec<hopline_dns::service::DnsListener>>,
) -> hopline_edge::admin::view::ExtraNodes {
    Box::new(move || {
        // what a resolver's box shows of its cache: the names served beside it, pools first
        let mut served: Vec<String> = listeners
            .iter()
            .flat_map(|l| l.pools())
            .map(|(n, _)| n)
            .collect();
        served.extend(listeners.iter().flat_map(|l| l.zones()));
        // resolvers first: a client asks them, they ask the authoritative servers
        let mut order: Vec<&hopline_dns::service::DnsListener> = listeners.iter().collect();
        order.sort_by_key(|l| l.role != "resolver");
        order
            .into_iter()
            .map(|l| {
                let n =
                    |code: usize| l.stats.rcodes[code].load(std::sync::atomic::Ordering::Relaxed);
                let pools = l.pools();
                let mut detail = serde_json::Map::new();
                if l.role == "authoritative" {
                    detail.insert("zones".into(), l.zones().join(" ").into());
                }
                for (name, addrs) in &pools {
                    let list: Vec<String> = addrs
                        .iter()
                        .map(|(ip, up)| format!("{ip} {}", if *up { "up" } else { "down" }))
                        .collect();
                    detail.insert(format!("pool {name}"), list.join(", ").into());
                }
                if !l.forward.is_empty() {
                    let list: Vec<String> = l.forward.iter().map(|a| a.to_string()).collect();
                    detail.insert("forwards to".into(), list.join(", ").into());
                }
                let held = l.cached(&served, 4);
                if !held.is_empty() {
                    detail.insert(
                        "cached".into(),
                        serde_json::to_value(held).unwrap_or_default(),
                    );
                }
                detail.insert("nxdomain".into(), n(3).into());
                detail.insert("refused".into(), n(5).into());
                hopline_edge::admin::view::ExtraNode {
                    id: format!("dns:{}", l.addr),
                    role: l.role.to_string(),
                    label: format!("DNS {}", l.role),
                    addr: l.addr.to_string(),
                    requests: l.stats.answers.load(std::sync::atomic::Ordering::Relaxed),
                    errors: n(2),
                    latency: l.stats.latency.snapshot(),
                    targets: l
                        .forward
                        .iter()
                        .map(|a| a.to_string())
                        .chain(
                            pools
                                .iter()
                                .flat_map(|(_, a)| a.iter().map(|(ip, _)| ip.to_string())),
                        )
                        .collect(),
                    detail: detail.into(),
                }
            })
            .collect()
    })
}
