//! `hopline dns …`: what an operator of a signed zone needs from its keys — the DS
//! records to hand to the parent, and the keys themselves.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use hopline_dns::dnssec::keys::ZoneKeys;

/// DNSSEC keys of the zones hopline signs.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: DnsCommand,
}

#[derive(Debug, clap::Subcommand)]
enum DnsCommand {
    /// Print the DS records of a signed zone, for its parent.
    #[command(after_help = "\
The DS records are the SHA-256 digests of the zone's key-signing keys (those in its
DNSKEY RRset). Give them to the parent zone's operator (or put them in the parent's
zone file); a parent served by the same hopline takes them by itself.

Example:
  hopline dns ds shop.test --keys keys
  hopline dns ds shop.test --json | jq -r '.[].text'")]
    Ds(DsArgs),
    /// List the keys of a signed zone: role, algorithm, tag, state.
    #[command(after_help = "\
Example:
  hopline dns keys shop.test --keys keys")]
    Keys(DsArgs),
}

#[derive(Debug, clap::Args)]
struct DsArgs {
    /// The zone, e.g. shop.test (or . for the root).
    zone: String,
    /// The folder of the zone's keys (a zone's `dnssec = { keys = … }`, "keys" by default,
    /// relative to the config file).
    #[arg(long, default_value = "keys")]
    keys: PathBuf,
    /// TTL of the printed records.
    #[arg(long, default_value_t = 3600)]
    ttl: u32,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    match args.command {
        DnsCommand::Ds(a) => ds(a),
        DnsCommand::Keys(a) => keys(a),
    }
}

fn load(a: &DsArgs) -> anyhow::Result<ZoneKeys> {
    let mut zone = a.zone.clone();
    if !zone.ends_with('.') {
        zone.push('.');
    }
    let name = hickory_proto::rr::Name::from_ascii(&zone)
        .with_context(|| format!("{:?} is not a zone name (expected e.g. shop.test)", a.zone))?;
    ZoneKeys::load(&a.keys, &name)?.with_context(|| {
        format!(
            "no keys of {zone} in {} (a zone gets them when hopline serves it with dnssec = {{ … }}; --keys names the folder)",
            a.keys.display()
        )
    })
}

fn ds(a: DsArgs) -> anyhow::Result<ExitCode> {
    let keys = load(&a)?;
    let records = keys.ds_records(a.ttl);
    if a.json {
        let out: Vec<serde_json::Value> = records
            .iter()
            .map(|r| {
                let text = format!("{} {} IN DS {}", r.name, r.ttl, r.data);
                let mut fields = r.data.to_string();
                fields.push(' ');
                let f: Vec<&str> = fields.split_whitespace().collect();
                serde_json::json!({
                    "zone": r.name.to_string(),
                    "key_tag": f.first().and_then(|v| v.parse::<u16>().ok()),
                    "algorithm": f.get(1).and_then(|v| v.parse::<u8>().ok()),
                    "digest_type": f.get(2).and_then(|v| v.parse::<u8>().ok()),
                    "digest": f.get(3..).map(|d| d.concat()),
                    "text": text,
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        for r in &records {
            println!("{} {} IN DS {}", r.name, r.ttl, r.data);
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn keys(a: DsArgs) -> anyhow::Result<ExitCode> {
    let keys = load(&a)?;
    let rows: Vec<serde_json::Value> = keys
        .keys
        .iter()
        .map(|k| {
            serde_json::json!({
                "role": k.role,
                "algorithm": k.algorithm,
                "tag": k.tag,
                "state": k.state,
                "flags": k.dnskey.flags(),
            })
        })
        .collect();
    if a.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else {
        println!("{:<5} {:<16} {:>5}  state", "role", "algorithm", "tag");
        for r in &rows {
            println!(
                "{:<5} {:<16} {:>5}  {}",
                r["role"].as_str().unwrap_or(""),
                r["algorithm"].as_str().unwrap_or(""),
                r["tag"],
                r["state"].as_str().unwrap_or("")
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
