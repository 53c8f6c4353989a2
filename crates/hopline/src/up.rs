//! `hopline up`: the whole small internet of the seeds in one process — DNS
//! (authoritative + resolver, DNS load balancing over two PoPs), two HTTPS CDN points of
//! presence with caches, a load balancer, three origins with a demo shop and an API,
//! and an admin listener — then one visit of `https://www.shop.test:8443/` shown as a
//! waterfall, then serving until Ctrl-C (`--once` exits after the visit).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use hopline_edge::{Config, Server};

/// Start the whole topology and visit it.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Everything listens on loopback: DNS resolver 127.0.0.1:5300 (authoritative 127.0.0.1:5354),
PoPs 127.0.0.2:8443 and 127.0.0.3:8443 (with --pops N, pop-3 to pop-8 on 127.0.0.8-13),
load balancer 127.0.0.4:8080, origins 127.0.0.5-7:8080, admin 127.0.0.1:9900. When one of these is taken by another program, the
built-in topology moves all its ports by 10000 (15300, 18443, …; then 20000, …) and says
so; --port-offset N picks the shift. The local CA lives in the user's data folder.

While it runs, from another terminal:
  hopline visit https://www.shop.test:8443/        # finds the resolver and CA by itself
  curl -s http://127.0.0.1:9900/.hopline/status
  hopline purge --tag shop                         # every PoP drops the shop's pages
and in a browser: http://127.0.0.1:9900/ — the live dashboard (topology, req/s, latency,
pool states, recent requests and their hops).

Examples:
  hopline up
  hopline up --once
  hopline up --pops 4                      # a CDN of four PoPs, DNS spreading over them
  hopline up --port-offset 20000           # every port + 20000: PoPs on 28443, …
  hopline up --print-config > my.toml && hopline up --config my.toml")]
pub struct Args {
    /// A topology file (same format as `hopline serve`); default: the built-in one.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Exit after the first visit (status 0 when the page loaded), for scripts and CI.
    #[arg(long)]
    pub once: bool,
    /// Print the built-in topology and exit (with absolute paths into the data folder,
    /// which it fills, so the printed file runs wherever it is saved).
    #[arg(long)]
    pub print_config: bool,
    /// Shift every port of the built-in topology by N (default: 0, or the first of
    /// 10000, 20000, 30000, 40000 whose ports are all free).
    #[arg(long, value_name = "N")]
    pub port_offset: Option<u16>,
    /// Folder for the CA, the demo site and the state file (default: the user's data folder).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// How many CDN points of presence the built-in topology has (1-8, default 2): each a
    /// site with its own cache on its own loopback address, all in the DNS pool of
    /// www.shop.test.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u8).range(1..=MAX_POPS as i64))]
    pub pops: Option<u8>,
}

/// The most PoPs `--pops` makes (each on an address of its own in 127.0.0.x).
const MAX_POPS: usize = 8;

/// The loopback address of PoP `k` (1-based): .2 and .3 as ever, then after the balancer
/// and the origins (.4-.7), .8 to .13.
fn pop_addr(k: usize) -> String {
    match k {
        1 => "127.0.0.2".into(),
        2 => "127.0.0.3".into(),
        k => format!("127.0.0.{}", k + 5),
    }
}

/// The built-in topology with `n` PoPs instead of two: pop-1's site repeated for each
/// (its name, address and cache changed), a cache each, and all of them in the DNS pool.
fn with_pops(topology: &str, n: usize) -> anyhow::Result<String> {
    anyhow::ensure!(
        (1..=MAX_POPS).contains(&n),
        "--pops {n}: between 1 and {MAX_POPS}"
    );
    let shape =
        || anyhow::anyhow!("the built-in topology's PoPs are not where --pops expects them");
    let first = topology
        .find("[[site]]\nname = \"pop-1\"")
        .ok_or_else(shape)?;
    let second = topology
        .find("[[site]]\nname = \"pop-2\"")
        .ok_or_else(shape)?;
    // pop-2's site ends where the next section (its comment, or a site) begins
    let rest = &topology[second + 1..];
    let end = [rest.find("\n# ----"), rest.find("\n[[site]]")]
        .into_iter()
        .flatten()
        .min()
        .ok_or_else(shape)?;
    let after = second + 1 + end + 1;
    let block = &topology[first..second];
    let sites: String = (1..=n)
        .map(|k| {
            block
                .replace("\"pop-1\"", &format!("\"pop-{k}\""))
                .replace("\"127.0.0.2:", &format!("\"{}:", pop_addr(k)))
                .replace("\"pop1\"", &format!("\"pop{k}\""))
        })
        .collect();
    let caches_from = "[cache.pop1]\nmemory = \"64MiB\"\n[cache.pop2]\nmemory = \"64MiB\"\n";
    let caches: String = (1..=n)
        .map(|k| format!("[cache.pop{k}]\nmemory = \"64MiB\"\n"))
        .collect();
    let pool_from = "addresses = [\"127.0.0.2\", \"127.0.0.3\"]";
    let pool = format!(
        "addresses = [{}]",
        (1..=n)
            .map(|k| format!("\"{}\"", pop_addr(k)))
            .collect::<Vec<_>>()
            .join(", ")
    );
    anyhow::ensure!(
        topology.contains(caches_from) && topology.contains(pool_from),
        shape()
    );
    let t = format!("{}{sites}{}", &topology[..first], &topology[after..]);
    Ok(t.replace(caches_from, &caches).replace(pool_from, &pool))
}

const TOPOLOGY: &str = include_str!("../../../examples/up/topology.toml");

const FILES: &[(&str, &[u8])] = &[
    (
        "zones/shop.test.zone",
        include_bytes!("../../../examples/up/shop.test.zone"),
    ),
    (
        "zones/test.zone",
        include_bytes!("../../../examples/up/test.zone"),
    ),
    (
        "zones/root.zone",
        include_bytes!("../../../examples/up/root.zone"),
    ),
    (
        "zones/root.hints",
        include_bytes!("../../../examples/up/root.hints"),
    ),
    (
        "demo/shop/index.html",
        include_bytes!("../../../examples/up/demo/shop/index.html"),
    ),
    (
        "demo/shop/css/shop.css",
        include_bytes!("../../../examples/up/demo/shop/css/shop.css"),
    ),
    (
        "demo/shop/css/base.css",
        include_bytes!("../../../examples/up/demo/shop/css/base.css"),
    ),
    (
        "demo/shop/js/shop.js",
        include_bytes!("../../../examples/up/demo/shop/js/shop.js"),
    ),
    (
        "demo/shop/img/logo.svg",
        include_bytes!("../../../examples/up/demo/shop/img/logo.svg"),
    ),
    (
        "demo/shop/img/lantern.svg",
        include_bytes!("../../../examples/up/demo/shop/img/lantern.svg"),
    ),
    (
        "demo/shop/img/kettle.svg",
        include_bytes!("../../../examples/up/demo/shop/img/kettle.svg"),
    ),
    (
        "demo/shop/fonts/shop.woff2",
        include_bytes!("../../../examples/up/demo/shop/fonts/shop.woff2"),
    ),
];

/// The ports of the built-in topology (each also the base of its shifted versions).
const PORTS: [u16; 6] = [5300, 5354, 8080, 8443, 9443, 9900];

/// The topology with every port shifted by `offset` (in addresses, and in `…_port = N`).
fn with_ports(topology: &str, offset: u16) -> String {
    // two passes through placeholders: a port shifted onto another of the list (8443 + 1000
    // = 9443) is not shifted twice
    let forms = |p: String| {
        [
            format!(":{p}\""),
            format!(":{p}/"),
            format!("_port = {p}\n"),
        ]
    };
    let mut t = topology.to_string();
    for (i, p) in PORTS.iter().enumerate() {
        for (from, to) in forms(p.to_string())
            .iter()
            .zip(forms(format!("\u{0}{i}\u{0}")))
        {
            t = t.replace(from, &to);
        }
    }
    for (i, p) in PORTS.iter().enumerate() {
        for (from, to) in forms(format!("\u{0}{i}\u{0}"))
            .iter()
            .zip(forms((p + offset).to_string()))
        {
            t = t.replace(from, &to);
        }
    }
    t
}

/// The addresses a topology listens on (`listen = …` lines).
fn listen_addrs(topology: &str) -> Vec<std::net::SocketAddr> {
    topology
        .lines()
        .filter(|l| l.trim_start().starts_with("listen"))
        .flat_map(|l| l.split('"').skip(1).step_by(2))
        .filter_map(|a| a.parse().ok())
        .collect()
}

/// Which listen addresses of `topology` are taken now (TCP; and UDP for the DNS ports).
fn taken(topology: &str) -> Vec<std::net::SocketAddr> {
    listen_addrs(topology)
        .into_iter()
        .filter(|a| {
            std::net::TcpListener::bind(a).is_err()
                || ([5300, 5354].iter().any(|p| a.port() % 10000 == p % 10000)
                    && std::net::UdpSocket::bind(a).is_err())
        })
        .collect()
}

/// The port shift to run the built-in topology with: the one asked for, else 0, else the
/// first of 10000…40000 whose ports are all free (said on stderr).
fn choose_offset(topology: &str, asked: Option<u16>) -> anyhow::Result<u16> {
    if let Some(o) = asked {
        anyhow::ensure!(
            PORTS.iter().all(|p| (*p as u32 + o as u32) < 65536),
            "--port-offset {o}: the ports would pass 65535 (largest: {})",
            65535 - PORTS.iter().max().copied().unwrap_or(0)
        );
        return Ok(o);
    }
    let busy = taken(topology);
    if busy.is_empty() {
        return Ok(0);
    }
    for o in [10000, 20000, 30000, 40000] {
        if taken(&with_ports(topology, o)).is_empty() {
            eprintln!(
                "hopline up: {}; moving every port by {o} (PoPs on {}, resolver on {}); --port-offset N chooses",
                who_holds(&busy),
                8443 + o,
                5300 + o
            );
            return Ok(o);
        }
    }
    anyhow::bail!(
        "{}, and so are their shifts by 10000-40000: free one, or pass --port-offset N",
        who_holds(&busy)
    )
}

/// "another `hopline up` (pid N) holds 127.0.0.1:9900, …" or "… taken by another program".
fn who_holds(busy: &[std::net::SocketAddr]) -> String {
    let ups = crate::instances::running();
    let mut ours: Vec<(u32, Vec<String>)> = Vec::new();
    let mut others = Vec::new();
    for a in busy {
        match ups.iter().find(|s| s.holds(a)) {
            Some(s) => match ours.iter_mut().find(|(pid, _)| *pid == s.pid) {
                Some((_, list)) => list.push(a.to_string()),
                None => ours.push((s.pid, vec![a.to_string()])),
            },
            None => others.push(a.to_string()),
        }
    }
    let mut parts: Vec<String> = ours
        .into_iter()
        .map(|(pid, list)| format!("another `hopline up` (pid {pid}) holds {}", list.join(", ")))
        .collect();
    if !others.is_empty() {
        parts.push(format!("{} taken by another program", others.join(", ")));
    }
    parts.join("; ")
}

/// The topology made runnable from anywhere: its relative paths point into `data` (zones,
/// certificates and the demo site, shared by every instance) and into `own`, the folder of
/// this instance alone (its notification database).
fn absolute_paths(topology: &str, data: &Path, own: &Path) -> String {
    let d = data.display().to_string();
    let mut t = topology.to_string();
    for rel in ["zones/", "certs/", "demo/"] {
        t = t.replace(&format!("\"{rel}"), &format!("\"{d}/{rel}"));
    }
    // the CA's folder itself (`dir = "certs"`)
    t = t.replace("= \"certs\"", &format!("= \"{d}/certs\""));
    t.replace("\"notify.db\"", &format!("\"{}/notify.db\"", own.display()))
}

/// The folder of the instance whose admin listens on `admin_port` (or, without one, of
/// this process): two `up`s running at once never share one.
fn instance_dir(data: &Path, admin_port: Option<u16>) -> PathBuf {
    match admin_port {
        Some(p) => data.join(format!("up-{p}")),
        None => data.join(format!("up-pid-{}", std::process::id())),
    }
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let data = args
        .data_dir
        .clone()
        .or_else(|| dirs::data_dir().map(|d| d.join("hopline")))
        .unwrap_or_else(|| std::env::temp_dir().join("hopline"));
    std::fs::create_dir_all(&data).with_context(|| format!("creating {}", data.display()))?;
    for (rel, bytes) in FILES {
        let p = data.join(rel);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&p, bytes).with_context(|| format!("writing {}", p.display()))?;
    }
    let leaf = hopline_edge::tls::ca::issue(
        &data.join("certs"),
        &[
            "www.shop.test".into(),
            "shop.test".into(),
            "*.shop.test".into(),
        ],
    )?;
    // the CA's own HTTPS listener (its ACME directory) on 127.0.0.1
    hopline_edge::tls::ca::issue(
        &data.join("certs"),
        &["localhost".into(), "127.0.0.1".into()],
    )?;
    let data = std::fs::canonicalize(&data).unwrap_or(data);
    anyhow::ensure!(
        args.pops.is_none() || args.config.is_none(),
        "--pops shapes the built-in topology; a --config file has the PoPs it lists \
         (`hopline up --pops N --print-config` prints one with N)"
    );
    let topology = with_pops(TOPOLOGY, args.pops.map_or(2, usize::from))?;
    if args.print_config {
        let o = choose_offset(&topology, Some(args.port_offset.unwrap_or(0)))?;
        let own = instance_dir(&data, Some(9900 + o));
        std::fs::create_dir_all(&own)?;
        print!("{}", absolute_paths(&with_ports(&topology, o), &data, &own));
        return Ok(ExitCode::SUCCESS);
    }
    let (config_path, own) = match &args.config {
        Some(p) => (p.clone(), None),
        None => {
            let o = choose_offset(&topology, args.port_offset)?;
            if args.port_offset.is_some() {
                let busy = taken(&with_ports(&topology, o));
                anyhow::ensure!(
                    busy.is_empty(),
                    "--port-offset {o}: {}; stop it, or pick another offset",
                    who_holds(&busy)
                );
            }
            let own = instance_dir(&data, Some(9900 + o));
            std::fs::create_dir_all(&own).with_context(|| format!("creating {}", own.display()))?;
            let p = own.join("topology.toml");
            std::fs::write(&p, absolute_paths(&with_ports(&topology, o), &data, &own))
                .with_context(|| format!("writing {}", p.display()))?;
            (p, Some(own))
        }
    };
    let config = Config::load(&config_path)?;
    let own = match own {
        Some(o) => o,
        None => {
            let admin_port = config
                .admin
                .as_ref()
                .and_then(|a| a.listen.get_ref().parse::<std::net::SocketAddr>().ok())
                .map(|a| a.port());
            let o = instance_dir(&data, admin_port);
            std::fs::create_dir_all(&o).with_context(|| format!("creating {}", o.display()))?;
            o
        }
    };
    crate::runtime::init_logging();
    let rt = crate::runtime::runtime(config.threads.unwrap_or(2).max(1))?;
    rt.block_on(up(config, config_path, leaf.ca.ca_cert, own, args.once))
}

async fn up(
    config: Config,
    path: PathBuf,
    ca: PathBuf,
    own: PathBuf,
    once: bool,
) -> anyhow::Result<ExitCode> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    let base = config.base_dir.clone();
    let dns = hopline_dns::service::DnsServices::start(&config.dns, &base)
        .await
        .with_context(|| format!("starting the DNS of {}", path.display()))?;
    let resolver_addr = dns
        .bound()
        .iter()
        .find(|(role, _)| role == "DNS resolver")
        .map(|(_, a)| *a)
        .context("the topology has no [[dns.resolver]]")?;
    let roles: Vec<(String, String, String)> = describe(&config);
    // the front door (the first HTTPS site: a PoP) and origin-1's webhook sink, on the
    // ports this topology really uses
    let pop_port = config
        .site
        .iter()
        .filter(|s| {
            s.tls.is_some()
                && s.hosts
                    .iter()
                    .flatten()
                    .any(|h| h.get_ref() == "www.shop.test")
        })
        .flat_map(|s| s.listen.get_ref().first())
        .find_map(|l| l.get_ref().parse::<std::net::SocketAddr>().ok())
        .map_or(8443, |a| a.port());
    let front = format!("https://www.shop.test:{pop_port}");
    let sink = config
        .site
        .iter()
        .flat_map(|s| s.listen.get_ref().iter())
        .map(|l| l.get_ref())
        .find(|l| l.starts_with("127.0.0.5:"))
        .map_or("127.0.0.5:8080", |l| l.as_str());
    let sink = format!("http://{sink}/hooks/orders");
    // the CDN's points of presence: the sites whose "/" is cached (their listen addresses)
    let pops: Vec<std::net::SocketAddr> = config
        .site
        .iter()
        .filter(|s| {
            s.route
                .iter()
                .any(|r| r.path.get_ref() == "/" && r.cache.is_some())
        })
        .filter_map(|s| s.listen.get_ref().first())
        .filter_map(|l| l.get_ref().parse().ok())
        .collect();
    let products = crate::products::Products::new();
    let services = match products.load(&path) {
        Ok(s) => s,
        Err(e) => {
            dns.shutdown().await;
            return Err(e.context(format!("starting {}", path.display())));
        }
    };
    let demo_secret = hopline_realtime::config::load(&std::fs::read_to_string(&path)?, &path)?
        .get("live")
        .and_then(|c| match &c.publish {
            hopline_realtime::config::Access::Jwt { secret } => Some(secret.clone()),
            _ => None,
        });
    let server = match Server::start_with(config, services).await {
        Ok(s) => s,
        Err(e) => {
            dns.shutdown().await;
            return Err(anyhow::anyhow!(e).context(format!("starting {}", path.display())));
        }
    };
    server.set_extras(crate::serve::dns_boxes(dns.listeners()));
    println!("hopline up — the small internet of the seeds, on loopback\n");
    println!("{:<14} {:<22} what it does", "role", "address");
    for (role, addr, what) in &roles {
        println!("{role:<14} {addr:<22} {what}");
    }
    for (role, addr) in dns.bound() {
        println!(
            "{:<14} {:<22} {}",
            if role.contains("resolver") {
                "resolver"
            } else {
                "dns"
            },
            addr.to_string(),
            role
        );
    }
    let admin = server.admin_addr();
    let pid = std::process::id();
    // absolute: a later `hopline visit` from another folder must find it
    let ca = std::fs::canonicalize(&ca).unwrap_or(ca);
    let mut listens: Vec<String> =
        listen_addrs(&std::fs::read_to_string(&path).unwrap_or_default())
            .iter()
            .map(|a| a.to_string())
            .collect();
    for a in dns.bound().iter().map(|(_, a)| *a).chain(admin) {
        if !listens.contains(&a.to_string()) {
            listens.push(a.to_string());
        }
    }
    let state = crate::instances::State {
        pid,
        started_ms: crate::instances::now_ms(),
        resolver: resolver_addr.to_string(),
        ca: ca.clone(),
        admin: admin.map(|a| a.to_string()),
        front: front.clone(),
        topology: std::fs::canonicalize(&path).unwrap_or_else(|_| path.clone()),
        dir: own.clone(),
        listens,
    };
    // the long values get lines of their own: a path never pushes a table column over
    println!();
    if let Some(admin) = admin {
        println!("dashboard  http://{admin}/  (live: topology, req/s, pools, recent requests)");
    }
    println!("CA         {}  (trust it to browse)", ca.display());
    println!(
        "topology   {}  (edit it, then `kill -HUP {pid}` applies it)",
        state.topology.display()
    );
    let state_files = crate::instances::publish(&state);
    println!(
        "this up    pid {pid}; visit, trace and listen find it by itself{}",
        state_files
            .first()
            .and_then(|f| f.parent())
            .map(|d| format!(" (state in {})", d.display()))
            .unwrap_or_default()
    );
    println!();

    // the PoPs' certificate comes by ACME from the topology's CA (at once from storage
    // after the first run); give the health checks a moment to see the origins
    let started = tokio::time::Instant::now();
    loop {
        let certs = server.certificates();
        if certs.iter().all(|c| c.state == "valid") {
            for c in certs.iter().filter(|c| c.obtained == Some("ordered")) {
                println!(
                    "certificate for {} obtained by ACME ({}) from {} in {} ms",
                    c.names.join(", "),
                    c.challenge,
                    c.issuer.as_deref().unwrap_or("the CA"),
                    started.elapsed().as_millis()
                );
            }
            break;
        }
        if started.elapsed() > Duration::from_secs(30) {
            let why: Vec<String> = certs.iter().filter_map(|c| c.last_error.clone()).collect();
            eprintln!(
                "hopline up: the PoPs have no certificate after 30 s: {}",
                why.join("; ")
            );
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(300).saturating_sub(started.elapsed())).await;
    let client = Arc::new(
        hopline_browser::Client::new(hopline_browser::ClientOptions {
            resolver: hopline_dns::Resolver::builder()
                .no_hosts_file()
                .forward(vec![resolver_addr])
                .build()?,
            extra_ca: Some(ca.clone()),
            max_per_host: 6,
            force: hopline_browser::Force::Auto,
            timeout: Duration::from_secs(10),
            trace_id: format!("{:032x}", rand::random::<u128>()),
            cache: None,
            doh: None,
        })
        .map_err(|e| anyhow::anyhow!(e))?,
    );
    let url = url::Url::parse(&format!("{front}/"))?;
    let nav = hopline_browser::navigate(client, url, Default::default()).await;
    let color = std::io::IsTerminal::is_terminal(&std::io::stdout())
        && std::env::var_os("NO_COLOR").is_none();
    print!("{}", hopline_browser::waterfall::render(&nav, color));
    // the same visit as a picture, in this instance's folder
    let file = own.join("visit.html");
    let story = hopline_browser::explain::explain(&nav);
    if std::fs::write(&file, hopline_browser::html::render(&nav, Some(&story))).is_ok() {
        println!("the waterfall as a page: {}", file.display());
    }
    let ok = nav.page.failed == 0
        && nav
            .entries
            .iter()
            .any(|e| e.kind == "document" && e.status == 200);
    // the demo shop has an app of the notification service and confirms its first order
    // by webhook (to the sink on origin-1, through the service's queue and worker)
    let mut notify_demo = None;
    if let Some(svc) = products.notify_service("main") {
        let app =
            hopline_notify::store::apps::create(&svc.config.read().database, "demo-shop", None)?;
        let msg = hopline_notify::model::validate(
            hopline_notify::model::SendRequest {
                channel: "webhook".into(),
                to: sink.clone(),
                subject: None,
                body: Some("{\"order\":1,\"status\":\"confirmed\"}".into()),
                template: None,
                data: None,
                priority: Some("high".into()),
                send_at: None,
                ttl: None,
                metadata: Some(serde_json::json!({"order": 1})),
            },
            hopline_notify::now_ms(),
            64 * 1024,
        )
        .map_err(|e| anyhow::anyhow!("{e}"))?;
        // accepted as the API accepts (counted on the dashboard, announced to followers)
        let id = match svc
            .submit(&app.key, msg, None, hopline_notify::now_ms())
            .await?
        {
            hopline_notify::store::Accepted::New(id)
            | hopline_notify::store::Accepted::Again(id) => id,
        };
        notify_demo = Some((app, id));
    }
    // the demo shop announces its orders on the live channel
    let shop = products.realtime_hub("live").map(|hub| {
        tokio::spawn(async move {
            let mut n = 0u64;
            loop {
                tokio::time::sleep(Duration::from_secs(3)).await;
                n += 1;
                let event = format!(
                    "{{\"order\":{n},\"item\":\"{}\",\"status\":\"paid\"}}",
                    ["lantern", "kettle"][(n % 2) as usize]
                );
                let _ = hub.publish("orders", bytes::Bytes::from(event)).await;
            }
        })
    });
    if !once {
        println!("\nserving until Ctrl-C; from another terminal: hopline visit {front}/");
        if let Some((app, id)) = &notify_demo {
            println!(
                "order confirmation:       hopline notify status {id} --url {front} --app {} --secret {} --follow",
                app.key, app.secret
            );
            println!(
                "send one yourself:        hopline notify send --url {front} --app {} --secret {} --to {sink} --body 'hello'",
                app.key, app.secret
            );
        }
        if let (Some(admin), false) = (admin, pops.is_empty()) {
            println!(
                "purge on every PoP:        hopline purge --tag shop --admin {admin}   ({} PoPs)",
                pops.len()
            );
            println!(
                "each PoP's Cache-Status:   for a in {}; do curl -sI --cacert {} --resolve www.shop.test:{pop_port}:$a {front}/ | grep -i cache-status; done",
                pops.iter()
                    .map(|a| a.ip().to_string())
                    .collect::<Vec<_>>()
                    .join(" "),
                ca.display()
            );
        }
        if shop.is_some() {
            println!("live orders (every 3 s):   hopline listen {front}/live/orders --via sse");
            if let Some(secret) = &demo_secret {
                println!(
                    "compare the four ways:    hopline listen {front}/live/orders --compare --rate 10/s --for 10s --secret {secret}"
                );
            }
        }
        loop {
            tokio::select! {
                _ = term.recv() => break,
                _ = int.recv() => break,
                _ = hup.recv() => match Config::load(&path) {
                    // the topology file changed: apply it (sites and zones; DNS listeners stay)
                    Ok(new) => {
                        let r = match (dns.reload(&new.dns, &new.base_dir), products.load(&path)) {
                            (Ok(()), Ok(services)) => server.reload_with(new, services).await.map_err(|e| e.to_string()),
                            (Err(e), _) => Err(e.to_string()),
                            (_, Err(e)) => Err(format!("{e:#}")),
                        };
                        match r {
                            Ok(()) => tracing::info!(target: "hopline", "reloaded {}", path.display()),
                            Err(e) => tracing::error!(target: "hopline", "reload refused, still serving the old topology: {e}"),
                        }
                    }
                    Err(e) => tracing::error!(target: "hopline", "reload refused, still serving the old topology: {e}"),
                },
            }
        }
    }
    if let Some(shop) = shop {
        shop.abort();
    }
    for f in &state_files {
        let _ = std::fs::remove_file(f);
    }
    dns.shutdown().await;
    server.shutdown(Duration::from_secs(5)).await;
    products.shutdown();
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    })
}

fn describe(config: &Config) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    if let Some(a) = &config.admin {
        out.push((
            "admin".into(),
            a.listen.get_ref().clone(),
            "the dashboard (/), /.hopline/status and /metrics for every part".into(),
        ));
    }
    for site in &config.site {
        let name = site.name.clone().unwrap_or_default();
        let addr = site
            .listen
            .get_ref()
            .first()
            .map(|l| l.get_ref().clone())
            .unwrap_or_default();
        let route = site.route.iter().find(|r| r.path.get_ref() == "/");
        let what = match route {
            Some(r) if r.cache.is_some() => format!(
                "CDN PoP (HTTPS, cache {}) → upstream {}",
                r.cache.as_ref().map(|c| c.get_ref().as_str()).unwrap_or(""),
                r.proxy.as_ref().map(|p| p.get_ref().as_str()).unwrap_or("")
            ),
            Some(r) if r.proxy.is_some() => {
                let up = r
                    .proxy
                    .as_ref()
                    .map(|p| p.get_ref().clone())
                    .unwrap_or_default();
                let alg = config
                    .upstream
                    .get(&up)
                    .map(|u| u.balance.as_str())
                    .unwrap_or("");
                format!("load balancer ({alg}) → upstream {up}")
            }
            _ if site.route.iter().any(|r| {
                r.service
                    .as_ref()
                    .is_some_and(|s| s.get_ref().starts_with("ca:"))
            }) =>
            {
                "ACME CA: the PoPs' certificates (directory /acme/directory)".into()
            }
            Some(r) if r.root.is_some() => {
                if site.route.iter().any(|r| {
                    r.service
                        .as_ref()
                        .is_some_and(|s| s.get_ref().starts_with("notify:"))
                }) {
                    "origin web server: demo shop + /api/ + /live/ channels + /v1/ notify".into()
                } else if site.route.iter().any(|r| {
                    r.service
                        .as_ref()
                        .is_some_and(|s| s.get_ref().starts_with("realtime:"))
                }) {
                    "origin web server: demo shop + /api/ + /live/ channels".into()
                } else {
                    "origin web server: demo shop + /api/".into()
                }
            }
            _ => "site".into(),
        };
        out.push((name, addr, what));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_port_is_shifted_once() {
        let t = "listen = [\"127.0.0.2:8443\"]\nlisten = [\"127.0.0.1:9443\"]\ndirectory = \"https://127.0.0.1:9443/acme/directory\"\ntls_port = 8443\n";
        let shifted = with_ports(t, 1000);
        assert_eq!(
            shifted,
            "listen = [\"127.0.0.2:9443\"]\nlisten = [\"127.0.0.1:10443\"]\ndirectory = \"https://127.0.0.1:10443/acme/directory\"\ntls_port = 9443\n"
        );
        assert_eq!(with_ports(TOPOLOGY, 0), TOPOLOGY);
    }

    #[test]
    fn pops_are_made_from_pop_1() {
        assert_eq!(with_pops(TOPOLOGY, 2).unwrap(), TOPOLOGY);
        assert!(with_pops(TOPOLOGY, 0).is_err() && with_pops(TOPOLOGY, 9).is_err());
        for n in 1..=MAX_POPS {
            let t = with_pops(TOPOLOGY, n).unwrap();
            let v: toml::Table = toml::from_str(&t).unwrap_or_else(|e| panic!("{n} PoPs: {e}"));
            let pops: Vec<&toml::Table> = v["site"]
                .as_array()
                .unwrap()
                .iter()
                .filter_map(|s| s.as_table())
                .filter(|s| s["name"].as_str().is_some_and(|x| x.starts_with("pop-")))
                .collect();
            assert_eq!(pops.len(), n);
            assert_eq!(v["cache"].as_table().unwrap().len(), n);
            for (k, s) in pops.iter().enumerate() {
                assert_eq!(s["name"].as_str(), Some(format!("pop-{}", k + 1).as_str()));
                let cache = s["route"][0]["cache"].as_str().unwrap();
                assert_eq!(cache, format!("pop{}", k + 1));
            }
            // every listen address once: no PoP lands on the balancer or an origin
            let mut all = listen_addrs(&t);
            let len = all.len();
            all.sort();
            all.dedup();
            assert_eq!(all.len(), len, "{n} PoPs: an address twice");
            let pool = t.lines().find(|l| l.starts_with("addresses = [")).unwrap();
            assert_eq!(pool.matches("127.0.0.").count(), n, "{pool}");
            // the comment before the balancer is kept
            assert!(t.contains("# ---- the load balancer ----"));
        }
    }
}
