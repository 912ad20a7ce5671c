//! [`NetFaults`]: apply, undo and reconcile the network faults of one cluster (measuring
//! them: [`NetFaults::measure`], [`NetFaults::measure_throughput`]).
//!
//! Each fault is one or more journal entries, one per namespace it touches (a netem fault:
//! the target's; a partition: every member's). Applying an entry: start a sidecar in the
//! target's namespace, find the interface, compute the commands, journal them, run them.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bollard::Docker;
use futures_util::future::join_all;
use serde::{Deserialize, Serialize};
use tokio::sync::OnceCell;

use super::journal::{now_unix_ms, Closed, Entry, Journal, Record, Spec};
use super::kernel;
use super::rules::{self, Commands, Mechanism, NetemParams, Via, IP};
use super::sidecar::{self, SidecarSpec, Target};
use super::undo::{run_undo, undo_entries, undo_entry, UndoReport};
use super::NetfaultError;

type Result<T> = std::result::Result<T, NetfaultError>;

/// A fault that was applied: what [`NetFaults::undo`] takes back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FaultHandle {
    /// `netem-<node>-<hex>` or `partition-<hex>`.
    pub id: String,
    /// Its journal entries (`<id>/<node>`), one per namespace.
    pub entries: Vec<String>,
    /// Human description, e.g. `netem taskmanager-1: delay 200ms, jitter 50ms (uniform)`.
    pub description: String,
}

/// What [`NetFaults::reconcile`] does with a fault whose container restarted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReconcilePolicy {
    /// Re-apply it in the new namespace (the fault's time is not over).
    Reapply,
    /// Close it: the fault ends with the restart.
    End,
}

/// What happened to one journal entry during a reconcile.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ReconcileAction {
    /// Rules in place, nothing to do.
    Intact,
    /// Rules were missing or stale and have been applied again.
    Reapplied,
    /// The fault is over for this namespace (container gone, restarted under `End`, or
    /// re-applying failed).
    Ended,
    /// The container is stopped: no namespace to hold rules. Re-applied once it runs again.
    Waiting,
}

/// One entry's reconcile outcome, for the report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reconciled {
    pub fault: String,
    pub node: String,
    pub action: ReconcileAction,
    /// Why, in words (`container restarted`, `delayer exited`, ...).
    pub reason: String,
}

/// The network faults of one cluster during one run.
#[derive(Clone)]
pub struct NetFaults {
    pub(super) docker: Docker,
    pub(super) cluster: String,
    pub(super) network: String,
    pub(super) image: String,
    journal: Journal,
    mechanism: Arc<OnceCell<Mechanism>>,
}

impl NetFaults {
    /// Faults on the containers `<cluster_id>-<node>` attached to `network` (e.g.
    /// `<cluster>-internal`), journaled in `run_dir`, applied with sidecars of `image` (from
    /// [`super::ensure_image`]).
    pub fn new(
        docker: Docker,
        cluster_id: impl Into<String>,
        run_dir: impl AsRef<Path>,
        network: impl Into<String>,
        image: impl Into<String>,
    ) -> NetFaults {
        NetFaults {
            docker,
            cluster: cluster_id.into(),
            network: network.into(),
            image: image.into(),
            journal: Journal::in_run_dir(run_dir.as_ref()),
            mechanism: Arc::new(OnceCell::new()),
        }
    }

    /// Uses `mech` instead of probing (a CLI command reusing what `chaos up` probed).
    pub fn with_mechanism(self, mech: Mechanism) -> NetFaults {
        NetFaults {
            mechanism: Arc::new(OnceCell::new_with(Some(mech))),
            ..self
        }
    }

    /// The journal file.
    pub fn journal_path(&self) -> &Path {
        self.journal.path()
    }

    /// What the kernel offers; probed once (in a throwaway namespace), then cached.
    pub async fn probe(&self) -> Result<Mechanism> {
        self.mechanism
            .get_or_try_init(|| kernel::probe(&self.docker, &self.image, &self.cluster))
            .await
            .cloned()
    }

    /// Degrades `node`'s network: its egress with netem, else what arrives at it (see
    /// [`super::rules`]). Replaces a netem fault already on that node (as `tc qdisc
    /// replace` would). Refuses, before touching anything, what this kernel cannot do.
    pub async fn apply_netem(&self, node: &str, params: &NetemParams) -> Result<FaultHandle> {
        params.validate()?;
        let mech = self.probe().await?;
        rules::plan(params, &mech)?;
        for old in self.open_entries()? {
            if old.node == node && matches!(old.spec, Spec::Netem { .. }) {
                self.undo_entry(&old).await?;
            }
        }
        let fault = format!("netem-{node}-{:04x}", rand::random::<u16>());
        let id = format!("{fault}/{node}");
        let spec = Spec::Netem {
            params: params.clone(),
        };
        self.apply_entry(&fault, &id, node, &spec, &mech).await?;
        Ok(FaultHandle {
            id: fault,
            entries: vec![id],
            description: format!("netem {node}: {params}"),
        })
    }

    /// Drops traffic between the groups: each member drops what arrives from the members of
    /// the other groups (by address on the cluster network), so senders see timeouts as in
    /// a real partition. `one_way`: only traffic from `groups[0]` to the others is dropped
    /// (by the others); the others still reach `groups[0]`.
    pub async fn partition(&self, groups: &[Vec<String>], one_way: bool) -> Result<FaultHandle> {
        validate_groups(groups)?;
        let mech = self.probe().await?;
        if mech.iptables.is_none() {
            return Err(NetfaultError::Unsupported(
                "partition: no working iptables in the sidecar".into(),
            ));
        }
        let fault = format!("partition-{:04x}", rand::random::<u16>());
        let plans = partition_peers(groups, one_way);
        let applied = join_all(plans.iter().map(|(node, peers)| {
            let id = format!("{fault}/{node}");
            let spec = Spec::Block {
                peers: peers.clone(),
            };
            let fault = fault.clone();
            let mech = mech.clone();
            async move { self.apply_entry(&fault, &id, node, &spec, &mech).await }
        }))
        .await;
        let mut entries = Vec::new();
        let mut first_err = None;
        for r in applied {
            match r {
                Ok(e) => entries.push(e),
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        if let Some(e) = first_err {
            // All or nothing: a half partition is not what was asked for.
            for entry in &entries {
                let _ = self.undo_entry(entry).await;
            }
            return Err(e);
        }
        let shown: Vec<String> = groups
            .iter()
            .map(|g| format!("[{}]", g.join(", ")))
            .collect();
        Ok(FaultHandle {
            id: fault,
            entries: entries.into_iter().map(|e| e.id).collect(),
            description: format!(
                "partition{} {}",
                if one_way { " one-way" } else { "" },
                shown.join(" ")
            ),
        })
    }

    /// Takes back every rule of `handle` (idempotent: what is already gone counts as done).
    pub async fn undo(&self, handle: &FaultHandle) -> Result<UndoReport> {
        let wanted: BTreeSet<&str> = handle.entries.iter().map(String::as_str).collect();
        let open: Vec<Entry> = self
            .open_entries()?
            .into_iter()
            .filter(|e| wanted.contains(e.id.as_str()))
            .collect();
        let report = self.undo_entries(&open).await;
        match report.errors.first() {
            Some(e) => Err(NetfaultError::Docker(format!("undoing {}: {e}", handle.id))),
            None => Ok(report),
        }
    }

    /// Undoes every open network fault of this cluster (`chaos heal`).
    pub async fn heal(&self) -> Result<UndoReport> {
        let open = self.open_entries()?;
        Ok(self.undo_entries(&open).await)
    }

    /// Checks every open fault of this cluster against its container: a restarted container
    /// (new namespace, rules gone), a delayer that exited, a peer whose address changed.
    /// Call it after node restarts and periodically while faults are active.
    pub async fn reconcile(&self, policy: ReconcilePolicy) -> Result<Vec<Reconciled>> {
        let mut out = Vec::new();
        for entry in self.open_entries()? {
            let (action, reason) = self.reconcile_entry(&entry, policy).await?;
            out.push(Reconciled {
                fault: entry.fault.clone(),
                node: entry.node.clone(),
                action,
                reason,
            });
        }
        Ok(out)
    }

    fn open_entries(&self) -> Result<Vec<Entry>> {
        Ok(self
            .journal
            .open_entries()?
            .into_iter()
            .filter(|e| e.cluster == self.cluster)
            .collect())
    }

    pub(super) fn sidecar_spec<'a>(
        &'a self,
        node: &'a str,
        fault: &'a str,
        network_mode: String,
        cmd: Vec<String>,
    ) -> SidecarSpec<'a> {
        SidecarSpec {
            image: &self.image,
            cluster: &self.cluster,
            node,
            fault,
            network_mode,
            cmd,
        }
    }

    /// Applies `spec` to `node`'s namespace as entry `id`; journals before running anything.
    async fn apply_entry(
        &self,
        fault: &str,
        id: &str,
        node: &str,
        spec: &Spec,
        mech: &Mechanism,
    ) -> Result<Entry> {
        let target = sidecar::resolve(&self.docker, &self.cluster, node, &self.network).await?;
        let ns = format!("container:{}", target.container_id);
        let peer_ips = match spec {
            Spec::Block { peers } => self.peer_ips(peers).await?,
            Spec::Netem { .. } => BTreeMap::new(),
        };
        // With a delayer, its sidecar also runs the commands; otherwise a short-lived one.
        let delayer_args = match spec {
            Spec::Netem { params }
                if rules::plan(params, mech)?
                    .iter()
                    .any(|(_, v)| *v == Via::Delayer) =>
            {
                Some(rules::delayer_args(params))
            }
            _ => None,
        };
        let cmd = delayer_args
            .clone()
            .unwrap_or_else(|| vec!["hold".into(), "--max-secs".into(), "120".into()]);
        let worker = sidecar::start(&self.docker, self.sidecar_spec(node, fault, ns, cmd)).await?;
        let prepared = async {
            if delayer_args.is_some() {
                sidecar::wait_for_stderr(
                    &self.docker,
                    &worker,
                    "serving queue",
                    Duration::from_secs(10),
                )
                .await?;
            }
            let ip = target.ip.as_deref().unwrap_or_default();
            let iface = find_iface(&self.docker, &worker, ip).await?;
            let commands = commands_for(spec, mech, &iface, &peer_ips, id)?;
            Ok::<_, NetfaultError>((iface, commands))
        }
        .await;
        let (iface, commands) = match prepared {
            Ok(p) => p,
            Err(e) => {
                let _ = sidecar::remove(&self.docker, &worker).await;
                return Err(e);
            }
        };
        let entry = Entry {
            id: id.to_string(),
            fault: fault.to_string(),
            cluster: self.cluster.clone(),
            network: self.network.clone(),
            image: self.image.clone(),
            node: node.to_string(),
            container_id: target.container_id.clone(),
            container_name: target.container_name.clone(),
            started_at: target.started_at.clone(),
            iface,
            spec: spec.clone(),
            peer_ips,
            sidecar: delayer_args.is_some().then(|| worker.clone()),
            apply: commands.apply.clone(),
            undo: commands.undo.clone(),
            applied_unix_ms: now_unix_ms(),
        };
        if let Err(e) = self.journal.append(&Record::Open(Box::new(entry.clone()))) {
            let _ = sidecar::remove(&self.docker, &worker).await;
            return Err(e);
        }
        let mut failure = None;
        for cmd in &commands.apply {
            if let Err(e) = sidecar::exec_ok(&self.docker, &worker, cmd).await {
                failure = Some(e);
                break;
            }
        }
        if let Some(e) = failure {
            let _ = run_undo(&self.docker, &worker, &commands.undo).await;
            let _ = sidecar::remove(&self.docker, &worker).await;
            let _ = self.journal.close(id, Closed::Failed);
            return Err(e);
        }
        if entry.sidecar.is_none() {
            sidecar::remove(&self.docker, &worker).await?;
        }
        tracing::info!(fault, node, iface = %entry.iface, "network fault applied");
        Ok(entry)
    }

    /// Current addresses of `peers` on the cluster network; a peer that is down has none
    /// (it is left out, and reconcile adds it once it has an address again).
    async fn peer_ips(&self, peers: &[String]) -> Result<BTreeMap<String, String>> {
        let mut ips = BTreeMap::new();
        for node in peers {
            let name = format!("{}-{node}", self.cluster);
            match sidecar::inspect(&self.docker, &name, node, &self.network).await? {
                Some(Target {
                    ip: Some(ip),
                    running: true,
                    ..
                }) => {
                    ips.insert(node.clone(), ip);
                }
                _ => {
                    tracing::warn!(peer = %node, "partition peer has no address now; rules for it are added once it has")
                }
            }
        }
        Ok(ips)
    }

    async fn undo_entry(&self, entry: &Entry) -> Result<Closed> {
        undo_entry(&self.docker, &self.journal, entry).await
    }

    async fn undo_entries(&self, entries: &[Entry]) -> UndoReport {
        undo_entries(&self.docker, &self.journal, entries).await
    }

    async fn reconcile_entry(
        &self,
        entry: &Entry,
        policy: ReconcilePolicy,
    ) -> Result<(ReconcileAction, String)> {
        let now = sidecar::inspect(
            &self.docker,
            &entry.container_id,
            &entry.node,
            &entry.network,
        )
        .await?;
        let restarted = match &now {
            None => {
                self.undo_entry(entry).await?;
                return Ok((ReconcileAction::Ended, "container removed".into()));
            }
            Some(t) if !t.running => {
                if policy == ReconcilePolicy::End {
                    self.undo_entry(entry).await?;
                    return Ok((ReconcileAction::Ended, "container stopped".into()));
                }
                return Ok((
                    ReconcileAction::Waiting,
                    "container stopped; re-applied when it runs again".into(),
                ));
            }
            Some(t) => t.started_at != entry.started_at,
        };
        let Some(reason) = self.staleness(entry, restarted).await? else {
            return Ok((ReconcileAction::Intact, String::new()));
        };
        // Clean what is left (a no-op in a recreated namespace), then decide.
        undo_entry(&self.docker, &self.journal, entry).await?;
        if restarted && policy == ReconcilePolicy::End {
            return Ok((ReconcileAction::Ended, reason));
        }
        let mech = self.probe().await?;
        match self
            .apply_entry(&entry.fault, &entry.id, &entry.node, &entry.spec, &mech)
            .await
        {
            Ok(_) => Ok((ReconcileAction::Reapplied, reason)),
            Err(e) => Ok((
                ReconcileAction::Ended,
                format!("{reason}; re-applying failed: {e}"),
            )),
        }
    }

    /// Why `entry`'s rules are no longer what was applied, if they are not.
    async fn staleness(&self, entry: &Entry, restarted: bool) -> Result<Option<String>> {
        if restarted {
            return Ok(Some(
                "container restarted (its namespace was recreated without the rules)".into(),
            ));
        }
        if let Some(s) = &entry.sidecar {
            if !sidecar::is_running(&self.docker, s).await? {
                return Ok(Some("the delayer sidecar exited".into()));
            }
        }
        self.stale_peers(entry).await
    }

    /// For a partition entry: whether a peer's address changed since the rules were made.
    async fn stale_peers(&self, entry: &Entry) -> Result<Option<String>> {
        let Spec::Block { peers } = &entry.spec else {
            return Ok(None);
        };
        let now = self.peer_ips(peers).await?;
        Ok((now != entry.peer_ips).then(|| "a peer's address changed".to_string()))
    }
}

/// The commands of `spec` on `iface`.
fn commands_for(
    spec: &Spec,
    mech: &Mechanism,
    iface: &str,
    peer_ips: &BTreeMap<String, String>,
    tag: &str,
) -> Result<Commands> {
    match spec {
        Spec::Netem { params } => rules::netem_commands(params, mech, iface, tag),
        Spec::Block { peers } => {
            let ipt = mech.iptables.ok_or_else(|| {
                NetfaultError::Unsupported("partition: no working iptables".into())
            })?;
            let resolved: Vec<String> = peers
                .iter()
                .filter_map(|p| peer_ips.get(p).cloned())
                .collect();
            Ok(rules::block_commands(ipt, iface, &resolved, tag))
        }
    }
}

/// Rejects partitions that cannot mean anything: fewer than two groups, an empty group, a
/// node in two groups.
fn validate_groups(groups: &[Vec<String>]) -> Result<()> {
    if groups.len() < 2 {
        return Err(NetfaultError::Usage(
            "partition: at least two groups are needed".into(),
        ));
    }
    let mut seen = BTreeSet::new();
    for g in groups {
        if g.is_empty() {
            return Err(NetfaultError::Usage("partition: a group is empty".into()));
        }
        for n in g {
            if !seen.insert(n.as_str()) {
                return Err(NetfaultError::Usage(format!(
                    "partition: {n} is in more than one group"
                )));
            }
        }
    }
    Ok(())
}

/// Which peers each member drops traffic from. Two-way: every member, everything from the
/// other groups. One-way: the members of groups 1.. drop what comes from group 0.
fn partition_peers(groups: &[Vec<String>], one_way: bool) -> Vec<(String, Vec<String>)> {
    let mut out = Vec::new();
    for (gi, group) in groups.iter().enumerate() {
        let from: Vec<String> = groups
            .iter()
            .enumerate()
            .filter(|(gj, _)| *gj != gi && (!one_way || *gj == 0))
            .flat_map(|(_, g)| g.iter().cloned())
            .collect();
        if from.is_empty() {
            continue;
        }
        out.extend(group.iter().map(|member| (member.clone(), from.clone())));
    }
    out
}

/// The interface that carries `ip`, from `ip -o -4 addr show` in the namespace.
async fn find_iface(docker: &Docker, sidecar_id: &str, ip: &str) -> Result<String> {
    let out = sidecar::exec_ok(
        docker,
        sidecar_id,
        &[
            IP.into(),
            "-o".into(),
            "-4".into(),
            "addr".into(),
            "show".into(),
        ],
    )
    .await?;
    parse_iface(&out.stdout, ip).ok_or_else(|| {
        NetfaultError::Docker(format!(
            "no interface with address {ip} in the target's namespace:\n{}",
            out.stdout
        ))
    })
}

/// `2: eth0    inet 172.18.0.2/16 brd ... scope global eth0` -> `eth0` for `172.18.0.2`.
fn parse_iface(ip_o_addr: &str, ip: &str) -> Option<String> {
    ip_o_addr.lines().find_map(|line| {
        let mut words = line.split_whitespace();
        let name = words.nth(1)?;
        let mut rest = words.skip_while(|w| *w != "inet");
        rest.next()?;
        let addr = rest.next()?.split('/').next()?;
        (addr == ip).then(|| name.split('@').next().unwrap_or(name).to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn g(v: &[&[&str]]) -> Vec<Vec<String>> {
        v.iter()
            .map(|g| g.iter().map(|s| s.to_string()).collect())
            .collect()
    }

    #[test]
    fn two_way_partition_drops_everything_from_the_other_groups() {
        let p = partition_peers(&g(&[&["tm1"], &["jm1", "tm2"]]), false);
        let v = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(
            p,
            vec![
                ("tm1".to_string(), v(&["jm1", "tm2"])),
                ("jm1".to_string(), v(&["tm1"])),
                ("tm2".to_string(), v(&["tm1"])),
            ]
        );
    }

    #[test]
    fn one_way_partition_only_drops_what_group_zero_sends() {
        let p = partition_peers(&g(&[&["a"], &["b"], &["c", "d"]]), true);
        let v = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(
            p,
            vec![
                ("b".to_string(), v(&["a"])),
                ("c".to_string(), v(&["a"])),
                ("d".to_string(), v(&["a"])),
            ]
        );
    }

    #[test]
    fn groups_are_validated() {
        assert!(validate_groups(&g(&[&["a"]])).is_err());
        assert!(validate_groups(&g(&[&["a"], &[]])).is_err());
        let err = validate_groups(&g(&[&["a", "b"], &["b"]]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("b is in more than one group"), "{err}");
        assert!(validate_groups(&g(&[&["a"], &["b"]])).is_ok());
    }

    #[test]
    fn iface_is_found_by_address() {
        let out = "1: lo    inet 127.0.0.1/8 scope host lo\\       valid_lft forever preferred_lft forever\n\
                   57: eth1    inet 172.18.0.3/16 brd 172.18.255.255 scope global eth1\\       valid_lft forever\n\
                   59: eth0@if60    inet 10.1.0.3/24 brd 10.1.0.255 scope global eth0\\       valid_lft forever\n";
        assert_eq!(parse_iface(out, "172.18.0.3").as_deref(), Some("eth1"));
        assert_eq!(parse_iface(out, "10.1.0.3").as_deref(), Some("eth0"));
        assert_eq!(parse_iface(out, "172.18.0.30"), None);
    }
}
