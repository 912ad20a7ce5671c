//! The live cluster that `chaos up` started and the interactive commands act on: finding
//! it, connecting its runtime, resolving node names against it, feeding its input,
//! reading its committed counts, and removing it (`chaos down`).
//!
//! `chaos up` records its cluster in `target/chaos/current`; with no record, a Docker
//! cluster is found by its `chaos.cluster` label (exactly one must be live). The runtime
//! trait is not object-safe (async methods), so [`Live`] is an enum over the two runtimes.

use std::collections::HashMap;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::current::{self, CurrentCluster};
use crate::error::ChaosError;
use crate::netfault;
use crate::runtime::docker::{self, DockerRuntime};
use crate::runtime::process::ProcessRuntime;
use crate::runtime::{self, ClusterDef, NodeStatus, Runtime, RuntimeKind};
use crate::signal::Signal;
use crate::error::exit;
use streamd_contract::api::JobState;

/// The follow-mode input of a cluster started by `chaos up`, relative to its run dir.
pub const FOLLOW_INPUT: &str = "input/input.txt";

/// A live cluster: where it runs and where its files are.
#[derive(Debug, Clone)]
pub struct LiveCluster {
    pub id: String,
    pub kind: RuntimeKind,
    pub run_dir: PathBuf,
}

/// What to tell a user who has no cluster up.
fn no_live_cluster(docker_note: &str) -> ChaosError {
    ChaosError::Usage(format!(
        "no live cluster: start one with `chaos up` (no {} and {docker_note})",
        CurrentCluster::path().display()
    ))
}

impl LiveCluster {
    /// The current cluster: `target/chaos/current`, else the one Docker cluster carrying
    /// chaos labels.
    pub async fn find() -> Result<LiveCluster, ChaosError> {
        if let Some(cur) = CurrentCluster::load().map_err(|e| ChaosError::Other(e.to_string()))? {
            return Ok(LiveCluster { id: cur.cluster_id, kind: cur.runtime, run_dir: cur.run_dir });
        }
        let docker = match docker::connect_docker().await {
            Ok(d) => d,
            Err(e) => {
                tracing::debug!("no Docker to discover clusters on: {e}");
                return Err(no_live_cluster("no Docker daemon to look for labelled containers"));
            }
        };
        let live = docker::discover(&docker).await?;
        match live.as_slice() {
            [] => Err(no_live_cluster("no containers labelled chaos.cluster")),
            [one] => Ok(LiveCluster { id: one.id.clone(), kind: RuntimeKind::Docker, run_dir: one.run_dir.clone() }),
            several => {
                let ids: Vec<&str> = several.iter().map(|c| c.id.as_str()).collect();
                Err(ChaosError::Usage(format!(
                    "several chaos clusters are live ({}) and none is recorded in {}: `chaos down` removes them all",
                    ids.join(", "),
                    CurrentCluster::path().display()
                )))
            }
        }
    }

    /// Connects the cluster's runtime.
    pub async fn connect(&self) -> Result<Live, ChaosError> {
        Live::connect(self.kind, &self.id, &self.run_dir).await
    }

    pub fn runtime_name(&self) -> &'static str {
        self.kind.as_str()
    }
}

/// Either runtime, behind the one trait.
pub enum Live {
    Process(ProcessRuntime),
    Docker(DockerRuntime),
}

impl Live {
    /// The runtime of an existing cluster: the one place that picks a runtime by kind.
    pub async fn connect(kind: RuntimeKind, cluster_id: &str, run_dir: &Path) -> Result<Live, ChaosError> {
        Ok(match kind {
            RuntimeKind::Process => Live::Process(ProcessRuntime::attach(run_dir)?),
            RuntimeKind::Docker => Live::Docker(DockerRuntime::connect(Some(cluster_id)).await?),
        })
    }

    /// The cluster's network faults (docker), with the sidecar image built if needed.
    /// `None` on the process runtime, where the fault layer refuses network faults.
    pub async fn net_faults(&self, cluster: &LiveCluster) -> Result<Option<netfault::NetFaults>, ChaosError> {
        match self {
            Live::Process(_) => Ok(None),
            Live::Docker(rt) => {
                let ctx = crate::fault::net::NetContext::new(rt.docker().clone()).await?;
                Ok(Some(ctx.for_cluster(&cluster.id, &cluster.run_dir)))
            }
        }
    }
}

macro_rules! on_runtime {
    ($live:expr, $rt:ident => $body:expr) => {
        match $live {
            Live::Process($rt) => $body,
            Live::Docker($rt) => $body,
        }
    };
}

impl Runtime for Live {
    fn name(&self) -> &'static str {
        on_runtime!(self, rt => rt.name())
    }
    async fn up(&mut self, def: &ClusterDef) -> runtime::Result<()> {
        on_runtime!(self, rt => rt.up(def).await)
    }
    async fn rest_url(&self, node: &str) -> runtime::Result<String> {
        on_runtime!(self, rt => rt.rest_url(node).await)
    }
    async fn node_address(&self, node: &str) -> runtime::Result<String> {
        on_runtime!(self, rt => rt.node_address(node).await)
    }
    async fn feed_address(&self, node: &str) -> runtime::Result<String> {
        on_runtime!(self, rt => rt.feed_address(node).await)
    }
    async fn kill(&self, node: &str, signal: Signal) -> runtime::Result<()> {
        on_runtime!(self, rt => rt.kill(node, signal).await)
    }
    async fn stop(&self, node: &str, grace: Duration) -> runtime::Result<()> {
        on_runtime!(self, rt => rt.stop(node, grace).await)
    }
    async fn start(&self, node: &str) -> runtime::Result<()> {
        on_runtime!(self, rt => rt.start(node).await)
    }
    async fn restart(&self, node: &str, grace: Duration) -> runtime::Result<()> {
        on_runtime!(self, rt => rt.restart(node, grace).await)
    }
    async fn pause(&self, node: &str) -> runtime::Result<()> {
        on_runtime!(self, rt => rt.pause(node).await)
    }
    async fn unpause(&self, node: &str) -> runtime::Result<()> {
        on_runtime!(self, rt => rt.unpause(node).await)
    }
    async fn nodes(&self) -> runtime::Result<Vec<NodeStatus>> {
        on_runtime!(self, rt => rt.nodes().await)
    }
    async fn down(&mut self) -> runtime::Result<()> {
        on_runtime!(self, rt => rt.down().await)
    }
}

/// Resolves a NODE argument against the live cluster: aliases ([`crate::nodes::canonical`]),
/// `leader`, and a clear error naming the cluster's nodes when there is no such node.
pub async fn resolve_node(cluster: &LiveCluster, rt: &Live, name: &str) -> Result<String, ChaosError> {
    if crate::nodes::is_leader(name) {
        return crate::nodes::leader(rt).await.map_err(ChaosError::Other);
    }
    let nodes = rt.nodes().await?;
    let canon = crate::nodes::canonical(name);
    if let Some(c) = canon.as_ref().filter(|c| nodes.iter().any(|n| &n.name == *c)) {
        return Ok(c.clone());
    }
    let shown = match &canon {
        Some(c) if c != name => format!("`{name}` ({c})"),
        _ => format!("`{name}`"),
    };
    let names: Vec<&str> = nodes.iter().map(|n| n.name.as_str()).collect();
    Err(ChaosError::Usage(format!(
        "no node {shown} in cluster {} ({}); its nodes: {}",
        cluster.id,
        cluster.runtime_name(),
        if names.is_empty() {
            "none (the cluster is gone: `chaos down` clears its record)".to_string()
        } else {
            names.join(", ")
        }
    )))
}

/// Appends every line of `from` to `path` (adding a final newline if missing: the source
/// only reads complete lines). Returns how many lines were written.
pub fn feed_lines(path: &Path, mut from: impl BufRead) -> std::io::Result<u64> {
    let mut out = std::fs::OpenOptions::new().append(true).open(path)?;
    let mut buf = Vec::new();
    let mut n = 0;
    loop {
        buf.clear();
        if from.read_until(b'\n', &mut buf)? == 0 {
            return Ok(n);
        }
        if buf.last() != Some(&b'\n') {
            buf.push(b'\n');
        }
        // One write per line on an O_APPEND file: a line lands whole, never interleaved.
        out.write_all(&buf)?;
        out.flush()?;
        n += 1;
    }
}

/// The final committed count per word in a run directory: the last committed value of
/// each word (the sink commits cumulative counts). Returns the counts and notes about
/// malformed transactions, which are skipped.
pub fn committed_counts(run_dir: &Path) -> std::io::Result<(HashMap<String, u64>, Vec<String>)> {
    let job_id = streamd_contract::spec::JobSpec::load(&run_dir.join("job.yaml"))
        .map(|s| s.job_id)
        .unwrap_or_else(|_| "wordcount".to_string());
    let mut txs = streamd_contract::output::read_committed(&run_dir.join("output").join(job_id))?;
    // Later epochs carry later cumulative counts; order by them across subtasks.
    txs.sort_by_key(|t| (t.epoch, t.part, t.subtask));
    let mut counts = HashMap::new();
    let mut notes = Vec::new();
    for t in txs {
        if let Err(why) = &t.well_formed {
            notes.push(format!("skipping {}: {why}", t.path.display()));
            continue;
        }
        for (word, count) in t.records {
            counts.insert(word, count);
        }
    }
    Ok((counts, notes))
}

/// What `chaos down` did: lines for stdout and warnings for stderr.
#[derive(Debug, Default)]
pub struct DownReport {
    pub done: Vec<String>,
    pub warnings: Vec<String>,
}

fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

impl DownReport {
    /// Stopping the nodes' disk passthroughs (daemons and mounts).
    fn disk_views(&mut self, r: Result<Vec<String>, crate::diskfault::DiskError>) {
        match r {
            Ok(nodes) if nodes.is_empty() => {}
            Ok(nodes) => self.done.push(format!("removed the disk passthrough of {}", nodes.join(", "))),
            Err(e) => self.warnings.push(format!("disk passthrough not removed: {e}")),
        }
    }

    /// Undoing journaled network faults: failures are warnings, since the containers
    /// holding the rules are removed next anyway.
    fn network_faults(&mut self, r: Result<netfault::UndoReport, netfault::NetfaultError>) {
        match r {
            Ok(r) => {
                let n = r.undone.len() + r.ended.len();
                if n > 0 || r.sidecars_removed > 0 {
                    self.done.push(format!(
                        "undid {n} network fault rule set{}, removed {} sidecar{}",
                        plural(n),
                        r.sidecars_removed,
                        plural(r.sidecars_removed)
                    ));
                }
                self.warnings.extend(r.errors.iter().map(|e| format!("network fault not undone: {e}")));
            }
            Err(e) => self.warnings.push(format!("network faults not undone: {e}")),
        }
    }
}

/// `chaos down [--images]`: removes the current cluster; with none recorded, everything
/// chaos left behind (Docker resources labelled `chaos.cluster`, live nodes of every
/// process cluster under `target/chaos/runs`).
pub async fn down(images: bool) -> Result<DownReport, ChaosError> {
    let mut rep = DownReport::default();
    match CurrentCluster::load().map_err(|e| ChaosError::Other(e.to_string()))? {
        Some(cur) => {
            let t = std::time::Instant::now();
            match cur.runtime {
                RuntimeKind::Process => match ProcessRuntime::attach(&cur.run_dir) {
                    Ok(mut rt) => rt.down().await?,
                    Err(e) => rep.warnings.push(format!("{e}; nothing to stop")),
                },
                RuntimeKind::Docker => {
                    let mut rt = DockerRuntime::connect(Some(&cur.cluster_id)).await?;
                    // Rules first, while their namespaces still exist; then the containers.
                    rep.network_faults(netfault::undo_all(rt.docker(), &cur.run_dir).await);
                    rt.down().await?;
                    if images {
                        // Removes chaos's images unless another cluster still runs them.
                        let live = docker::discover(rt.docker()).await?;
                        if live.is_empty() {
                            let s = docker::down_all(rt.docker(), true).await?;
                            rep.done.push(format!("removed {} image{}", s.images, plural(s.images)));
                        } else {
                            let ids: Vec<&str> = live.iter().map(|c| c.id.as_str()).collect();
                            rep.warnings.push(format!("images kept: other clusters still run them ({})", ids.join(", ")));
                        }
                    }
                }
            }
            // The nodes are gone: their disk passthroughs can go.
            rep.disk_views(crate::diskfault::mount::stop_all(&cur.run_dir));
            CurrentCluster::clear().map_err(|e| ChaosError::Other(e.to_string()))?;
            rep.done.push(format!("removed cluster {} in {} ms", cur.cluster_id, t.elapsed().as_millis()));
        }
        None => {
            let killed = ProcessRuntime::down_leftovers(&current::runs_dir()).await?;
            for (cluster, node) in &killed {
                rep.done.push(format!("killed {node} of process cluster {cluster}"));
            }
            match docker::connect_docker().await {
                Ok(d) => {
                    rep.network_faults(netfault::undo_all_runs(&d, &current::runs_dir()).await);
                    let s = docker::down_all(&d, images).await?;
                    rep.done.push(format!(
                        "removed {} container{}, {} network{}, {} image{} labelled by chaos",
                        s.containers,
                        plural(s.containers),
                        s.networks,
                        plural(s.networks),
                        s.images,
                        plural(s.images)
                    ));
                }
                Err(e) => rep.warnings.push(format!("docker: nothing removed ({e})")),
            }
            rep.disk_views(crate::diskfault::mount::stop_all_runs(&current::runs_dir()));
        }
    }
    Ok(rep)
}

/// Options of `chaos up`.
#[derive(Debug, Clone)]
pub struct UpOptions {
    pub scenario: Option<PathBuf>,
    pub jobmanagers: u32,
    pub taskmanagers: u32,
    pub slots: u32,
    pub runtime: RuntimeKind,
    /// Without a scenario: the job reads a socket on this port (the line server `lines-1`,
    /// fed by `chaos feed` as `nc -l <port>` is by typing).
    pub socket: Option<u16>,
    /// Mount the disk-fault passthroughs even when the scenario has no `disk` fault.
    pub disk: bool,
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
            let socket = opts.socket.map(|p| format!("socket: {{ port: {p} }}, ")).unwrap_or_default();
            let text = format!(
                "name: interactive\ncluster: {{ jobmanagers: {}, taskmanagers: {}, slots: {} }}\n\
                 job: {{ parallelism: {} }}\ninput: {{ {socket}generate: {{ lines: 1 }} }}\n",
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
    // A live cluster follows a growing input file and is judged by `chaos verify` against
    // streamd's output format; the Flink job reads a finished file. Flink runs through
    // `chaos run` (its faults, timings and verdict are all there).
    if plan.cluster.engine == crate::engine::Engine::Flink {
        return Err(ChaosError::Usage(format!(
            "{}: `chaos up` starts streamd clusters only; run a Flink scenario with `chaos run` (or `chaos run --keep` to keep its cluster for `chaos kill`, `chaos pause`, ...)",
            plan.file.display()
        )));
    }
    // Interactive input: a growing file the sources follow until `chaos verify` ends it, or
    // the line server, which `chaos feed` writes to (nothing else is fed to it here).
    let socket = plan.job.input.socket.clone();
    if socket.is_none() && (plan.job.input.generate.is_none() || opts.scenario.is_none()) {
        plan.job.input.generate = None;
        plan.job.input.file = Some(streamd_contract::spec::FileSpec { path: "input/input.txt".into(), follow: true });
    }
    plan.faults.clear();
    let docker = match opts.runtime {
        RuntimeKind::Docker => crate::runtime::docker::connect_docker().await.ok(),
        RuntimeKind::Process => None,
    };
    crate::host::preflight(std::slice::from_ref(&plan), opts.runtime, docker.as_ref()).await?;
    let prepared = crate::executor::run_one::prepare(&plan)?;
    let input = prepared.run_dir.join("input/input.txt");
    if !input.exists() {
        std::fs::write(&input, b"").map_err(|e| ChaosError::Infrastructure(format!("cannot create {}: {e}", input.display())))?;
    }
    let def = plan.cluster_def(&prepared.cluster_id, prepared.run_dir.clone());
    crate::diskfault::mount::start_for_plan(&plan, &prepared.run_dir, opts.disk, opts.disk)?;
    let t = std::time::Instant::now();
    let url = match opts.runtime {
        RuntimeKind::Process => {
            let mut rt = ProcessRuntime::new(crate::executor::streamd_binary().await?);
            rt.up(&def).await?;
            rt.rest_url("jobmanager-1").await?
        }
        RuntimeKind::Docker => {
            let docker = crate::runtime::docker::connect_docker().await?;
            let image = crate::images::ensure_streamd_image(&docker, &crate::executor::streamd_binary().await?).await?;
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
    if let Some(s) = socket {
        println!(
            "the job reads a socket: `chaos feed` writes to the line server {} (port {}), as typing into `nc -l {}` would",
            streamd_contract::lines::NODE,
            s.port,
            s.port
        );
    }
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
    let live = crate::live::Live::connect(cur.runtime, &cur.cluster_id, &cur.run_dir).await?;
    let url = live.rest_url("jobmanager-1").await?;
    let oracle_input = if job.input.socket.is_some() {
        // The line server ends the input; the oracle is everything it was fed.
        let addr = live.feed_address(streamd_contract::lines::NODE).await?;
        crate::feed::end(&addr).await.map_err(|e| ChaosError::Other(format!("cannot end the input: {e}")))?;
        crate::verdict::OracleInput::File(streamd_contract::lines::fed_path(&cur.run_dir))
    } else if let Some(g) = &job.input.generate {
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
    let oracle = crate::verdict::oracle_of(&oracle_input, &job).map_err(|e| ChaosError::Other(e.to_string()))?;
    let txns = streamd_contract::output::read_committed(&cur.run_dir.join("output").join(&job.job_id))
        .map_err(|e| ChaosError::Other(e.to_string()))?;
    let mut failures = Vec::new();
    if d.state == JobState::Failed {
        failures.push(("job".to_string(), format!("the job FAILED: {}", d.failure_cause.unwrap_or_default())));
    }
    let finished = d.state == JobState::Finished;
    let socket = job.input.socket.is_some();
    // A socket source cannot replay: at most once, without the epoch checks (see run.rs).
    let epochs = if socket {
        None
    } else {
        match crate::verdict::EpochEvidence::read(&cur.run_dir, &job.job_id, oracle_input.clone(), job.parallelism, finished) {
            Ok(e) => Some(e.windowed(job.window_clock())),
            Err(e) => {
                failures.push((crate::verdict::CONSISTENT_CUTS.into(), format!("cannot read the checkpoints' cuts: {e}")));
                None
            }
        }
    };
    let expect = if socket { crate::verdict::Expectation::AtMostOnce } else { crate::verdict::Expectation::ExactlyOnce };
    let mut v = crate::verdict::verdict_with(&oracle, &txns, expect, epochs.as_ref(), failures);
    if socket {
        // Faults were applied by other invocations: only the jobmanager's failures are known.
        let t0 = d.history.iter().find(|h| h.state == JobState::Running).map_or(d.start_ms, |h| h.at_ms);
        match crate::verdict::at_most_once::SocketEvidence::read(&cur.run_dir, Vec::new(), d.failures.clone(), t0) {
            Ok(ev) => crate::verdict::at_most_once::explain(&mut v, &ev),
            Err(e) => tracing::warn!("cannot read the line server's journal: {e}"),
        }
    }
    let counts = cur.run_dir.join("counts.tsv");
    crate::verdict::write_counts(&counts, &v.finals).map_err(|e| ChaosError::Other(e.to_string()))?;
    let mut r = crate::report::RunReport { scenario: "interactive".into(), run_dir: cur.run_dir.clone(), counts_file: counts, ..crate::report::RunReport::default() };
    r.restarts = d.restarts;
    r.checkpoints_completed = d.checkpoints_completed;
    r.apply_verdict(&v);
    r.fill_derived();
    println!("{}", crate::report::terminal::summary(&r));
    Ok(if v.pass { exit::PASS } else { exit::FAIL })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn feed_appends_whole_lines_and_terminates_the_last() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("input.txt");
        std::fs::write(&path, "already here\n").unwrap();
        let n = feed_lines(&path, &b"to be\nor not\nto be"[..]).unwrap();
        assert_eq!(n, 3);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "already here\nto be\nor not\nto be\n");
    }

    #[test]
    fn counts_take_the_last_committed_value_and_skip_torn_transactions() {
        use streamd_contract::output::{committed_name, write_transaction};
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("output/wordcount");
        for sub in ["0", "1"] {
            std::fs::create_dir_all(out.join(sub)).unwrap();
        }
        write_transaction(&out.join("0").join(committed_name(1, 0)), [("a", 1), ("b", 2)]).unwrap();
        write_transaction(&out.join("0").join(committed_name(3, 0)), [("a", 5)]).unwrap();
        write_transaction(&out.join("1").join(committed_name(2, 0)), [("c", 7)]).unwrap();
        std::fs::write(out.join("1").join(committed_name(4, 0)), "c\t99\n").unwrap();
        let (counts, notes) = committed_counts(dir.path()).unwrap();
        assert_eq!(counts.get("a"), Some(&5));
        assert_eq!(counts.get("b"), Some(&2));
        assert_eq!(counts.get("c"), Some(&7), "the torn epoch 4 must not count");
        assert_eq!(notes.len(), 1, "{notes:?}");
    }
}
