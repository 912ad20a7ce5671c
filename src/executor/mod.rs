//! The executor: runs a scenario plan on a runtime — start the cluster, wait for
//! readiness, drive the fault timeline, follow the job through REST, tear down — and
//! hands the facts to the verdict and the reports.
//!
//! - [`run`](mod@run): one scenario, start to verdict.
//! - [`drive`]: the run loop's shell: samples the job, carries out the schedule's
//!   decisions (apply, check network rules, undo, end), undoes what is left.
//! - [`schedule`]: the run loop's decisions (which fault fires, is undone, when the run
//!   ends, Ctrl-C), apart from any I/O (pure).
//! - [`observe`]: what the loop saw of the job: samples, news for the progress line (pure).
//! - [`findings`]: the faults judged after the loop: report rows, recovery failures,
//!   `fault_effective` (pure).
//! - [`recovery`]: per-fault timings from the jobmanager's history (pure).

pub mod drive;
pub mod findings;
pub mod observe;
pub mod recovery;
pub mod schedule;
#[path = "run.rs"]
pub mod run_one;

use crate::engine::Engine;
use crate::error::{exit, ChaosError};
use crate::report::{self, RunReport};
use crate::runtime::docker::DockerRuntime;
use crate::runtime::process::ProcessRuntime;
use crate::runtime::RuntimeKind;
use crate::scenario::Plan;
use std::path::PathBuf;

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
    /// Run every scenario on each of these engines instead of its own (`--engine`).
    pub engines: Vec<crate::engine::Engine>,
    /// Serve every node's /data through the disk passthrough even without disk faults
    /// (`--disk`: what the passthrough costs by itself).
    pub disk: bool,
}


/// `chaos run`: validates every scenario first (nothing starts if one is invalid), then
/// runs them one after another. Exit code 0 when all passed, 1 when a verdict failed.
pub async fn run(opts: RunOptions) -> Result<u8, ChaosError> {
    let mut plans = Vec::new();
    let engines: Vec<Option<Engine>> = match opts.engines.is_empty() {
        true => vec![None],
        false => opts.engines.iter().copied().map(Some).collect(),
    };
    for path in &opts.scenarios {
        for engine in &engines {
            let mut plan = crate::scenario::load_on(path, opts.seed, *engine).map_err(|e| ChaosError::Usage(e.to_string()))?;
            // One scenario on several engines: each run (its directory, its reports, its
            // JUnit case) is named after both.
            if let (Some(e), true) = (engine, engines.len() > 1) {
                plan.name = format!("{}.{e}", plan.name);
            }
            plans.push(plan);
        }
    }
    // Everything the scenarios need from this machine, before anything starts.
    let docker = match opts.runtime {
        RuntimeKind::Docker => crate::runtime::docker::connect_docker().await.ok(),
        RuntimeKind::Process => None,
    };
    crate::host::preflight(&plans, opts.runtime, docker.as_ref()).await?;
    let progress = report::terminal::Progress::new();
    let reports = match opts.runtime {
        RuntimeKind::Process => {
            let bin = streamd_binary().await?;
            let mut reports = Vec::new();
            for plan in &plans {
                let mut rt = ProcessRuntime::new(bin.clone());
                reports.push(run_one::run_plan(&mut rt, plan, &opts, &progress, None, None).await?);
                print_summary(reports.last());
            }
            reports
        }
        RuntimeKind::Docker => run_on_docker(&plans, &opts, &progress).await?,
    };
    progress.finish();
    if opts.engines.len() > 1 {
        println!("{}", report::terminal::comparison(&reports));
    }
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

/// The plans on docker: the images they need are built once (streamd's, Flink's, the
/// network-fault sidecar), then each plan runs on a cluster of its own.
async fn run_on_docker(plans: &[Plan], opts: &RunOptions, progress: &report::terminal::Progress) -> Result<Vec<RunReport>, ChaosError> {
    let mut reports = Vec::new();
    let docker = crate::runtime::docker::connect_docker().await?;
    let on = |e: Engine| plans.iter().any(|p| p.cluster.engine == e);
    let image = match on(Engine::Streamd) {
        true => {
            let bin = streamd_binary().await?;
            progress.set_phase("building the streamd image");
            Some(crate::images::ensure_streamd_image(&docker, &bin).await?)
        }
        false => None,
    };
    let flink_image = match on(Engine::Flink) {
        true => {
            progress.set_phase("building the Flink image (the first time, Flink is downloaded from PyPI)");
            Some(crate::flink::image::ensure_flink_image(&docker, &crate::flink::cache_dir()).await?)
        }
        false => None,
    };
    // Rules a crashed earlier run left behind are undone first.
    if let Err(e) = crate::netfault::undo_all_runs(&docker, &crate::current::runs_dir()).await {
        tracing::warn!("undoing earlier runs' network rules: {e}");
    }
    let needs_net = plans.iter().any(|p| p.faults.iter().any(|f| crate::host::is_network_fault(&f.action)));
    let net = if needs_net {
        progress.set_phase("building the network-fault sidecar image");
        Some(crate::fault::net::NetContext::new(docker.clone()).await?)
    } else {
        None
    };
    for plan in plans {
        let mut rt = DockerRuntime::with_docker(docker.clone(), None);
        if let Some(image) = &image {
            rt = rt.with_image(image.clone());
        }
        reports.push(run_one::run_plan(&mut rt, plan, opts, progress, net.as_ref(), flink_image.as_deref()).await?);
        print_summary(reports.last());
    }
    Ok(reports)
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
