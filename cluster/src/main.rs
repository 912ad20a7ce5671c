//! `streamd`: one binary, the role is the subcommand (one image serves every container).

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "streamd", version, about = "A Flink-style stream cluster: jobmanager, taskmanager, bench")]
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
        /// The RPC address taskmanagers use to reach this jobmanager.
        #[arg(long)]
        advertise: Option<String>,
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
    },
    /// Measure throughput against the single-threaded COST baseline.
    Bench(streamd::bench::BenchArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("streamd: cannot start the runtime: {e}");
            return ExitCode::from(3);
        }
    };
    let result = rt.block_on(async move {
        match cli.role {
            Role::Jobmanager { job, data_dir, id, rpc_bind, rest_bind, advertise: _ } => {
                let job = match streamd::spec::JobSpec::load(&job) {
                    Ok(j) => j,
                    Err(e) => {
                        eprintln!("streamd: {e}");
                        return Ok(ExitCode::from(2));
                    }
                };
                let cfg = streamd::jobmanager::JmConfig { id, job, data_dir, rpc_bind, rest_bind };
                streamd::jobmanager::run(cfg, terminated()).await.map(|_| ExitCode::SUCCESS)
            }
            Role::Taskmanager { jobmanager, slots, data_dir, id, data_bind, advertise } => {
                let advertise = advertise.unwrap_or_else(|| data_bind.clone());
                let cfg = streamd::taskmanager::TmConfig { id, jobmanager, slots, data_dir, data_bind, advertise };
                streamd::taskmanager::run(cfg, terminated()).await.map(|_| ExitCode::SUCCESS)
            }
            Role::Bench(args) => streamd::bench::run(args).await.map(|_| ExitCode::SUCCESS),
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
