//! `chaos-netd`: the program inside the network-fault sidecar image.
//!
//! It runs in the target container's network namespace and does what the image's stock
//! tools (iptables, tc, ip) cannot: `delay` serves the NFQUEUE rule on kernels without
//! netem, `echo` and `probe` measure round trips, `sink` and `send` TCP throughput,
//! `hold` keeps a sidecar alive while
//! `chaos` runs commands in it through `docker exec`; `disk` serves a node's disk-fault
//! passthrough (`chaos::diskfault`). Every mode ends cleanly on SIGTERM
//! (it is PID 1 of its container, where signals without a handler are ignored).

pub mod delayer;
pub mod schedule;
pub mod tcp;
pub mod udp;

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};

use schedule::{DelayModel, Distribution};

/// Set by SIGTERM/SIGINT/SIGHUP.
static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::Relaxed);
}

fn install_signal_handlers() {
    for sig in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP] {
        // SAFETY: the handler only stores to an atomic; no SA_RESTART, so blocking calls
        // return EINTR and the loops notice the flag promptly.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(sig, &sa, std::ptr::null_mut());
        }
    }
}

/// Command line of `chaos-netd`.
#[derive(Debug, Parser)]
#[command(
    name = "chaos-netd",
    about = "Network-fault helper run inside chaos sidecars"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// What `chaos-netd` does.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Stay alive until SIGTERM (or `--max` passed), so commands can be exec'd here.
    Hold {
        /// Exit on its own after this many seconds (a sidecar orphaned by a crash goes away).
        #[arg(long, default_value_t = 600)]
        max_secs: u64,
    },
    /// Serve an NFQUEUE: hold each packet for delay +- jitter, then let it go.
    Delay {
        #[arg(long)]
        queue: u16,
        #[arg(long, default_value_t = 0)]
        delay_us: u64,
        #[arg(long, default_value_t = 0)]
        jitter_us: u64,
        #[arg(long, default_value = "uniform")]
        distribution: Distribution,
        /// Probability 0..=1 of sending a packet twice.
        #[arg(long, default_value_t = 0.0)]
        duplicate: f64,
        /// Probability 0..=1 of flipping one bit of a packet.
        #[arg(long, default_value_t = 0.0)]
        corrupt: f64,
        /// Keep each flow in order (netem reorders under jitter; this does not).
        #[arg(long)]
        in_order: bool,
        /// Most packets held at once; more are dropped.
        #[arg(long, default_value_t = 10_000)]
        limit: usize,
        /// Firewall mark of duplicates, which the NFQUEUE rule must exclude.
        #[arg(long, default_value_t = 0)]
        mark: u32,
    },
    /// Mount the disk-fault passthrough of BACKING on MOUNT and serve it until SIGTERM
    /// (see `chaos::diskfault`).
    Disk {
        #[arg(long)]
        backing: std::path::PathBuf,
        #[arg(long)]
        mount: std::path::PathBuf,
        #[arg(long)]
        control: std::path::PathBuf,
        #[arg(long)]
        stats: std::path::PathBuf,
    },
    /// Answer UDP datagrams on PORT.
    Echo {
        #[arg(long)]
        port: u16,
    },
    /// Accept TCP connections on PORT and discard what they send.
    Sink {
        #[arg(long)]
        port: u16,
    },
    /// Send bulk data over TCP to ADDR for SECS seconds and print the throughput as JSON.
    Send {
        #[arg(long)]
        to: SocketAddr,
        #[arg(long, default_value_t = 3.0)]
        secs: f64,
    },
    /// Send COUNT datagrams to ADDR every INTERVAL and print the round-trip figures as JSON.
    Probe {
        #[arg(long)]
        to: SocketAddr,
        #[arg(long, default_value_t = 100)]
        count: u32,
        #[arg(long, default_value_t = 10)]
        interval_ms: u64,
        #[arg(long, default_value_t = 2000)]
        timeout_ms: u64,
        #[arg(long, default_value_t = 64)]
        size: usize,
    },
}

/// Runs `chaos-netd` with the process's arguments.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    install_signal_handlers();
    match run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("chaos-netd: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(command: Command) -> std::io::Result<()> {
    match command {
        Command::Hold { max_secs } => {
            let end = Instant::now() + Duration::from_secs(max_secs);
            while !STOP.load(Ordering::Relaxed) && Instant::now() < end {
                std::thread::sleep(Duration::from_millis(100));
            }
            Ok(())
        }
        Command::Delay {
            queue,
            delay_us,
            jitter_us,
            distribution,
            duplicate,
            corrupt,
            in_order,
            limit,
            mark,
        } => {
            let model = DelayModel {
                delay: Duration::from_micros(delay_us),
                jitter: Duration::from_micros(jitter_us),
                distribution,
                duplicate: duplicate.clamp(0.0, 1.0),
                corrupt: corrupt.clamp(0.0, 1.0),
                in_order,
            };
            delayer::run(
                &delayer::DelayerConfig {
                    queue,
                    model,
                    limit: limit.max(1),
                    mark,
                },
                &STOP,
            )
        }
        Command::Disk { backing, mount, control, stats } => {
            let cfg = crate::diskfault::daemon::DaemonConfig { backing, mount, control, stats };
            crate::diskfault::daemon::run(&cfg, &STOP)
        }
        Command::Echo { port } => udp::echo(port, &STOP),
        Command::Sink { port } => tcp::sink(port, &STOP),
        Command::Send { to, secs } => {
            let t = tcp::send(to, Duration::from_secs_f64(secs.max(0.1)), &STOP)?;
            let json = serde_json::to_string(&t).map_err(std::io::Error::other)?;
            println!("{json}");
            Ok(())
        }
        Command::Probe {
            to,
            count,
            interval_ms,
            timeout_ms,
            size,
        } => {
            let cfg = udp::ProbeConfig {
                to,
                count,
                interval: Duration::from_millis(interval_ms),
                timeout: Duration::from_millis(timeout_ms),
                size,
            };
            let stats = udp::probe(&cfg, &STOP)?;
            let json = serde_json::to_string(&stats).map_err(std::io::Error::other)?;
            println!("{json}");
            Ok(())
        }
    }
}
