//! The round-trip probe: a UDP echo server and a client that sends numbered datagrams at a
//! fixed interval (like `ping -i`), so a 200 ms delay does not stretch a run of hundreds of
//! probes into minutes, and prints a [`ProbeStats`] as JSON.

use std::collections::{HashMap, HashSet};
use std::io;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::netfault::probe::ProbeStats;

/// Tags our datagrams, so stray traffic is not mistaken for an answer.
const MAGIC: &[u8; 4] = b"CHNP";

/// Answers every datagram on `port` with itself until `stop` is set. Says on stderr when
/// a source address is first heard from, which shows one-way reachability (a probe whose
/// answers are dropped still reached the echo).
pub fn echo(port: u16, stop: &AtomicBool) -> io::Result<()> {
    let sock = UdpSocket::bind(("0.0.0.0", port))?;
    sock.set_read_timeout(Some(Duration::from_millis(200)))?;
    eprintln!("chaos-netd echo: listening on udp {port}");
    let mut heard: HashSet<IpAddr> = HashSet::new();
    let mut buf = [0u8; 2048];
    while !stop.load(Ordering::Relaxed) {
        match sock.recv_from(&mut buf) {
            Ok((n, from)) => {
                if heard.len() < 1024 && heard.insert(from.ip()) {
                    eprintln!("chaos-netd echo: first datagram from {}", from.ip());
                }
                // A failed answer is a lost answer: the prober counts it.
                let _ = sock.send_to(&buf[..n], from);
            }
            Err(e) if is_timeout(&e) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// What [`probe`] sends.
#[derive(Debug, Clone)]
pub struct ProbeConfig {
    pub to: SocketAddr,
    pub count: u32,
    pub interval: Duration,
    /// How long to wait for answers after the last datagram was sent.
    pub timeout: Duration,
    /// Datagram size in bytes (at least 12).
    pub size: usize,
}

/// Sends `count` datagrams and summarises the answers.
pub fn probe(cfg: &ProbeConfig, stop: &AtomicBool) -> io::Result<ProbeStats> {
    let sock = UdpSocket::bind("0.0.0.0:0")?;
    sock.connect(cfg.to)?;
    let mut sent_at: Vec<Instant> = Vec::with_capacity(cfg.count as usize);
    let mut rtts: HashMap<u32, f64> = HashMap::new();
    let mut duplicates = 0u32;
    let mut out = vec![0u8; cfg.size.max(12)];
    out[..4].copy_from_slice(MAGIC);
    let mut buf = [0u8; 2048];
    let start = Instant::now();
    let mut deadline = start + cfg.timeout;

    loop {
        let now = Instant::now();
        let sent = sent_at.len() as u32;
        if stop.load(Ordering::Relaxed)
            || (sent == cfg.count && (now >= deadline || rtts.len() as u32 == sent))
        {
            break;
        }
        if sent < cfg.count {
            let due = start + cfg.interval * sent;
            if now >= due {
                out[4..8].copy_from_slice(&sent.to_be_bytes());
                sent_at.push(Instant::now());
                // A refused send (ICMP unreachable from an earlier datagram) is a loss.
                let _ = sock.send(&out);
                deadline = Instant::now() + cfg.timeout;
                continue;
            }
        }
        let next = if sent < cfg.count {
            start + cfg.interval * sent
        } else {
            deadline
        };
        let wait = next
            .saturating_duration_since(now)
            .max(Duration::from_micros(100));
        sock.set_read_timeout(Some(wait))?;
        match sock.recv(&mut buf) {
            Ok(n) if n >= 8 && &buf[..4] == MAGIC => {
                let seq = u32::from_be_bytes([buf[4], buf[5], buf[6], buf[7]]);
                let Some(at) = sent_at.get(seq as usize) else {
                    continue;
                };
                let rtt = at.elapsed().as_secs_f64() * 1e3;
                if rtts.insert(seq, rtt).is_some() {
                    duplicates += 1;
                    // Keep the first answer's time.
                    if let Some(first) = rtts.get_mut(&seq) {
                        *first = first.min(rtt);
                    }
                }
            }
            Ok(_) => {}
            Err(e) if is_timeout(&e) || e.kind() == io::ErrorKind::ConnectionRefused => {}
            Err(e) => return Err(e),
        }
    }
    Ok(ProbeStats::from_samples(
        sent_at.len() as u32,
        rtts.into_values().collect(),
        duplicates,
    ))
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
    )
}
