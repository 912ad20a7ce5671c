//! `streamd`: one binary, the role is the subcommand (one image serves every container).

use clap::{Args, Parser, Subcommand};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;
use streamd::duration::parse_duration;
use streamd::ha::HaConfig;

#[derive(Parser)]
#[command(name = "streamd", version, about = "A Flink-style stream cluster: jobmanager, taskmanager, line server, bench")]
struct Cli {
    #[command(subcommand)]
    role: Role,
}

#[derive(Subcommand)]
enum Role {
    /// Run a jobmanager for the job in `--job` (application mode).
    Jobmanager {
        #[arg(long, default_value = "/data/job.yaml")]
        job: PathBuf,
        #[arg(long, default_value = "/data")]
        data_dir: PathBuf,
        #[arg(long, default_value = "jobmanager-1")]
        id: String,
        #[arg(long, default_value = "0.0.0.0:6123")]
        rpc_bind: String,
        #[arg(long, default_value = "0.0.0.0:8081")]
        rest_bind: String,
        /// The RPC address taskmanagers use to reach this jobmanager (default: the RPC bind
        /// address, with `0.0.0.0` replaced by `--id`).
        #[arg(long)]
        advertise: Option<String>,
        /// The REST address others use to reach this one (default: as `--advertise`).
        #[arg(long)]
        rest_advertise: Option<String>,
        #[command(flatten)]
        ha: HaArgs,
    },
    /// Run a taskmanager that offers `--slots` slots to the jobmanager.
    Taskmanager {
        #[arg(long, default_value = "jobmanager-1:6123")]
        jobmanager: String,
        #[arg(long, default_value_t = 2)]
        slots: u32,
        #[arg(long, default_value = "/data")]
        data_dir: PathBuf,
        #[arg(long, default_value = "taskmanager-1")]
        id: String,
        #[arg(long, default_value = "0.0.0.0:6121")]
        data_bind: String,
        /// The data address other taskmanagers use to reach this one.
        #[arg(long)]
        advertise: Option<String>,
        /// With `--etcd`: the job whose leader to follow (default: `job_id` of
        /// `<data-dir>/job.yaml`).
        #[arg(long)]
        job_id: Option<String>,
        /// Where this taskmanager reaches the line server (`host:port`), when not at the
        /// job's `input.socket` address (the process runtime's ports are not the job's).
        #[arg(long, env = "STREAMD_LINE_SERVER")]
        line_server: Option<String>,
        /// Node-local storage for task-local recovery (`job.local_recovery`): a directory
        /// that is this node's own, not shared checkpoint storage. Without it a job that
        /// asks for local recovery restores from shared storage only.
        #[arg(long, env = "STREAMD_LOCAL_DIR")]
        local_dir: Option<PathBuf>,
        /// The directory a job's input file path (`input/…`) is relative to, when not
        /// `--data-dir`: the input stands for an external system's data, so it is read
        /// beside a node's storage, not through it (chaos's disk-fault passthrough).
        #[arg(long, env = "STREAMD_INPUT_ROOT")]
        input_root: Option<PathBuf>,
        #[command(flatten)]
        ha: HaArgs,
    },
    /// Run the line server a socket input reads, like `nc -l 9000` (see streamd::lines).
    LineServer {
        #[arg(long, default_value = "/data")]
        data_dir: PathBuf,
        /// The node's name (in logs, and how the process runtime knows its process).
        #[arg(long, default_value = streamd::lines::NODE)]
        id: String,
        /// Where sources connect (default: `0.0.0.0:<input.socket.port of --job>`).
        #[arg(long)]
        bind: Option<String>,
        /// The job spec whose `input.socket.port` to serve when `--bind` is not given.
        #[arg(long, default_value = "/data/job.yaml")]
        job: PathBuf,
        /// Where lines are fed in.
        #[arg(long, default_value_t = format!("0.0.0.0:{}", streamd::lines::FEED_PORT))]
        feed_bind: String,
    },
    /// Measure throughput against the single-threaded COST baseline.
    Bench(streamd::bench::BenchArgs),
    /// Measure the adaptive checkpoint interval against fixed ones under seeded SIGKILLs
    /// of taskmanager processes.
    BenchInterval(streamd::bench_interval::BenchIntervalArgs),
}

/// High availability (both roles): with `--etcd`, jobmanagers elect a leader and
/// taskmanagers follow it; `--jobmanager` is then ignored.
#[derive(Args)]
struct HaArgs {
    /// etcd client URLs, comma-separated (e.g. `http://etcd-1:2379`): enables HA.
    #[arg(long, env = "STREAMD_ETCD")]
    etcd: Option<String>,
    /// Leader lease TTL: how long a leader that stopped renewing still counts as leader
    /// (whole seconds; etcd's minimum is 2s).
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    lease_ttl: Duration,
    /// How often the leader renews its lease.
    #[arg(long, default_value = "500ms", value_parser = parse_duration)]
    lease_renew: Duration,
    /// Upper bound of one etcd request.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    etcd_timeout: Duration,
}

impl HaArgs {
    fn config(&self) -> Result<Option<HaConfig>, String> {
        let Some(etcd) = &self.etcd else { return Ok(None) };
        let mut c = HaConfig::new(HaConfig::parse_endpoints(etcd).map_err(|e| e.to_string())?);
        c.lease_ttl = self.lease_ttl;
        c.keepalive_interval = self.lease_renew;
        c.request_timeout = self.etcd_timeout;
        c.validate().map_err(|e| e.to_string())?;
        Ok(Some(c))
    }
}

/// `0.0.0.0:6123` -> `<id>:6123`: the address a bind-to-all node is reached at (its
/// network alias in a container).
fn advertised(bind: &str, id: &str) -> String {
    match bind.strip_prefix("0.0.0.0:").or_else(|| bind.strip_prefix("[::]:")) {
        Some(port) => format!("{id}:{port}"),
        None => bind.to_string(),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    {
        // RUST_LOG as `tracing_subscriber::filter::Targets` reads it (`debug`,
        // `streamd=debug,info`): EnvFilter's syntax for that, without a regex engine to build.
        use tracing_subscriber::layer::SubscriberExt;
        use tracing_subscriber::util::SubscriberInitExt;
        let filter: tracing_subscriber::filter::Targets = std::env::var("RUST_LOG")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| tracing_subscriber::filter::Targets::new().with_default(tracing::Level::INFO));
        tracing_subscriber::registry().with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr)).with(filter).init();
    }
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("streamd: cannot start the runtime: {e}");
            return ExitCode::from(3);
        }
    };
    let result = rt.block_on(async move {
        match cli.role {
            Role::Jobmanager { job, data_dir, id, rpc_bind, rest_bind, advertise, rest_advertise, ha } => {
                let job = match streamd::spec::JobSpec::load(&job) {
                    Ok(j) => j,
                    Err(e) => {
                        eprintln!("streamd: {e}");
                        return Ok(ExitCode::from(2));
                    }
                };
                let ha = match ha.config() {
                    Ok(h) => h,
                    Err(e) => {
                        eprintln!("streamd: {e}");
                        return Ok(ExitCode::from(2));
                    }
                };
                let rpc_advertise = advertise.unwrap_or_else(|| advertised(&rpc_bind, &id));
                let rest_url = format!("http://{}", rest_advertise.unwrap_or_else(|| advertised(&rest_bind, &id)));
                let cfg = streamd::jobmanager::JmConfig { id, job, data_dir, rpc_bind, rest_bind, rpc_advertise, rest_url, ha };
                streamd::jobmanager::run(cfg, terminated()).await.map(|_| ExitCode::SUCCESS)
            }
            Role::Taskmanager { jobmanager, slots, data_dir, id, data_bind, advertise, job_id, line_server, local_dir, input_root, ha } => {
                let advertise = advertise.unwrap_or_else(|| data_bind.clone());
                let ha = match ha.config().and_then(|c| c.map(|c| tm_ha(c, job_id, &data_dir)).transpose()) {
                    Ok(h) => h,
                    Err(e) => {
                        eprintln!("streamd: {e}");
                        return Ok(ExitCode::from(2));
                    }
                };
                let cfg = streamd::taskmanager::TmConfig { id, jobmanager, slots, data_dir, data_bind, advertise, line_server, local_dir, input_root, ha };
                streamd::taskmanager::run(cfg, terminated()).await.map(|_| ExitCode::SUCCESS)
            }
            Role::LineServer { data_dir, id, bind, job, feed_bind } => {
                tracing::info!("line server {id}");
                let bind = match bind {
                    Some(b) => b,
                    None => match streamd::spec::JobSpec::load(&job).map(|j| j.input.socket) {
                        Ok(Some(s)) => format!("0.0.0.0:{}", s.port),
                        Ok(None) => {
                            eprintln!("streamd: {}: the job has no input.socket: expected one, or --bind", job.display());
                            return Ok(ExitCode::from(2));
                        }
                        Err(e) => {
                            eprintln!("streamd: {e}");
                            return Ok(ExitCode::from(2));
                        }
                    },
                };
                streamd::line_server::run(&data_dir, &bind, &feed_bind, terminated()).await.map(|_| ExitCode::SUCCESS)
            }
            Role::Bench(args) => streamd::bench::run(args).await.map(|_| ExitCode::SUCCESS),
            Role::BenchInterval(args) => streamd::bench_interval::run(args).await.map(|_| ExitCode::SUCCESS),
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("streamd: {e:#}");
            ExitCode::from(1)
        }
    }
}

/// A taskmanager's HA settings: the job id from `--job-id` or the job spec in the data dir.
fn tm_ha(config: HaConfig, job_id: Option<String>, data_dir: &Path) -> Result<streamd::taskmanager::TmHa, String> {
    let job_id = match job_id {
        Some(j) => j,
        None => {
            let path = data_dir.join("job.yaml");
            streamd::spec::JobSpec::load(&path)
                .map_err(|e| format!("--etcd without --job-id needs the job spec to know which leader to follow: {e}"))?
                .job_id
        }
    };
    Ok(streamd::taskmanager::TmHa { config, job_id })
}

/// Resolves on SIGTERM or SIGINT (as PID 1 in a container, SIGTERM is how docker stops us).
async fn terminated() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
        // Without signal handlers we can still run; we just won't shut down gracefully.
        std::future::pending::<()>().await;
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}
