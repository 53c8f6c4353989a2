//! `hopline ca serve`: hopline's local CA as an ACME server on its own, the way one runs
//! step-ca: the CA of `hopline cert` (made on first use), its directory on an HTTPS
//! listener with a certificate it signs itself. The same as `hopline serve` on a file with
//! a `[ca.NAME]` section and a route to it; this writes that file and serves it.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;

/// hopline's own ACME certificate authority.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Serve the local CA over ACME (RFC 8555) until Ctrl-C.
    #[command(after_help = "\
The directory is https://LISTEN/acme/directory; its HTTPS certificate is signed by the CA
itself, so clients trust DIR/ca.pem (certbot: REQUESTS_CA_BUNDLE, lego:
LEGO_CA_CERTIFICATES, hopline: ca_root in [acme.NAME]).

Examples:
  hopline ca serve --dir certs
  hopline ca serve --dir certs --listen 127.0.0.1:14000 --http-port 8080 --resolver 127.0.0.1:5300
  REQUESTS_CA_BUNDLE=certs/ca.pem certbot certonly --standalone --server https://127.0.0.1:14000/acme/directory -d www.example.test")]
    Serve(ServeArgs),
}

#[derive(Debug, clap::Args)]
struct ServeArgs {
    /// The CA's folder (ca.pem, ca-key.pem; made when missing).
    #[arg(long, default_value = "certs")]
    dir: PathBuf,
    /// Where the ACME directory listens (HTTPS).
    #[arg(long, default_value = "127.0.0.1:14000")]
    listen: std::net::SocketAddr,
    /// The port HTTP-01 is checked on.
    #[arg(long, default_value_t = 80)]
    http_port: u16,
    /// The port TLS-ALPN-01 is checked on.
    #[arg(long, default_value_t = 443)]
    tls_port: u16,
    /// Resolver (IP:PORT) that names the addresses to validate and answers DNS-01; may be
    /// given more than once (default: the system's).
    #[arg(long, value_name = "IP:PORT")]
    resolver: Vec<std::net::SocketAddr>,
    /// How long certificates are valid, in seconds.
    #[arg(long, default_value_t = 90 * 86400)]
    validity: u64,
    /// Tell clients (ACME Renewal Information, RFC 9773) to renew certificates once they
    /// are this many seconds old (default: from two thirds to three quarters of their life).
    #[arg(long, value_name = "SECONDS")]
    renew_after: Option<u64>,
    /// Worker threads.
    #[arg(long)]
    threads: Option<usize>,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let Command::Serve(a) = args.command;
    std::fs::create_dir_all(&a.dir).with_context(|| format!("creating {}", a.dir.display()))?;
    let dir = std::fs::canonicalize(&a.dir)?;
    // the directory's own certificate, for the address it listens on
    let host = a.listen.ip().to_string();
    let mut names = vec![host.clone()];
    if a.listen.ip().is_loopback() {
        names.insert(0, "localhost".into());
    }
    let leaf = hopline_edge::tls::ca::issue(&dir, &names)?;
    let resolvers: Vec<String> = a.resolver.iter().map(|r| format!("\"{r}\"")).collect();
    let config = format!(
        r#"# written by `hopline ca serve`: a [ca.NAME] section and the route that serves it
[ca.local]
dir = {dir:?}
http_port = {http}
tls_port = {tls}
resolvers = [{resolvers}]
validity_s = {validity}
{renew_after}
[[site]]
name = "ca"
listen = ["{listen}"]
tls = {{ cert = {cert:?}, key = {key:?} }}
  [[site.route]]
  path = "/acme/"
  ca = "local"
"#,
        dir = dir.display().to_string(),
        http = a.http_port,
        tls = a.tls_port,
        resolvers = resolvers.join(", "),
        validity = a.validity,
        renew_after = a
            .renew_after
            .map(|r| format!("renew_after_s = {r}\n"))
            .unwrap_or_default(),
        listen = a.listen,
        cert = leaf.cert.display().to_string(),
        key = leaf.key.display().to_string(),
    );
    let file = dir.join("ca-serve.toml");
    std::fs::write(&file, config).with_context(|| format!("writing {}", file.display()))?;
    let url = if a.listen.port() == 443 {
        format!("https://{}/acme/directory", a.listen.ip())
    } else {
        format!("https://{}/acme/directory", a.listen)
    };
    eprintln!(
        "hopline ca: ACME directory {url} (clients trust {}); config in {}",
        leaf.ca.ca_cert.display(),
        file.display()
    );
    crate::serve::run(crate::serve::Args {
        config: file,
        threads: a.threads,
        check: false,
    })
}
