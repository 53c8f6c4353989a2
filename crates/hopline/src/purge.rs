//! `hopline purge`: purge a node's CDN caches through its admin listener — by surrogate
//! key (tag), URL, prefix, host, or everything; hard (dropped) or soft (marked stale).

use std::process::ExitCode;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;

/// Purge cached objects: by tag (Surrogate-Key / Cache-Tag), URL, prefix, host or all.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Examples:
  hopline purge --tag product-42
  hopline purge --tag catalog --soft           # mark stale: served stale while one request revalidates
  hopline purge --url https://shop.test/app.css
  hopline purge --prefix https://shop.test/static/ --admin 127.0.0.1:9901
  hopline purge --host shop.test --json

The node's [admin] listener answers (`POST /.hopline/purge`); outside loopback it wants
its token (--token, or HOPLINE_ADMIN_TOKEN). Exit status: 0 done (even when nothing
matched: purging what is not there is nothing), 2 refused or unreachable.")]
pub struct Args {
    /// Purge every object carrying this surrogate key.
    #[arg(long, group = "target")]
    pub tag: Option<String>,
    /// Purge this URL (every variant), e.g. https://shop.test/app.css.
    #[arg(long, group = "target")]
    pub url: Option<String>,
    /// Purge every URL starting with this, e.g. https://shop.test/static/.
    #[arg(long, group = "target")]
    pub prefix: Option<String>,
    /// Purge everything of this host (both schemes).
    #[arg(long, group = "target")]
    pub host: Option<String>,
    /// Purge everything.
    #[arg(long, group = "target")]
    pub all: bool,
    /// Mark stale instead of dropping: served stale while one request revalidates
    /// (where the object allows `stale-while-revalidate`), else revalidated first.
    #[arg(long)]
    pub soft: bool,
    /// The node's admin listener, IP:PORT.
    #[arg(long, default_value = "127.0.0.1:9900")]
    pub admin: String,
    /// The admin listener's token.
    #[arg(long, env = "HOPLINE_ADMIN_TOKEN")]
    pub token: Option<String>,
    /// Print the node's JSON answer.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let mut body = serde_json::Map::new();
    match (&args.tag, &args.url, &args.prefix, &args.host, args.all) {
        (Some(t), ..) => body.insert("tag".into(), t.clone().into()),
        (_, Some(u), ..) => body.insert("url".into(), u.clone().into()),
        (_, _, Some(p), ..) => body.insert("prefix".into(), p.clone().into()),
        (_, _, _, Some(h), _) => body.insert("host".into(), h.clone().into()),
        (.., true) => body.insert("all".into(), true.into()),
        _ => anyhow::bail!("say what to purge: --tag, --url, --prefix, --host or --all"),
    };
    body.insert("soft".into(), args.soft.into());
    let addr: std::net::SocketAddr = args
        .admin
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .parse()
        .map_err(|_| anyhow::anyhow!("--admin {:?}: expected IP:PORT", args.admin))?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let asked = rt.block_on(async {
        let tcp =
            tokio::time::timeout(Duration::from_secs(5), tokio::net::TcpStream::connect(addr))
                .await
                .map_err(|_| anyhow::anyhow!("{addr}: no connection in 5 s"))?
                .map_err(|e| {
                    anyhow::anyhow!("{addr}: {e} (is a node's [admin] listener there?)")
                })?;
        let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await?;
        tokio::spawn(conn);
        let mut req = http::Request::post("/.hopline/purge")
            .header(http::header::HOST, addr.to_string())
            .header(http::header::CONTENT_TYPE, "application/json");
        if let Some(t) = &args.token {
            req = req.header(http::header::AUTHORIZATION, format!("Bearer {t}"));
        }
        let req = req.body(Full::new(Bytes::from(
            serde_json::Value::Object(body).to_string(),
        )))?;
        let resp = tokio::time::timeout(Duration::from_secs(30), send.send_request(req))
            .await
            .map_err(|_| anyhow::anyhow!("{addr}: no answer in 30 s"))??;
        let status = resp.status();
        let bytes = resp.into_body().collect().await?.to_bytes();
        anyhow::Ok((status, String::from_utf8_lossy(&bytes).into_owned()))
    });
    let (status, text) = match asked {
        Ok(x) => x,
        Err(e) => {
            eprintln!("hopline: purge: {e}");
            return Ok(ExitCode::from(2));
        }
    };
    if args.json || !status.is_success() {
        print!("{text}");
        return Ok(if status.is_success() {
            ExitCode::SUCCESS
        } else {
            eprintln!("hopline: {addr} answered {status}");
            ExitCode::from(2)
        });
    }
    let v: serde_json::Value = serde_json::from_str(&text)?;
    let verb = if args.soft { "marked stale" } else { "purged" };
    let per: Vec<String> = v["caches"]
        .as_object()
        .map(|m| m.iter().map(|(k, n)| format!("{k}: {n}")).collect())
        .unwrap_or_default();
    println!(
        "{verb} {} object(s) on {addr}{}",
        v["purged"],
        if per.is_empty() {
            " (no cache configured)".to_string()
        } else {
            format!(" ({})", per.join(", "))
        }
    );
    Ok(ExitCode::SUCCESS)
}
