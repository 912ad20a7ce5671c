//! Faults: one home for applying, undoing, holding and measuring every fault action, on
//! any runtime. The scenario run loop and the interactive commands (`chaos kill`, `chaos
//! pause --for`, `chaos netem`, ...) both go through [`Injector`], so a fault behaves the
//! same whether a timeline or a person fires it.
//!
//! # Layout
//! - this file: [`Injector`] (a runtime, plus network faults on docker), [`Applied`] (what
//!   was done, when, and how to take it back), [`Undo`].
//! - [`net`]: the network-fault context of a run (sidecar image) and the one conversion of
//!   a scenario's netem parameters.
//! - [`hold`]: keep an applied fault for a duration (or until Ctrl-C), then undo it.
//!
//! Adding a fault kind: a variant of [`crate::scenario::Action`] (the scenario syntax) and
//! its arm in [`Injector::apply`] (and [`Undo`], if it lasts).

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
}

impl Undo {
    /// The undo journal ids of network faults (empty for others), to match what
    /// [`NetFaults::reconcile`] reports.
    pub fn net_ids(&self) -> Vec<String> {
        match self {
            Undo::Net(hs) => hs.iter().map(|h| h.id.clone()).collect(),
            Undo::Unpause(_) => Vec::new(),
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
}

/// Applies faults to one cluster: its runtime, and on docker its network faults.
pub struct Injector<'a, R: Runtime> {
    pub rt: &'a R,
    /// `None` on the process runtime: network faults are refused there.
    pub net: Option<&'a NetFaults>,
}

impl<'a, R: Runtime> Injector<'a, R> {
    pub fn new(rt: &'a R, net: Option<&'a NetFaults>) -> Self {
        Injector { rt, net }
    }

    fn net(&self) -> Result<&'a NetFaults, ChaosError> {
        self.net.ok_or_else(|| crate::runtime::process::refuse_network_fault().into())
    }

    /// Applies `action` to `targets` (canonical node names; for `partition` the groups
    /// come from the action). Fails without a trace when the runtime refuses.
    pub async fn apply(&self, action: &Action, targets: &[String]) -> Result<Applied, ChaosError> {
        let called_ms = now_ms();
        let t = Instant::now();
        let list = targets.join(", ");
        let (description, undo) = match action {
            Action::Kill { signal } => {
                for n in targets {
                    self.rt.kill(n, *signal).await?;
                }
                (format!("killed {list} with {signal}"), None)
            }
            Action::Stop { grace } => {
                // Concurrently, so `grace` is not multiplied by the number of targets.
                let stops = targets.iter().map(|n| self.rt.stop(n, *grace));
                for r in futures_util::future::join_all(stops).await {
                    r?;
                }
                let g = streamd_contract::duration::format_duration(*grace);
                (format!("stopped {list} (SIGTERM, SIGKILL after {g})"), None)
            }
            Action::Start => {
                for n in targets {
                    self.rt.start(n).await?;
                }
                (format!("started {list}"), None)
            }
            Action::Restart { grace } => {
                for n in targets {
                    self.rt.restart(n, *grace).await?;
                }
                let g = streamd_contract::duration::format_duration(*grace);
                (format!("restarted {list} (grace {g})"), None)
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
        };
        Ok(Applied { called_ms, latency: t.elapsed(), description, undo })
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
    use crate::runtime::{self, ClusterDef, NodeStatus};
    use crate::signal::Signal;
    use std::sync::Mutex;

    /// A runtime that records what it is asked to do (no processes, no Docker).
    #[derive(Default)]
    struct Recorder {
        calls: Mutex<Vec<String>>,
        refuse: Option<&'static str>,
    }

    impl Recorder {
        fn log(&self, call: String) -> runtime::Result<()> {
            if self.refuse.is_some_and(|n| call.ends_with(n)) {
                return Err(runtime::RuntimeError::Usage(format!("{call}: not running")));
            }
            self.calls.lock().unwrap().push(call);
            Ok(())
        }
        fn calls(&self) -> Vec<String> {
            self.calls.lock().unwrap().clone()
        }
    }

    impl Runtime for Recorder {
        fn name(&self) -> &'static str {
            "recorder"
        }
        async fn up(&mut self, _: &ClusterDef) -> runtime::Result<()> {
            Ok(())
        }
        async fn rest_url(&self, _: &str) -> runtime::Result<String> {
            Ok("http://127.0.0.1:9".into())
        }
        async fn node_address(&self, _: &str) -> runtime::Result<String> {
            Ok("127.0.0.1".into())
        }
        async fn feed_address(&self, _: &str) -> runtime::Result<String> {
            Ok("127.0.0.1:9".into())
        }
        async fn kill(&self, node: &str, signal: Signal) -> runtime::Result<()> {
            self.log(format!("kill {signal} {node}"))
        }
        async fn stop(&self, node: &str, grace: Duration) -> runtime::Result<()> {
            self.log(format!("stop {}ms {node}", grace.as_millis()))
        }
        async fn start(&self, node: &str) -> runtime::Result<()> {
            self.log(format!("start {node}"))
        }
        async fn restart(&self, node: &str, _: Duration) -> runtime::Result<()> {
            self.log(format!("restart {node}"))
        }
        async fn pause(&self, node: &str) -> runtime::Result<()> {
            self.log(format!("pause {node}"))
        }
        async fn unpause(&self, node: &str) -> runtime::Result<()> {
            self.log(format!("unpause {node}"))
        }
        async fn nodes(&self) -> runtime::Result<Vec<NodeStatus>> {
            Ok(Vec::new())
        }
        async fn down(&mut self) -> runtime::Result<()> {
            Ok(())
        }
    }

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[tokio::test]
    async fn lifecycle_faults_reach_every_target_and_say_what_they_did() {
        let rt = Recorder::default();
        let inj = Injector::new(&rt, None);
        let a = inj.apply(&Action::Kill { signal: Signal::KILL }, &names(&["taskmanager-1", "taskmanager-2"])).await.unwrap();
        assert!(a.undo.is_none(), "a kill lasts until a start");
        assert_eq!(a.description, "killed taskmanager-1, taskmanager-2 with SIGKILL");
        inj.apply(&Action::Stop { grace: Duration::from_secs(2) }, &names(&["taskmanager-3"])).await.unwrap();
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
    async fn an_undo_tries_every_node_and_reports_the_first_failure() {
        let rt = Recorder { refuse: Some("taskmanager-1"), ..Default::default() };
        let inj = Injector::new(&rt, None);
        let e = inj.undo(Undo::Unpause(names(&["taskmanager-1", "taskmanager-2"]))).await.unwrap_err();
        assert!(e.to_string().contains("taskmanager-1"), "{e}");
        assert_eq!(rt.calls(), ["unpause taskmanager-2"], "the second node is still thawed");
    }
}
