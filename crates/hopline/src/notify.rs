//! `hopline notify`: apps of a notification service (made in its database, also while it
//! runs), and a signed client for its API (`send`, `status`).

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};
use bytes::Bytes;
use http_body_util::BodyExt;

use crate::listen::{Dialer, Http, Reach};

/// The notification service: apps, sending, status.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Apps that may call the API (key, secrets, webhook secret).
    App {
        #[command(subcommand)]
        command: AppCommand,
    },
    /// Send a message through the API, signed with an app's key and secret.
    Send(SendArgs),
    /// A message's status and the timeline of its attempts.
    Status(StatusArgs),
    /// Counts and latencies per channel and status (GET /v1/analytics).
    Stats(StatsArgs),
    /// Queue again one message, or every dead or failed one since a time (e.g. all that
    /// failed for one endpoint).
    Retry(RetryArgs),
}

#[derive(Debug, clap::Args)]
#[command(after_help = "\
Examples:
  hopline notify retry msg_00001m9… --url $URL --app $KEY --secret $SECRET
  hopline notify retry --since 2h --to https://shop.example/hooks --app $KEY --secret $SECRET
  hopline notify retry --since 1d --status dead,failed,expired --channel webhook --json ...")]
struct RetryArgs {
    /// One message to queue again (else: every message the filters pick).
    id: Option<String>,
    /// How far back, e.g. 30m, 2h, 1d (with no id).
    #[arg(long, conflicts_with = "id", required_unless_present = "id")]
    since: Option<String>,
    /// Only messages to this recipient (an endpoint's URL, an address).
    #[arg(long, conflicts_with = "id")]
    to: Option<String>,
    /// Only this channel (webhook, email, sms, push).
    #[arg(long, conflicts_with = "id")]
    channel: Option<String>,
    /// Which statuses (comma separated): dead, failed, expired.
    #[arg(long, default_value = "dead,failed", conflicts_with = "id")]
    status: String,
    #[command(flatten)]
    api: Api,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Args)]
#[command(after_help = "Example:\n  hopline notify stats --app $KEY --secret $SECRET --since 1h")]
struct StatsArgs {
    #[command(flatten)]
    api: Api,
    /// How far back, e.g. 15m, 1h, 24h.
    #[arg(long, default_value = "24h")]
    since: String,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Subcommand)]
enum AppCommand {
    /// Make an app; prints its key, secret and webhook secret once.
    #[command(
        after_help = "Example:\n  hopline notify app create shop --config hopline.toml --json"
    )]
    Create {
        /// The app's name.
        name: String,
        #[command(flatten)]
        at: Where,
        /// Channels the app may use (default: all), e.g. webhook,email.
        #[arg(long, value_delimiter = ',')]
        channels: Option<Vec<String>>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// List the apps.
    List {
        #[command(flatten)]
        at: Where,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// A new secret for an app; the previous one stays valid until the next rotation.
    Rotate {
        /// The app's key.
        key: String,
        #[command(flatten)]
        at: Where,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// Which service's database.
#[derive(Debug, clap::Args)]
struct Where {
    /// The config file with the [notify.NAME] section.
    #[arg(long)]
    config: PathBuf,
    /// The section's NAME (default: the only one).
    #[arg(long)]
    service: Option<String>,
}

/// How to call the API.
#[derive(Debug, clap::Args)]
struct Api {
    /// The service's base URL, e.g. http://127.0.0.1:8080
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    url: String,
    /// The app's key.
    #[arg(long, env = "HOPLINE_APP_KEY", hide_env_values = true)]
    app: String,
    /// The app's secret.
    #[arg(long, env = "HOPLINE_APP_SECRET", hide_env_values = true)]
    secret: String,
    #[command(flatten)]
    reach: Reach,
}

#[derive(Debug, clap::Args)]
#[command(
    after_help = "Example:\n  hopline notify send --app $KEY --secret $SECRET --channel webhook --to https://example.com/hook --body 'order 42 paid'"
)]
struct SendArgs {
    #[command(flatten)]
    api: Api,
    /// webhook | email | sms | push
    #[arg(long, default_value = "webhook")]
    channel: String,
    /// The recipient.
    #[arg(long)]
    to: String,
    /// The text.
    #[arg(long)]
    body: String,
    /// Email subject.
    #[arg(long)]
    subject: Option<String>,
    /// high | normal | low
    #[arg(long)]
    priority: Option<String>,
    /// Sends again with the same key answer the first response (no second message).
    #[arg(long)]
    idempotency_key: Option<String>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Args)]
#[command(
    after_help = "Examples:\n  hopline notify status msg_0001… --app $KEY --secret $SECRET\n  hopline notify status msg_0001… --app $KEY --secret $SECRET --follow   # then each new attempt, until final"
)]
struct StatusArgs {
    /// The message id.
    id: String,
    #[command(flatten)]
    api: Api,
    /// Ask again every second until the message reaches a final status, printing only what
    /// changed (new attempts, a new status); with --json, every answer.
    #[arg(long)]
    follow: bool,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// "15m", "1h", "2d", "90s" → seconds.
fn parse_since(s: &str) -> anyhow::Result<u64> {
    let t = s.trim();
    let (n, unit) = t.split_at(t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len()));
    let n: u64 = n
        .parse()
        .map_err(|_| anyhow!("--since {s:?}: expected e.g. 15m, 1h or 2d"))?;
    Ok(match unit {
        "s" => n,
        "m" | "" => n * 60,
        "h" => n * 3600,
        "d" => n * 86_400,
        _ => bail!("--since {s:?}: unit s, m, h or d"),
    })
}

/// Where a service's apps live: its SQLite file, or (service name, Redis URL).
enum AppStore {
    Sqlite(PathBuf),
    Redis { service: String, url: String },
}

impl AppStore {
    fn create(
        &self,
        name: &str,
        channels: Option<Vec<String>>,
    ) -> Result<hopline_notify::store::NewApp, hopline_notify::store::StoreError> {
        match self {
            AppStore::Sqlite(db) => hopline_notify::store::apps::create(db, name, channels),
            AppStore::Redis { service, url } => {
                hopline_notify::store::redis::apps::create(url, service, name, channels)
            }
        }
    }

    fn list(&self) -> Result<Vec<hopline_notify::store::App>, hopline_notify::store::StoreError> {
        match self {
            AppStore::Sqlite(db) => hopline_notify::store::apps::list(db),
            AppStore::Redis { service, url } => {
                hopline_notify::store::redis::apps::list(url, service)
            }
        }
    }

    fn rotate(&self, key: &str) -> Result<String, hopline_notify::store::StoreError> {
        match self {
            AppStore::Sqlite(db) => hopline_notify::store::apps::rotate(db, key),
            AppStore::Redis { service, url } => {
                hopline_notify::store::redis::apps::rotate(url, service, key)
            }
        }
    }
}

fn database(at: &Where) -> anyhow::Result<AppStore> {
    let text = std::fs::read_to_string(&at.config)
        .with_context(|| format!("reading {}", at.config.display()))?;
    let sections = hopline_notify::config::load(
        &text,
        &at.config,
        &hopline_notify::product::base_of(&at.config),
    )?;
    let (name, section) = match &at.service {
        Some(n) => sections
            .get_key_value(n)
            .ok_or_else(|| anyhow!("{} has no [notify.{n}]", at.config.display()))?,
        None if sections.len() == 1 => sections.iter().next().expect("one"),
        None if sections.is_empty() => {
            bail!("{} has no [notify.NAME] section", at.config.display())
        }
        None => bail!(
            "{} has several [notify.*] sections: name one with --service",
            at.config.display()
        ),
    };
    Ok(if section.engine.starts_with("redis://") {
        AppStore::Redis {
            service: name.clone(),
            url: section.engine.clone(),
        }
    } else {
        AppStore::Sqlite(section.database.clone())
    })
}

/// A signed request to the API.
async fn call(
    api: &Api,
    method: http::Method,
    path_and_query: &str,
    body: Bytes,
    extra: &[(&str, String)],
) -> anyhow::Result<(http::StatusCode, serde_json::Value)> {
    let base = api.url.trim_end_matches('/');
    let dialer = Dialer::new(&format!("{base}{path_and_query}"), &api.reach).await?;
    let url = url::Url::parse(&format!("{base}{path_and_query}"))?;
    let ts = (hopline_notify::now_ms() / 1000).to_string();
    let nonce = hopline_notify::model::random_token(12);
    let canonical = hopline_notify::model::canonical(
        method.as_str(),
        url.path(),
        url.query(),
        &ts,
        &nonce,
        &body,
    );
    let mut headers: Vec<(&str, String)> = vec![
        ("x-app-key", api.app.clone()),
        ("x-timestamp", ts),
        ("x-nonce", nonce),
        (
            "x-signature",
            hopline_notify::model::sign(&api.secret, &canonical),
        ),
        ("content-type", "application/json".into()),
    ];
    headers.extend(extra.iter().cloned());
    let path = match url.query() {
        Some(q) => format!("{}?{q}", url.path()),
        None => url.path().to_string(),
    };
    let mut http = Http::new(dialer, Arc::default());
    let (status, body) = http
        .send(method, &path, &headers, body, Duration::from_secs(20))
        .await?;
    let body = body.collect().await?.to_bytes();
    let v = serde_json::from_slice(&body)
        .unwrap_or_else(|_| serde_json::json!({"raw": String::from_utf8_lossy(&body)}));
    Ok((status, v))
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    match args.command {
        Command::App { command } => match command {
            AppCommand::Create {
                name,
                at,
                channels,
                json,
            } => {
                let a = database(&at)?.create(&name, channels)?;
                if json {
                    println!("{}", serde_json::to_string_pretty(&a)?);
                } else {
                    println!("app {name} made; keep the secrets now, they are not shown again:");
                    println!("  key             {}", a.key);
                    println!("  secret          {}", a.secret);
                    println!(
                        "  webhook secret  {}   (verifies the webhooks it sends)",
                        a.webhook_secret
                    );
                }
                Ok(ExitCode::SUCCESS)
            }
            AppCommand::List { at, json } => {
                let apps = database(&at)?.list()?;
                if json {
                    println!("{}", serde_json::to_string_pretty(&apps)?);
                } else {
                    for a in apps {
                        println!(
                            "{}  {}  channels: {}",
                            a.key,
                            a.name,
                            a.channels
                                .map(|c| c.join(","))
                                .unwrap_or_else(|| "all".into())
                        );
                    }
                }
                Ok(ExitCode::SUCCESS)
            }
            AppCommand::Rotate { key, at, json } => {
                let s = database(&at)?.rotate(&key)?;
                if json {
                    println!("{}", serde_json::json!({"key": key, "secret": s}));
                } else {
                    println!(
                        "new secret for {key}: {s}\n(the previous secret stays valid until the next rotation)"
                    );
                }
                Ok(ExitCode::SUCCESS)
            }
        },
        Command::Send(a) => crate::runtime::runtime(1)?.block_on(async move {
            let body = serde_json::json!({
                "channel": a.channel, "to": a.to, "body": a.body,
                "subject": a.subject, "priority": a.priority,
            });
            let extra: Vec<(&str, String)> = a
                .idempotency_key
                .iter()
                .map(|k| ("idempotency-key", k.clone()))
                .collect();
            let (status, v) = call(
                &a.api,
                http::Method::POST,
                "/v1/messages",
                Bytes::from(body.to_string()),
                &extra,
            )
            .await?;
            if a.json {
                println!("{v}");
            } else if status.is_success() {
                println!(
                    "{} {}",
                    v["id"].as_str().unwrap_or("?"),
                    v["status"].as_str().unwrap_or("?")
                );
            }
            answered(status, &v)?;
            Ok(ExitCode::SUCCESS)
        }),
        Command::Stats(a) => crate::runtime::runtime(1)?.block_on(async move {
            let secs = parse_since(&a.since)?;
            let from = hopline_notify::now_ms() / 1000 - secs;
            let (status, v) = call(
                &a.api,
                http::Method::GET,
                &format!("/v1/analytics?from={from}"),
                Bytes::new(),
                &[],
            )
            .await?;
            answered(status, &v)?;
            if a.json {
                println!("{v}");
                return Ok(ExitCode::SUCCESS);
            }
            println!("messages accepted in the last {}:\n", a.since);
            print!("{}", stats_table(&v));
            Ok(ExitCode::SUCCESS)
        }),
        Command::Retry(a) => crate::runtime::runtime(1)?.block_on(async move {
            let path = match (&a.id, &a.since) {
                (Some(id), _) => format!("/v1/messages/{id}/retry"),
                (None, Some(since)) => {
                    let from = hopline_notify::now_ms() / 1000 - parse_since(since)?;
                    let mut q = url::form_urlencoded::Serializer::new(String::new());
                    q.append_pair("status", &a.status);
                    q.append_pair("since", &from.to_string());
                    if let Some(to) = &a.to {
                        q.append_pair("to", to);
                    }
                    if let Some(c) = &a.channel {
                        q.append_pair("channel", c);
                    }
                    format!("/v1/messages/retry?{}", q.finish())
                }
                (None, None) => bail!("give a message id, or --since"),
            };
            let (status, v) = call(&a.api, http::Method::POST, &path, Bytes::new(), &[]).await?;
            answered(status, &v)?;
            if a.json {
                println!("{v}");
            } else if let Some(id) = &a.id {
                println!("{id} queued again");
            } else {
                println!(
                    "{} message(s) queued again{}",
                    v["retried"],
                    if v["more"] == true {
                        " (more match: run it again)"
                    } else {
                        ""
                    }
                );
            }
            Ok(ExitCode::SUCCESS)
        }),
        Command::Status(a) => crate::runtime::runtime(1)?.block_on(async move {
            let mut seen: Option<Seen> = None;
            loop {
                let (status, v) = call(
                    &a.api,
                    http::Method::GET,
                    &format!("/v1/messages/{}", a.id),
                    Bytes::new(),
                    &[],
                )
                .await?;
                if !status.is_success() {
                    bail!(
                        "{status}: {}",
                        v["error"]["message"].as_str().unwrap_or(&v.to_string())
                    );
                }
                let st = v["message"]["status"].as_str().unwrap_or("?").to_string();
                if a.json {
                    println!("{v}");
                } else {
                    use std::io::Write as _;
                    let text = match &mut seen {
                        None => {
                            let (text, s) = status_block(&a.id, &v);
                            seen = Some(s);
                            text
                        }
                        Some(s) => s.changes(&v),
                    };
                    let mut out = std::io::stdout().lock();
                    out.write_all(text.as_bytes())?;
                    out.flush()?;
                }
                let done = hopline_notify::model::Status::parse(&st).is_some_and(|s| s.is_final());
                if !a.follow || done {
                    return Ok(ExitCode::SUCCESS);
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }),
    }
}

/// What `status --follow` has printed so far: the attempts (by number) and the status.
#[derive(Debug)]
struct Seen {
    attempts: u64,
    status: String,
}

/// The first answer of `status`: the message's line and its attempts, and what was shown.
fn status_block(id: &str, v: &serde_json::Value) -> (String, Seen) {
    let m = &v["message"];
    let status = m["status"].as_str().unwrap_or("?").to_string();
    let count = m["attempts"].as_u64().unwrap_or(0);
    let mut text = format!(
        "{id} {} → {status} ({count} attempt{})\n",
        m["channel"].as_str().unwrap_or("?"),
        if count == 1 { "" } else { "s" }
    );
    let mut seen = Seen {
        attempts: 0,
        status,
    };
    for t in v["attempts"].as_array().into_iter().flatten() {
        text.push_str(&attempt_line(t));
        seen.attempts = seen.attempts.max(t["n"].as_u64().unwrap_or(0));
    }
    (text, seen)
}

impl Seen {
    /// What a later answer adds: attempts not printed yet, then the status if it moved.
    fn changes(&mut self, v: &serde_json::Value) -> String {
        let mut text = String::new();
        for t in v["attempts"].as_array().into_iter().flatten() {
            let n = t["n"].as_u64().unwrap_or(0);
            if n > self.attempts {
                text.push_str(&attempt_line(t));
                self.attempts = n;
            }
        }
        let status = v["message"]["status"].as_str().unwrap_or("?");
        if status != self.status {
            text.push_str(&format!("  → {status}\n"));
            self.status = status.to_string();
        }
        text
    }
}

/// One attempt for a person: its number, time, result and what answered (an HTTP status,
/// or why none came: the attempt's error), e.g. `attempt 2 (3.1 ms): retry — HTTP 503`.
fn attempt_line(t: &serde_json::Value) -> String {
    let result = t["result"].as_str().unwrap_or("?");
    let answer = match (t["http_status"].as_u64(), t["error"].as_str()) {
        (Some(code), None) => format!("HTTP {code}"),
        (Some(code), Some(e)) => format!("HTTP {code}: {e}"),
        // (refused before sending: a private address, a bad URL, a disabled endpoint)
        (None, Some(e)) if result == "failed" => format!("not sent: {e}"),
        (None, Some(e)) => format!("no answer: {e}"),
        (None, None) => "no answer".to_string(),
    };
    format!(
        "  attempt {} ({:.1} ms): {result} — {answer}\n",
        t["n"].as_u64().unwrap_or(0),
        t["latency_ms"].as_f64().unwrap_or(0.0),
    )
}

/// `stats` as a table whose columns are as wide as their widest cell (names left,
/// numbers right, two spaces between).
/// The API's refusal as an error: its status and message.
fn answered(status: http::StatusCode, v: &serde_json::Value) -> anyhow::Result<()> {
    if !status.is_success() {
        bail!(
            "{status}: {}",
            v["error"]["message"].as_str().unwrap_or(&v.to_string())
        );
    }
    Ok(())
}

fn stats_table(v: &serde_json::Value) -> String {
    const HEADER: [&str; 7] = [
        "channel",
        "status",
        "count",
        "accept→sent p50",
        "accept→sent p99",
        "sent→delivered p50",
        "sent→delivered p99",
    ];
    let ms = |x: &serde_json::Value| x.as_f64().map_or("-".to_string(), |v| format!("{v:.0} ms"));
    let mut rows: Vec<Vec<String>> = vec![HEADER.iter().map(|h| h.to_string()).collect()];
    for g in v["groups"].as_array().into_iter().flatten() {
        rows.push(vec![
            g["channel"].as_str().unwrap_or("?").to_string(),
            g["status"].as_str().unwrap_or("?").to_string(),
            g["count"].as_u64().unwrap_or(0).to_string(),
            ms(&g["accepted_to_sent_ms"]["p50"]),
            ms(&g["accepted_to_sent_ms"]["p99"]),
            ms(&g["sent_to_delivered_ms"]["p50"]),
            ms(&g["sent_to_delivered_ms"]["p99"]),
        ]);
    }
    table(&rows, &[false, false, true, true, true, true, true])
}

/// Rows (the first is the header) as aligned text: each column as wide as its widest
/// cell in characters, left- or right-aligned, two spaces apart, no trailing spaces.
fn table(rows: &[Vec<String>], right: &[bool]) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|cell| cell.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut text = String::new();
    for row in rows {
        let mut line = String::new();
        for (c, cell) in row.iter().enumerate() {
            if c > 0 {
                line.push_str("  ");
            }
            let pad = " ".repeat(widths[c] - cell.chars().count());
            if right.get(c).copied().unwrap_or(false) {
                line.push_str(&pad);
                line.push_str(cell);
            } else {
                line.push_str(cell);
                line.push_str(&pad);
            }
        }
        text.push_str(line.trim_end());
        text.push('\n');
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_attempt_without_an_answer_says_why_not_null() {
        let t = serde_json::json!({"n": 1, "result": "retry", "http_status": null,
            "latency_ms": 1.04, "error": "connect to 127.0.0.1:9: Connection refused"});
        assert_eq!(
            attempt_line(&t),
            "  attempt 1 (1.0 ms): retry — no answer: connect to 127.0.0.1:9: Connection refused\n"
        );
        let t = serde_json::json!({"n": 2, "result": "delivered", "http_status": 200,
            "latency_ms": 3.0, "error": null});
        assert_eq!(
            attempt_line(&t),
            "  attempt 2 (3.0 ms): delivered — HTTP 200\n"
        );
        let t = serde_json::json!({"n": 1, "result": "failed", "latency_ms": 0.0,
            "error": "endpoint disabled (it answered 410 Gone)"});
        assert_eq!(
            attempt_line(&t),
            "  attempt 1 (0.0 ms): failed — not sent: endpoint disabled (it answered 410 Gone)\n"
        );
    }

    #[test]
    fn follow_prints_only_new_attempts_and_status_moves() {
        let at = |n: u32, status: &str| {
            serde_json::json!({"message": {"channel": "webhook", "status": status, "attempts": n},
                "attempts": (1..=n).map(|i| serde_json::json!({"n": i, "result": "retry",
                    "http_status": 503, "latency_ms": 1.0})).collect::<Vec<_>>()})
        };
        let (block, mut seen) = status_block("m1", &at(1, "queued"));
        assert_eq!(
            block,
            "m1 webhook → queued (1 attempt)\n  attempt 1 (1.0 ms): retry — HTTP 503\n"
        );
        assert_eq!(seen.changes(&at(1, "queued")), "");
        assert_eq!(seen.changes(&at(1, "sending")), "  → sending\n");
        assert_eq!(
            seen.changes(&at(3, "dead")),
            "  attempt 2 (1.0 ms): retry — HTTP 503\n  attempt 3 (1.0 ms): retry — HTTP 503\n  → dead\n"
        );
    }

    #[test]
    fn table_columns_are_as_wide_as_their_widest_cell() {
        let rows = vec![
            vec!["channel".to_string(), "count".into(), "accept→sent".into()],
            vec!["webhook".to_string(), "12345678".into(), "3 ms".into()],
            vec!["sms".to_string(), "1".into(), "-".into()],
        ];
        assert_eq!(
            table(&rows, &[false, true, true]),
            "channel     count  accept→sent\nwebhook  12345678         3 ms\nsms             1            -\n"
        );
    }
}
