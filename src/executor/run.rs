//! One scenario run: prepare the run directory, start the cluster, wait for readiness,
//! drive the fault timeline ([`super::drive`]), tear down, judge the output, report.
//!
//! The engines differ at two points only, both here: how the cluster starts (streamd's
//! nodes through the runtime, Flink's through its own cluster code) and what the
//! committed output can show (the verdict's checks).

use super::drive::{Driven, Env};
use super::{ChaosError, RunOptions};
use crate::client::StreamdClient;
use crate::engine::{Engine, JobView};
use crate::flink::watch::FlinkWatch;
use crate::report::{self, Outcome, RunReport};
use crate::runtime::Runtime;
use crate::scenario::{OutputExpectation, Plan};
use crate::verdict::{self, Expectation, OracleInput};
use std::path::{Path, PathBuf};
use streamd_contract::api::now_ms;
use tokio::time::Instant;

/// Everything prepared before a cluster starts.
pub struct Prepared {
    pub run_dir: PathBuf,
    pub cluster_id: String,
    pub oracle_input: OracleInput,
    /// Socket input: the lines to feed the line server, in order.
    pub feed: Option<Vec<String>>,
}

/// Creates `target/chaos/runs/<run-id>/` with `job.yaml` and the input.
pub fn prepare(plan: &Plan) -> Result<Prepared, ChaosError> {
    let stamp = now_ms();
    let short = format!("{:x}", (stamp ^ (std::process::id() as u64) << 20) & 0xff_ffff);
    let cluster_id = format!("chaos-{short}");
    let run_dir = crate::current::runs_dir().join(format!("{}-{short}", sanitize(&plan.name)));
    std::fs::create_dir_all(run_dir.join("input"))
        .map_err(|e| ChaosError::Infrastructure(format!("cannot create run directory {}: {e}", run_dir.display())))?;
    // The run directory is bind-mounted into containers that run as root; absolute path.
    let run_dir = run_dir.canonicalize().unwrap_or(run_dir);
    let mut job = plan.job.clone();
    job.wait_for_taskmanagers = plan.cluster.taskmanagers;
    // What the input is: read by the job itself, or fed to the line server by chaos.
    let content = plan.feed.as_ref().unwrap_or(&job.input);
    let oracle_input = match (&content.generate, &plan.input_source) {
        (Some(g), _) => OracleInput::Generate(g.clone()),
        (None, Some(src)) => {
            let name = content.file.as_ref().map(|f| f.path.clone()).unwrap_or_else(|| "input/input.txt".into());
            let dst = run_dir.join(&name);
            std::fs::copy(src, &dst).map_err(|e| {
                ChaosError::Infrastructure(format!("cannot copy input {} to {}: {e}", src.display(), dst.display()))
            })?;
            OracleInput::File(dst)
        }
        (None, None) => {
            let name = content.file.as_ref().map(|f| f.path.clone()).unwrap_or_else(|| "input/input.txt".into());
            OracleInput::File(run_dir.join(name))
        }
    };
    // A socket run's oracle is what the line server stored: everything fed.
    let (oracle_input, feed) = match plan.feed {
        Some(_) => {
            let lines = input_lines(&oracle_input)
                .map_err(|e| ChaosError::Infrastructure(format!("cannot read the input to feed: {e}")))?;
            (OracleInput::File(streamd_contract::lines::fed_path(&run_dir)), Some(lines))
        }
        None => (oracle_input, None),
    };
    let yaml = serde_yaml::to_string(&job).map_err(|e| ChaosError::Other(format!("cannot encode job spec: {e}")))?;
    std::fs::write(run_dir.join("job.yaml"), yaml)
        .map_err(|e| ChaosError::Infrastructure(format!("cannot write job.yaml: {e}")))?;
    Ok(Prepared { run_dir, cluster_id, oracle_input, feed })
}

/// Every line of an input, in order.
fn input_lines(input: &OracleInput) -> std::io::Result<Vec<String>> {
    match input {
        OracleInput::Generate(spec) => {
            let g = streamd_contract::input::Generator::new(spec);
            Ok((0..g.lines()).map(|i| g.line(i)).collect())
        }
        OracleInput::File(path) => {
            let mut lines = Vec::new();
            streamd_contract::input::for_each_file_line(path, |l| lines.push(l.to_string()))?;
            Ok(lines)
        }
    }
}

fn sanitize(s: &str) -> String {
    s.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '-' }).collect()
}

/// Runs one plan on `rt`. Never leaves the cluster behind unless `opts.keep`.
pub async fn run_plan<R: Runtime>(
    rt: &mut R,
    plan: &Plan,
    opts: &RunOptions,
    progress: &report::terminal::Progress,
    net: Option<&crate::fault::net::NetContext>,
    flink_image: Option<&str>,
) -> Result<RunReport, ChaosError> {
    let prepared = prepare(plan)?;
    let engine = plan.cluster.engine;
    let def = {
        let mut d = plan.cluster_def(&prepared.cluster_id, prepared.run_dir.clone());
        d.env.push(("RUST_LOG".into(), std::env::var("STREAMD_LOG").unwrap_or_else(|_| "info".into())));
        d
    };
    let mut rep = RunReport {
        scenario: plan.name.clone(),
        seed: plan.seed,
        scenario_file: Some(plan.file.clone()),
        description: plan.description.clone(),
        runtime: rt.name().to_string(),
        engine: engine.to_string(),
        run_dir: prepared.run_dir.clone(),
        counts_file: prepared.run_dir.join("counts.tsv"),
        plan: plan.timeline().lines().map(str::to_string).collect(),
        ..RunReport::default()
    };
    progress.set_phase(&format!("{}: starting {} nodes on {engine}", plan.name, plan.cluster.node_names().len()));
    let t_up = Instant::now();
    // The one place the engines start differently: streamd's nodes through the runtime,
    // Flink's through its own cluster code (on Docker), bound to the same labels.
    let flink = match engine {
        Engine::Streamd => {
            // Disk faults: each node's /data is a passthrough, mounted before the node starts.
            crate::diskfault::mount::start_for_plan(plan, &prepared.run_dir, opts.disk, false)?;
            rt.up(&def).await?;
            None
        }
        Engine::Flink => {
            let (Some(docker_rt), Some(image)) = (rt.as_docker(), flink_image) else {
                return Err(ChaosError::Usage("the flink engine runs on the docker runtime only: expected --runtime docker".into()));
            };
            let started =
                crate::flink::plan::start(docker_rt.docker().clone(), plan, &prepared.cluster_id, &prepared.run_dir, image).await;
            // Bound even when the start failed half-way, so teardown finds what started.
            docker_rt.bind(&prepared.cluster_id);
            Some(started?)
        }
    };
    // Network faults act through sidecars in the nodes' namespaces (docker only).
    let nf = net.map(|n| n.for_cluster(&prepared.cluster_id, &prepared.run_dir));
    let env = Env { rt: &*rt, nf: nf.as_ref(), plan, progress, flink: flink.as_ref(), feed: prepared.feed.as_deref(), run_dir: &prepared.run_dir };
    let driven = drive(&env, &prepared, &mut rep, t_up).await;
    let served = crate::diskfault::mount::nodes(&prepared.run_dir);
    if let Some(model) = &plan.cluster.checkpoint_storage {
        rep.checkpoint_storage = Some(crate::diskfault::faults::measure_storage(&prepared.run_dir, model, &served));
    }
    if let Some(nf) = &nf {
        // Whatever drive left (an error path), take every rule back before teardown.
        if let Err(e) = nf.heal().await {
            tracing::warn!("undoing network faults: {e}");
        }
    }
    // Whatever happened: undo what is applied, then tear down (unless --keep).
    if !opts.keep {
        progress.set_phase("tearing down");
        if let Err(e) = rt.down().await {
            tracing::warn!("teardown: {e}");
        }
        if let Err(e) = crate::diskfault::mount::stop_all(&prepared.run_dir) {
            tracing::warn!("teardown: {e}");
        }
    } else {
        eprintln!("--keep: cluster {} left running; `chaos down` removes it", prepared.cluster_id);
        let _ = crate::current::CurrentCluster {
            cluster_id: prepared.cluster_id.clone(),
            runtime: opts.runtime,
            run_dir: prepared.run_dir.clone(),
        }
        .save();
    }
    let driven = driven?;
    judge(plan, &prepared, &mut rep, driven)?;
    let path = prepared.run_dir.join("report.json");
    report::json::write(&rep, &path).map_err(|e| ChaosError::Other(e.to_string()))?;
    Ok(rep)
}

/// Starts the job and the timeline on a started cluster (`t_up`: when it started); fills
/// the report's run facts.
async fn drive<R: Runtime>(env: &Env<'_, R>, prepared: &Prepared, rep: &mut RunReport, t_up: Instant) -> Result<Driven, ChaosError> {
    let mut job = connect(env.rt, env.plan, prepared).await?;
    rep.cluster_start_ms = Some(t_up.elapsed().as_millis() as u64);
    env.progress.set_phase(&format!("{}: waiting for the job", env.plan.name));
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    super::drive::drive(env, &mut job, ctrl_c, rep).await
}

/// The job's view, once the cluster is ready (its taskmanagers registered).
async fn connect<R: Runtime>(rt: &R, plan: &Plan, prepared: &Prepared) -> Result<JobView, ChaosError> {
    let engine = plan.cluster.engine;
    let url = rt.rest_url("jobmanager-1").await?;
    let rest_err = |e: crate::client::ClientError| ChaosError::Other(e.to_string());
    // Committed output is watched on disk (the run directory is every node's /data).
    let output_dir = prepared.run_dir.join(engine.output_dir(&plan.job.job_id));
    let (view, ready) = match engine {
        Engine::Streamd => {
            let client = StreamdClient::new(url).map_err(rest_err)?;
            (JobView::streamd(client, plan.job.job_id.clone(), output_dir), plan.cluster.taskmanagers)
        }
        Engine::Flink => {
            let rest = crate::flink::rest::FlinkRest::new(url).map_err(rest_err)?;
            let lines = plan.job.input.generate.as_ref().map(|g| g.lines);
            let watch = FlinkWatch::new(rest, plan.job.parallelism, lines);
            (JobView::flink(watch, output_dir), crate::flink::plan::busy_taskmanagers(plan))
        }
    };
    view.wait_ready(ready as usize, super::drive::ready_within(engine))
        .await
        .map_err(|e| ChaosError::Infrastructure(format!("the cluster did not become ready: {e}")))?;
    Ok(view)
}

/// The verdict: oracle, committed output, the checks (the epoch checks with the cuts the
/// jobmanager recorded), `counts.tsv`.
fn judge(plan: &Plan, prepared: &Prepared, rep: &mut RunReport, driven: Driven) -> Result<(), ChaosError> {
    let mut run_failures = driven.failures;
    let oracle = verdict::oracle_of(&prepared.oracle_input, &plan.job)
        .map_err(|e| ChaosError::Other(format!("cannot compute the oracle: {e}")))?;
    let out = prepared.run_dir.join(plan.cluster.engine.output_dir(&plan.job.job_id));
    let expectation = match plan.expect.output {
        OutputExpectation::ExactlyOnce => Expectation::ExactlyOnce,
        OutputExpectation::AtLeastOnce => Expectation::AtLeastOnce,
        OutputExpectation::AtMostOnce => Expectation::AtMostOnce,
        OutputExpectation::Any => Expectation::Any,
    };
    // The other place the engines differ: what their committed output can show.
    let mut v = match plan.cluster.engine {
        Engine::Streamd => {
            let txns = streamd_contract::output::read_committed(&out)
                .map_err(|e| ChaosError::Other(format!("cannot read committed output in {}: {e}", out.display())))?;
            let finished = rep.final_state.as_deref() == Some("FINISHED");
            let input = prepared.oracle_input.clone();
            // The cuts of a socket source are global line indices, and lost lines make
            // every later cut differ from the oracle by design: the epoch checks are for
            // replayable inputs.
            let epochs = if plan.feed.is_some() {
                None
            } else {
                match verdict::EpochEvidence::read(&prepared.run_dir, &plan.job.job_id, input, plan.job.parallelism, finished) {
                    Ok(e) => Some(e.windowed(plan.job.window_clock())),
                    Err(e) => {
                        run_failures.push((verdict::CONSISTENT_CUTS.into(), format!("cannot read the checkpoints' cuts: {e}")));
                        None
                    }
                }
            };
            verdict::verdict_with(&oracle, &txns, expectation, epochs.as_ref(), run_failures)
        }
        Engine::Flink => crate::flink::plan::judge(&oracle, &out, expectation, run_failures)?,
    };
    if let Some(c) = driven.fault_effective {
        v.add_check(verdict::FAULT_EFFECTIVE, c);
    }
    if let Some((faults, failures, t0)) = driven.socket {
        match verdict::at_most_once::SocketEvidence::read(&prepared.run_dir, faults, failures, t0) {
            Ok(ev) => verdict::at_most_once::explain(&mut v, &ev),
            Err(e) => tracing::warn!("cannot read the line server's journal: {e}"),
        }
    }
    verdict::write_counts(&rep.counts_file, &v.finals)
        .map_err(|e| ChaosError::Other(format!("cannot write {}: {e}", rep.counts_file.display())))?;
    rep.apply_verdict(&v);
    // `recovery_ms` is what the executor measured (none: not recovered); `fill_derived`
    // would put RUNNING-again in the place of a missing one.
    let measured: Vec<Option<u64>> = rep.faults.iter().map(|f| f.recovery_ms).collect();
    rep.fill_derived();
    for (f, m) in rep.faults.iter_mut().zip(measured) {
        f.recovery_ms = m;
    }
    if rep.duration_ms > 0 {
        rep.words_per_s = v.oracle_words as f64 * 1000.0 / rep.duration_ms as f64;
    }
    debug_assert!(matches!(rep.verdict, Outcome::Pass | Outcome::Fail));
    Ok(())
}

/// Writes the requested reports of several runs into `out`.
pub fn write_reports(runs: &[RunReport], kinds: &[super::ReportKind], out: &Path) -> Result<(), ChaosError> {
    std::fs::create_dir_all(out).map_err(|e| ChaosError::Infrastructure(format!("cannot create {}: {e}", out.display())))?;
    for k in kinds {
        let r = match k {
            super::ReportKind::Json => runs.iter().try_for_each(|r| report::json::write(r, &out.join(format!("{}.json", r.scenario)))),
            super::ReportKind::Junit => report::junit::write(runs, &out.join("junit.xml")),
            super::ReportKind::Html => runs.iter().try_for_each(|r| report::html::write(r, &out.join(format!("{}.html", r.scenario)))),
        };
        r.map_err(|e| ChaosError::Other(e.to_string()))?;
    }
    Ok(())
}
