//! `hopline resolve NAME`: the naming hop, step by step — hosts file, cache, then a
//! resolver (`--server`) or the hierarchy itself from the root (`--trace` shows every
//! server asked, what it answered, how long it took and the TTL learned).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::str::FromStr;

use hopline_dns::{Answered, RecordType, ResolveError, Resolver, RootHints};

/// Resolve a name: hosts file, cache, then a resolver or the root (with --trace).
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Without --server the name is resolved iteratively from the root hints (the real root
servers by default; --root-hints FILE for a private hierarchy in named.root format).

Examples:
  hopline resolve example.com --trace
  hopline resolve www.shop.test --server 127.0.0.1:5300
  hopline resolve www.shop.test --https https://127.0.0.1:8443/dns-query --ca ca.pem
  hopline resolve www.shop.test --root-hints examples/dns/up.root.hints --query-port 5354 --trace
    (a private root: the authoritative server of a running `hopline up`)")]
pub struct Args {
    /// The name to resolve.
    pub name: String,
    /// Record type: A, AAAA, CNAME, MX, NS, TXT, SOA, SRV, CAA, …
    #[arg(long = "type", short = 't', default_value = "A")]
    pub rtype: String,
    /// Ask this resolver (stub mode) instead of iterating from the root.
    #[arg(long)]
    pub server: Option<String>,
    /// Root hints file (named.root format).
    #[arg(long)]
    pub root_hints: Option<PathBuf>,
    /// Send iterative queries to this port instead of 53.
    #[arg(long)]
    pub query_port: Option<u16>,
    /// Hosts file to consult first (default /etc/hosts; "" for none).
    #[arg(long)]
    pub hosts_file: Option<PathBuf>,
    /// Print every step, like `dig +trace`.
    #[arg(long)]
    pub trace: bool,
    /// DNSSEC trust anchor: a file of DS or DNSKEY records (e.g. from `hopline dns ds .`);
    /// iterating from the real root, the IANA root keys are built in.
    #[arg(long, value_name = "FILE")]
    pub trust_anchor: Option<PathBuf>,
    /// Do not validate DNSSEC.
    #[arg(long)]
    pub no_validate: bool,
    /// Ask this resolver over DNS over TLS (RFC 7858), IP or IP:PORT (port 853 by
    /// default); the certificate is checked against --ca, or the public roots.
    #[arg(long, value_name = "ADDR", conflicts_with_all = ["server", "root_hints", "trace"])]
    pub tls: Option<String>,
    /// The name the DoT server's certificate must carry (default: its IP address).
    #[arg(long, value_name = "NAME", requires = "tls")]
    pub tls_name: Option<String>,
    /// Ask over DNS over HTTPS (RFC 8484: GET `?dns=`, over HTTP/2 when the server offers
    /// it) at this URL, e.g. https://127.0.0.1:8443/dns-query; the certificate is checked
    /// against --ca, or the public roots.
    #[arg(long, value_name = "URL", conflicts_with_all = ["server", "root_hints", "trace", "tls"])]
    pub https: Option<String>,
    /// With --https: over HTTP/3 (QUIC), from the first request.
    #[arg(long, requires = "https")]
    pub http3: bool,
    /// A PEM file of the CA to trust for --tls or --https (e.g. `hopline cert`'s ca.pem).
    #[arg(long, value_name = "FILE")]
    pub ca: Option<PathBuf>,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

fn parse_server(s: &str) -> anyhow::Result<SocketAddr> {
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Ok(a);
    }
    let ip: std::net::IpAddr = s
        .parse()
        .map_err(|_| anyhow::anyhow!("--server {s:?}: expected IP or IP:PORT"))?;
    Ok(SocketAddr::new(ip, 53))
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let rtype = RecordType::from_str(&args.rtype.to_ascii_uppercase())
        .map_err(|_| anyhow::anyhow!("unknown record type {:?}", args.rtype))?;
    if let Some(server) = &args.tls {
        return over_tls(&args, server, rtype);
    }
    if let Some(url) = &args.https {
        return over_https(&args, url, rtype);
    }
    if args.ca.is_some() {
        anyhow::bail!("--ca is for --tls or --https");
    }
    let mut b = Resolver::builder();
    b = match &args.hosts_file {
        Some(p) if p.as_os_str().is_empty() => b.no_hosts_file(),
        Some(p) => b.hosts_file(p),
        None => b,
    };
    b = match &args.server {
        Some(s) => b.forward(vec![parse_server(s)?]),
        None => b.recursive(match &args.root_hints {
            Some(p) => RootHints::from_file(p)?,
            None => RootHints::builtin(),
        }),
    };
    if let Some(p) = args.query_port {
        b = b.query_port(p);
    }
    if let Some(p) = &args.trust_anchor {
        let text = std::fs::read_to_string(p)
            .map_err(|e| anyhow::anyhow!("--trust-anchor {}: {e}", p.display()))?;
        let anchors = hopline_dns::dnssec::validate::parse_anchors(&text)
            .map_err(|e| anyhow::anyhow!("--trust-anchor {}: {e}", p.display()))?;
        b = b.trust_anchors(anchors);
    }
    if args.no_validate {
        b = b.no_validation();
    }
    let resolver = b.build()?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (result, steps) = rt.block_on(resolver.lookup_traced(&args.name, rtype));
    match result {
        Ok(l) => {
            if args.json {
                println!("{}", serde_json::to_string_pretty(&l)?);
                return Ok(ExitCode::SUCCESS);
            }
            if args.trace {
                print_steps(&l.steps);
            }
            for r in &l.records {
                println!("{:<32} {:>6}  IN  {:<6} {}", r.name, r.ttl, r.rtype, r.data);
            }
            let by = match &l.answered_by {
                Answered::Cache => "the resolver cache".to_string(),
                Answered::HostsFile => "the hosts file".to_string(),
                Answered::Forwarder(a) => format!("resolver {a}"),
                Answered::Recursive => "iteration from the root".to_string(),
            };
            println!(
                ";; answered by {by} in {:.1} ms, TTL {} s; DNSSEC: {}",
                l.elapsed.as_secs_f64() * 1000.0,
                l.ttl.as_secs(),
                match l.security {
                    hopline_dns::Security::Secure => "secure (validated from the trust anchor)",
                    hopline_dns::Security::Insecure => "insecure (proven unsigned)",
                    hopline_dns::Security::Unchecked => "not validated",
                }
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            if args.json {
                println!(
                    "{}",
                    serde_json::json!({"name": args.name, "type": args.rtype, "error": e.to_string(), "kind": kind(&e), "steps": steps})
                );
            } else {
                // every step up to the failing one, also when it failed
                if args.trace {
                    print_steps(&steps);
                }
                eprintln!("hopline: {e}");
            }
            Ok(ExitCode::from(2))
        }
    }
}

fn kind(e: &ResolveError) -> &'static str {
    match e {
        ResolveError::NxDomain { .. } => "nxdomain",
        ResolveError::NoData { .. } => "nodata",
        ResolveError::Timeout { .. } => "timeout",
        ResolveError::Refused { .. } => "refused",
        ResolveError::ServFail { .. } => "servfail",
        ResolveError::Loop(_) => "loop",
        ResolveError::BadName(_) => "bad_name",
        ResolveError::Bogus { .. } => "bogus",
        _ => "error",
    }
}

fn print_steps(steps: &[hopline_dns::TraceStep]) {
    for (i, s) in steps.iter().enumerate() {
        let ttl = s.ttl.map(|t| format!(" ttl={t}s")).unwrap_or_default();
        let zone = if s.zone.is_empty() {
            String::new()
        } else {
            format!(" [{}]", s.zone)
        };
        println!(
            ";; {:>2}. {:<22}{zone} {} -> {:<8} {:>7.2} ms{ttl}{}  {}",
            i + 1,
            s.server,
            s.question,
            s.kind,
            s.rtt_ms,
            if s.tcp { " (TCP)" } else { "" },
            s.detail
        );
    }
}

/// `--tls ADDR`: one question over DNS over TLS, the answer as `dig` would show it.
fn over_tls(args: &Args, server: &str, rtype: RecordType) -> anyhow::Result<ExitCode> {
    use hickory_proto::op::{Edns, Message, Query};
    use rustls_pki_types::pem::PemObject;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = match server.parse::<SocketAddr>() {
        Ok(a) => a,
        Err(_) => SocketAddr::new(
            server
                .parse()
                .map_err(|_| anyhow::anyhow!("--tls {server:?}: expected IP or IP:PORT"))?,
            853,
        ),
    };
    let mut roots = rustls::RootCertStore::empty();
    match &args.ca {
        Some(ca) => {
            for cert in rustls_pki_types::CertificateDer::pem_file_iter(ca)
                .map_err(|e| anyhow::anyhow!("--ca {}: {e}", ca.display()))?
            {
                roots
                    .add(cert.map_err(|e| anyhow::anyhow!("--ca {}: {e}", ca.display()))?)
                    .map_err(|e| anyhow::anyhow!("--ca {}: {e}", ca.display()))?;
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    let mut tls = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth();
    tls.alpn_protocols = vec![b"dot".to_vec()];
    let name = match &args.tls_name {
        Some(n) => rustls_pki_types::ServerName::try_from(n.clone())
            .map_err(|_| anyhow::anyhow!("--tls-name {n:?} is not a DNS name"))?,
        None => rustls_pki_types::ServerName::IpAddress(addr.ip().into()),
    };
    let mut q = Message::query();
    q.metadata.recursion_desired = true;
    q.add_query(Query::query(
        hopline_dns::resolver::parse_name(&args.name)?,
        rtype,
    ));
    let mut edns = Edns::new();
    edns.set_max_payload(1232);
    q.set_edns(edns);
    let query = q.to_vec()?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let started = tokio::time::Instant::now();
    let (answer, handshake) = rt.block_on(async {
        let tcp = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            tokio::net::TcpStream::connect(addr),
        )
        .await
        .map_err(|_| anyhow::anyhow!("{addr}: no TCP connection in 5 s"))??;
        let _ = tcp.set_nodelay(true);
        let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(tls));
        let mut stream = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            connector.connect(name, tcp),
        )
        .await
        .map_err(|_| anyhow::anyhow!("{addr}: no TLS handshake in 5 s"))?
        .map_err(|e| anyhow::anyhow!("{addr}: TLS: {e}"))?;
        let handshake = started.elapsed();
        let mut framed = (query.len() as u16).to_be_bytes().to_vec();
        framed.extend_from_slice(&query);
        stream.write_all(&framed).await?;
        let mut len = [0u8; 2];
        tokio::time::timeout(
            std::time::Duration::from_secs(5),
            stream.read_exact(&mut len),
        )
        .await
        .map_err(|_| anyhow::anyhow!("{addr}: no answer in 5 s"))??;
        let mut body = vec![0u8; u16::from_be_bytes(len) as usize];
        stream.read_exact(&mut body).await?;
        anyhow::Ok((Message::from_vec(&body)?, handshake))
    })?;
    let elapsed = started.elapsed();
    report(
        args,
        &answer,
        "tls",
        &addr.to_string(),
        elapsed,
        format!(
            "over TLS in {:.1} ms (TCP and TLS handshake {:.1} ms)",
            elapsed.as_secs_f64() * 1000.0,
            handshake.as_secs_f64() * 1000.0
        ),
        serde_json::json!({"handshake_ms": handshake.as_secs_f64() * 1000.0}),
    )
}

/// The answer of one question asked over an encrypted transport, as `dig` shows it (or
/// JSON); exit 0 for NOERROR, 2 otherwise.
fn report(
    args: &Args,
    answer: &hickory_proto::op::Message,
    transport: &str,
    server: &str,
    elapsed: std::time::Duration,
    how: String,
    extra: serde_json::Value,
) -> anyhow::Result<ExitCode> {
    if args.json {
        let records: Vec<serde_json::Value> = answer
            .answers
            .iter()
            .map(|r| {
                serde_json::json!({"name": r.name.to_string(), "ttl": r.ttl,
                    "rtype": r.record_type().to_string(), "data": r.data.to_string()})
            })
            .collect();
        let mut out = serde_json::json!({
            "name": args.name, "type": args.rtype, "transport": transport,
            "server": server, "rcode": answer.metadata.response_code.to_string(),
            "authenticated": answer.metadata.authentic_data, "records": records,
            "elapsed_ms": elapsed.as_secs_f64() * 1000.0,
        });
        if let (Some(o), serde_json::Value::Object(e)) = (out.as_object_mut(), extra) {
            o.extend(e);
        }
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        for r in &answer.answers {
            println!(
                "{:<32} {:>6}  IN  {:<6} {}",
                r.name,
                r.ttl,
                r.record_type(),
                r.data
            );
        }
        println!(
            ";; {} from {server} {how}{}",
            answer.metadata.response_code,
            if answer.metadata.authentic_data {
                "; DNSSEC: secure (AD)"
            } else {
                ""
            }
        );
    }
    Ok(
        if answer.metadata.response_code == hickory_proto::op::ResponseCode::NoError {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(2)
        },
    )
}

/// `--https URL`: one question over DNS over HTTPS with the page loader's client (the
/// same connection handling as `visit --doh`), the HTTP exchange timed.
fn over_https(args: &Args, url: &str, rtype: RecordType) -> anyhow::Result<ExitCode> {
    let doh = url::Url::parse(url).map_err(|e| {
        anyhow::anyhow!("--https {url:?}: {e} (expected e.g. https://127.0.0.1:8443/dns-query)")
    })?;
    if !matches!(doh.scheme(), "https" | "http") {
        anyhow::bail!("--https {url:?}: expected an https:// URL");
    }
    let client = hopline_browser::Client::new(hopline_browser::ClientOptions {
        resolver: hopline_dns::Resolver::builder().build()?,
        extra_ca: args.ca.clone(),
        max_per_host: 1,
        force: if args.http3 {
            hopline_browser::Force::Http3
        } else {
            hopline_browser::Force::Auto
        },
        timeout: std::time::Duration::from_secs(5),
        trace_id: format!("{:032x}", rand::random::<u128>()),
        cache: None,
        doh: Some(doh.clone()),
    })
    .map_err(|e| anyhow::anyhow!(e))?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let started = tokio::time::Instant::now();
    let name = args.name.trim_end_matches('.');
    let (answer, entry) = rt.block_on(client.doh_query(name, rtype, None));
    let elapsed = started.elapsed();
    let answer = answer.map_err(|e| anyhow::anyhow!("{doh}: {e}"))?;
    let p = &entry.phases;
    let setup = p.dns.unwrap_or(0.0) + p.connect.unwrap_or(0.0) + p.tls.unwrap_or(0.0);
    report(
        args,
        &answer,
        "https",
        doh.as_str(),
        elapsed,
        format!(
            "over {} in {:.1} ms (connection {:.1} ms, wait {:.1} ms)",
            entry.http_version,
            elapsed.as_secs_f64() * 1000.0,
            setup,
            p.wait
        ),
        serde_json::json!({"http": entry}),
    )
}
