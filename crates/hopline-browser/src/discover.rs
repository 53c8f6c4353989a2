//! The preload scanner: finds the subresources a page needs while its HTML streams in
//! (stylesheets, scripts, images with `src`/`srcset`, icons, preloads, fonts), and
//! `url()` / `@import` inside stylesheets. HTML is tokenized by lol_html, a streaming,
//! spec-following parser, so discovery starts before the body ends.

use std::sync::Arc;

use url::Url;

/// A subresource found in a page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// Absolute URL.
    pub url: Url,
    /// stylesheet | script | image | icon | font | preload | other
    pub kind: String,
}

type Sink = Arc<parking_lot::Mutex<Vec<Found>>>;

type Rewriter = lol_html::send::HtmlRewriter<'static, fn(&[u8])>;

/// A streaming HTML scanner; feed chunks, collect what appeared.
pub struct HtmlScanner {
    rewriter: Option<Rewriter>,
    found: Sink,
    taken: usize,
}

fn push(sink: &Sink, base: &Url, href: &str, kind: &str) {
    let href = href.trim();
    if href.is_empty()
        || href.starts_with("data:")
        || href.starts_with('#')
        || href.starts_with("javascript:")
    {
        return;
    }
    if let Ok(u) = base.join(href)
        && matches!(u.scheme(), "http" | "https")
    {
        let mut v = sink.lock();
        if !v.iter().any(|f| f.url == u) {
            v.push(Found {
                url: u,
                kind: kind.into(),
            });
        }
    }
}

fn srcset(sink: &Sink, base: &Url, value: &str, kind: &str) {
    for candidate in value.split(',') {
        if let Some(u) = candidate.split_whitespace().next() {
            push(sink, base, u, kind);
        }
    }
}

impl HtmlScanner {
    /// A scanner resolving relative URLs against `base`.
    pub fn new(base: Url) -> HtmlScanner {
        use lol_html::element;
        let found: Sink = Arc::default();
        let (f1, f2, f3, f4, f5) = (
            found.clone(),
            found.clone(),
            found.clone(),
            found.clone(),
            found.clone(),
        );
        let (b1, b2, b3, b4, b5) = (base.clone(), base.clone(), base.clone(), base.clone(), base);
        let handlers = vec![
            element!("link[href]", move |el| {
                let rel = el
                    .get_attribute("rel")
                    .unwrap_or_default()
                    .to_ascii_lowercase();
                let href = el.get_attribute("href").unwrap_or_default();
                let kind = if rel.split_whitespace().any(|r| r == "stylesheet") {
                    "stylesheet"
                } else if rel.contains("icon") {
                    "icon"
                } else if rel
                    .split_whitespace()
                    .any(|r| r == "preload" || r == "modulepreload")
                {
                    match el.get_attribute("as").as_deref() {
                        Some("font") => "font",
                        Some("style") => "stylesheet",
                        Some("script") => "script",
                        Some("image") => "image",
                        _ => "preload",
                    }
                } else {
                    return Ok(());
                };
                push(&f1, &b1, &href, kind);
                Ok(())
            }),
            element!("script[src]", move |el| {
                push(
                    &f2,
                    &b2,
                    &el.get_attribute("src").unwrap_or_default(),
                    "script",
                );
                Ok(())
            }),
            element!("img", move |el| {
                if let Some(s) = el.get_attribute("src") {
                    push(&f3, &b3, &s, "image");
                }
                if let Some(s) = el.get_attribute("srcset") {
                    srcset(&f3, &b3, &s, "image");
                }
                Ok(())
            }),
            element!("source[srcset]", move |el| {
                srcset(
                    &f4,
                    &b4,
                    &el.get_attribute("srcset").unwrap_or_default(),
                    "image",
                );
                Ok(())
            }),
            element!("video[poster], input[type=image][src]", move |el| {
                if let Some(s) = el
                    .get_attribute("poster")
                    .or_else(|| el.get_attribute("src"))
                {
                    push(&f5, &b5, &s, "image");
                }
                Ok(())
            }),
        ];
        let settings = lol_html::send::Settings {
            element_content_handlers: handlers,
            ..lol_html::send::Settings::new_send()
        };
        let sink: fn(&[u8]) = |_| {};
        HtmlScanner {
            rewriter: Some(lol_html::send::HtmlRewriter::new(settings, sink)),
            found,
            taken: 0,
        }
    }

    /// Feed the next chunk of HTML; returns what it revealed.
    pub fn feed(&mut self, chunk: &[u8]) -> Vec<Found> {
        if let Some(r) = &mut self.rewriter
            && r.write(chunk).is_err()
        {
            self.rewriter = None; // malformed beyond repair: stop scanning, keep what we have
        }
        self.take()
    }

    /// The document ended.
    pub fn finish(&mut self) -> Vec<Found> {
        if let Some(r) = self.rewriter.take() {
            let _ = r.end();
        }
        self.take()
    }

    fn take(&mut self) -> Vec<Found> {
        let v = self.found.lock();
        let out = v[self.taken..].to_vec();
        self.taken = v.len();
        out
    }
}

/// `url(...)` and `@import` references of a stylesheet.
pub fn css_refs(css: &str, base: &Url) -> Vec<Found> {
    let sink: Sink = Arc::default();
    let bytes = css.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if css[i..].starts_with("/*") {
            i = css[i..]
                .find("*/")
                .map(|e| i + e + 2)
                .unwrap_or(bytes.len());
            continue;
        }
        if css[i..].starts_with("@import") {
            let rest = css[i + 7..].trim_start();
            let target = if rest.starts_with("url(") {
                None // handled by url( below
            } else {
                let q = rest.chars().next().unwrap_or(' ');
                if q == '"' || q == '\'' {
                    rest[1..].split(q).next()
                } else {
                    None
                }
            };
            if let Some(t) = target {
                push(&sink, base, t, "stylesheet");
            } else if let Some(inner) = rest.strip_prefix("url(").and_then(|r| r.split(')').next())
            {
                push(
                    &sink,
                    base,
                    inner.trim().trim_matches(['"', '\'']),
                    "stylesheet",
                );
                i += 7;
                continue;
            }
            i += 7;
            continue;
        }
        if css[i..].starts_with("url(") {
            if let Some(inner) = css[i + 4..].split(')').next() {
                let u = inner.trim().trim_matches(['"', '\'']);
                let lower = u.to_ascii_lowercase();
                let kind = if [".woff2", ".woff", ".ttf", ".otf", ".eot"]
                    .iter()
                    .any(|e| lower.split('?').next().unwrap_or("").ends_with(e))
                {
                    "font"
                } else {
                    "image"
                };
                push(&sink, base, u, kind);
            }
            i += 4;
            continue;
        }
        i += css[i..].chars().next().map(|c| c.len_utf8()).unwrap_or(1);
    }
    sink.lock().clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_subresources_across_chunk_boundaries() {
        let base = Url::parse("https://shop.test/a/page.html").unwrap();
        let html = r#"<!doctype html><html><head><link rel="stylesheet" href="/css/site.css"><link rel="icon" href="fav.ico"><link rel="preload" as="font" href="/f.woff2" crossorigin><script src="app.js" defer></script></head><body><img src="x.png" srcset="x2.png 2x, x3.png 3x"><picture><source srcset="p.webp"></picture><img src="data:image/png;base64,AAA"><a href="/not-a-resource">x</a></body></html>"#;
        let mut s = HtmlScanner::new(base);
        let mut all = Vec::new();
        for chunk in html.as_bytes().chunks(7) {
            all.extend(s.feed(chunk));
        }
        all.extend(s.finish());
        let got: Vec<(String, String)> = all
            .iter()
            .map(|f| (f.url.to_string(), f.kind.clone()))
            .collect();
        assert_eq!(
            got,
            vec![
                ("https://shop.test/css/site.css".into(), "stylesheet".into()),
                ("https://shop.test/a/fav.ico".into(), "icon".into()),
                ("https://shop.test/f.woff2".into(), "font".into()),
                ("https://shop.test/a/app.js".into(), "script".into()),
                ("https://shop.test/a/x.png".into(), "image".into()),
                ("https://shop.test/a/x2.png".into(), "image".into()),
                ("https://shop.test/a/x3.png".into(), "image".into()),
                ("https://shop.test/a/p.webp".into(), "image".into()),
            ]
        );
    }

    #[test]
    fn css_urls_and_imports() {
        let base = Url::parse("http://shop.test/css/site.css").unwrap();
        let css = "@import \"reset.css\";\n@import url(print.css) print;\n/* url(ignored.png) */ body { background: url('/img/bg.png') } @font-face { src: url(\"../fonts/a.woff2?v=1\") format('woff2'); }";
        let got: Vec<(String, String)> = css_refs(css, &base)
            .into_iter()
            .map(|f| (f.url.to_string(), f.kind))
            .collect();
        assert_eq!(
            got,
            vec![
                ("http://shop.test/css/reset.css".into(), "stylesheet".into()),
                ("http://shop.test/css/print.css".into(), "stylesheet".into()),
                ("http://shop.test/img/bg.png".into(), "image".into()),
                ("http://shop.test/fonts/a.woff2?v=1".into(), "font".into()),
            ]
        );
    }
}
