//! The run loop's shell: it performs what [`super::schedule`] decides and feeds the
//! outcomes back. It waits for the job's first RUNNING (t0 of every fault time), then
//! every 100 ms samples the job through a [`JobSource`] ([`super::observe`] keeps what it
//! saw), asks the schedule what is due and carries each decision out: apply a fault
//! through the [`Injector`], check network rules, undo, end. Ctrl-C is one more input of
//! the schedule. Whichever way the loop ends, what is still applied is undone; then
//! [`super::findings`] judges the faults from the job's final answer.
//!
//! Every decision is made in pure code (schedule, observe, findings); this file only
//! performs I/O and keeps the books, so the whole loop runs in tests against a recording
//! runtime and a scripted job (`drive/tests.rs`).

use std::future::Future;
use std::time::Duration;

use streamd_contract::api::{now_ms, JobState};
use tokio::time::Instant;

use super::findings::{self, Failure, FaultRecord};
use super::observe::Observations;
use super::schedule::{Decision, End, Schedule};
use crate::engine::{Engine, JobSource};
use crate::error::ChaosError;
use crate::fault::{Injector, Undo};
use crate::netfault::{NetFaults, ReconcileAction, ReconcilePolicy, Reconciled};
use crate::report::{terminal::Progress, EventKind, RunReport, TimelineEvent};
use crate::runtime::Runtime;
use crate::scenario::Plan;
use crate::verdict::Check;

/// How often the loop samples the job and asks the schedule.
const TICK: Duration = Duration::from_millis(100);

/// How often the job is asked while waiting for its first RUNNING (t0 should be sharp).
const START_POLL: Duration = Duration::from_millis(25);

/// How long a cluster may take to be ready, and its job to reach RUNNING: Flink's JVMs
/// take longer to come up than streamd's static binaries.
pub fn ready_within(engine: Engine) -> Duration {
    Duration::from_secs(if engine == Engine::Flink { 120 } else { 60 })
}

/// What the loop works on (borrowed, never changed).
pub struct Env<'a, R: Runtime> {
    pub rt: &'a R,
    /// Network faults (docker only).
    pub nf: Option<&'a NetFaults>,
    pub plan: &'a Plan,
    pub progress: &'a Progress,
    /// Flink: the cluster whose spare taskmanagers join once every task has its slot.
    pub flink: Option<&'a crate::flink::plan::Started>,
    /// Socket input: the lines chaos feeds the line server (at the plan's feed rate).
    pub feed: Option<&'a [String]>,
    /// The run directory (where disk faults find the nodes' passthroughs).
    pub run_dir: &'a std::path::Path,
}

/// What a run's drive found besides the output: run-level failures (each a failed check)
/// and, when there were faults to judge, the `fault_effective` check.
#[derive(Debug)]
pub struct Driven {
    pub failures: Vec<Failure>,
    pub fault_effective: Option<Check>,
    /// Socket input: what says which fault lost which lines (see `verdict::at_most_once`).
    pub socket: Option<SocketFacts>,
}

/// The run's faults as applied, the jobmanager's failures and t0.
pub type SocketFacts = (Vec<crate::verdict::at_most_once::FaultFact>, Vec<streamd_contract::api::FailureEvent>, u64);

/// Runs the plan's timeline on a ready cluster's job, until the job ends, the timeout,
/// or `interrupt` (Ctrl-C: [`ChaosError::Interrupted`], after undoing). Fills the report's
/// faults, timeline and run facts.
pub async fn drive<R: Runtime, J: JobSource>(
    env: &Env<'_, R>,
    job: &mut J,
    interrupt: impl Future<Output = ()>,
    rep: &mut RunReport,
) -> Result<Driven, ChaosError> {
    let t0 = wait_running(env, job).await?;
    let mut run = Loop::new(env, job, t0);
    run.start_feed().await?;
    let end = run.run(interrupt).await;
    run.stop_feed().await;
    if end == End::Interrupted {
        eprintln!("interrupted: undoing faults and tearing down");
    }
    // Undo whatever is still applied (pauses, network rules).
    for i in run.schedule.still_applied() {
        run.undo(i).await;
    }
    match end {
        End::Interrupted => Err(ChaosError::Interrupted),
        End::Timeout => {
            run.failures.push(findings::timed_out(env.plan.expect.timeout, run.seen.observed().state));
            run.finish(rep).await
        }
        End::Done | End::Failed => run.finish(rep).await,
    }
}

/// Waits for the job's first RUNNING and returns when it was (wall-clock ms). On Flink,
/// starts the spare taskmanagers as soon as every task has its slot: early, since a JVM
/// takes seconds to start, but never before (see `flink::plan`).
async fn wait_running<R: Runtime, J: JobSource>(env: &Env<'_, R>, job: &mut J) -> Result<u64, ChaosError> {
    let within = ready_within(env.plan.cluster.engine);
    let deadline = Instant::now() + within;
    let mut spares = env.flink;
    let t0 = loop {
        if Instant::now() > deadline {
            return Err(ChaosError::Other(format!("the job did not reach RUNNING within {} s", within.as_secs())));
        }
        if let Ok(d) = job.job().await {
            if let (Some(f), true) = (spares, job.tasks_placed()) {
                f.add_spares().await?;
                spares = None;
            }
            if let Some(h) = d.history.iter().find(|h| h.state == JobState::Running) {
                break h.at_ms;
            }
            if d.state == JobState::Failed {
                return Err(ChaosError::Other(format!("the job FAILED at start: {}", d.failure_cause.unwrap_or_default())));
            }
        }
        tokio::time::sleep(START_POLL).await;
    };
    if let Some(f) = spares {
        f.add_spares().await?;
    }
    Ok(t0)
}

/// The loop's books: the schedule, what was seen, what each fault did.
struct Loop<'a, R: Runtime, J> {
    env: &'a Env<'a, R>,
    injector: Injector<'a, R>,
    job: &'a mut J,
    /// The job's first RUNNING (wall-clock ms).
    t0: u64,
    schedule: Schedule,
    seen: Observations,
    faults: Vec<FaultRecord>,
    /// How to take each applied fault back (taken when undone).
    undos: Vec<Option<Undo>>,
    /// Network faults: their effect, measured in the background while they hold.
    measures: Vec<Option<tokio::task::JoinHandle<Option<serde_json::Value>>>>,
    reconciled: Vec<Reconciled>,
    failures: Vec<Failure>,
    /// Faults and undos for the timeline.
    events: Vec<TimelineEvent>,
    /// Socket input: the task feeding the line server, and where it is (a fault on the
    /// line server may move it).
    feeder: Option<tokio::task::JoinHandle<Result<u64, String>>>,
    feed_addr: Option<tokio::sync::watch::Sender<String>>,
}

impl<'a, R: Runtime, J: JobSource> Loop<'a, R, J> {
    fn new(env: &'a Env<'a, R>, job: &'a mut J, t0: u64) -> Self {
        let plan = env.plan;
        // The schedule runs on the monotonic clock; t0 is the jobmanager's wall clock.
        let start = Instant::now() - Duration::from_millis(now_ms().saturating_sub(t0));
        Loop {
            env,
            injector: Injector::new(env.rt, env.nf).with_disk(env.run_dir),
            job,
            t0,
            schedule: Schedule::new(&plan.faults, start, plan.expect.timeout),
            seen: Observations::new(t0),
            faults: plan.faults.iter().map(FaultRecord::new).collect(),
            undos: plan.faults.iter().map(|_| None).collect(),
            measures: plan.faults.iter().map(|_| None).collect(),
            reconciled: Vec::new(),
            failures: Vec::new(),
            events: Vec::new(),
            feeder: None,
            feed_addr: None,
        }
    }

    /// Socket input: the job runs and its source waits on the line server; feed it now,
    /// at the input's rate, so the input and the fault timeline share their start.
    async fn start_feed(&mut self) -> Result<(), ChaosError> {
        let (Some(lines), Some(input)) = (self.env.feed, self.env.plan.feed.as_ref()) else { return Ok(()) };
        let (tx, rx) = tokio::sync::watch::channel(self.env.rt.feed_address(streamd_contract::lines::NODE).await?);
        let (lines, rate) = (lines.to_vec(), input.rate);
        let give_up = Instant::now() + self.env.plan.expect.timeout;
        self.feeder = Some(tokio::spawn(async move { crate::feed::feed_all(rx, &lines, rate, give_up).await }));
        self.feed_addr = Some(tx);
        Ok(())
    }

    /// Stops the feeder (if the run ended first) and records a feed that failed.
    async fn stop_feed(&mut self) {
        let Some(feeder) = self.feeder.take() else { return };
        if !feeder.is_finished() {
            feeder.abort();
        }
        match feeder.await {
            Ok(Err(e)) => self.failures.push(("feed".into(), format!("the input was not all fed: {e}"))),
            Err(e) if !e.is_cancelled() => self.failures.push(("feed".into(), format!("the feeder failed: {e}"))),
            _ => {}
        }
    }

    /// Ticks until the schedule decides the end.
    async fn run(&mut self, interrupt: impl Future<Output = ()>) -> End {
        tokio::pin!(interrupt);
        let mut tick = tokio::time::interval(TICK);
        loop {
            let interrupted = tokio::select! {
                _ = &mut interrupt => true,
                _ = tick.tick() => false,
            };
            let decisions = match interrupted {
                true => self.schedule.interrupt(),
                false => {
                    self.sample().await;
                    self.schedule.decide(Instant::now(), self.seen.observed())
                }
            };
            for d in decisions {
                match d {
                    Decision::Fire(i) => self.fire(i).await,
                    Decision::Reconcile => self.reconcile().await,
                    Decision::Undo(i) => self.undo(i).await,
                    Decision::End(end) => return end,
                }
            }
        }
    }

    /// Asks the job, and shows what changed.
    async fn sample(&mut self) {
        let (rt, plan, progress) = (self.env.rt, self.env.plan, self.env.progress);
        if plan.cluster.ha() && plan.cluster.engine == Engine::Flink && self.seen.track_leader_due() {
            self.job.track_leader(rt).await;
        }
        match self.job.job().await {
            Ok(d) => {
                if let Some(total) = d.input_lines {
                    progress.set_input(d.records_in, total);
                }
                let committed = self.job.committed().map_err(|e| tracing::debug!("counting committed output: {e}")).ok();
                let news = self.seen.record(d, committed);
                (0..news.checkpoints).for_each(|_| progress.inc_checkpoints());
                if news.restarted {
                    progress.restart();
                }
            }
            Err(e) => {
                tracing::debug!("REST sample failed: {e}");
                // HA: the jobmanager asked may be gone or frozen (a killed or paused
                // leader): follow the one that leads now.
                if e.is_unreachable() && plan.cluster.ha() {
                    self.job.follow_leader(rt).await;
                }
            }
        }
    }

    /// Applies fault `i` and tells the schedule how it went.
    async fn fire(&mut self, i: usize) {
        let f = &mut self.faults[i];
        f.records_before = self.seen.max_records;
        f.targets = crate::fault::resolve_targets(self.env.rt, &f.planned.targets).await;
        let label = f.label();
        self.env.progress.fault(&label);
        // The fault takes effect somewhere inside the API call: its start is when it was
        // applied (what the jobmanager notices can't be earlier), the call's duration is
        // the injection latency.
        match self.injector.apply(&f.planned.action, &f.targets).await {
            Ok(applied) => {
                f.applied_ms = Some(applied.called_ms);
                f.inject_latency_ms = Some(applied.latency.as_millis() as u64);
                f.net_ids = applied.undo.as_ref().map(Undo::net_ids).unwrap_or_default();
                // A power loss: the daemon's account of what the node lost.
                if applied.measured.is_some() {
                    f.measured.clone_from(&applied.measured);
                }
                let holds_net = matches!(applied.undo, Some(Undo::Net(_)));
                self.schedule.applied(i, Instant::now(), true, applied.undo.is_some(), holds_net);
                self.undos[i] = applied.undo;
                self.measures[i] = self.injector.measure(&f.planned.action, &f.targets);
                // A line server (re)started may have a new address: the feeder reconnects
                // to wherever it is now.
                if let (Some(addr), true) = (&self.feed_addr, f.targets.iter().any(|t| t == streamd_contract::lines::NODE)) {
                    if let Ok(a) = self.env.rt.feed_address(streamd_contract::lines::NODE).await {
                        addr.send_replace(a);
                    }
                }
                self.events.push(TimelineEvent { t_ms: now_ms().saturating_sub(self.t0), kind: EventKind::Fault, label });
            }
            Err(e) => {
                tracing::warn!("fault {label} failed: {e}");
                self.schedule.applied(i, Instant::now(), false, false, false);
                f.error = Some(e.to_string());
                self.failures.push(("faults".into(), format!("{label}: {e}")));
            }
        }
    }

    /// Re-applies network rules a restarted container lost.
    async fn reconcile(&mut self) {
        let Some(nf) = self.env.nf else { return };
        match nf.reconcile(ReconcilePolicy::Reapply).await {
            Ok(r) => self.reconciled.extend(r.into_iter().filter(|r| r.action != ReconcileAction::Intact)),
            Err(e) => tracing::warn!("reconciling network faults: {e}"),
        }
    }

    /// Takes fault `i` back (if it has something to undo); a failed undo is the fault's error.
    async fn undo(&mut self, i: usize) {
        self.schedule.undone(i);
        let Some(u) = self.undos[i].take() else { return };
        // Disk faults: the passthrough's measurements while the fault held.
        if let Undo::Disk(hs) = &u {
            self.faults[i].measured = Some(crate::diskfault::faults::measure(hs));
        }
        let res = self.injector.undo(u).await;
        let f = &mut self.faults[i];
        f.undone_ms = Some(now_ms());
        if let Err(e) = res {
            f.error.get_or_insert(format!("undo failed: {e}"));
        }
        let label = format!("undo {}", f.label());
        self.events.push(TimelineEvent { t_ms: now_ms().saturating_sub(self.t0), kind: EventKind::Undo, label });
    }

    /// The job's final answer, the faults judged, the report's timeline and run facts.
    async fn finish(mut self, rep: &mut RunReport) -> Result<Driven, ChaosError> {
        let (rt, plan) = (self.env.rt, self.env.plan);
        if plan.cluster.ha() {
            self.job.follow_leader(rt).await;
        }
        let d = match self.job.job().await {
            Ok(d) => d,
            Err(_) => self.seen.last.clone().ok_or_else(|| ChaosError::Other("no answer from the jobmanager".into()))?,
        };
        for (f, u) in self.faults.iter_mut().zip(&self.undos) {
            // Disk faults held to the end: what they did until now.
            if let Some(Undo::Disk(hs)) = u {
                f.measured = Some(crate::diskfault::faults::measure(hs));
            }
        }
        for (f, m) in self.faults.iter_mut().zip(self.measures.iter_mut()) {
            if let Some(h) = m.take() {
                f.measured = tokio::time::timeout(Duration::from_secs(20), h).await.ok().and_then(|r| r.ok()).flatten();
            }
        }
        let found = findings::judge_faults(&self.faults, &self.reconciled, &d, &self.seen.samples, self.t0, plan.expect.recovery_within);
        self.failures.extend(found.failures);
        rep.faults.extend(found.reports);
        let checkpoints = self.job.checkpoints().await.ok();
        rep.checkpoint_ms = checkpoints.as_ref().and_then(|c| crate::report::CheckpointDurations::of(&c.completed));
        self.events.extend(findings::job_events(&d, checkpoints, self.t0));
        if let Some(info) = self.job.interval().await {
            rep.checkpoint_interval = crate::report::IntervalReport::from_info(&info, self.t0);
        }
        rep.timeline.samples.append(&mut self.seen.chart);
        rep.timeline.events.append(&mut self.events);
        rep.timeline.events.sort_by_key(|e| e.t_ms);
        rep.restarts = d.restarts;
        rep.restores.clone_from(&d.restores);
        rep.checkpoints_completed = d.checkpoints_completed;
        rep.final_state = Some(format!("{:?}", d.state).to_uppercase());
        let end = d.history.iter().rev().find(|h| h.state == JobState::Finished).map(|h| h.at_ms).unwrap_or(d.now_ms);
        rep.duration_ms = end.saturating_sub(self.t0);
        let socket = plan.feed.as_ref().map(|_| {
            let facts = self
                .faults
                .iter()
                .filter_map(|f| f.applied_ms.map(|applied_ms| crate::verdict::at_most_once::FaultFact { label: f.label(), applied_ms }))
                .collect();
            (facts, d.failures.clone(), self.t0)
        });
        Ok(Driven { failures: self.failures, fault_effective: found.effective, socket })
    }
}

#[cfg(test)]
mod tests;
