//! `hopline visit URL`: load a page the way a browser does and show every hop as a
//! waterfall (or JSON, or a HAR file).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use hopline_browser::{Client, ClientOptions, Force, VisitOptions};

/// Load a URL the way a browser does and show every hop as a waterfall.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Examples:
  hopline visit http://127.0.0.1:8080/
  hopline visit https://shop.test:8443/ --resolver 127.0.0.1:5300 --ca up --repeat 2 --no-cache
  hopline visit https://example.com/ --recursive --har page.har
  hopline visit http://127.0.0.1:8080/ --json | jq .page
  hopline visit https://www.shop.test/ --doh https://127.0.0.1:8443/dns-query --ca up

While `hopline up` runs, visit finds its resolver and CA by itself for .test names (no
--resolver, --ca); with several running, the one holding the URL's port, else the newest
(--instance PID|PORT picks one). `--repeat 2` reuses the DNS cache, connections and TLS
sessions; the browser cache serves the second load unless --no-cache.

Exit status: 0 the page and everything it needs loaded; 2 the document failed (no
answer, or a 4xx/5xx status); 3 the document loaded but some subresource failed.")]
pub struct Args {
    /// The URL (http or https; IDNA host names are converted).
    pub url: String,
    /// Resolve names with this resolver (IP or IP:PORT) instead of /etc/resolv.conf's.
    #[arg(long, conflicts_with = "recursive")]
    pub resolver: Option<String>,
    /// Resolve names iteratively from the root.
    #[arg(long)]
    pub recursive: bool,
    /// Resolve names over DNS over HTTPS (RFC 8484) at this URL, as a browser with DoH on
    /// does: A and AAAA asked at once, each a request of its own in the waterfall. The DoH
    /// server's own name (if not an IP) is looked up the usual way (--resolver, ...).
    #[arg(long, value_name = "URL")]
    pub doh: Option<String>,
    /// Root hints for --recursive (named.root format).
    #[arg(long, requires = "recursive")]
    pub root_hints: Option<PathBuf>,
    /// Trust this CA (PEM) too, e.g. hopline's local CA; `--ca up`: the running `hopline up`'s.
    #[arg(long)]
    pub ca: Option<PathBuf>,
    /// Which running `hopline up` lends its resolver and CA (its pid, or a port it holds;
    /// default: the one holding the URL's port, else the newest).
    #[arg(long, value_name = "PID|PORT")]
    pub instance: Option<String>,
    /// Write the timeline as HAR 1.2 to this file.
    #[arg(long)]
    pub har: Option<PathBuf>,
    /// Write the waterfall as one self-contained HTML file (no script, nothing fetched):
    /// phase bars, server-side hops inside the wait, each request's details, the story.
    #[arg(long, value_name = "FILE")]
    pub html: Option<PathBuf>,
    /// Write the waterfall as one SVG image.
    #[arg(long, value_name = "FILE")]
    pub svg: Option<PathBuf>,
    /// Print the timeline as JSON instead of the waterfall.
    #[arg(long)]
    pub json: bool,
    /// Also tell the document's journey as numbered steps in plain words.
    #[arg(long)]
    pub explain: bool,
    /// Load the page N times with the same client (DNS cache, connection and TLS reuse show).
    #[arg(long, default_value_t = 1)]
    pub repeat: usize,
    /// Load only the document.
    #[arg(long)]
    pub no_subresources: bool,
    /// HTTP/1.1 connections per host.
    #[arg(long, default_value_t = 6)]
    pub max_connections_per_host: usize,
    /// Speak only HTTP/1.1.
    #[arg(long, conflicts_with_all = ["http2", "http3"])]
    pub http1: bool,
    /// Speak only HTTP/2 (h2 by ALPN, or h2c prior knowledge on http://).
    #[arg(long, conflicts_with = "http3")]
    pub http2: bool,
    /// Speak only HTTP/3 (QUIC on the URL's port, https:// only), from the first request.
    /// Without it, an origin that advertises HTTP/3 (`Alt-Svc`) is reached over QUIC from
    /// its second connection on, falling back to TCP when UDP does not get through.
    #[arg(long)]
    pub http3: bool,
    /// The browser cache's folder (default: the user's cache folder, hopline/http).
    #[arg(long)]
    pub cache_dir: Option<PathBuf>,
    /// Do not use the browser cache.
    #[arg(long)]
    pub no_cache: bool,
    /// Per-phase timeout in seconds.
    #[arg(long, default_value_t = 10)]
    pub timeout: u64,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    // `localhost:8080` or `www.shop.test` without a scheme: say what was probably meant
    let suggestion = || {
        if args.url.contains("://") {
            String::new()
        } else {
            format!(
                " — did you mean http://{}/ ?",
                args.url.trim_end_matches('/')
            )
        }
    };
    let url = url::Url::parse(&args.url).map_err(|e| {
        anyhow::anyhow!(
            "bad URL {:?}: {e} (expected e.g. https://shop.test/){}",
            args.url,
            suggestion()
        )
    })?;
    if !matches!(url.scheme(), "http" | "https") {
        anyhow::bail!(
            "bad URL {:?}: only http:// and https:// can be visited{}",
            args.url,
            suggestion()
        );
    }
    if url.host_str().is_none_or(|h| h.is_empty()) {
        anyhow::bail!("bad URL {:?}: no host", args.url);
    }
    let mut b = hopline_dns::Resolver::builder();
    // a running `hopline up` lends its resolver and CA to names under .test (or to any
    // name, when --instance names one)
    let is_test = url.host_str().is_some_and(|h| h.ends_with(".test"));
    let wants_up =
        args.instance.is_some() || args.ca.as_deref() == Some(std::path::Path::new("up"));
    let up = if wants_up || (is_test && args.resolver.is_none() && !args.recursive) {
        crate::instances::find(args.instance.as_deref(), url.port_or_known_default())?
    } else {
        None
    };
    let mut ca = args.ca.clone();
    if ca.as_deref() == Some(std::path::Path::new("up")) {
        let state = up
            .as_ref()
            .ok_or_else(|| anyhow::anyhow!("--ca up: {}", crate::instances::no_up_hint()))?;
        ca = Some(state.ca.clone());
    }
    let mut resolver_flag = args.resolver.clone();
    // a .test name with nobody to ask: the system resolver will say NXDOMAIN; say why
    let no_up = is_test && resolver_flag.is_none() && !args.recursive && up.is_none();
    if let Some(state) = up.filter(|_| resolver_flag.is_none() && !args.recursive) {
        eprintln!(
            "hopline: using the resolver {} and CA of the running `hopline up` (pid {})",
            state.resolver, state.pid
        );
        resolver_flag = Some(state.resolver);
        if ca.is_none() {
            ca = Some(state.ca);
        }
    }
    if let Some(r) = &resolver_flag {
        let addr: SocketAddr = r
            .parse()
            .or_else(|_| {
                r.parse::<std::net::IpAddr>()
                    .map(|ip| SocketAddr::new(ip, 53))
            })
            .map_err(|_| anyhow::anyhow!("--resolver {r:?}: expected IP or IP:PORT"))?;
        b = b.forward(vec![addr]);
    } else if args.recursive {
        b = b.recursive(match &args.root_hints {
            Some(p) => hopline_dns::RootHints::from_file(p)?,
            None => hopline_dns::RootHints::builtin(),
        });
    }
    let resolver = b.build()?;
    let doh = match &args.doh {
        None => None,
        Some(d) => {
            let u = url::Url::parse(d).map_err(|e| {
                anyhow::anyhow!("--doh {d:?}: {e} (expected e.g. https://dns.test/dns-query)")
            })?;
            if u.scheme() != "https" && u.scheme() != "http" {
                anyhow::bail!("--doh {d:?}: expected an https:// URL");
            }
            Some(u)
        }
    };
    let trace_id = format!("{:032x}", rand::random::<u128>());
    let client = Arc::new(
        Client::new(ClientOptions {
            resolver,
            extra_ca: ca,
            max_per_host: args.max_connections_per_host,
            force: if args.http1 {
                Force::Http1
            } else if args.http2 {
                Force::Http2
            } else if args.http3 {
                Force::Http3
            } else {
                Force::Auto
            },
            timeout: Duration::from_secs(args.timeout.max(1)),
            trace_id,
            cache: if args.no_cache {
                None
            } else {
                let dir = args
                    .cache_dir
                    .clone()
                    .unwrap_or_else(hopline_browser::cache::DiskCache::default_dir);
                Some(
                    hopline_browser::cache::DiskCache::open(&dir)
                        .map_err(|e| anyhow::anyhow!("cache folder {}: {e}", dir.display()))?,
                )
            },
            doh,
        })
        .map_err(|e| anyhow::anyhow!(e))?,
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let opts = VisitOptions {
        subresources: !args.no_subresources,
        ..Default::default()
    };
    let mut navs = Vec::new();
    for _ in 0..args.repeat.max(1) {
        navs.push(rt.block_on(hopline_browser::navigate(
            client.clone(),
            url.clone(),
            opts.clone(),
        )));
    }
    let color = std::io::IsTerminal::is_terminal(&std::io::stdout())
        && std::env::var_os("NO_COLOR").is_none();
    if args.json {
        let v = if navs.len() == 1 {
            serde_json::to_value(&navs[0])?
        } else {
            serde_json::to_value(&navs)?
        };
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        for (i, n) in navs.iter().enumerate() {
            if navs.len() > 1 {
                println!("── visit {} of {} ──", i + 1, navs.len());
            }
            print!("{}", hopline_browser::waterfall::render(n, color));
            if args.explain {
                println!("\nthe journey:");
                print!("{}", hopline_browser::explain::explain(n));
            }
        }
    }
    if let Some(path) = &args.html {
        let last = navs.last().expect("at least one visit");
        let story = hopline_browser::explain::explain(last);
        std::fs::write(path, hopline_browser::html::render(last, Some(&story)))?;
        if !args.json {
            println!("HTML waterfall written to {}", path.display());
        }
    }
    if let Some(path) = &args.svg {
        let last = navs.last().expect("at least one visit");
        std::fs::write(path, hopline_browser::html::svg(last))?;
        if !args.json {
            println!("SVG waterfall written to {}", path.display());
        }
    }
    if let Some(path) = &args.har {
        // every visit of --repeat, one HAR page each
        std::fs::write(
            path,
            serde_json::to_string_pretty(&hopline_browser::har::har_of(&navs))?,
        )?;
        if !args.json {
            println!("HAR written to {}", path.display());
        }
    }
    let last = navs.last().expect("at least one visit");
    let doc_failed = last
        .entries
        .iter()
        .filter(|e| e.kind == "document")
        .any(|e| e.error.is_some() || e.status >= 400);
    if doc_failed {
        if let Some(e) = last
            .entries
            .iter()
            .find(|e| e.kind == "document" && e.error.is_some())
        {
            let err = e.error.as_deref().unwrap_or("");
            eprintln!("hopline: {} failed: {err}", e.url);
            if no_up && err.contains("DNS") {
                eprintln!("hint: {}", crate::instances::no_up_hint());
            }
            if err.contains("UnknownIssuer") || err.contains("invalid peer certificate") {
                let up_ca = crate::instances::running()
                    .into_iter()
                    .next()
                    .map(|s| s.ca)
                    .or_else(|| dirs::data_dir().map(|d| d.join("hopline/certs/ca.pem")))
                    .filter(|p| p.exists());
                eprintln!(
                    "hint: the server's certificate is not signed by a CA this machine trusts: pass --ca FILE{}",
                    up_ca
                        .map(|p| format!(" (hopline up's CA is {})", p.display()))
                        .unwrap_or_default()
                );
            }
        }
        eprintln!("exit status 2: the document failed (no answer, or a 4xx/5xx status)");
        return Ok(ExitCode::from(2));
    }
    Ok(if last.page.failed > 0 {
        eprintln!(
            "exit status 3: the document loaded, {} subresource(s) failed",
            last.page.failed
        );
        ExitCode::from(3)
    } else {
        ExitCode::SUCCESS
    })
}
