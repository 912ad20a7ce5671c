//! The `chaos` command line: the clap definitions, logging set-up, and the dispatch of
//! each command to the library (`chaos::executor` for `run`, `up`, `verify`;
//! `chaos::fault` for every fault; `chaos::live` for the live cluster). Here is only
//! parsing and printing.
//!
//! - `interactive`: `status`, every fault command (`kill`, `stop`, `start`, `restart`,
//!   `pause [--for]`, `unpause`), `feed`, `counts`, `down`, `build`, `lint`.
//! - `net`: `netem`, `partition` (faults like the others), `heal`.
//! - `doctor`: what this machine can run ([`chaos::host`]).

mod doctor;
mod interactive;
mod net;

use std::path::PathBuf;
use std::time::Duration;

use clap::{ArgAction, Args, Parser, Subcommand};

use chaos::error::ChaosError;
use chaos::executor::{self, ReportKind, RunOptions};
use chaos::live::{self, UpOptions};
use chaos::runtime::RuntimeKind;
use chaos::scenario::Action;
use chaos::signal::Signal;

/// Fault-injection testing for stream-processing clusters.
#[derive(Debug, Parser)]
#[command(name = "chaos", version, about, propagate_version = true, arg_required_else_help = true)]
pub struct Cli {
    /// More log output on stderr (-v info, -vv debug, -vvv trace). RUST_LOG overrides.
    #[arg(short, long, action = ArgAction::Count, global = true)]
    pub verbose: u8,

    #[command(subcommand)]
    pub command: Command,
}

/// Every `chaos` command.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run scenarios: start a cluster, inject the faults, check the committed output.
    Run(RunArgs),
    /// Start a cluster and its job and leave it running for interactive use.
    Up(UpArgs),
    /// Nodes, job state, checkpoints, restarts of the live cluster.
    Status,
    /// Send a signal to a node (SIGKILL unless --signal says otherwise).
    Kill {
        /// taskmanager-2 (tm2), jobmanager-1 (jm1), leader, etcd-1.
        node: String,
        /// SIGKILL, SIGTERM, TERM, 15, ...
        #[arg(long, short, default_value = "SIGKILL", value_parser = Signal::parse)]
        signal: Signal,
        /// Power loss too: once the node is dead, every write it had not fsynced (and
        /// every entry change of a directory not fsynced) is rolled back. Needs `chaos up --disk`.
        #[arg(long)]
        lose_unsynced: bool,
    },
    /// SIGTERM a node, then SIGKILL once the grace has passed.
    Stop {
        node: String,
        /// How long the node may take to exit after SIGTERM.
        #[arg(long, short, default_value = "10s", value_parser = duration)]
        grace: Duration,
        /// Power loss too, once the node is down (see `chaos kill --lose-unsynced`).
        #[arg(long)]
        lose_unsynced: bool,
    },
    /// Start a stopped or killed node again (same name, same addresses).
    Start { node: String },
    /// Stop (with the grace) and start a node.
    Restart {
        node: String,
        #[arg(long, short, default_value = "10s", value_parser = duration)]
        grace: Duration,
        /// Power loss while the node is down, before it starts again.
        #[arg(long)]
        lose_unsynced: bool,
    },
    /// Freeze every process of a node.
    Pause {
        node: String,
        /// Unpause after this long (Ctrl-C unpauses at once).
        #[arg(long = "for", value_parser = duration)]
        for_: Option<Duration>,
    },
    /// Thaw a paused node.
    Unpause { node: String },
    /// Degrade a node's network: delay, jitter, loss, duplication, corruption, rate.
    Netem(NetemArgs),
    /// Drop traffic between groups of nodes (a group: comma-separated nodes).
    Partition(PartitionArgs),
    /// Slow, failing or full storage under a node's /data (the cluster must have been
    /// started with disk passthroughs: `chaos up --disk`, or a scenario with `disk` faults).
    Disk(DiskArgs),
    /// Remove every network fault of the live cluster.
    Heal,
    /// Append stdin's lines to the live cluster's input, like typing into `nc -l 9000` for
    /// Flink's SocketWindowWordCount (but replayable: the lines land in a file the sources follow).
    Feed,
    /// The committed counts so far, highest first (word<TAB>count); for a windowed job window by window (window start ms<TAB>word<TAB>count).
    Counts {
        /// Only the N most frequent words.
        #[arg(long)]
        top: Option<usize>,
    },
    /// End the input, wait for the job to finish, compare the output with the oracle.
    Verify,
    /// Remove the live cluster (or, with none recorded, everything chaos left behind).
    Down {
        /// Remove the images chaos built as well.
        #[arg(long)]
        images: bool,
    },
    /// Build the streamd binary and the images (streamd, network-fault sidecar; with
    /// `--engine flink` also the Flink image).
    Build {
        /// The engines to build images for (default: streamd).
        #[arg(long = "engine", value_enum, value_delimiter = ',', action = ArgAction::Append)]
        engines: Vec<chaos::engine::Engine>,
    },
    /// What this machine can run, and how to fix what is missing (exit 3 when the default
    /// scenario cannot run).
    Doctor {
        /// Where the scenarios are whose needs are listed.
        #[arg(long, default_value = "scenarios")]
        scenarios: PathBuf,
    },
    /// Validate scenarios and print their planned timelines.
    Lint {
        #[arg(required = true, value_name = "SCENARIO")]
        scenarios: Vec<PathBuf>,
        /// Overrides the scenarios' seeds.
        #[arg(long)]
        seed: Option<u64>,
    },
}

/// `chaos run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    #[arg(required = true, value_name = "SCENARIO")]
    pub scenarios: Vec<PathBuf>,
    /// Overrides the scenarios' seeds (random picks, generated input).
    #[arg(long)]
    pub seed: Option<u64>,
    #[arg(long, value_enum, default_value = "docker", env = "CHAOS_RUNTIME")]
    pub runtime: RuntimeKind,
    /// Reports to write besides report.json in the run directory (repeatable, or a comma list).
    #[arg(long = "report", value_enum, value_delimiter = ',', action = ArgAction::Append)]
    pub reports: Vec<ReportKind>,
    /// Directory for the requested reports.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Leave the cluster running after the run.
    #[arg(long)]
    pub keep: bool,
    /// Run each scenario on these engines instead of its `cluster.engine`, one after the
    /// other, and print one comparison table (e.g. `--engine streamd,flink`).
    #[arg(long = "engine", value_enum, value_delimiter = ',', action = ArgAction::Append)]
    pub engines: Vec<chaos::engine::Engine>,
    /// Serve every streamd node's /data through the disk-fault passthrough even when the
    /// scenario has no disk fault (to see what the passthrough itself costs).
    #[arg(long)]
    pub disk: bool,
}

/// `chaos up`.
#[derive(Debug, Args)]
pub struct UpArgs {
    /// Take the cluster and job from a scenario (its faults are not applied).
    #[arg(value_name = "SCENARIO")]
    pub scenario: Option<PathBuf>,
    #[arg(long, default_value_t = 3, conflicts_with = "scenario")]
    pub taskmanagers: u32,
    #[arg(long, default_value_t = 1, conflicts_with = "scenario")]
    pub jobmanagers: u32,
    /// Slots per taskmanager.
    #[arg(long, default_value_t = 2, conflicts_with = "scenario")]
    pub slots: u32,
    #[arg(long, value_enum, default_value = "docker", env = "CHAOS_RUNTIME")]
    pub runtime: RuntimeKind,
    /// The job reads a socket on this port (default 9000), like Flink's socketTextStream
    /// reading `nc -l 9000`: `chaos feed` writes to the line server lines-1.
    #[arg(long, value_name = "PORT", num_args = 0..=1, default_missing_value = "9000", conflicts_with = "scenario")]
    pub socket: Option<u16>,
    /// Mount every node's /data through the disk-fault passthrough, for `chaos disk` and
    /// `--lose-unsynced` (it then also keeps the undo log a power loss needs).
    #[arg(long)]
    pub disk: bool,
}

/// `chaos netem`.
#[derive(Debug, Args)]
pub struct NetemArgs {
    pub node: String,
    /// Added latency, e.g. 100ms.
    #[arg(long, value_parser = duration)]
    pub delay: Option<Duration>,
    /// Latency variation (with --delay).
    #[arg(long, value_parser = duration, requires = "delay")]
    pub jitter: Option<Duration>,
    /// How the jitter is spread: uniform or normal.
    #[arg(long, default_value = "uniform")]
    pub distribution: chaos::netfault::Distribution,
    /// Packet loss, e.g. 5%.
    #[arg(long, value_parser = percent)]
    pub loss: Option<f64>,
    /// Packet duplication, e.g. 1%.
    #[arg(long, value_parser = percent)]
    pub duplicate: Option<f64>,
    /// Packet corruption, e.g. 0.1%.
    #[arg(long, value_parser = percent)]
    pub corrupt: Option<f64>,
    /// Bandwidth limit, as tc writes it: 1mbit, 500kbit (bits/s), 1mbps (bytes/s).
    #[arg(long, value_parser = rate)]
    pub rate: Option<u64>,
    /// Undo after this long (Ctrl-C undoes at once).
    #[arg(long = "for", value_parser = duration)]
    pub for_: Option<Duration>,
}

/// `chaos partition`.
#[derive(Debug, Args)]
pub struct PartitionArgs {
    /// Two or more groups, each a comma list of nodes: `tm1 jm1,tm2,tm3`.
    #[arg(required = true, num_args = 2.., value_name = "GROUP")]
    pub groups: Vec<String>,
    /// Heal after this long (Ctrl-C heals at once).
    #[arg(long = "for", value_parser = duration)]
    pub for_: Option<Duration>,
    /// Drop only traffic from the first group to the others.
    #[arg(long)]
    pub one_way: bool,
}

/// `chaos disk`: exactly one of --delay, --error, --full-after.
#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("kind").required(true).args(["delay", "error", "full_after"])))]
pub struct DiskArgs {
    pub node: String,
    /// Wait this long before each operation, e.g. 20ms.
    #[arg(long, value_parser = duration)]
    pub delay: Option<Duration>,
    /// Delay variation, uniform (with --delay).
    #[arg(long, value_parser = duration, requires = "delay")]
    pub jitter: Option<Duration>,
    /// Fail operations: OPS=ERRNO[:PERCENT], e.g. fsync=EIO:10% (ops: open, read, write,
    /// fsync, rename; errors: EIO, ENOSPC, EROFS).
    #[arg(long, value_parser = chaos::diskfault::rules::parse_error_spec)]
    pub error: Option<(Vec<chaos::diskfault::Op>, chaos::diskfault::Errno, f64)>,
    /// ENOSPC on writes once this many bytes were written, e.g. 1m.
    #[arg(long, value_parser = chaos::scenario::values::parse_bytes)]
    pub full_after: Option<u64>,
    /// With --delay: only these operations (comma-separated; default all).
    #[arg(long, value_delimiter = ',', value_parser = op, requires = "delay")]
    pub ops: Vec<chaos::diskfault::Op>,
    /// Only under this directory of /data, e.g. checkpoints.
    #[arg(long, default_value = "")]
    pub path: String,
    /// Undo after this long (Ctrl-C undoes at once).
    #[arg(long = "for", value_parser = duration)]
    pub for_: Option<Duration>,
}

fn op(s: &str) -> Result<chaos::diskfault::Op, String> {
    chaos::diskfault::Op::parse(s).ok_or_else(|| format!("unknown operation `{s}`: expected open, read, write, fsync or rename"))
}

fn duration(s: &str) -> Result<Duration, String> {
    streamd_contract::duration::parse_duration(s)
}

/// `5%`, `5` or `0.5%`: a percentage in 0..=100.
fn percent(s: &str) -> Result<f64, String> {
    let t = s.trim();
    let n: f64 = t
        .strip_suffix('%')
        .unwrap_or(t)
        .trim()
        .parse()
        .map_err(|_| format!("invalid percentage `{s}`: expected e.g. `5%`"))?;
    if !(0.0..=100.0).contains(&n) {
        return Err(format!("invalid percentage `{s}`: expected 0% to 100%"));
    }
    Ok(n)
}

/// A rate as tc writes it, in bits per second (the scenario's own parser).
fn rate(s: &str) -> Result<u64, String> {
    chaos::scenario::parse_rate(s)
}

/// Logs to stderr: `warn` by default, more with each `-v`; `RUST_LOG` wins when set.
pub fn init_logging(verbose: u8) {
    let default = match verbose {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    // `Targets` (`info`, `chaos=debug,warn`) rather than `EnvFilter`: the same syntax for
    // what anyone puts in RUST_LOG here, without compiling a regex engine.
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let filter: tracing_subscriber::filter::Targets = std::env::var("RUST_LOG")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| default.parse().expect("a level parses"));
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    // `try_init`: a second initialisation (tests) is not an error worth dying for.
    let _ = tracing_subscriber::registry().with(fmt).with(filter).try_init();
}

/// Runs one parsed command; returns the process exit code (DESIGN.md section 4).
pub async fn run(cli: Cli) -> Result<u8, ChaosError> {
    use interactive as i;
    match cli.command {
        Command::Run(a) => {
            executor::run(RunOptions {
                scenarios: a.scenarios,
                seed: a.seed,
                runtime: a.runtime,
                reports: dedup(a.reports),
                out: a.out,
                keep: a.keep,
                engines: dedup(a.engines),
                disk: a.disk,
            })
            .await
        }
        Command::Up(a) => {
            live::up(UpOptions {
                scenario: a.scenario,
                jobmanagers: a.jobmanagers,
                taskmanagers: a.taskmanagers,
                slots: a.slots,
                runtime: a.runtime,
                socket: a.socket,
                disk: a.disk,
            })
            .await
        }
        Command::Verify => live::verify().await,
        Command::Status => i::status().await,
        Command::Kill { node, signal, lose_unsynced } => i::fault(Action::Kill { signal, lose_unsynced }, &[node], None).await,
        Command::Stop { node, grace, lose_unsynced } => i::fault(Action::Stop { grace, lose_unsynced }, &[node], None).await,
        Command::Start { node } => i::fault(Action::Start, &[node], None).await,
        Command::Restart { node, grace, lose_unsynced } => i::fault(Action::Restart { grace, lose_unsynced }, &[node], None).await,
        Command::Pause { node, for_ } => i::fault(Action::Pause, &[node], for_).await,
        Command::Unpause { node } => i::fault(Action::Unpause, &[node], None).await,
        Command::Netem(a) => net::netem(a).await,
        Command::Partition(a) => net::partition(a).await,
        Command::Disk(a) => {
            use chaos::diskfault::{DiskFault, DiskKind};
            if a.delay.is_none() && (a.jitter.is_some() || !a.ops.is_empty()) {
                return Err(ChaosError::Usage("--jitter and --ops go with --delay (--error names its operations itself)".into()));
            }
            let (kind, ops) = match (a.delay, a.error, a.full_after) {
                (Some(delay), _, _) => (DiskKind::Delay { delay, jitter: a.jitter.unwrap_or_default() }, a.ops),
                (_, Some((ops, errno, probability)), _) => (DiskKind::Error { errno, probability }, ops),
                (_, _, Some(bytes)) => (DiskKind::FullAfter { bytes }, Vec::new()),
                _ => unreachable!("clap requires one kind"),
            };
            let path = chaos::diskfault::rules::fault_path(&a.path).map_err(|why| ChaosError::Usage(format!("--path: {why}")))?;
            let fault = DiskFault { id: String::new(), kind, ops, path };
            i::fault(Action::Disk(fault), &[a.node], a.for_).await
        }
        Command::Heal => net::heal().await,
        Command::Feed => i::feed().await,
        Command::Counts { top } => i::counts(top).await,
        Command::Down { images } => i::down(images).await,
        Command::Build { engines } => i::build(&dedup(engines)).await,
        Command::Lint { scenarios, seed } => i::lint(&scenarios, seed),
        Command::Doctor { scenarios } => doctor::doctor(&scenarios).await,
    }
}

/// `--report json,json --report html` asks for two reports, not three.
fn dedup<T: PartialEq>(kinds: Vec<T>) -> Vec<T> {
    let mut out = Vec::new();
    for k in kinds {
        if !out.contains(&k) {
            out.push(k);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn reports_accept_repeats_and_comma_lists() {
        let cli = Cli::try_parse_from(["chaos", "run", "a.yaml", "b.yaml", "--report", "json,junit", "--report", "html,json"])
            .unwrap();
        let Command::Run(a) = cli.command else { panic!("not run") };
        assert_eq!(a.scenarios.len(), 2);
        assert_eq!(dedup(a.reports), vec![ReportKind::Json, ReportKind::Junit, ReportKind::Html]);
    }

    #[test]
    fn kill_stop_and_restart_can_lose_unsynced_writes() {
        let cli = Cli::try_parse_from(["chaos", "kill", "tm2", "--lose-unsynced"]).unwrap();
        assert!(matches!(cli.command, Command::Kill { lose_unsynced: true, .. }));
        let cli = Cli::try_parse_from(["chaos", "restart", "tm2", "--grace", "0s", "--lose-unsynced"]).unwrap();
        assert!(matches!(cli.command, Command::Restart { lose_unsynced: true, .. }));
        let cli = Cli::try_parse_from(["chaos", "stop", "tm2"]).unwrap();
        assert!(matches!(cli.command, Command::Stop { lose_unsynced: false, .. }));
    }

    #[test]
    fn up_takes_a_scenario_or_sizes_but_not_both() {
        let cli = Cli::try_parse_from(["chaos", "up", "--taskmanagers", "2", "--runtime", "process"]).unwrap();
        let Command::Up(a) = cli.command else { panic!("not up") };
        assert_eq!((a.taskmanagers, a.jobmanagers, a.slots, a.runtime), (2, 1, 2, RuntimeKind::Process));
        assert!(Cli::try_parse_from(["chaos", "up", "s.yaml", "--taskmanagers", "2"]).is_err());
    }

    #[test]
    fn durations_and_percentages_are_validated() {
        let cli = Cli::try_parse_from(["chaos", "pause", "tm2", "--for", "1.5s"]).unwrap();
        assert!(matches!(cli.command, Command::Pause { for_: Some(d), .. } if d == Duration::from_millis(1500)));
        assert!(Cli::try_parse_from(["chaos", "stop", "tm2", "--grace", "10"]).is_err());
        let cli = Cli::try_parse_from(["chaos", "netem", "tm1", "--delay", "100ms", "--loss", "5%"]).unwrap();
        assert!(matches!(cli.command, Command::Netem(NetemArgs { loss: Some(l), .. }) if l == 5.0));
        assert!(Cli::try_parse_from(["chaos", "netem", "tm1", "--loss", "120%"]).is_err());
        assert!(Cli::try_parse_from(["chaos", "netem", "tm1", "--jitter", "5ms"]).is_err());
        assert_eq!(rate("1mbit"), Ok(1_000_000));
        assert_eq!(rate("500kbit"), Ok(500_000));
        assert_eq!(rate("1mbps"), Ok(8_000_000));
        assert!(rate("1 parsec").is_err() && rate("0kbit").is_err() && rate("mbit").is_err());
    }

    #[test]
    fn disk_takes_exactly_one_kind() {
        let cli = Cli::try_parse_from(["chaos", "disk", "tm2", "--delay", "20ms", "--for", "10s"]).unwrap();
        assert!(matches!(cli.command, Command::Disk(DiskArgs { delay: Some(d), for_: Some(_), .. }) if d == Duration::from_millis(20)));
        let cli = Cli::try_parse_from(["chaos", "disk", "tm2", "--error", "fsync=EIO:10%"]).unwrap();
        let Command::Disk(a) = cli.command else { panic!("not disk") };
        assert_eq!(a.error, Some((vec![chaos::diskfault::Op::Fsync], chaos::diskfault::Errno::Eio, 0.1)));
        assert!(Cli::try_parse_from(["chaos", "disk", "tm2"]).is_err(), "a kind is required");
        assert!(Cli::try_parse_from(["chaos", "disk", "tm2", "--delay", "1ms", "--full-after", "1m"]).is_err());
    }

    #[test]
    fn partition_needs_two_groups() {
        assert!(Cli::try_parse_from(["chaos", "partition", "tm1"]).is_err());
        let cli = Cli::try_parse_from(["chaos", "partition", "tm1", "jm1,tm2,tm3", "--one-way"]).unwrap();
        assert!(matches!(cli.command, Command::Partition(PartitionArgs { ref groups, one_way: true, .. }) if groups.len() == 2));
    }

    #[test]
    fn verbosity_counts() {
        let cli = Cli::try_parse_from(["chaos", "status", "-vv"]).unwrap();
        assert_eq!(cli.verbose, 2);
    }
}
