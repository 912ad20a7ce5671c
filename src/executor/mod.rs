//! The executor: runs a scenario plan on a runtime — start the cluster, wait for
//! readiness, drive the fault timeline, follow the job through REST, tear down — and
//! hands the facts to the verdict and the reports. Also `chaos up` and `chaos verify`.
//!
//! - [`run`](mod@run): one scenario, start to verdict.
//! - [`recovery`]: per-fault timings from the jobmanager's history (pure).
//! - [`net`]: network faults per runtime.

pub mod net;
pub mod recovery;
#[path = "run.rs"]
pub mod run_one;

use crate::report::{self, RunReport};
use crate::runtime::docker::DockerRuntime;
use crate::runtime::process::ProcessRuntime;
use crate::runtime::Runtime;
use std::path::PathBuf;
use std::time::Duration;
use streamd_contract::api::JobState;

/// Which runtime to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize)]
pub enum RuntimeKind {
    Docker,
    Process,
}

/// Report formats beyond the terminal summary and the always-written report.json.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ReportKind {
    Json,
    Junit,
    Html,
}

/// Options of `chaos run`.
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub scenarios: Vec<PathBuf>,
    pub seed: Option<u64>,
    pub runtime: RuntimeKind,
    pub reports: Vec<ReportKind>,
    pub out: Option<PathBuf>,
    pub keep: bool,
}

/// Options of `chaos up`.
#[derive(Debug, Clone)]
pub struct UpOptions {
    pub scenario: Option<PathBuf>,
    pub jobmanagers: u32,
    pub taskmanagers: u32,
    pub slots: u32,
    pub runtime: RuntimeKind,
}

/// Process exit codes (DESIGN.md section 4).
pub mod exit {
    /// The verdict passed.
    pub const PASS: u8 = 0;
    /// The verdict failed: wrong output, not recovered in time.
    pub const FAIL: u8 = 1;
    /// Bad usage or an invalid scenario.
    pub const USAGE: u8 = 2;
    /// Infrastructure: no Docker daemon, image build failed.
    pub const INFRA: u8 = 3;
}

/// A failure of a chaos command, classified by exit code.
#[derive(Debug, thiserror::Error)]
pub enum ChaosError {
    #[error("{0}")]
    Usage(String),
    #[error("{0}")]
    Infrastructure(String),
    #[error("{0}")]
    Other(String),
    /// Ctrl-C: faults were undone and the cluster removed.
    #[error("interrupted")]
    Interrupted,
}

impl ChaosError {
    pub fn exit_code(&self) -> u8 {
        match self {
            ChaosError::Interrupted => 130,
            ChaosError::Usage(_) => exit::USAGE,
            ChaosError::Infrastructure(_) => exit::INFRA,
            ChaosError::Other(_) => exit::INFRA,
        }
    }
}

impl From<crate::runtime::RuntimeError> for ChaosError {
    fn from(e: crate::runtime::RuntimeError) -> Self {
        use crate::runtime::RuntimeError as R;
        match e {
            R::Infrastructure(m) => ChaosError::Infrastructure(m),
            R::Usage(m) => ChaosError::Usage(m),
            R::Other(m) => ChaosError::Other(m),
        }
    }
}

/// `chaos run`: validates every scenario first (nothing starts if one is invalid), then
/// runs them one after another. Exit code 0 when all passed, 1 when a verdict failed.
pub async fn run(opts: RunOptions) -> Result<u8, ChaosError> {
    let mut plans = Vec::new();
    for path in &opts.scenarios {
        let plan = crate::scenario::load(path, opts.seed).map_err(|e| ChaosError::Usage(e.to_string()))?;
        if opts.runtime == RuntimeKind::Process {
            if let Some(f) = plan.faults.iter().find(|f| matches!(f.action, crate::scenario::Action::Netem(_) | crate::scenario::Action::Partition { .. })) {
                return Err(ChaosError::Usage(format!(
                    "{}:{}: {} needs the docker runtime: the process runtime runs every node on 127.0.0.1 with no network namespace to degrade",
                    path.display(),
                    f.line,
                    f.action.name()
                )));
            }
        }
        plans.push(plan);
    }
    let progress = report::terminal::Progress::new();
    let mut reports: Vec<RunReport> = Vec::new();
    match opts.runtime {
        RuntimeKind::Process => {
            let bin = streamd_binary().await?;
            for plan in &plans {
                let mut rt = ProcessRuntime::new(bin.clone());
                reports.push(run_one::run_plan(&mut rt, plan, &opts, &progress, None).await?);
                print_summary(reports.last());
            }
        }
        RuntimeKind::Docker => {
            let docker = crate::runtime::docker::connect_docker().await?;
            let bin = streamd_binary().await?;
            progress.set_phase("building the streamd image");
            let image = crate::images::ensure_streamd_image(&docker, &bin).await?;
            // Rules a crashed earlier run left behind are undone first.
            if let Err(e) = crate::netfault::undo_all_runs(&docker, &crate::current::runs_dir()).await {
                tracing::warn!("undoing earlier runs' network rules: {e}");
            }
            let needs_net = plans.iter().any(|p| {
                p.faults.iter().any(|f| matches!(f.action, crate::scenario::Action::Netem(_) | crate::scenario::Action::Partition { .. }))
            });
            let net = if needs_net {
                progress.set_phase("building the network-fault sidecar image");
                Some(net::NetContext::new(docker.clone()).await?)
            } else {
                None
            };
            for plan in &plans {
                let mut rt = DockerRuntime::with_docker(docker.clone(), None).with_image(image.clone());
                reports.push(run_one::run_plan(&mut rt, plan, &opts, &progress, net.as_ref()).await?);
                print_summary(reports.last());
            }
        }
    }
    progress.finish();
    if let Some(out) = &opts.out {
        run_one::write_reports(&reports, &opts.reports, out)?;
    } else if !opts.reports.is_empty() {
        // Without --out, requested reports go next to report.json in each run directory.
        for r in &reports {
            run_one::write_reports(std::slice::from_ref(r), &opts.reports, &r.run_dir)?;
        }
    }
    let failed = reports.iter().filter(|r| r.verdict == report::Outcome::Fail).count();
    Ok(if failed > 0 { exit::FAIL } else { exit::PASS })
}

fn print_summary(r: Option<&RunReport>) {
    if let Some(r) = r {
        println!("{}", report::terminal::summary(r));
    }
}

/// The static streamd binary: `CHAOS_STREAMD_BIN`, or built by cargo from the workspace.
pub async fn streamd_binary() -> Result<PathBuf, ChaosError> {
    // Runs cargo: blocking work, off the async workers.
    tokio::task::spawn_blocking(crate::images::build_streamd_binary)
        .await
        .map_err(|e| ChaosError::Other(format!("building streamd: {e}")))?
        .map_err(ChaosError::from)
}

/// `chaos up`: starts a cluster and its job, leaves it running, records it as current.
pub async fn up(opts: UpOptions) -> Result<u8, ChaosError> {
    if let Some(c) = crate::current::CurrentCluster::load().ok().flatten() {
        return Err(ChaosError::Usage(format!(
            "cluster {} is already up (run dir {}); `chaos down` first",
            c.cluster_id,
            c.run_dir.display()
        )));
    }
    let mut plan = match &opts.scenario {
        Some(p) => crate::scenario::load(p, None).map_err(|e| ChaosError::Usage(e.to_string()))?,
        None => {
            let text = format!(
                "name: interactive\ncluster: {{ jobmanagers: {}, taskmanagers: {}, slots: {} }}\n\
                 job: {{ parallelism: {} }}\ninput: {{ generate: {{ lines: 1 }} }}\n",
                opts.jobmanagers,
                opts.taskmanagers,
                opts.slots,
                // Leave one taskmanager's slots spare, so `chaos kill tm2` is survivable.
                (opts.taskmanagers.saturating_sub(1) * opts.slots).max(1)
            );
            crate::scenario::parse_str(&text, std::path::Path::new("<chaos up>"), None)
                .map_err(|e| ChaosError::Usage(e.to_string()))?
        }
    };
    // Interactive input: a growing file the sources follow until `chaos verify` ends it.
    if plan.job.input.generate.is_none() || opts.scenario.is_none() {
        plan.job.input.generate = None;
        plan.job.input.file = Some(streamd_contract::spec::FileSpec { path: "input/input.txt".into(), follow: true });
    }
    plan.faults.clear();
    let prepared = run_one::prepare(&plan)?;
    let input = prepared.run_dir.join("input/input.txt");
    if !input.exists() {
        std::fs::write(&input, b"").map_err(|e| ChaosError::Infrastructure(format!("cannot create {}: {e}", input.display())))?;
    }
    let def = plan.cluster_def(&prepared.cluster_id, prepared.run_dir.clone());
    let t = std::time::Instant::now();
    let url = match opts.runtime {
        RuntimeKind::Process => {
            let mut rt = ProcessRuntime::new(streamd_binary().await?);
            rt.up(&def).await?;
            rt.rest_url("jobmanager-1").await?
        }
        RuntimeKind::Docker => {
            let docker = crate::runtime::docker::connect_docker().await?;
            let image = crate::images::ensure_streamd_image(&docker, &streamd_binary().await?).await?;
            let mut rt = DockerRuntime::with_docker(docker, None).with_image(image);
            rt.up(&def).await?;
            rt.rest_url("jobmanager-1").await?
        }
    };
    crate::current::CurrentCluster { cluster_id: prepared.cluster_id.clone(), runtime: opts.runtime, run_dir: prepared.run_dir.clone() }
        .save()
        .map_err(|e| ChaosError::Other(e.to_string()))?;
    let client = crate::client::StreamdClient::new(url.clone()).map_err(|e| ChaosError::Other(e.to_string()))?;
    client
        .wait_ready(plan.cluster.taskmanagers as usize, Duration::from_secs(60))
        .await
        .map_err(|e| ChaosError::Infrastructure(format!("the cluster did not become ready: {e}")))?;
    println!("cluster {} up in {} ms: {}", prepared.cluster_id, t.elapsed().as_millis(), plan.cluster.describe_nodes());
    println!("REST: {url}   run dir: {}", prepared.run_dir.display());
    println!("feed lines with `chaos feed`, break things with `chaos kill tm2`, check with `chaos verify`, clean up with `chaos down`");
    Ok(exit::PASS)
}

/// `chaos verify`: ends the live cluster's input, waits for FINISHED, compares the committed
/// output with the oracle. Exit 0 when it matches, 1 when not.
pub async fn verify() -> Result<u8, ChaosError> {
    let cur = crate::current::CurrentCluster::load()
        .map_err(|e| ChaosError::Other(e.to_string()))?
        .ok_or_else(|| ChaosError::Usage("no live cluster: start one with `chaos up`".into()))?;
    let job = streamd_contract::spec::JobSpec::load(&cur.run_dir.join("job.yaml")).map_err(|e| ChaosError::Other(e.to_string()))?;
    let url = match cur.runtime {
        RuntimeKind::Process => ProcessRuntime::attach(&cur.run_dir)?.rest_url("jobmanager-1").await?,
        RuntimeKind::Docker => DockerRuntime::connect(Some(&cur.cluster_id)).await?.rest_url("jobmanager-1").await?,
    };
    let oracle_input = if let Some(g) = &job.input.generate {
        crate::verdict::OracleInput::Generate(g.clone())
    } else if let Some(f) = &job.input.file {
        let path = cur.run_dir.join(&f.path);
        if f.follow {
            std::fs::write(streamd_contract::input::end_marker(&path), b"")
                .map_err(|e| ChaosError::Other(format!("cannot end the input: {e}")))?;
        }
        crate::verdict::OracleInput::File(path)
    } else {
        return Err(ChaosError::Other("the job has no input".into()));
    };
    let client = crate::client::StreamdClient::new(url).map_err(|e| ChaosError::Other(e.to_string()))?;
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    let d = loop {
        match client.job(&job.job_id).await {
            Ok(d) if d.state.is_terminal() => break d,
            Ok(_) | Err(_) if std::time::Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(100)).await,
            Ok(d) => return Err(ChaosError::Other(format!(
                "the job is still {:?} after 2 minutes (restarts: {}; last failure: {})",
                d.state,
                d.restarts,
                d.failure_cause.unwrap_or_default()
            ))),
            Err(e) => return Err(ChaosError::Other(format!("the jobmanager does not answer: {e}"))),
        }
    };
    let oracle = crate::verdict::oracle(&oracle_input).map_err(|e| ChaosError::Other(e.to_string()))?;
    let txns = streamd_contract::output::read_committed(&cur.run_dir.join("output").join(&job.job_id))
        .map_err(|e| ChaosError::Other(e.to_string()))?;
    let mut failures = Vec::new();
    if d.state == JobState::Failed {
        failures.push(("job".to_string(), format!("the job FAILED: {}", d.failure_cause.unwrap_or_default())));
    }
    let finished = d.state == JobState::Finished;
    let epochs = match crate::verdict::EpochEvidence::read(&cur.run_dir, &job.job_id, oracle_input.clone(), job.parallelism, finished) {
        Ok(e) => Some(e),
        Err(e) => {
            failures.push((crate::verdict::CONSISTENT_CUTS.into(), format!("cannot read the checkpoints' cuts: {e}")));
            None
        }
    };
    let expect = crate::verdict::Expectation::ExactlyOnce;
    let v = crate::verdict::verdict_with(&oracle, &txns, expect, epochs.as_ref(), failures);
    let counts = cur.run_dir.join("counts.tsv");
    crate::verdict::write_counts(&counts, &v.finals).map_err(|e| ChaosError::Other(e.to_string()))?;
    let mut r = RunReport { scenario: "interactive".into(), run_dir: cur.run_dir.clone(), counts_file: counts, ..RunReport::default() };
    r.restarts = d.restarts;
    r.checkpoints_completed = d.checkpoints_completed;
    r.apply_verdict(&v);
    r.fill_derived();
    println!("{}", report::terminal::summary(&r));
    Ok(if v.pass { exit::PASS } else { exit::FAIL })
}
