//! `delay-link`: a network link with latency between two network namespaces, for benches
//! that need round trips that cost something (this kernel has no `netem`).
//!
//! It opens a TUN device in each namespace, gives them the two addresses of a /24 and
//! sets them up, then forwards every IP packet from one to the other after `--delay-ms`
//! (one way: a round trip costs twice that). Packets are delayed, not reordered or
//! dropped; TCP's and QUIC's handshakes, acknowledgements and retransmissions all cross
//! it as they would cross a long wire. MTU 1500, as on an Ethernet path.
//!
//!   ip netns add hl-a; ip netns add hl-b
//!   delay-link --ns-a hl-a --ns-b hl-b --addr-a 10.77.0.1 --addr-b 10.77.0.2 --delay-ms 10 &
//!   ip netns exec hl-b hopline serve site.toml      # listening on 10.77.0.2
//!   ip netns exec hl-a hopline visit https://10.77.0.2:8443/
//!
//! Runs until killed (or `--for-s` seconds). Needs root (namespaces and TUN).

#![allow(unsafe_code)] // setns(2) and the TUNSETIFF ioctl: two calls, no safe wrapper in our dependencies

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::process::Command;
use std::time::Duration;

// a process of its own, no async code and no test clock to pause: std's monotonic clock
#[allow(clippy::disallowed_types)]
type Instant = std::time::Instant;

const IFF_TUN: libc::c_short = 0x0001;
const IFF_NO_PI: libc::c_short = 0x1000;
const TUNSETIFF: libc::c_ulong = 0x4004_54ca;

#[repr(C)]
struct IfReq {
    name: [libc::c_char; libc::IFNAMSIZ],
    flags: libc::c_short,
    _pad: [u8; 22],
}

struct Args {
    ns: [String; 2],
    addr: [String; 2],
    delay: Duration,
    for_s: Option<u64>,
}

fn args() -> Result<Args, String> {
    let mut a = std::env::args().skip(1);
    let (mut ns, mut addr) = ([None, None], [None, None]);
    let (mut delay, mut for_s) = (None, None);
    while let Some(flag) = a.next() {
        let mut value = || a.next().ok_or(format!("{flag} wants a value"));
        match flag.as_str() {
            "--ns-a" => ns[0] = Some(value()?),
            "--ns-b" => ns[1] = Some(value()?),
            "--addr-a" => addr[0] = Some(value()?),
            "--addr-b" => addr[1] = Some(value()?),
            "--delay-ms" => {
                let v: f64 = value()?.parse().map_err(|_| "--delay-ms: a number")?;
                delay = Some(Duration::from_secs_f64(v / 1000.0));
            }
            "--for-s" => for_s = Some(value()?.parse().map_err(|_| "--for-s: a number")?),
            "-h" | "--help" => {
                return Err("usage: delay-link --ns-a NS --ns-b NS --addr-a IP --addr-b IP --delay-ms MS [--for-s S]\n\
                     a link between two network namespaces that delays every packet MS one way"
                    .into());
            }
            other => return Err(format!("unknown argument {other:?} (see --help)")),
        }
    }
    let need = |x: Option<String>, what: &str| x.ok_or(format!("{what} is required (see --help)"));
    let [n0, n1] = ns;
    let [a0, a1] = addr;
    Ok(Args {
        ns: [need(n0, "--ns-a")?, need(n1, "--ns-b")?],
        addr: [need(a0, "--addr-a")?, need(a1, "--addr-b")?],
        delay: delay.ok_or("--delay-ms is required (see --help)")?,
        for_s,
    })
}

/// Enter the network namespace `name` (this thread), or the one of `fd`.
fn enter(fd: &File) -> std::io::Result<()> {
    // SAFETY: setns on a namespace file we hold open; affects this thread only
    if unsafe { libc::setns(fd.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// A TUN device named `name`, created in the current namespace.
fn tun(name: &str) -> std::io::Result<File> {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/net/tun")?;
    let mut req = IfReq {
        name: [0; libc::IFNAMSIZ],
        flags: IFF_TUN | IFF_NO_PI,
        _pad: [0; 22],
    };
    for (d, s) in req.name.iter_mut().zip(name.bytes()) {
        *d = s as libc::c_char;
    }
    // SAFETY: TUNSETIFF reads and writes one ifreq, which `req` is
    if unsafe { libc::ioctl(f.as_raw_fd(), TUNSETIFF, &mut req) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(f)
}

fn ip(ns: &str, args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .arg("-n")
        .arg(ns)
        .args(args)
        .output()
        .map_err(|e| format!("ip: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "ip -n {ns} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(())
}

/// Packets from `from` written to `to` `delay` after they were read.
fn forward(mut from: File, mut to: File, delay: Duration) {
    let (tx, rx) = std::sync::mpsc::channel::<(Instant, Vec<u8>)>();
    std::thread::spawn(move || {
        // in order: every packet waits the same, so the deadlines only grow
        for (at, packet) in rx {
            let now = Instant::now();
            if at > now {
                std::thread::sleep(at - now);
            }
            let _ = to.write(&packet);
        }
    });
    let mut buf = vec![0u8; 65536];
    loop {
        match from.read(&mut buf) {
            Ok(n) if n > 0 => {
                if tx
                    .send((Instant::now() + delay, buf[..n].to_vec()))
                    .is_err()
                {
                    return;
                }
            }
            Ok(_) => return,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => {
                eprintln!("delay-link: read: {e}");
                return;
            }
        }
    }
}

fn main() -> std::process::ExitCode {
    let a = match args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("delay-link: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let run = || -> Result<(), String> {
        let home = File::open("/proc/self/ns/net").map_err(|e| format!("own namespace: {e}"))?;
        let mut tuns = Vec::new();
        for ns in &a.ns {
            let f = File::open(format!("/var/run/netns/{ns}"))
                .map_err(|e| format!("namespace {ns}: {e} (create it with `ip netns add {ns}`)"))?;
            enter(&f).map_err(|e| format!("entering {ns}: {e}"))?;
            let t = tun("hl0").map_err(|e| format!("TUN in {ns}: {e}"));
            enter(&home).map_err(|e| format!("leaving {ns}: {e}"))?;
            tuns.push(t?);
        }
        for (ns, addr) in a.ns.iter().zip(&a.addr) {
            ip(ns, &["addr", "add", &format!("{addr}/24"), "dev", "hl0"])?;
            ip(ns, &["link", "set", "hl0", "mtu", "1500", "up"])?;
            ip(ns, &["link", "set", "lo", "up"])?;
        }
        let b = tuns.pop().ok_or("no TUN")?;
        let a_tun = tuns.pop().ok_or("no TUN")?;
        let (a2, b2) = (
            a_tun.try_clone().map_err(|e| e.to_string())?,
            b.try_clone().map_err(|e| e.to_string())?,
        );
        let d = a.delay;
        std::thread::spawn(move || forward(a_tun, b2, d));
        std::thread::spawn(move || forward(b, a2, d));
        println!(
            "delay-link: {} ({}) <-> {} ({}), {} ms each way",
            a.ns[0],
            a.addr[0],
            a.ns[1],
            a.addr[1],
            a.delay.as_secs_f64() * 1000.0
        );
        let _ = std::io::stdout().flush();
        std::thread::sleep(Duration::from_secs(a.for_s.unwrap_or(u64::MAX / 4)));
        Ok(())
    };
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("delay-link: {e}");
            std::process::ExitCode::from(1)
        }
    }
}
