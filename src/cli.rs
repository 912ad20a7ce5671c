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
    },
    /// SIGTERM a node, then SIGKILL once the grace has passed.
    Stop {
        node: String,
        /// How long the node may take to exit after SIGTERM.
        #[arg(long, short, default_value = "10s", value_parser = duration)]
        grace: Duration,
    },
    /// Start a stopped or killed node again (same name, same addresses).
    Start { node: String },
    /// Stop (with the grace) and start a node.
    Restart {
        node: String,
        #[arg(long, short, default_value = "10s", value_parser = duration)]
        grace: Duration,
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
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    // `try_init`: a second initialisation (tests) is not an error worth dying for.
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).try_init();
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
            })
            .await
        }
        Command::Verify => live::verify().await,
        Command::Status => i::status().await,
        Command::Kill { node, signal } => i::fault(Action::Kill { signal }, &[node], None).await,
        Command::Stop { node, grace } => i::fault(Action::Stop { grace }, &[node], None).await,
        Command::Start { node } => i::fault(Action::Start, &[node], None).await,
        Command::Restart { node, grace } => i::fault(Action::Restart { grace }, &[node], None).await,
        Command::Pause { node, for_ } => i::fault(Action::Pause, &[node], for_).await,
        Command::Unpause { node } => i::fault(Action::Unpause, &[node], None).await,
        Command::Netem(a) => net::netem(a).await,
        Command::Partition(a) => net::partition(a).await,
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
