//! `hopline trace TRACE_ID`: one request's journey across the hops of an edge process,
//! from its admin listener (`/.hopline/trace/ID`), each hop with its status, time, cache
//! decision and server timing.

use std::io::{Read, Write};
use std::process::ExitCode;

/// Show the hops one traced request took (from an edge's admin listener).
#[derive(Debug, clap::Args)]
#[command(after_help = "\
The trace id is the second field of a W3C traceparent (`hopline visit --json` shows the
request headers; every access-log line has `trace=ID`).

Without --admin, it asks the admin listener of the running `hopline up` (the newest, or
the one --instance names), wherever its ports were moved.

Example:
  hopline trace 2dc1c01c724949430b5822c07ceae8a2
  hopline trace 2dc1c01c724949430b5822c07ceae8a2 --admin http://127.0.0.1:9900 --json")]
pub struct Args {
    /// The 32-hex-digit trace id, or a whole `traceparent` (`00-TRACEID-SPAN-01`).
    pub trace_id: String,
    /// The admin listener to ask, as HOST:PORT or http://HOST:PORT/ (default: the one of
    /// the running `hopline up`).
    #[arg(long)]
    pub admin: Option<String>,
    /// Which running `hopline up` to ask (its pid, or a port it holds; default: the newest).
    #[arg(long, value_name = "PID|PORT", conflicts_with = "admin")]
    pub instance: Option<String>,
    /// Print the hops as JSON.
    #[arg(long)]
    pub json: bool,
}

/// The trace id of `text`: 32 hex digits, or the second field of a W3C traceparent.
pub fn trace_id_of(text: &str) -> Option<String> {
    let text = text.trim();
    let id = match text.split('-').collect::<Vec<_>>().as_slice() {
        [_version, id, span, _flags] if span.len() == 16 => *id,
        _ => text,
    };
    (id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit())).then(|| id.to_ascii_lowercase())
}

/// `http://127.0.0.1:9900/`, `127.0.0.1:9900` → `127.0.0.1:9900`.
pub fn admin_addr(text: &str) -> anyhow::Result<String> {
    let t = text.trim();
    let rest = t
        .strip_prefix("http://")
        .or_else(|| t.strip_prefix("HTTP://"))
        .unwrap_or(t);
    if rest.starts_with("https://") {
        anyhow::bail!("--admin {text:?}: the admin listener speaks plain http://");
    }
    let hostport = rest.split('/').next().unwrap_or("");
    if hostport.is_empty() || !hostport.contains(':') {
        anyhow::bail!("--admin {text:?}: expected HOST:PORT or http://HOST:PORT/");
    }
    Ok(hostport.to_string())
}

pub fn run(mut args: Args) -> anyhow::Result<ExitCode> {
    let admin = match &args.admin {
        Some(a) => admin_addr(a)?,
        None => {
            let up = crate::instances::find(args.instance.as_deref(), None)?.ok_or_else(|| {
                anyhow::anyhow!(
                    "no admin listener to ask: {}; or pass --admin HOST:PORT",
                    crate::instances::no_up_hint()
                )
            })?;
            up.admin.ok_or_else(|| {
                anyhow::anyhow!(
                    "the running `hopline up` (pid {}) has no admin listener; pass --admin HOST:PORT",
                    up.pid
                )
            })?
        }
    };
    args.trace_id = trace_id_of(&args.trace_id).ok_or_else(|| {
        anyhow::anyhow!(
            "{:?} is not a trace id: expected 32 hex digits or a traceparent (00-<32 hex>-<16 hex>-01)",
            args.trace_id
        )
    })?;
    let mut s = std::net::TcpStream::connect(&admin)
        .map_err(|e| anyhow::anyhow!("cannot reach the admin listener {}: {e}", admin))?;
    s.set_read_timeout(Some(std::time::Duration::from_secs(5)))?;
    write!(
        s,
        "GET /.hopline/trace/{} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
        args.trace_id, admin
    )?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw);
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    let v: serde_json::Value = serde_json::from_str(body.trim())
        .map_err(|e| anyhow::anyhow!("unexpected answer from {}: {e}", admin))?;
    let hops = v["hops"].as_array().cloned().unwrap_or_default();
    if args.json {
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(if hops.is_empty() {
            ExitCode::from(2)
        } else {
            ExitCode::SUCCESS
        });
    }
    if hops.is_empty() {
        eprintln!(
            "hopline: no hop of {} saw trace {} (traces are kept 10 minutes)",
            admin, args.trace_id
        );
        return Ok(ExitCode::from(2));
    }
    println!(
        "trace {} — {} hop(s) seen by the edge at {}",
        args.trace_id,
        hops.len(),
        admin
    );
    for (i, h) in hops.iter().enumerate() {
        println!(
            "{:>2}. {:<10} {} → {} in {:.2} ms (span {})",
            i + 1,
            h["site"].as_str().unwrap_or("-"),
            h["request"].as_str().unwrap_or(""),
            h["status"],
            h["ms"].as_f64().unwrap_or(0.0),
            h["span"].as_str().unwrap_or("-")
        );
        if let Some(cs) = h["cache_status"].as_str() {
            println!("      cache-status: {cs}");
        }
        if let Some(st) = h["server_timing"].as_str() {
            println!("      server-timing: {st}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_trace_id_or_a_whole_traceparent() {
        let id = "2dc1c01c724949430b5822c07ceae8a2";
        assert_eq!(trace_id_of(id).as_deref(), Some(id));
        assert_eq!(
            trace_id_of(&format!("00-{id}-00f067aa0ba902b7-01")).as_deref(),
            Some(id)
        );
        assert_eq!(trace_id_of(&id.to_uppercase()).as_deref(), Some(id));
        for bad in ["", "xyz", &id[..31], "00-abc-00f067aa0ba902b7-01"] {
            assert_eq!(trace_id_of(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn the_admin_as_host_port_or_as_a_url() {
        for ok in [
            "127.0.0.1:9900",
            "http://127.0.0.1:9900",
            "http://127.0.0.1:9900/",
        ] {
            assert_eq!(admin_addr(ok).unwrap(), "127.0.0.1:9900", "{ok}");
        }
        for bad in ["", "127.0.0.1", "https://127.0.0.1:9900/"] {
            assert!(admin_addr(bad).is_err(), "{bad:?}");
        }
    }
}
