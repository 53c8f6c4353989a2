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
    /// Take the next step of a key rollover (run it three times, waiting in between).
    #[command(after_help = "\
A ZSK rolls by pre-publication: (1) the next ZSK enters the DNSKEY RRset, not signing;
(2) after the DNSKEY TTL it signs, the old one stays published; (3) after the zone's
largest TTL the old one leaves. A KSK rolls by double DS: (1) the next KSK's DS goes to
the parent beside the old one; (2) after the DS TTL the keys swap in the DNSKEY RRset;
(3) after the DNSKEY TTL the old DS leaves. Each step changes the key list; the server
applies it at its next reload (SIGHUP). Each run says what it did and what to wait for.

Example:
  hopline dns rollover zsk shop.test --keys keys && kill -HUP $(pidof hopline)")]
    Rollover(RolloverArgs),
}

#[derive(Debug, clap::Args)]
struct RolloverArgs {
    /// Which key: zsk or ksk.
    #[arg(value_parser = ["zsk", "ksk"])]
    role: String,
    #[command(flatten)]
    zone: DsArgs,
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
        DnsCommand::Rollover(a) => rollover(a),
    }
}

fn zone_name(zone: &str) -> anyhow::Result<hickory_proto::rr::Name> {
    let mut z = zone.to_string();
    if !z.ends_with('.') {
        z.push('.');
    }
    hickory_proto::rr::Name::from_ascii(&z)
        .with_context(|| format!("{zone:?} is not a zone name (expected e.g. shop.test)"))
}

fn rollover(a: RolloverArgs) -> anyhow::Result<ExitCode> {
    use hopline_dns::dnssec::keys::Role;
    let role = if a.role == "ksk" {
        Role::Ksk
    } else {
        Role::Zsk
    };
    let name = zone_name(&a.zone.zone)?;
    let step = ZoneKeys::roll(&a.zone.keys, &name, role)?;
    if a.zone.json {
        println!("{}", serde_json::to_string_pretty(&step)?);
    } else {
        println!("step {} of 3: {}", step.step, step.did);
        println!("next: {}", step.next);
    }
    Ok(ExitCode::SUCCESS)
}

fn load(a: &DsArgs) -> anyhow::Result<ZoneKeys> {
    let name = zone_name(&a.zone)?;
    ZoneKeys::load(&a.keys, &name)?.with_context(|| {
        format!(
            "no keys of {name} in {} (a zone gets them when hopline serves it with dnssec = {{ … }}; --keys names the folder)",
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
