//! One scenario run: prepare the run directory, start the cluster, wait for readiness,
//! drive the fault timeline while sampling REST, wait for the end, undo what is still
//! applied, judge, report, tear down.
//!
//! The loop turns every input (a REST sample, a due fault, a due undo, Ctrl-C) into one
//! decision per tick; timings are read back from the jobmanager's own history afterwards
//! (see [`super::recovery`]).

use super::recovery::{recovery, Applied, JobAtFault, Sample};
use super::schedule::{Decision, End, Observed, Schedule};
use super::{ChaosError, RunOptions};
use crate::client::StreamdClient;
use crate::engine::{Engine, JobView};
use crate::flink::watch::FlinkWatch;
use crate::report::{self, EventKind, FaultReport, Outcome, RunReport, TimelineEvent};
use crate::runtime::Runtime;
use crate::scenario::{Action, OutputExpectation, Plan, PlannedFault};
use crate::verdict::{self, Expectation, OracleInput};
use std::path::{Path, PathBuf};
use std::time::Duration;
use streamd_contract::api::{now_ms, JobDetails, JobState};
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

/// A fault of the plan as the run goes: fired or not, undone or not, what it did.
struct FaultState {
    planned: PlannedFault,
    targets: Vec<String>,
    applied_ms: Option<u64>,
    inject_latency_ms: Option<u64>,
    undone_ms: Option<u64>,
    records_before: u64,
    error: Option<String>,
    undo: Option<crate::fault::Undo>,
    /// Network faults: the effect, measured while the fault holds (RTT and loss probes).
    measure: Option<tokio::task::JoinHandle<Option<serde_json::Value>>>,
    /// Network faults: their journal ids (to match reconcile outcomes).
    undo_ids: Option<Vec<String>>,
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
    let driven = drive(rt, plan, &prepared, &mut rep, progress, t_up, nf.as_ref(), flink.as_ref()).await;
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

/// Starts the job and the timeline; fills the report's run facts.
#[allow(clippy::too_many_arguments)]
async fn drive<R: Runtime>(
    rt: &mut R,
    plan: &Plan,
    prepared: &Prepared,
    rep: &mut RunReport,
    progress: &report::terminal::Progress,
    t_up: Instant,
    nf: Option<&crate::netfault::NetFaults>,
    flink: Option<&crate::flink::plan::Started>,
) -> Result<Driven, ChaosError> {
    let injector = crate::fault::Injector::new(&*rt, nf);
    let engine = plan.cluster.engine;
    let url = rt.rest_url("jobmanager-1").await?;
    let rest_err = |e: crate::client::ClientError| ChaosError::Other(e.to_string());
    let (mut client, ready) = match engine {
        Engine::Streamd => (
            JobView::Streamd { client: StreamdClient::new(url).map_err(rest_err)?, job_id: plan.job.job_id.clone() },
            plan.cluster.taskmanagers,
        ),
        Engine::Flink => {
            let rest = crate::flink::rest::FlinkRest::new(url).map_err(rest_err)?;
            let lines = plan.job.input.generate.as_ref().map(|g| g.lines);
            (JobView::Flink(FlinkWatch::new(rest, plan.job.parallelism, lines)), crate::flink::plan::busy_taskmanagers(plan))
        }
    };
    // Flink's JVMs take longer to come up than streamd's static binaries.
    let ready_within = Duration::from_secs(if engine == Engine::Flink { 120 } else { 60 });
    client
        .wait_ready(ready as usize, ready_within)
        .await
        .map_err(|e| ChaosError::Infrastructure(format!("the cluster did not become ready: {e}")))?;
    rep.cluster_start_ms = Some(t_up.elapsed().as_millis() as u64);
    progress.set_phase(&format!("{}: waiting for the job", plan.name));
    let job_id = plan.job.job_id.clone();
    // RUNNING for the first time: t0 of every fault time.
    let deadline = Instant::now() + ready_within;
    // Spare taskmanagers (Flink) join as soon as every task has its slot: early, since a
    // JVM takes seconds to start, but never before (see flink::plan).
    let mut spares_started = false;
    let t0 = loop {
        if Instant::now() > deadline {
            return Err(ChaosError::Other(format!("the job did not reach RUNNING within {} s", ready_within.as_secs())));
        }
        if let Ok(d) = client.job().await {
            if let (Some(f), false, true) = (flink, spares_started, client.tasks_placed()) {
                f.add_spares().await?;
                spares_started = true;
            }
            if let Some(h) = d.history.iter().find(|h| h.state == JobState::Running) {
                break h.at_ms;
            }
            if d.state == JobState::Failed {
                return Err(ChaosError::Other(format!("the job FAILED at start: {}", d.failure_cause.unwrap_or_default())));
            }
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    };
    if let (Some(f), false) = (flink, spares_started) {
        f.add_spares().await?;
    }
    let start = Instant::now() - Duration::from_millis(now_ms().saturating_sub(t0));
    // Socket input: the job runs, its source waits on the line server; feed it now, at
    // the input's rate, so the input and the fault timeline share their start.
    let (feeder, feed_addr) = match (&prepared.feed, &plan.feed) {
        (Some(lines), Some(input)) => {
            let (addr, rx) = tokio::sync::watch::channel(rt.feed_address(streamd_contract::lines::NODE).await?);
            let (lines, rate) = (lines.clone(), input.rate);
            let give_up = start + plan.expect.timeout;
            (Some(tokio::spawn(async move { crate::feed::feed_all(rx, &lines, rate, give_up).await })), Some(addr))
        }
        _ => (None, None),
    };
    let mut schedule = Schedule::new(&plan.faults, start, plan.expect.timeout);
    let mut faults: Vec<FaultState> = plan
        .faults
        .iter()
        .map(|f| FaultState {
            planned: f.clone(),
            targets: Vec::new(),
            applied_ms: None,
            inject_latency_ms: None,
            undone_ms: None,
            records_before: 0,
            error: None,
            undo: None,
            measure: None,
            undo_ids: None,
        })
        .collect();
    let mut samples: Vec<Sample> = Vec::new();
    // Committed output is watched on disk (the run directory is every node's /data).
    let output_dir = prepared.run_dir.join(engine.output_dir(&job_id));
    let mut last: Option<JobDetails> = None;
    let mut max_records = 0u64;
    let mut last_ckpts = 0u64;
    let mut last_attempt = 1u64;
    let mut run_failures: Vec<(String, String)> = Vec::new();
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    let mut interrupted = false;
    let mut reconciled: Vec<crate::netfault::Reconciled> = Vec::new();
    'run: loop {
        tokio::select! {
            _ = &mut ctrl_c => { interrupted = true; }
            _ = tick.tick() => {}
        }
        if interrupted {
            eprintln!("interrupted: undoing faults and tearing down");
            break;
        }
        // With HA on Flink the leader is looked up twice a second (see JobView::track_leader).
        if plan.cluster.ha() && engine == Engine::Flink && samples.len().is_multiple_of(5) {
            client.track_leader(rt).await;
        }
        // Sample.
        match client.job().await {
            Ok(d) => {
                max_records = max_records.max(d.records_in);
                let committed = crate::engine::committed_units(engine, &output_dir).unwrap_or_else(|e| {
                    tracing::debug!("counting committed output: {e}");
                    samples.last().map_or(0, |s| s.committed)
                });
                samples.push(Sample {
                    at_ms: d.now_ms,
                    records_in: d.records_in,
                    state: d.state,
                    checkpoint: d.last_completed_checkpoint,
                    committed,
                });
                rep.timeline.samples.push(report::Sample {
                    t_ms: d.now_ms.saturating_sub(t0),
                    records_in: d.records_in,
                    records_out: d.records_out,
                    state: format!("{:?}", d.state).to_uppercase(),
                    checkpoints: d.checkpoints_completed,
                });
                if let Some(total) = d.input_lines {
                    progress.set_input(d.records_in, total);
                }
                while last_ckpts < d.checkpoints_completed {
                    last_ckpts += 1;
                    progress.inc_checkpoints();
                }
                if d.attempt > last_attempt {
                    last_attempt = d.attempt;
                    progress.restart();
                }
                last = Some(d);
            }
            Err(e) => {
                tracing::debug!("REST sample failed: {e}");
                // HA: the jobmanager asked may be gone or frozen (a killed or paused
                // leader): follow the one that leads now.
                if e.is_unreachable() && plan.cluster.ha() {
                    client.follow_leader(rt).await;
                }
            }
        }
        let observed = Observed {
            state: last.as_ref().map(|d| d.state),
            last_checkpoint: last.as_ref().and_then(|d| d.last_completed_checkpoint),
        };
        for decision in schedule.decide(Instant::now(), observed) {
            match decision {
                Decision::Fire(i) => {
                    let f = &mut faults[i];
                    f.records_before = max_records;
                    let targets = crate::fault::resolve_targets(rt, &f.planned.targets).await;
                    f.targets = targets.clone();
                    let label = format!("{} {}", f.planned.action.name(), targets.join(","));
                    progress.fault(&label);
                    // The fault takes effect somewhere inside the API call: its start is
                    // when it was applied (what the jobmanager notices can't be earlier),
                    // the call's duration is the injection latency.
                    match injector.apply(&f.planned.action, &targets).await {
                        Ok(applied) => {
                            f.applied_ms = Some(applied.called_ms);
                            f.inject_latency_ms = Some(applied.latency.as_millis() as u64);
                            f.undo_ids = applied.undo.as_ref().map(|u| u.net_ids()).filter(|ids| !ids.is_empty());
                            let holds_net = matches!(applied.undo, Some(crate::fault::Undo::Net(_)));
                            schedule.applied(i, Instant::now(), true, applied.undo.is_some(), holds_net);
                            f.undo = applied.undo;
                            f.measure = injector.measure(&f.planned.action, &targets);
                            // A line server (re)started may have a new address: the feeder
                            // reconnects to wherever it is now.
                            if let (Some(addr), true) = (&feed_addr, targets.iter().any(|t| t == streamd_contract::lines::NODE)) {
                                if let Ok(a) = rt.feed_address(streamd_contract::lines::NODE).await {
                                    addr.send_replace(a);
                                }
                            }
                            rep.timeline.events.push(TimelineEvent { t_ms: now_ms().saturating_sub(t0), kind: EventKind::Fault, label });
                        }
                        Err(e) => {
                            tracing::warn!("fault {label} failed: {e}");
                            schedule.applied(i, Instant::now(), false, false, false);
                            f.error = Some(e.to_string());
                            run_failures.push(("faults".into(), format!("{label}: {e}")));
                        }
                    }
                }
                Decision::Reconcile => {
                    if let Some(nf) = nf {
                        match nf.reconcile(crate::netfault::ReconcilePolicy::Reapply).await {
                            Ok(r) => reconciled.extend(r.into_iter().filter(|r| r.action != crate::netfault::ReconcileAction::Intact)),
                            Err(e) => tracing::warn!("reconciling network faults: {e}"),
                        }
                    }
                }
                Decision::Undo(i) => {
                    undo(&injector, &mut faults[i], t0, rep).await;
                    schedule.undone(i);
                }
                Decision::End(End::Timeout) => {
                    run_failures.push((
                        "timeout".into(),
                        format!(
                            "the job was not FINISHED within {} (state {:?})",
                            streamd_contract::duration::format_duration(plan.expect.timeout),
                            observed.state
                        ),
                    ));
                    break 'run;
                }
                Decision::End(End::Done | End::Failed) => break 'run,
            }
        }
    }
    if let Some(feeder) = feeder {
        if !feeder.is_finished() {
            feeder.abort();
        }
        match feeder.await {
            Ok(Err(e)) => run_failures.push(("feed".into(), format!("the input was not all fed: {e}"))),
            Err(e) if !e.is_cancelled() => run_failures.push(("feed".into(), format!("the feeder failed: {e}"))),
            _ => {}
        }
    }
    // Undo whatever is still applied (pauses, network rules).
    for f in faults.iter_mut() {
        if f.undo.is_some() && f.undone_ms.is_none() {
            undo(&injector, f, t0, rep).await;
        }
    }
    if interrupted {
        return Err(ChaosError::Interrupted);
    }
    if plan.cluster.ha() {
        client.follow_leader(rt).await;
    }
    let d = match client.job().await {
        Ok(d) => d,
        Err(_) => last.clone().ok_or_else(|| ChaosError::Other("no answer from the jobmanager".into()))?,
    };
    if d.state == JobState::Failed {
        run_failures.push(("job".into(), format!("the job FAILED: {}", d.failure_cause.clone().unwrap_or_default())));
    }
    // Per-fault facts from the jobmanager's own history.
    let mut ineffective: Vec<String> = Vec::new();
    let mut judged = 0usize;
    for i in 0..faults.len() {
        let measured = match faults[i].measure.take() {
            Some(h) => tokio::time::timeout(Duration::from_secs(20), h).await.ok().and_then(|r| r.ok()).flatten(),
            None => None,
        };
        let f = &faults[i];
        let net_ids: Vec<String> = match &f.undo_ids {
            Some(ids) => ids.clone(),
            None => vec![],
        };
        let notes: Vec<&crate::netfault::Reconciled> = reconciled.iter().filter(|r| net_ids.contains(&r.fault)).collect();
        let measured = match (measured, notes.is_empty()) {
            (m, true) => m,
            (m, false) => Some(serde_json::json!({ "probe": m, "reconciled": notes })),
        };
        let mut fr = FaultReport {
            measured,
            action: f.planned.action.name().to_string(),
            target: f.targets.join(","),
            at: f.planned.trigger.to_string(),
            error: f.error.clone(),
            inject_latency_ms: f.inject_latency_ms,
            ..FaultReport::default()
        };
        if let Some(a) = f.applied_ms {
            // Later faults: on the same nodes (their failures are theirs), and of any kind.
            let later = || faults.iter().filter_map(|g| g.applied_ms.filter(|&t| t > a).map(|t| (t, g)));
            let facts = Applied {
                applied_ms: a,
                nodes: &f.targets,
                records_before: f.records_before,
                next_on_same_nodes_ms: later().filter(|(_, g)| g.targets.iter().any(|n| f.targets.contains(n))).map(|(t, _)| t).min(),
                next_ms: later().map(|(t, _)| t).min(),
            };
            let r = recovery(&facts, &d.history, &d.failures, &samples);
            let rel = |t: Option<u64>| t.map(|t| t.saturating_sub(t0));
            fr.applied_ms = rel(Some(a));
            fr.undone_ms = rel(f.undone_ms);
            fr.detected_ms = rel(r.detected_ms);
            fr.running_ms = rel(r.running_ms);
            fr.caught_up_ms = rel(r.caught_up_ms);
            fr.recovery_ms = r.recovered_ms.map(|t| t.saturating_sub(a));
            // Restoring actions (start, unpause) are not tests of their own.
            let disruptive = !matches!(f.planned.action, Action::Start | Action::Unpause);
            let label = format!("{} {} at {} ms", fr.action, fr.target, a.saturating_sub(t0));
            if disruptive {
                judged += 1;
                match r.job_at_fault {
                    JobAtFault::Live => {}
                    JobAtFault::NotStarted => ineffective.push(format!("{label}: the job was not running yet")),
                    JobAtFault::Ended { state, at_ms } => ineffective.push(format!(
                        "{label}: the job was already {} (at {} ms)",
                        format!("{state:?}").to_uppercase(),
                        at_ms.saturating_sub(t0)
                    )),
                }
            }
            if disruptive && r.job_at_fault == JobAtFault::Live {
                // Judged from the undo when the fault lasted and brought nothing down.
                let from = f.undone_ms.filter(|_| r.running_ms.is_none() && r.detected_ms.is_none()).unwrap_or(a);
                let limit = plan.expect.recovery_within.as_millis() as u64;
                match r.recovered_ms {
                    Some(t) if t.saturating_sub(from) <= limit => {}
                    Some(t) => run_failures.push((
                        "recovery".into(),
                        format!(
                            "{} {}: a checkpoint completed and output was committed only {} ms after it, more than recovery_within {} ms",
                            fr.action,
                            fr.target,
                            t - from,
                            limit
                        ),
                    )),
                    None => run_failures.push((
                        "recovery".into(),
                        format!("{} {}: no checkpoint completed with committed output after it", fr.action, fr.target),
                    )),
                }
            }
        }
        rep.faults.push(fr);
    }
    // Faults that hit nothing make the run test nothing: a required check of its own.
    let effective = if judged == 0 {
        None
    } else if ineffective.is_empty() {
        Some(crate::verdict::Check::new(true, format!("{judged} fault(s), each hit a running job")))
    } else {
        Some(crate::verdict::Check::new(false, format!("nothing was tested: {}", ineffective.join("; "))))
    };
    for h in &d.history {
        let kind = match h.state {
            JobState::Running => EventKind::Running,
            JobState::Restarting => EventKind::Restart,
            _ => continue,
        };
        rep.timeline.events.push(TimelineEvent { t_ms: h.at_ms.saturating_sub(t0), kind, label: h.reason.clone() });
    }
    if let Ok(c) = client.checkpoints().await {
        for s in c.completed {
            rep.timeline.events.push(TimelineEvent {
                t_ms: s.complete_ms.saturating_sub(t0),
                kind: EventKind::Checkpoint,
                label: format!("checkpoint {} ({} ms)", s.id, s.duration_ms),
            });
        }
    }
    rep.timeline.events.sort_by_key(|e| e.t_ms);
    rep.restarts = d.restarts;
    rep.checkpoints_completed = d.checkpoints_completed;
    rep.final_state = Some(format!("{:?}", d.state).to_uppercase());
    let end = d.history.iter().rev().find(|h| h.state == JobState::Finished).map(|h| h.at_ms).unwrap_or(d.now_ms);
    rep.duration_ms = end.saturating_sub(t0);
    let socket = plan.feed.as_ref().map(|_| {
        let facts = faults
            .iter()
            .filter_map(|f| {
                let label = format!("{} {}", f.planned.action.name(), f.targets.join(","));
                f.applied_ms.map(|applied_ms| crate::verdict::at_most_once::FaultFact { label, applied_ms })
            })
            .collect();
        (facts, d.failures.clone(), t0)
    });
    Ok(Driven { failures: run_failures, fault_effective: effective, socket })
}

/// What a run's drive found besides the output: run-level failures (each a failed check)
/// and, when there were faults to judge, the `fault_effective` check.
struct Driven {
    failures: Vec<(String, String)>,
    fault_effective: Option<crate::verdict::Check>,
    /// Socket input: the run's faults, the jobmanager's failures and t0, to say which
    /// fault lost which lines.
    socket: Option<(Vec<crate::verdict::at_most_once::FaultFact>, Vec<streamd_contract::api::FailureEvent>, u64)>,
}

async fn undo<R: Runtime>(injector: &crate::fault::Injector<'_, R>, f: &mut FaultState, t0: u64, rep: &mut RunReport) {
    let Some(u) = f.undo.take() else { return };
    let res = injector.undo(u).await;
    f.undone_ms = Some(now_ms());
    if let Err(e) = res {
        f.error.get_or_insert(format!("undo failed: {e}"));
    }
    rep.timeline.events.push(TimelineEvent {
        t_ms: now_ms().saturating_sub(t0),
        kind: EventKind::Undo,
        label: format!("undo {} {}", f.planned.action.name(), f.targets.join(",")),
    });
}

/// The verdict: oracle, committed output, the checks (the epoch checks with the cuts the
/// jobmanager recorded), `counts.tsv`.
fn judge(plan: &Plan, prepared: &Prepared, rep: &mut RunReport, driven: Driven) -> Result<(), ChaosError> {
    let mut run_failures = driven.failures;
    let oracle = verdict::oracle(&prepared.oracle_input)
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
                    Ok(e) => Some(e),
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
