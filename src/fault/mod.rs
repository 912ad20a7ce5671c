//! Faults: one home for applying, undoing, holding and measuring every fault action, on
//! any runtime. The scenario run loop and the interactive commands (`chaos kill`, `chaos
//! pause --for`, `chaos netem`, ...) both go through [`Injector`], so a fault behaves the
//! same whether a timeline or a person fires it.
//!
//! # Layout
//! - this file: [`Injector`] (a runtime, plus network faults on docker and disk faults
//!   through the run's passthroughs, [`crate::diskfault`]), [`Applied`] (what
//!   was done, when, and how to take it back), [`Undo`].
//! - [`net`]: the network-fault context of a run (sidecar image) and the one conversion of
//!   a scenario's netem parameters.
//! - [`corrupt`]: the `corrupt` fault (damaged snapshot, metadata, staged or local files).
//! - [`hold`]: keep an applied fault for a duration (or until Ctrl-C), then undo it.
//!
//! Adding a fault kind: a variant of [`crate::scenario::Action`] (the scenario syntax) and
//! its arm in [`Injector::apply`] (and [`Undo`], if it lasts).

pub mod corrupt;
pub mod hold;
pub mod net;

use std::time::{Duration, Instant};

use streamd_contract::api::now_ms;

use crate::error::ChaosError;
use crate::netfault::{FaultHandle, NetFaults};
use crate::runtime::Runtime;
use crate::scenario::Action;

/// How to take back a fault that lasts.
#[derive(Debug)]
pub enum Undo {
    /// Thaw the paused nodes.
    Unpause(Vec<String>),
    /// Remove the network rules (netem, partition).
    Net(Vec<FaultHandle>),
    /// Remove the disk faults from the nodes' passthroughs.
    Disk(Vec<crate::diskfault::faults::DiskHandle>),
}

impl Undo {
    /// The undo journal ids of network faults (empty for others), to match what
    /// [`NetFaults::reconcile`] reports.
    pub fn net_ids(&self) -> Vec<String> {
        match self {
            Undo::Net(hs) => hs.iter().map(|h| h.id.clone()).collect(),
            Undo::Unpause(_) | Undo::Disk(_) => Vec::new(),
        }
    }
}

/// A fault that was applied.
#[derive(Debug)]
pub struct Applied {
    /// When the call was issued (ms since the epoch). The fault takes effect somewhere
    /// inside the call, so nothing the cluster notices can be earlier than this.
    pub called_ms: u64,
    /// How long the call took: the injection latency.
    pub latency: Duration,
    /// What was done, for a person: `killed taskmanager-2 with SIGKILL`.
    pub description: String,
    /// `None`: nothing to undo (a kill lasts until a `start`).
    pub undo: Option<Undo>,
    /// What the fault did, measured while applying it: a power loss's account.
    pub measured: Option<serde_json::Value>,
}

/// How long a node may take to be seen dead after its kill returned, before a power loss.
const DEAD_WITHIN: Duration = Duration::from_secs(10);

/// Applies faults to one cluster: its runtime, and on docker its network faults.
pub struct Injector<'a, R: Runtime> {
    pub rt: &'a R,
    /// `None` on the process runtime: network faults are refused there.
    pub net: Option<&'a NetFaults>,
    /// The run directory, where the nodes' disk passthroughs are (see [`Self::with_disk`]).
    pub disk: Option<&'a std::path::Path>,
}

impl<'a, R: Runtime> Injector<'a, R> {
    pub fn new(rt: &'a R, net: Option<&'a NetFaults>) -> Self {
        Injector { rt, net, disk: None }
    }

    /// Disk faults act on the passthroughs of the run in `run_dir`.
    pub fn with_disk(mut self, run_dir: &'a std::path::Path) -> Self {
        self.disk = Some(run_dir);
        self
    }

    fn net(&self) -> Result<&'a NetFaults, ChaosError> {
        self.net.ok_or_else(|| crate::runtime::process::refuse_network_fault().into())
    }

    /// The run directory, when every target can lose power (a usage error otherwise).
    fn power_dir(&self, targets: &[String]) -> Result<&'a std::path::Path, ChaosError> {
        let run_dir = self.disk.ok_or_else(|| {
            ChaosError::Usage("`lose_unsynced` needs the cluster of a run whose nodes' /data is a passthrough (a scenario with `lose_unsynced`, or `chaos up --disk`)".into())
        })?;
        for n in targets {
            crate::diskfault::faults::can_lose_power(run_dir, n)?;
        }
        Ok(run_dir)
    }

    /// Waits until `node` is seen dead: a power loss must come after the last write.
    async fn wait_dead(&self, node: &str) -> Result<(), ChaosError> {
        let deadline = Instant::now() + DEAD_WITHIN;
        loop {
            let nodes = self.rt.nodes().await?;
            let alive = nodes.iter().any(|s| {
                s.name == node && matches!(s.state, crate::runtime::NodeState::Running | crate::runtime::NodeState::Paused)
            });
            if !alive {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(ChaosError::Other(format!(
                    "{node} still runs {} s after its kill: no power loss while it can write",
                    DEAD_WITHIN.as_secs()
                )));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The power loss of dead `node`: its daemon's account.
    async fn lose_power(&self, run_dir: &std::path::Path, node: &str) -> Result<crate::diskfault::unsynced::PowerLossReport, ChaosError> {
        self.wait_dead(node).await?;
        let (dir, n) = (run_dir.to_path_buf(), node.to_string());
        let r = tokio::task::spawn_blocking(move || crate::diskfault::faults::power_loss(&dir, &n))
            .await
            .map_err(|e| ChaosError::Other(format!("power loss of {node}: {e}")))??;
        Ok(r)
    }

    /// Power loss on every dead target: a description to append and the `measured`.
    async fn lose_power_all(&self, run_dir: &std::path::Path, targets: &[String]) -> Result<(String, serde_json::Value), ChaosError> {
        let mut reports = Vec::new();
        for n in targets {
            reports.push((n.clone(), self.lose_power(run_dir, n).await?));
        }
        Ok(power_text(reports))
    }

    /// Applies `action` to `targets` (canonical node names; for `partition` the groups
    /// come from the action). Fails without a trace when the runtime refuses.
    pub async fn apply(&self, action: &Action, targets: &[String]) -> Result<Applied, ChaosError> {
        let called_ms = now_ms();
        let t = Instant::now();
        let list = targets.join(", ");
        // A node that cannot lose power is refused before anything is done to it.
        let power = match action.loses_unsynced() {
            true => Some(self.power_dir(targets)?),
            false => None,
        };
        let mut measured = None;
        let (description, undo) = match action {
            Action::Kill { signal, .. } => {
                for n in targets {
                    self.rt.kill(n, *signal).await?;
                }
                let mut d = format!("killed {list} with {signal}");
                if let Some(dir) = power {
                    let (text, m) = self.lose_power_all(dir, targets).await?;
                    d.push_str(&text);
                    measured = Some(m);
                }
                (d, None)
            }
            Action::Stop { grace, .. } => {
                // Concurrently, so `grace` is not multiplied by the number of targets.
                let stops = targets.iter().map(|n| self.rt.stop(n, *grace));
                for r in futures_util::future::join_all(stops).await {
                    r?;
                }
                let g = streamd_contract::duration::format_duration(*grace);
                let mut d = format!("stopped {list} (SIGTERM, SIGKILL after {g})");
                if let Some(dir) = power {
                    let (text, m) = self.lose_power_all(dir, targets).await?;
                    d.push_str(&text);
                    measured = Some(m);
                }
                (d, None)
            }
            Action::Start => {
                for n in targets {
                    self.rt.start(n).await?;
                }
                (format!("started {list}"), None)
            }
            Action::Restart { grace, .. } => {
                let mut reports = Vec::new();
                for n in targets {
                    match power {
                        // Down, power lost, up again: the node restarts on what survived.
                        Some(dir) => {
                            self.rt.stop(n, *grace).await?;
                            reports.push((n.clone(), self.lose_power(dir, n).await?));
                            self.rt.start(n).await?;
                        }
                        None => self.rt.restart(n, *grace).await?,
                    }
                }
                let g = streamd_contract::duration::format_duration(*grace);
                let mut d = format!("restarted {list} (grace {g})");
                if power.is_some() {
                    let (text, m) = power_text(reports);
                    d.push_str(&text);
                    measured = Some(m);
                }
                (d, None)
            }
            Action::Pause => {
                for n in targets {
                    self.rt.pause(n).await?;
                }
                (format!("paused {list}"), Some(Undo::Unpause(targets.to_vec())))
            }
            Action::Unpause => {
                for n in targets {
                    self.rt.unpause(n).await?;
                }
                (format!("unpaused {list}"), None)
            }
            Action::Netem(p) => {
                let nf = self.net()?;
                let params = net::to_netfault(p);
                let mut handles = Vec::new();
                for n in targets {
                    handles.push(nf.apply_netem(n, &params).await?);
                }
                let d: Vec<String> = handles.iter().map(|h| h.description.clone()).collect();
                (format!("applied {}", d.join("; ")), Some(Undo::Net(handles)))
            }
            Action::Partition { groups, one_way } => {
                let nf = self.net()?;
                let groups: Vec<Vec<String>> = groups.iter().map(|g| g.iter().map(|t| t.to_string()).collect()).collect();
                let h = nf.partition(&groups, *one_way).await?;
                (format!("applied {}", h.description), Some(Undo::Net(vec![h])))
            }
            Action::Corrupt { what, how } => (corrupt::apply(self.rt, *what, *how, targets).await?, None),
            Action::Disk(fault) => {
                let run_dir = self.disk.ok_or_else(|| {
                    ChaosError::Usage("disk faults need the cluster of a run whose scenario has `disk` faults (its nodes' /data is a passthrough)".into())
                })?;
                let mut handles = Vec::new();
                for n in targets {
                    match crate::diskfault::faults::apply(run_dir, n, fault.clone()) {
                        Ok(h) => handles.push(h),
                        Err(e) => {
                            for h in &handles {
                                let _ = crate::diskfault::faults::undo(h);
                            }
                            return Err(e.into());
                        }
                    }
                }
                let d: Vec<String> = handles.iter().map(|h| h.description.clone()).collect();
                (format!("applied {}", d.join("; ")), Some(Undo::Disk(handles)))
            }
        };
        Ok(Applied { called_ms, latency: t.elapsed(), description, undo, measured })
    }

    /// Takes a fault back: every node is tried, and the first failure is returned.
    pub async fn undo(&self, undo: Undo) -> Result<String, ChaosError> {
        let mut first: Option<ChaosError> = None;
        let description = match undo {
            Undo::Unpause(nodes) => {
                for n in &nodes {
                    if let Err(e) = self.rt.unpause(n).await {
                        first.get_or_insert(e.into());
                    }
                }
                format!("unpaused {}", nodes.join(", "))
            }
            Undo::Net(handles) => {
                let nf = self.net()?;
                let mut d = Vec::new();
                for h in handles {
                    if let Err(e) = nf.undo(&h).await {
                        first.get_or_insert(e.into());
                    }
                    d.push(h.description);
                }
                format!("undid {}", d.join("; "))
            }
            Undo::Disk(handles) => {
                let mut d = Vec::new();
                for h in handles {
                    if let Err(e) = crate::diskfault::faults::undo(&h) {
                        first.get_or_insert(e.into());
                    }
                    d.push(h.description);
                }
                format!("undid {}", d.join("; "))
            }
        };
        match first {
            Some(e) => Err(e),
            None => Ok(description),
        }
    }

    /// Starts measuring a network fault's effect in the background: RTT and loss of ~200
    /// UDP probes into the node (netem), or across the partition. `None` for other faults.
    pub fn measure(&self, action: &Action, targets: &[String]) -> Option<tokio::task::JoinHandle<Option<serde_json::Value>>> {
        let nf = self.net?.clone();
        let (from, to, count) = match action {
            Action::Netem(_) => (None, targets.first()?.clone(), 200),
            Action::Partition { groups, .. } => {
                (Some(groups.first()?.first()?.to_string()), groups.get(1)?.first()?.to_string(), 100)
            }
            _ => return None,
        };
        Some(tokio::spawn(async move {
            match nf.measure(from.as_deref(), &to, count).await {
                Ok(stats) => serde_json::to_value(stats).ok(),
                Err(e) => Some(serde_json::json!({ "error": e.to_string() })),
            }
        }))
    }
}

/// `; power lost on taskmanager-2: 2 files rolled back (…)` and the report's `measured`.
fn power_text(reports: Vec<(String, crate::diskfault::unsynced::PowerLossReport)>) -> (String, serde_json::Value) {
    let text: Vec<String> =
        reports.iter().map(|(n, r)| format!("; power lost on {n}: {}", crate::diskfault::faults::describe_power_loss(r))).collect();
    (text.concat(), crate::diskfault::faults::measure_power_loss(&reports))
}

/// Resolves a fault's targets to node names: `leader` becomes the jobmanager that leads
/// now (`jobmanager-1` when none answers, so the runtime's error names a real node).
pub async fn resolve_targets<R: Runtime>(rt: &R, targets: &[crate::scenario::Target]) -> Vec<String> {
    let mut out = Vec::new();
    for t in targets {
        match t {
            crate::scenario::Target::Node(n) => out.push(n.clone()),
            crate::scenario::Target::Leader => {
                out.push(crate::nodes::leader(rt).await.unwrap_or_else(|_| "jobmanager-1".into()))
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::fake::Recorder;
    use crate::signal::Signal;

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[tokio::test]
    async fn lifecycle_faults_reach_every_target_and_say_what_they_did() {
        let rt = Recorder::default();
        let inj = Injector::new(&rt, None);
        let a = inj.apply(&Action::Kill { signal: Signal::KILL, lose_unsynced: false }, &names(&["taskmanager-1", "taskmanager-2"])).await.unwrap();
        assert!(a.undo.is_none(), "a kill lasts until a start");
        assert_eq!(a.description, "killed taskmanager-1, taskmanager-2 with SIGKILL");
        inj.apply(&Action::Stop { grace: Duration::from_secs(2), lose_unsynced: false }, &names(&["taskmanager-3"])).await.unwrap();
        inj.apply(&Action::Start, &names(&["taskmanager-1"])).await.unwrap();
        assert_eq!(
            rt.calls(),
            ["kill SIGKILL taskmanager-1", "kill SIGKILL taskmanager-2", "stop 2000ms taskmanager-3", "start taskmanager-1"]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_held_pause_is_undone_after_its_duration() {
        let rt = Recorder::default();
        let inj = Injector::new(&rt, None);
        let a = inj.apply(&Action::Pause, &names(&["taskmanager-2"])).await.unwrap();
        assert!(matches!(a.undo, Some(Undo::Unpause(_))));
        let mut interrupt = hold::Interrupt::new();
        let r = hold::hold(&inj, a, Duration::from_secs(5), &mut interrupt).await.unwrap().unwrap();
        assert!(!r.interrupted);
        assert_eq!(r.description, "unpaused taskmanager-2");
        assert_eq!(rt.calls(), ["pause taskmanager-2", "unpause taskmanager-2"]);
    }

    #[tokio::test]
    async fn network_faults_without_network_namespaces_are_a_usage_error() {
        let rt = Recorder::default();
        let inj = Injector::new(&rt, None);
        let netem = Action::Netem(crate::scenario::NetemParams { delay: Some(Duration::from_millis(50)), ..Default::default() });
        let e = inj.apply(&netem, &names(&["taskmanager-1"])).await.unwrap_err();
        assert_eq!(e.exit_code(), crate::error::exit::USAGE, "{e}");
        assert!(e.to_string().contains("docker runtime"), "{e}");
        assert!(rt.calls().is_empty());
    }

    #[tokio::test]
    async fn corrupt_on_a_runtime_without_file_access_is_a_usage_error() {
        use corrupt::{CorruptHow, CorruptWhat};
        let rt = Recorder::default();
        let inj = Injector::new(&rt, None);
        for what in [CorruptWhat::Snapshot, CorruptWhat::Local] {
            let e = inj.apply(&Action::Corrupt { what, how: CorruptHow::Flip }, &names(&["taskmanager-2"])).await.unwrap_err();
            assert_eq!(e.exit_code(), crate::error::exit::USAGE, "{e}");
            assert!(e.to_string().contains("taskmanager-2"), "{e}");
        }
    }

    #[tokio::test]
    async fn a_power_loss_without_a_passthrough_is_refused_before_the_kill() {
        let rt = Recorder::default();
        let kill = Action::Kill { signal: Signal::KILL, lose_unsynced: true };
        let e = Injector::new(&rt, None).apply(&kill, &names(&["taskmanager-2"])).await.unwrap_err();
        assert_eq!(e.exit_code(), crate::error::exit::USAGE, "{e}");
        let run = tempfile::tempdir().unwrap();
        let restart = Action::Restart { grace: Duration::from_secs(1), lose_unsynced: true };
        let e = Injector::new(&rt, None).with_disk(run.path()).apply(&restart, &names(&["taskmanager-2"])).await.unwrap_err();
        assert_eq!(e.exit_code(), crate::error::exit::USAGE, "{e}");
        assert!(e.to_string().contains("no disk passthrough"), "{e}");
        assert!(rt.calls().is_empty(), "the node is left alone: {:?}", rt.calls());
    }

    #[tokio::test]
    async fn an_undo_tries_every_node_and_reports_the_first_failure() {
        let rt = Recorder::refusing("taskmanager-1");
        let inj = Injector::new(&rt, None);
        let e = inj.undo(Undo::Unpause(names(&["taskmanager-1", "taskmanager-2"]))).await.unwrap_err();
        assert!(e.to_string().contains("taskmanager-1"), "{e}");
        assert_eq!(rt.calls(), ["unpause taskmanager-2"], "the second node is still thawed");
    }
}
