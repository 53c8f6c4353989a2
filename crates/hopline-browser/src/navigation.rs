//! A navigation: the document (following redirects per the Fetch spec, with a loop and
//! count limit), then — while its HTML is still streaming in — every subresource the
//! preload scanner finds, and the ones stylesheets reference, fetched concurrently over
//! the client's pooled connections. The result is a [`Navigation`] timeline.

use std::collections::HashSet;
use std::sync::Arc;

use tokio::sync::mpsc;
use url::Url;

use crate::discover::{HtmlScanner, css_refs};
use crate::fetch::Client;
use crate::timeline::{Entry, Navigation, PageTimings};

/// What to load.
#[derive(Debug, Clone)]
pub struct VisitOptions {
    /// Load subresources too.
    pub subresources: bool,
    /// Redirects followed at most (the Fetch spec's limit is 20).
    pub max_redirects: usize,
}

impl Default for VisitOptions {
    fn default() -> Self {
        VisitOptions {
            subresources: true,
            max_redirects: 20,
        }
    }
}

enum Msg {
    Found {
        url: Url,
        kind: String,
        initiator: usize,
    },
    Done(Box<Entry>),
}

/// Load `url` and everything it needs.
pub async fn navigate(client: Arc<Client>, url: Url, opts: VisitOptions) -> Navigation {
    let started_unix_us = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64);
    let started = crate::har::iso_us(started_unix_us);
    // the client's clock may have started at an earlier navigation: times here count
    // from this navigation's start
    let base = client.epoch.elapsed().as_secs_f64() * 1000.0;
    let (tx, mut rx) = mpsc::unbounded_channel::<Msg>();
    client.restart_ids();
    let mut entries: Vec<Entry> = Vec::new();

    // the document and its redirects, scanned while it streams
    let doc_client = client.clone();
    let doc_tx = tx.clone();
    let first_url = url.clone();
    let subresources = opts.subresources;
    let max_redirects = opts.max_redirects;
    let doc = tokio::spawn(async move {
        let mut url = first_url;
        let mut seen = HashSet::new();
        let mut redirects = 0;
        loop {
            let id = doc_client.next_id();
            seen.insert(url.to_string());
            let mut scanner = HtmlScanner::new(url.clone());
            let tx2 = doc_tx.clone();
            let mut on_chunk = |chunk: &[u8]| {
                if subresources {
                    for f in scanner.feed(chunk) {
                        let _ = tx2.send(Msg::Found {
                            url: f.url,
                            kind: f.kind,
                            initiator: id,
                        });
                    }
                }
            };
            let mut fetched = doc_client
                .get(id, &url, "document", None, Some(&mut on_chunk))
                .await;
            if subresources && fetched.entry.redirect_to.is_none() && fetched.entry.error.is_none()
            {
                for f in scanner.finish() {
                    let _ = doc_tx.send(Msg::Found {
                        url: f.url,
                        kind: f.kind,
                        initiator: id,
                    });
                }
            }
            let next = fetched.entry.redirect_to.clone();
            match next {
                Some(target) if fetched.entry.error.is_none() => {
                    redirects += 1;
                    if seen.contains(&target) {
                        fetched.entry.error =
                            Some(format!("redirect loop: {target} was already visited"));
                    } else if redirects > max_redirects {
                        fetched.entry.error = Some(format!("more than {max_redirects} redirects"));
                    }
                    let stop = fetched.entry.error.is_some();
                    let _ = doc_tx.send(Msg::Done(Box::new(fetched.entry)));
                    if stop {
                        return;
                    }
                    match Url::parse(&target) {
                        Ok(u) => url = u,
                        Err(_) => return,
                    }
                }
                _ => {
                    let _ = doc_tx.send(Msg::Done(Box::new(fetched.entry)));
                    return;
                }
            }
        }
    });
    drop(tx);

    let mut wanted: HashSet<String> = HashSet::new();
    let (sub_tx, mut sub_rx) = mpsc::unbounded_channel::<Msg>();
    let mut pending = 0usize;
    let mut doc_open = true;
    loop {
        let msg = tokio::select! {
            m = rx.recv(), if doc_open => match m { Some(m) => m, None => { doc_open = false; continue } },
            m = sub_rx.recv(), if pending > 0 => match m { Some(m) => m, None => break },
            else => break,
        };
        match msg {
            Msg::Found {
                url,
                kind,
                initiator,
            } => {
                if !wanted.insert(url.to_string()) {
                    continue;
                }
                pending += 1;
                let (client, tx) = (client.clone(), sub_tx.clone());
                tokio::spawn(async move {
                    let id = client.next_id();
                    let f = client.get(id, &url, &kind, Some(initiator), None).await;
                    let is_css = kind == "stylesheet"
                        || f.entry
                            .content_type
                            .as_deref()
                            .is_some_and(|c| c.starts_with("text/css"));
                    if is_css && f.entry.error.is_none() {
                        for r in css_refs(&String::from_utf8_lossy(&f.body), &url) {
                            let _ = tx.send(Msg::Found {
                                url: r.url,
                                kind: r.kind,
                                initiator: id,
                            });
                        }
                    }
                    let _ = tx.send(Msg::Done(Box::new(f.entry)));
                });
            }
            Msg::Done(e) => {
                if e.kind != "document" {
                    pending -= 1;
                }
                entries.push(*e);
                if !doc_open && pending == 0 {
                    break;
                }
            }
        }
    }
    let _ = doc.await;
    // the questions the client asked over DNS over HTTPS are requests of their own
    entries.extend(client.take_side_entries());
    for e in &mut entries {
        e.start = (e.start - base).max(0.0);
    }
    entries.sort_by(|a, b| a.start.total_cmp(&b.start).then(a.id.cmp(&b.id)));
    let final_doc = entries.iter().rfind(|e| e.kind == "document").cloned();
    let first_doc = entries.iter().find(|e| e.kind == "document").cloned();
    let mut page = PageTimings {
        requests: entries.len(),
        transfer_bytes: entries.iter().map(|e| e.transfer_bytes).sum(),
        connections: entries
            .iter()
            .filter(|e| !e.reused && e.connection.is_some())
            .count(),
        reused: entries.iter().filter(|e| e.reused).count(),
        failed: entries.iter().filter(|e| e.error.is_some()).count(),
        load: entries
            .iter()
            .map(|e| e.start + e.phases.total())
            .fold(0.0, f64::max),
        ..Default::default()
    };
    if let Some(d) = &first_doc {
        page.dns = d.phases.dns.unwrap_or(0.0);
        page.connect = d.phases.connect.unwrap_or(0.0);
        page.tls = d.phases.tls.unwrap_or(0.0);
    }
    if let Some(d) = &final_doc {
        let p = &d.phases;
        page.ttfb = d.start
            + p.blocked
            + p.dns.unwrap_or(0.0)
            + p.connect.unwrap_or(0.0)
            + p.tls.unwrap_or(0.0)
            + p.send
            + p.wait;
        page.dom_content_loaded = d.start + p.total();
    }
    Navigation {
        url: url.to_string(),
        final_url: final_doc.map(|d| d.url).unwrap_or_else(|| url.to_string()),
        started,
        started_unix_us,
        entries,
        page,
    }
}
