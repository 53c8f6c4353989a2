//! Static files through a real server and a real client: index files, MIME types,
//! validators and 304s, ranges, compression, streaming of large files, and no path
//! ever escaping the root.

mod common;

use std::io::Read;
use std::time::Duration;

use common::{client, raw, start_in};
use reqwest::StatusCode;

fn site(dir: &tempfile::TempDir, extra_route: &str) -> String {
    let root = dir.path().join("public");
    std::fs::create_dir_all(root.join("docs")).unwrap();
    std::fs::write(
        root.join("index.html"),
        "<!doctype html><title>home</title>\n",
    )
    .unwrap();
    std::fs::write(root.join("docs/index.html"), "<p>docs</p>\n").unwrap();
    std::fs::write(root.join("hello.txt"), "hello, world\n").unwrap();
    std::fs::write(root.join("app.js"), "console.log('x');\n".repeat(100)).unwrap();
    std::fs::write(root.join("style.css"), "body { color: red; }\n".repeat(100)).unwrap();
    std::fs::write(root.join("pic.png"), vec![0x89u8; 4000]).unwrap();
    std::fs::write(root.join("data.json"), "{\"k\": [1,2,3]}").unwrap();
    std::fs::write(dir.path().join("secret.txt"), "outside the root\n").unwrap();
    format!(
        r#"
access_log = "off"
file_cache = {{ valid_ms = 0 }}
[[site]]
listen = ["127.0.0.1:0"]
  [[site.route]]
  path = "/"
  root = "public"
  cache_control = "public, max-age=300"
{extra_route}
"#
    )
}

#[tokio::test]
async fn files_index_mime_head_and_errors() {
    let dir = tempfile::tempdir().unwrap();
    let toml = site(&dir, "");
    let t = start_in(dir, &toml).await;
    let c = client();

    let r = c.get(t.url("/")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["content-type"], "text/html; charset=utf-8");
    assert_eq!(r.headers()["cache-control"], "public, max-age=300");
    assert_eq!(r.headers()["server"], "hopline");
    assert!(r.headers().contains_key("date"));
    assert_eq!(
        r.text().await.unwrap(),
        "<!doctype html><title>home</title>\n"
    );

    let r = c.get(t.url("/docs/")).send().await.unwrap();
    assert_eq!(r.text().await.unwrap(), "<p>docs</p>\n");
    // a folder without the slash redirects to it, keeping the query
    let r = c.get(t.url("/docs?x=1")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::MOVED_PERMANENTLY);
    assert_eq!(r.headers()["location"], "/docs/?x=1");

    for (path, ct) in [
        ("/app.js", "text/javascript; charset=utf-8"),
        ("/style.css", "text/css; charset=utf-8"),
        ("/pic.png", "image/png"),
        ("/data.json", "application/json; charset=utf-8"),
        ("/hello.txt", "text/plain; charset=utf-8"),
    ] {
        let r = c.get(t.url(path)).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{path}");
        let got = r.headers()["content-type"].to_str().unwrap().to_string();
        assert!(
            got == ct || (path == "/app.js" && got == "application/javascript; charset=utf-8"),
            "{path}: {got}"
        );
    }

    let r = c.head(t.url("/hello.txt")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["content-length"], "13");
    assert_eq!(r.bytes().await.unwrap().len(), 0);

    assert_eq!(
        c.get(t.url("/nope.txt")).send().await.unwrap().status(),
        StatusCode::NOT_FOUND
    );
    let r = c.post(t.url("/hello.txt")).body("x").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(r.headers()["allow"], "GET, HEAD");
    // a file addressed as a folder is not there
    assert_eq!(
        c.get(t.url("/hello.txt/")).send().await.unwrap().status(),
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn no_path_escapes_the_root() {
    let dir = tempfile::tempdir().unwrap();
    let toml = site(&dir, "");
    std::os::unix::fs::symlink(
        dir.path().join("secret.txt"),
        dir.path().join("public/link.txt"),
    )
    .unwrap();
    std::os::unix::fs::symlink(dir.path(), dir.path().join("public/up")).unwrap();
    std::fs::write(dir.path().join("public/inside.txt"), "fine\n").unwrap();
    std::os::unix::fs::symlink(
        dir.path().join("public/inside.txt"),
        dir.path().join("public/ok-link.txt"),
    )
    .unwrap();
    let t = start_in(dir, &toml).await;

    for (target, want) in [
        ("/../secret.txt", "400"),
        ("/docs/../../secret.txt", "400"),
        ("/%2e%2e/secret.txt", "400"),
        ("/%2E%2e%2fsecret.txt", "400"),
        ("/docs/..%2f..%2fsecret.txt", "400"),
        ("/hello.txt%00.png", "400"),
        ("/link.txt", "404"),
        ("/up/secret.txt", "404"),
    ] {
        let req = format!("GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        let (resp, _) = raw(t.addr, req.as_bytes(), Duration::from_secs(5)).await;
        assert!(
            resp.starts_with(&format!("HTTP/1.1 {want}")),
            "{target}: {resp}"
        );
        assert!(
            !resp.contains("outside the root"),
            "{target} leaked: {resp}"
        );
    }
    // a symlink that stays inside the root is fine
    let (resp, _) = raw(
        t.addr,
        b"GET /ok-link.txt HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        Duration::from_secs(5),
    )
    .await;
    assert!(
        resp.starts_with("HTTP/1.1 200") && resp.ends_with("fine\n"),
        "{resp}"
    );
}

#[tokio::test]
async fn validators_give_304_and_follow_changes() {
    let dir = tempfile::tempdir().unwrap();
    let toml = site(&dir, "");
    let file = dir.path().join("public/hello.txt");
    let t = start_in(dir, &toml).await;
    let c = client();

    let r = c.get(t.url("/hello.txt")).send().await.unwrap();
    let etag = r.headers()["etag"].to_str().unwrap().to_string();
    let lm = r.headers()["last-modified"].to_str().unwrap().to_string();
    assert!(etag.starts_with('"'), "{etag}");

    let r = c
        .get(t.url("/hello.txt"))
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(r.headers()["etag"], etag.as_str());
    assert!(r.bytes().await.unwrap().is_empty());
    let r = c
        .get(t.url("/hello.txt"))
        .header("if-none-match", format!("\"other\", W/{etag}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_MODIFIED);
    let r = c
        .get(t.url("/hello.txt"))
        .header("if-modified-since", &lm)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_MODIFIED);
    let r = c
        .get(t.url("/hello.txt"))
        .header("if-modified-since", "Thu, 01 Jan 1998 00:00:00 GMT")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    // If-None-Match wins over If-Modified-Since
    let r = c
        .get(t.url("/hello.txt"))
        .header("if-none-match", "\"other\"")
        .header("if-modified-since", &lm)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);

    // change the file: new validator, new bytes, the old ETag no longer matches
    std::fs::write(&file, "changed content, longer\n").unwrap();
    let r = c
        .get(t.url("/hello.txt"))
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_ne!(r.headers()["etag"], etag.as_str());
    assert_eq!(r.text().await.unwrap(), "changed content, longer\n");
}

#[tokio::test]
async fn single_ranges() {
    let dir = tempfile::tempdir().unwrap();
    let toml = site(&dir, "");
    let t = start_in(dir, &toml).await;
    let c = client();
    let r = c
        .get(t.url("/hello.txt"))
        .header("range", "bytes=0-4")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(r.headers()["content-range"], "bytes 0-4/13");
    assert_eq!(r.text().await.unwrap(), "hello");
    let r = c
        .get(t.url("/hello.txt"))
        .header("range", "bytes=-6")
        .send()
        .await
        .unwrap();
    assert_eq!(r.text().await.unwrap(), "world\n");
    let r = c
        .get(t.url("/hello.txt"))
        .header("range", "bytes=7-")
        .send()
        .await
        .unwrap();
    assert_eq!(r.text().await.unwrap(), "world\n");
    let r = c
        .get(t.url("/hello.txt"))
        .header("range", "bytes=100-200")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(r.headers()["content-range"], "bytes */13");
    // several ranges: the whole file
    let r = c
        .get(t.url("/hello.txt"))
        .header("range", "bytes=0-1,3-4")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    // If-Range with a stale validator: the whole file
    let r = c
        .get(t.url("/hello.txt"))
        .header("range", "bytes=0-4")
        .header("if-range", "\"stale\"")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.text().await.unwrap(), "hello, world\n");
}

fn decode(enc: &str, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    match enc {
        "gzip" => {
            flate2::read::GzDecoder::new(body)
                .read_to_end(&mut out)
                .unwrap();
        }
        "br" => {
            brotli::Decompressor::new(body, 4096)
                .read_to_end(&mut out)
                .unwrap();
        }
        "zstd" => out = zstd::stream::decode_all(body).unwrap(),
        other => panic!("unexpected encoding {other}"),
    }
    out
}

#[tokio::test]
async fn compression_by_accept_encoding() {
    let dir = tempfile::tempdir().unwrap();
    let toml = site(&dir, "");
    let t = start_in(dir, &toml).await;
    let c = client();
    let plain = "body { color: red; }\n".repeat(100);
    for (ae, want) in [
        ("gzip", "gzip"),
        ("br", "br"),
        ("zstd", "zstd"),
        ("gzip, deflate, br, zstd", "br"),
        ("gzip;q=1, br;q=0.5", "gzip"),
    ] {
        let r = c
            .get(t.url("/style.css"))
            .header("accept-encoding", ae)
            .send()
            .await
            .unwrap();
        assert_eq!(r.headers()["content-encoding"], want, "{ae}");
        assert_eq!(r.headers()["vary"], "Accept-Encoding");
        assert!(r.headers()["etag"].to_str().unwrap().starts_with("W/"));
        let len: usize = r.headers()["content-length"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        let body = r.bytes().await.unwrap();
        assert_eq!(body.len(), len);
        assert!(body.len() < plain.len() / 4);
        assert_eq!(decode(want, &body), plain.as_bytes());
    }
    // identity when not asked, for images, and for tiny files
    let r = c.get(t.url("/style.css")).send().await.unwrap();
    assert!(r.headers().get("content-encoding").is_none());
    assert_eq!(r.headers()["vary"], "Accept-Encoding");
    let r = c
        .get(t.url("/pic.png"))
        .header("accept-encoding", "gzip")
        .send()
        .await
        .unwrap();
    assert!(r.headers().get("content-encoding").is_none());
    let r = c
        .get(t.url("/hello.txt"))
        .header("accept-encoding", "gzip")
        .send()
        .await
        .unwrap();
    assert!(r.headers().get("content-encoding").is_none());
    // a range is never compressed
    let r = c
        .get(t.url("/style.css"))
        .header("accept-encoding", "gzip")
        .header("range", "bytes=0-3")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT);
    assert!(r.headers().get("content-encoding").is_none());
    assert_eq!(r.text().await.unwrap(), "body");
}

#[tokio::test]
async fn large_files_stream_from_disk() {
    let dir = tempfile::tempdir().unwrap();
    let toml = site(&dir, "").replace(
        "file_cache = { valid_ms = 0 }",
        "file_cache = { valid_ms = 0, max_file = \"64KiB\" }",
    );
    let big: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(dir.path().join("public/big.bin"), &big).unwrap();
    let text = "line of text for streaming compression\n".repeat(20_000);
    std::fs::write(dir.path().join("public/big.txt"), &text).unwrap();
    let t = start_in(dir, &toml).await;
    let c = client();
    let r = c.get(t.url("/big.bin")).send().await.unwrap();
    assert_eq!(
        r.headers()["content-length"],
        big.len().to_string().as_str()
    );
    assert_eq!(&r.bytes().await.unwrap()[..], &big[..]);
    let r = c
        .get(t.url("/big.bin"))
        .header("range", "bytes=1000000-1000099")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(&r.bytes().await.unwrap()[..], &big[1_000_000..1_000_100]);
    let r = c
        .get(t.url("/big.txt"))
        .header("accept-encoding", "gzip")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["content-encoding"], "gzip");
    assert!(r.headers().get("content-length").is_none());
    let body = r.bytes().await.unwrap();
    assert!(body.len() < text.len() / 10);
    assert_eq!(decode("gzip", &body), text.as_bytes());
}

/// A whole file over HTTP/1.1 leaves with header lines encoded once per file; the same
/// file over HTTP/2, or on a route whose own headers replace some, must carry the same
/// fields, each once. The per-thread front cache (on with a nonzero `valid_ms`) must keep
/// routes apart and notice a changed file once its validity ends.
#[tokio::test]
async fn fixed_file_headers_are_the_same_everywhere_and_follow_changes() {
    let dir = tempfile::tempdir().unwrap();
    // as in nginx, a route's root is joined with the whole URL path
    for (file, text) in [
        ("a/f.txt", "from a\n"),
        ("a/typed/f.txt", "from a\n"),
        ("b/b/f.txt", "from b, longer\n"),
    ] {
        let path = dir.path().join(file);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
    let toml = r#"
access_log = "off"
file_cache = { valid_ms = 300 }
[[site]]
listen = ["127.0.0.1:0"]
  [[site.route]]
  path = "/"
  root = "a"
  [[site.route]]
  path = "/b/"
  root = "b"
  [[site.route]]
  path = "/typed/"
  root = "a"
  cache_control = "no-cache"
  headers = { "Content-Type" = "text/x-special", "X-Extra" = "1" }
"#;
    let t = start_in(dir, toml).await;
    let h1 = client();
    let h2 = common::h2c_client();
    let fields = |r: &reqwest::Response| {
        let mut names: Vec<String> = r.headers().keys().map(|k| k.to_string()).collect();
        names.sort();
        names
    };
    let mut seen = Vec::new();
    for round in 0..3 {
        // twice over HTTP/1.1 (the second from the front cache), then HTTP/2
        for c in [&h1, &h1, &h2] {
            let r = c.get(t.url("/f.txt")).send().await.unwrap();
            assert_eq!(r.status(), StatusCode::OK);
            let h = r.headers();
            assert_eq!(h["content-type"], "text/plain; charset=utf-8");
            assert_eq!(h["content-length"], "7");
            assert_eq!(h["accept-ranges"], "bytes");
            assert_eq!(h["server"], "hopline");
            assert!(h.contains_key("etag") && h.contains_key("last-modified"));
            assert!(h.contains_key("date"));
            for name in ["content-type", "content-length", "server", "etag", "date"] {
                assert_eq!(
                    h.get_all(name).iter().count(),
                    1,
                    "{name} once (round {round})"
                );
            }
            let mut names = fields(&r);
            names.retain(|n| n != "connection");
            seen.push(names);
            assert_eq!(r.text().await.unwrap(), "from a\n");
        }
        // another route, same URL tail, another root
        let r = h1.get(t.url("/b/f.txt")).send().await.unwrap();
        assert_eq!(r.headers()["content-length"], "15");
        assert_eq!(r.text().await.unwrap(), "from b, longer\n");
        // a route's own headers replace the fixed ones, never duplicate them
        let r = h1.get(t.url("/typed/f.txt")).send().await.unwrap();
        let h = r.headers();
        assert_eq!(
            h.get_all("content-type").iter().collect::<Vec<_>>(),
            ["text/x-special"]
        );
        assert_eq!(h["cache-control"], "no-cache");
        assert_eq!(h["x-extra"], "1");
        assert_eq!(h.get_all("content-length").iter().count(), 1);
        // HEAD: the length of the file, no body
        let r = h1.head(t.url("/f.txt")).send().await.unwrap();
        assert_eq!(r.headers()["content-length"], "7");
        assert_eq!(r.bytes().await.unwrap().len(), 0);
    }
    assert!(seen.windows(2).all(|w| w[0] == w[1]), "{seen:?}");

    // a reload that points "/" at another root serves from it at once: the same URL
    // on the new route is another front-cache key
    std::fs::write(t.dir.path().join("b/f.txt"), "b at the top\n").unwrap();
    let reloaded = hopline_edge::Config::from_str_at(
        &toml.replace(
            "root = \"a\"\n  [[site.route]]\n  path = \"/b/\"",
            "root = \"b\"\n  [[site.route]]\n  path = \"/b/\"",
        ),
        &t.dir.path().join("hopline.toml"),
        t.dir.path(),
    )
    .unwrap();
    t.server.reload(reloaded).await.unwrap();
    let r = h1.get(t.url("/f.txt")).send().await.unwrap();
    assert_eq!(r.text().await.unwrap(), "b at the top\n");
    let reloaded =
        hopline_edge::Config::from_str_at(toml, &t.dir.path().join("hopline.toml"), t.dir.path())
            .unwrap();
    t.server.reload(reloaded).await.unwrap();

    // a change shows once the cached entry's validity (300 ms) is over
    std::fs::write(t.dir.path().join("a/f.txt"), "changed, and longer\n").unwrap();
    tokio::time::sleep(Duration::from_millis(450)).await;
    for _ in 0..2 {
        let r = h1.get(t.url("/f.txt")).send().await.unwrap();
        assert_eq!(r.headers()["content-length"], "20");
        assert_eq!(r.text().await.unwrap(), "changed, and longer\n");
    }
}
