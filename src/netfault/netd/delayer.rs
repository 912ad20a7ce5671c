//! The userspace delayer: serves an iptables `NFQUEUE` rule where the kernel has no netem.
//!
//! Each queued packet is held until the release time the [`Scheduler`] gives it, then
//! accepted (`NF_ACCEPT`); optionally a bit is flipped first (corrupt) or a copy is sent
//! after it through a raw socket to the packet's destination (duplicate). For packets
//! arriving at the node that destination is the node itself, so the copy comes in through
//! `lo`; it also carries a firewall mark that the `NFQUEUE` rule excludes: either way it is
//! not queued again. The hold is bounded: past `limit` held packets new ones are dropped,
//! as netem's `limit` does.
//!
//! Single-threaded on purpose: the kernel only accepts verdicts on the socket that is
//! bound to the queue, so one loop waits (ppoll) for either a packet or the next release.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use nfq::{Message, Queue, Verdict};
use rand::rngs::SmallRng;
use rand::SeedableRng;

use super::schedule::{corrupt_bit, flow_key, DelayModel, Scheduler};

/// What the delayer serves.
#[derive(Debug, Clone)]
pub struct DelayerConfig {
    /// NFQUEUE number the iptables rule sends to.
    pub queue: u16,
    pub model: DelayModel,
    /// Most packets held at once.
    pub limit: usize,
    /// Firewall mark of duplicates (excluded from the NFQUEUE rule).
    pub mark: u32,
}

/// Counters printed when the delayer exits.
#[derive(Debug, Default)]
struct Counters {
    queued: u64,
    released: u64,
    over_limit: u64,
    duplicated: u64,
    corrupted: u64,
    verdict_errors: u64,
}

/// A packet waiting for its release time (ordered by time, then arrival).
struct Held {
    at: Instant,
    seq: u64,
    msg: Message,
    duplicate: bool,
}

impl PartialEq for Held {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for Held {}
impl PartialOrd for Held {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Held {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

/// Serves `cfg.queue` until `stop` is set; then releases everything still held (a packet
/// must never be lost because the fault ended) and returns.
pub fn run(cfg: &DelayerConfig, stop: &AtomicBool) -> io::Result<()> {
    let mut queue = Queue::open()?;
    queue
        .bind(cfg.queue)
        .map_err(|e| with_context(e, "binding the NFQUEUE"))?;
    let max_len = u32::try_from(cfg.limit).unwrap_or(u32::MAX);
    queue.set_queue_max_len(cfg.queue, max_len)?;
    queue.set_nonblocking(true);
    let fd = find_nfqueue_fd()?;
    let raw = if cfg.model.duplicate > 0.0 {
        Some(RawSender::new(cfg.mark)?)
    } else {
        None
    };
    let mut sched = Scheduler::new(cfg.model.clone(), SmallRng::from_os_rng());
    let mut held: BinaryHeap<Reverse<Held>> = BinaryHeap::new();
    let mut n = Counters::default();
    let mut seq = 0u64;
    eprintln!(
        "chaos-netd delay: serving queue {} with {:?}, limit {}",
        cfg.queue, cfg.model, cfg.limit
    );

    while !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        let wait = held
            .peek()
            .map_or(Duration::from_millis(200), |h| {
                h.0.at.saturating_duration_since(now)
            })
            .min(Duration::from_millis(200));
        wait_readable(fd, wait)?;

        // Take in whatever arrived (bounded, so releases are never starved).
        for _ in 0..4096 {
            let mut msg = match queue.recv() {
                Ok(m) => m,
                Err(e)
                    if e.kind() == io::ErrorKind::WouldBlock
                        || e.kind() == io::ErrorKind::Interrupted =>
                {
                    break
                }
                // The kernel queue overflowed: packets were dropped there; carry on.
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => continue,
                Err(e) => return Err(with_context(e, "receiving from the NFQUEUE")),
            };
            n.queued += 1;
            if held.len() >= cfg.limit {
                n.over_limit += 1;
                msg.set_verdict(Verdict::Drop);
                verdict(&mut queue, msg, &mut n);
                continue;
            }
            let at = sched.release_at(Instant::now(), flow_key(msg.get_payload()));
            if sched.corrupt() {
                corrupt_bit(msg.get_payload_mut(), sched.rng());
                n.corrupted += 1;
            }
            let duplicate = sched.duplicate();
            seq += 1;
            held.push(Reverse(Held {
                at,
                seq,
                msg,
                duplicate,
            }));
        }

        let now = Instant::now();
        while held.peek().is_some_and(|h| h.0.at <= now) {
            if let Some(Reverse(h)) = held.pop() {
                release(&mut queue, h, raw.as_ref(), &mut n);
            }
        }
    }

    while let Some(Reverse(h)) = held.pop() {
        release(&mut queue, h, raw.as_ref(), &mut n);
    }
    let _ = queue.unbind(cfg.queue);
    eprintln!("chaos-netd delay: stopped; {n:?}");
    Ok(())
}

fn release(queue: &mut Queue, h: Held, raw: Option<&RawSender>, n: &mut Counters) {
    let copy = (h.duplicate && raw.is_some()).then(|| h.msg.get_payload().to_vec());
    let mut msg = h.msg;
    msg.set_verdict(Verdict::Accept);
    verdict(queue, msg, n);
    n.released += 1;
    if let (Some(copy), Some(raw)) = (copy, raw) {
        match raw.send(&copy) {
            Ok(()) => n.duplicated += 1,
            Err(e) => eprintln!("chaos-netd delay: sending a duplicate: {e}"),
        }
    }
}

fn verdict(queue: &mut Queue, msg: Message, n: &mut Counters) {
    if let Err(e) = queue.verdict(msg) {
        // The kernel may have dropped the packet already (queue flushed): nothing to do.
        n.verdict_errors += 1;
        if n.verdict_errors <= 10 {
            eprintln!("chaos-netd delay: verdict: {e}");
        }
    }
}

fn with_context(e: io::Error, what: &str) -> io::Error {
    io::Error::new(e.kind(), format!("{what}: {e}"))
}

/// The `nfq` crate does not expose its socket; it is the process's only netfilter netlink
/// socket, so find it by asking each descriptor what it is.
fn find_nfqueue_fd() -> io::Result<libc::c_int> {
    const NETLINK_NETFILTER: libc::c_int = 12;
    for fd in 0..1024 {
        if sockopt_int(fd, libc::SO_DOMAIN) == Some(libc::AF_NETLINK)
            && sockopt_int(fd, libc::SO_PROTOCOL) == Some(NETLINK_NETFILTER)
        {
            return Ok(fd);
        }
    }
    Err(io::Error::other("the NFQUEUE netlink socket was not found"))
}

fn sockopt_int(fd: libc::c_int, opt: libc::c_int) -> Option<libc::c_int> {
    let mut val: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `val` and `len` are valid for writes of the sizes passed.
    let rc =
        unsafe { libc::getsockopt(fd, libc::SOL_SOCKET, opt, (&raw mut val).cast(), &mut len) };
    (rc == 0).then_some(val)
}

/// Waits until `fd` is readable or `timeout` passed (or a signal arrived).
fn wait_readable(fd: libc::c_int, timeout: Duration) -> io::Result<()> {
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    let ts = libc::timespec {
        tv_sec: timeout.as_secs() as libc::time_t,
        tv_nsec: libc::c_long::from(timeout.subsec_nanos() as i32),
    };
    // SAFETY: one valid pollfd, a valid timespec, no signal mask change.
    let rc = unsafe { libc::ppoll(&mut pfd, 1, &ts, std::ptr::null()) };
    if rc < 0 {
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
    Ok(())
}

/// Sends whole IPv4 packets (header included) with a firewall mark.
struct RawSender {
    fd: libc::c_int,
}

impl RawSender {
    fn new(mark: u32) -> io::Result<RawSender> {
        // SAFETY: plain socket(2); IPPROTO_RAW implies IP_HDRINCL.
        let fd = unsafe {
            libc::socket(
                libc::AF_INET,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                libc::IPPROTO_RAW,
            )
        };
        if fd < 0 {
            return Err(with_context(
                io::Error::last_os_error(),
                "opening a raw socket for duplicates",
            ));
        }
        let sender = RawSender { fd };
        // SAFETY: `mark` is a valid u32 for the size passed.
        let rc = unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_MARK,
                (&raw const mark).cast(),
                std::mem::size_of::<u32>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            return Err(with_context(
                io::Error::last_os_error(),
                "marking duplicates (SO_MARK needs NET_ADMIN)",
            ));
        }
        Ok(sender)
    }

    fn send(&self, packet: &[u8]) -> io::Result<()> {
        if packet.len() < 20 || packet[0] >> 4 != 4 {
            return Ok(());
        }
        // SAFETY: zeroed sockaddr_in is valid; the fields set below make it an AF_INET address.
        let mut addr: libc::sockaddr_in = unsafe { std::mem::zeroed() };
        addr.sin_family = libc::AF_INET as libc::sa_family_t;
        addr.sin_addr.s_addr = u32::from_ne_bytes([packet[16], packet[17], packet[18], packet[19]]);
        // SAFETY: buffer and address are valid for the lengths passed.
        let rc = unsafe {
            libc::sendto(
                self.fd,
                packet.as_ptr().cast(),
                packet.len(),
                0,
                (&raw const addr).cast(),
                std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

impl Drop for RawSender {
    fn drop(&mut self) {
        // SAFETY: we own the descriptor.
        unsafe { libc::close(self.fd) };
    }
}
