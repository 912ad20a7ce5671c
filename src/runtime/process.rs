//! The process runtime: every node of a cluster is a local `streamd` process on its own
//! 127.0.0.1 ports. Fast tests and machines without Docker use it.
//!
//! Faults map to signals: kill = any signal (SIGKILL by default), stop = SIGTERM then
//! SIGKILL after the grace, pause/unpause = SIGSTOP/SIGCONT. There is no network namespace
//! to degrade, so network faults are refused ([`refuse_network_fault`]).
//!
//! Nodes start in their own process group, so a Ctrl-C at the terminal reaches `chaos`
//! only and `chaos` decides when nodes die. The cluster's state (ports, arguments, pids)
//! is persisted in `<run_dir>/cluster.json`, so a later `chaos` invocation can
//! [`ProcessRuntime::attach`] to the live cluster and act on it. Before a pid read from
//! there is signalled, `/proc/<pid>/cmdline` must show the streamd binary and the node's
//! `--id`: pids are reused once a process is gone.
//!
//! High availability (`jobmanagers > 1`): the `etcd-1` node is Debian's `etcd` binary
//! (package `etcd-server`; [`ETCD_BIN_ENV`] overrides where it is) run as a local process,
//! a one-member cluster with its data in `<run_dir>/etcd` (removed by `down`). Jobmanagers
//! and taskmanagers get `--etcd http://127.0.0.1:<port>`.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::OpenOptions;
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::signal::Signal;

use serde::{Deserialize, Serialize};

use super::{ClusterDef, NodeState, NodeStatus, Result, Role, Runtime, RuntimeError};

/// Name of the state file in the run directory.
pub const STATE_FILE: &str = "cluster.json";

/// Environment variable that overrides the streamd binary the runtime starts.
pub const STREAMD_BIN_ENV: &str = "CHAOS_STREAMD_BIN";

/// Environment variable naming the etcd binary for HA clusters (default: `etcd` on `PATH`).
pub const ETCD_BIN_ENV: &str = "CHAOS_ETCD_BIN";

/// The etcd binary for HA clusters: `CHAOS_ETCD_BIN`, else `etcd` on `PATH`.
pub fn etcd_binary() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os(ETCD_BIN_ENV).filter(|v| !v.is_empty()) {
        let p = PathBuf::from(p);
        return if p.is_file() {
            Ok(std::fs::canonicalize(&p).unwrap_or(p))
        } else {
            Err(RuntimeError::Infrastructure(format!("{ETCD_BIN_ENV}={} is not a file", p.display())))
        };
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/bin"), PathBuf::from("/usr/local/bin")])
        .map(|d| d.join("etcd"))
        .find(|p| p.is_file())
        .map(|p| std::fs::canonicalize(&p).unwrap_or(p))
        .ok_or_else(|| {
            RuntimeError::Infrastructure(format!(
                "high availability needs etcd, and no `etcd` binary is on PATH: install Debian's etcd-server \
                 package (`apt-get install etcd-server`) or point {ETCD_BIN_ENV} at an etcd binary"
            ))
        })
}

/// How often exits are polled while waiting for one.
const POLL: Duration = Duration::from_millis(20);

/// How long a SIGKILLed node may take to disappear before we call it stuck.
const KILL_WAIT: Duration = Duration::from_secs(10);

/// The error for netem and partitions on this runtime.
pub fn refuse_network_fault() -> RuntimeError {
    RuntimeError::Usage(
        "network faults (netem, partition) need the docker runtime: the process runtime runs every node on \
         127.0.0.1 with no network namespace to degrade"
            .into(),
    )
}

/// The 127.0.0.1 ports of one node (which ones depends on the role).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodePorts {
    /// Jobmanager RPC (Flink's 6123).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub rpc: Option<u16>,
    /// Jobmanager REST (Flink's 8081).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub rest: Option<u16>,
    /// Taskmanager data port (Flink's 6121).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub data: Option<u16>,
    /// etcd client port (etcd's 2379).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub etcd_client: Option<u16>,
    /// etcd peer port (etcd's 2380).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub etcd_peer: Option<u16>,
    /// Line server: where sources connect (the job's `input.socket.port` on Docker).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub lines: Option<u16>,
    /// Line server: where chaos feeds lines.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub feed: Option<u16>,
}

/// One node as recorded in `cluster.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeRecord {
    pub name: String,
    pub role: Role,
    /// streamd's arguments (after the binary); a restart reuses them verbatim.
    pub args: Vec<String>,
    /// The binary, when not streamd (etcd).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub program: Option<PathBuf>,
    pub ports: NodePorts,
    /// The pid of the latest start; `None` before the first start and after `down`.
    pub pid: Option<u32>,
}

/// `<run_dir>/cluster.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct ClusterState {
    id: String,
    run_dir: PathBuf,
    /// The binary every node runs (also what identifies our processes in /proc).
    streamd: PathBuf,
    env: Vec<(String, String)>,
    nodes: Vec<NodeRecord>,
}

/// What `/proc` says about a pid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Liveness {
    Running,
    Paused,
    Gone,
}

/// Runs a cluster's nodes as local processes. See the module documentation.
pub struct ProcessRuntime {
    streamd: PathBuf,
    state: Mutex<Option<ClusterState>>,
    /// Nodes this object spawned, kept so their exits can be reaped (no zombies).
    children: Mutex<HashMap<String, Child>>,
}

impl ProcessRuntime {
    /// A runtime that starts `streamd` (the static binary; `CHAOS_STREAMD_BIN` overrides it).
    pub fn new(streamd: PathBuf) -> ProcessRuntime {
        let streamd = std::env::var_os(STREAMD_BIN_ENV).filter(|v| !v.is_empty()).map(PathBuf::from).unwrap_or(streamd);
        Self::with_binary(streamd)
    }

    /// A runtime that starts exactly `binary`, whatever the environment says (tests run
    /// stand-ins this way).
    pub fn with_binary(streamd: PathBuf) -> ProcessRuntime {
        // An absolute path makes argv[0] — which identifies our nodes in /proc — independent
        // of the directory a later `chaos` invocation runs from.
        let streamd = std::fs::canonicalize(&streamd).unwrap_or(streamd);
        ProcessRuntime { streamd, state: Mutex::new(None), children: Mutex::new(HashMap::new()) }
    }

    /// Attaches to a cluster started earlier (maybe by another `chaos` process) from
    /// `<run_dir>/cluster.json`.
    pub fn attach(run_dir: &Path) -> Result<ProcessRuntime> {
        let state = read_state(&run_dir.join(STATE_FILE))?.ok_or_else(|| {
            RuntimeError::Usage(format!(
                "no process cluster in {}: {} is missing",
                run_dir.display(),
                run_dir.join(STATE_FILE).display()
            ))
        })?;
        Ok(ProcessRuntime {
            streamd: state.streamd.clone(),
            state: Mutex::new(Some(state)),
            children: Mutex::new(HashMap::new()),
        })
    }

    /// The streamd binary the nodes run.
    pub fn streamd_path(&self) -> &Path {
        &self.streamd
    }

    /// The cluster id, once up or attached.
    pub fn cluster_id(&self) -> Option<String> {
        self.lock_state().as_ref().map(|s| s.id.clone())
    }

    /// The run directory, once up or attached.
    pub fn run_dir(&self) -> Option<PathBuf> {
        self.lock_state().as_ref().map(|s| s.run_dir.clone())
    }

    /// Every node as recorded (ports, arguments, last pid).
    pub fn node_records(&self) -> Vec<NodeRecord> {
        self.refresh();
        self.lock_state().as_ref().map(|s| s.nodes.clone()).unwrap_or_default()
    }

    /// `<run_dir>/logs/<node>.log`: the node's stdout and stderr, across restarts.
    pub fn log_path(&self, node: &str) -> Option<PathBuf> {
        self.run_dir().map(|d| log_path(&d, node))
    }

    /// Kills every still-running node of every process cluster under `runs_dir`
    /// (`target/chaos/runs/*/cluster.json`): `chaos down` when no cluster is current.
    /// Returns the `(cluster id, node)` pairs it killed.
    pub async fn down_leftovers(runs_dir: &Path) -> Result<Vec<(String, String)>> {
        let entries = match std::fs::read_dir(runs_dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(RuntimeError::Other(format!("cannot list {}: {e}", runs_dir.display()))),
        };
        let mut killed = Vec::new();
        for entry in entries.flatten() {
            let dir = entry.path();
            if !dir.join(STATE_FILE).is_file() {
                continue;
            }
            let mut rt = match ProcessRuntime::attach(&dir) {
                Ok(rt) => rt,
                Err(e) => {
                    tracing::warn!("skipping {}: {e}", dir.display());
                    continue;
                }
            };
            let id = rt.cluster_id().unwrap_or_default();
            for st in rt.nodes().await? {
                if st.state != NodeState::Exited && st.state != NodeState::Missing {
                    killed.push((id.clone(), st.name));
                }
            }
            rt.down().await?;
        }
        Ok(killed)
    }

    fn lock_state(&self) -> MutexGuard<'_, Option<ClusterState>> {
        // A panic while holding the lock leaves plain data behind; keep using it.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lock_children(&self) -> MutexGuard<'_, HashMap<String, Child>> {
        self.children.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Re-reads `cluster.json`: another `chaos` invocation may have restarted a node
    /// (new pid) since we last looked. The file is the source of truth.
    fn refresh(&self) {
        let Some(path) = self.lock_state().as_ref().map(|s| s.run_dir.join(STATE_FILE)) else { return };
        match read_state(&path) {
            Ok(Some(fresh)) => *self.lock_state() = Some(fresh),
            Ok(None) => {}
            Err(e) => tracing::warn!("keeping the cluster state in memory: {e}"),
        }
    }

    fn persist(&self) -> Result<()> {
        let guard = self.lock_state();
        let Some(state) = guard.as_ref() else { return Ok(()) };
        write_state(state)
    }

    /// The record of `node`, and the binary it runs.
    fn record(&self, node: &str) -> Result<NodeRecord> {
        self.refresh();
        let guard = self.lock_state();
        let state = guard.as_ref().ok_or_else(not_up)?;
        state.nodes.iter().find(|n| n.name == node).cloned().ok_or_else(|| {
            let names: Vec<&str> = state.nodes.iter().map(|n| n.name.as_str()).collect();
            RuntimeError::Usage(format!("no node `{node}` in cluster {} (nodes: {})", state.id, names.join(", ")))
        })
    }

    /// For a node process this object spawned: `Some(true)` once it has exited (reaped
    /// now), `Some(false)` while it has not. `None` when it is not our child.
    fn owned_exit(&self, node: &str, pid: i32) -> Option<bool> {
        let mut children = self.lock_children();
        let child = children.get_mut(node).filter(|c| c.id() as i32 == pid)?;
        match child.try_wait() {
            Ok(Some(status)) => {
                tracing::debug!("{node} (pid {pid}) exited: {status}");
                children.remove(node);
                Some(true)
            }
            Ok(None) => Some(false),
            Err(e) => {
                tracing::debug!("{node} (pid {pid}): cannot wait: {e}");
                children.remove(node);
                None
            }
        }
    }

    /// The node's state. For our own children, waitpid is the authority: a child is gone
    /// once reaped, so "exited" never leaves a zombie behind (a dying process shows an
    /// empty cmdline before it becomes a zombie). For others (an attached cluster), /proc
    /// is, and the pid must still be that node's program: pids are reused.
    fn liveness(&self, rec: &NodeRecord) -> Liveness {
        let Some(pid) = rec.pid else { return Liveness::Gone };
        let pid = pid as i32;
        let paused_or_running = |s: Option<char>| {
            if matches!(s, Some('T' | 't')) {
                Liveness::Paused
            } else {
                Liveness::Running
            }
        };
        match self.owned_exit(&rec.name, pid) {
            Some(true) => return Liveness::Gone,
            Some(false) => return paused_or_running(proc_state(pid)),
            None => {}
        }
        match proc_state(pid) {
            Some('Z' | 'X' | 'x') | None => Liveness::Gone,
            s if is_node_process(pid, rec.program.as_deref().unwrap_or(&self.streamd), &rec.name) => {
                paused_or_running(s)
            }
            _ => Liveness::Gone,
        }
    }

    /// The pid of a live (running or paused) node.
    fn live_pid(&self, rec: &NodeRecord) -> Option<i32> {
        match self.liveness(rec) {
            Liveness::Gone => None,
            _ => rec.pid.map(|p| p as i32),
        }
    }

    fn running_pid(&self, rec: &NodeRecord) -> Result<i32> {
        self.live_pid(rec).ok_or_else(|| RuntimeError::Usage(format!("{} is not running", rec.name)))
    }

    /// Waits until the node's process is gone, up to `limit`. True when it is.
    async fn wait_gone(&self, rec: &NodeRecord, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        loop {
            if self.liveness(rec) == Liveness::Gone {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// SIGKILL and wait for the exit. (SIGCONT first: Linux kills a stopped process on
    /// SIGKILL anyway, but nothing should be left frozen if the kill is refused.)
    async fn kill_and_wait(&self, rec: &NodeRecord) -> Result<()> {
        if let Some(pid) = self.live_pid(rec) {
            signal_node(pid, libc::SIGCONT);
            signal_node(pid, libc::SIGKILL);
            if !self.wait_gone(rec, KILL_WAIT).await {
                return Err(RuntimeError::Other(format!(
                    "{} (pid {pid}) is still alive {}s after SIGKILL",
                    rec.name,
                    KILL_WAIT.as_secs()
                )));
            }
        }
        Ok(())
    }

    /// Spawns a node with its recorded arguments; its output is appended to its log.
    fn spawn(&self, state: &ClusterState, rec: &NodeRecord) -> Result<Child> {
        let logs = state.run_dir.join("logs");
        std::fs::create_dir_all(&logs)
            .map_err(|e| RuntimeError::Infrastructure(format!("cannot create {}: {e}", logs.display())))?;
        let path = log_path(&state.run_dir, &rec.name);
        let open_err = |e: io::Error| RuntimeError::Infrastructure(format!("cannot open {}: {e}", path.display()));
        let mut out = OpenOptions::new().create(true).append(true).open(&path).map_err(open_err)?;
        let err = out.try_clone().map_err(open_err)?;
        // A marker between lives, so a log that spans restarts reads in order.
        let _ = writeln!(
            out,
            "==== chaos: starting {} at {} ms: {} {}",
            rec.name,
            streamd_contract::api::now_ms(),
            rec.program.as_deref().unwrap_or(&state.streamd).display(),
            rec.args.join(" ")
        );
        let mut cmd = Command::new(rec.program.as_deref().unwrap_or(&state.streamd));
        cmd.args(&rec.args)
            .envs(state.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            // Our own process group: a terminal's Ctrl-C goes to chaos, not to the nodes.
            .process_group(0);
        cmd.spawn().map_err(|e| {
            RuntimeError::Infrastructure(format!(
                "cannot start {} ({}): {e}; build it with `chaos build` or point {STREAMD_BIN_ENV} at a streamd binary",
                rec.name,
                state.streamd.display()
            ))
        })
    }

    /// Starts `node` and records its new pid.
    fn start_node(&self, node: &str) -> Result<()> {
        let (state, rec) = {
            let guard = self.lock_state();
            let state = guard.as_ref().ok_or_else(not_up)?.clone();
            let rec = state.nodes.iter().find(|n| n.name == node).cloned().ok_or_else(not_up)?;
            (state, rec)
        };
        let child = self.spawn(&state, &rec)?;
        let pid = child.id();
        tracing::debug!("started {node} as pid {pid}");
        if let Some(mut old) = self.lock_children().insert(node.to_string(), child) {
            // The previous life is dead (start only spawns over a dead node): reap it.
            let _ = old.try_wait();
        }
        if let Some(s) = self.lock_state().as_mut() {
            if let Some(n) = s.nodes.iter_mut().find(|n| n.name == node) {
                n.pid = Some(pid);
            }
        }
        self.persist()
    }

    /// Builds the node records (arguments, fresh ports) of a cluster definition.
    fn plan(&self, def: &ClusterDef, run_dir: &Path) -> Result<Vec<NodeRecord>> {
        let etcds: Vec<_> = def.nodes.iter().filter(|n| n.role == Role::Etcd).collect();
        let jms: Vec<_> = def.nodes.iter().filter(|n| n.role == Role::Jobmanager).collect();
        let tms: Vec<_> = def.nodes.iter().filter(|n| n.role == Role::Taskmanager).collect();
        let line_servers: Vec<_> = def.nodes.iter().filter(|n| n.role == Role::Lines).collect();
        if line_servers.len() > 1 {
            return Err(RuntimeError::Usage(format!("{} line servers: the process runtime runs one", line_servers.len())));
        }
        if jms.is_empty() {
            return Err(RuntimeError::Usage("a cluster needs a jobmanager".into()));
        }
        if etcds.len() > 1 {
            return Err(RuntimeError::Usage(format!("{} etcd nodes: the process runtime runs one", etcds.len())));
        }
        if jms.len() > 1 && etcds.is_empty() {
            return Err(RuntimeError::Usage(format!(
                "{} jobmanagers without an etcd node: high availability elects the leader through etcd",
                jms.len()
            )));
        }
        let mut ports = free_ports(2 * etcds.len() + 2 * jms.len() + tms.len() + 2 * line_servers.len())
            .map_err(|e| RuntimeError::Infrastructure(format!("cannot find free 127.0.0.1 ports: {e}")))?
            .into_iter();
        let mut next = || ports.next().ok_or_else(|| RuntimeError::Other("ran out of allocated ports".into()));
        let data_dir = run_dir.display().to_string();
        let job = run_dir.join("job.yaml").display().to_string();
        let mut records = Vec::new();
        // HA: etcd (a one-member cluster); jobmanagers and taskmanagers find it by --etcd.
        let mut ha_args: Vec<String> = Vec::new();
        for n in &etcds {
            let (client, peer) = (next()?, next()?);
            let client_url = format!("http://127.0.0.1:{client}");
            let peer_url = format!("http://127.0.0.1:{peer}");
            let args = [
                "--name".to_string(),
                n.name.clone(),
                "--data-dir".into(),
                etcd_data_dir(run_dir).display().to_string(),
                "--listen-client-urls".into(),
                client_url.clone(),
                "--advertise-client-urls".into(),
                client_url.clone(),
                "--listen-peer-urls".into(),
                peer_url.clone(),
                "--initial-advertise-peer-urls".into(),
                peer_url.clone(),
                "--initial-cluster".into(),
                format!("{}={peer_url}", n.name),
                "--log-level".into(),
                "warn".into(),
            ];
            records.push(NodeRecord {
                name: n.name.clone(),
                role: n.role,
                args: args.to_vec(),
                program: Some(etcd_binary()?),
                ports: NodePorts { etcd_client: Some(client), etcd_peer: Some(peer), ..NodePorts::default() },
                pid: None,
            });
            ha_args = vec!["--etcd".into(), client_url];
        }
        // The line server: its ports are not the job's (many clusters share 127.0.0.1), so
        // taskmanagers are told where it is (`--line-server`).
        let mut tm_lines: Vec<String> = Vec::new();
        for n in &line_servers {
            let (lines, feed) = (next()?, next()?);
            let args = [
                "line-server".to_string(),
                "--id".into(),
                n.name.clone(),
                "--data-dir".into(),
                data_dir.clone(),
                "--bind".into(),
                format!("127.0.0.1:{lines}"),
                "--feed-bind".into(),
                format!("127.0.0.1:{feed}"),
            ];
            records.push(NodeRecord {
                name: n.name.clone(),
                role: n.role,
                args: args.to_vec(),
                program: None,
                ports: NodePorts { lines: Some(lines), feed: Some(feed), ..NodePorts::default() },
                pid: None,
            });
            tm_lines = vec!["--line-server".into(), format!("127.0.0.1:{lines}")];
        }
        let mut jm_rpc = None;
        for n in &jms {
            let (rpc, rest) = (next()?, next()?);
            jm_rpc.get_or_insert(rpc);
            let ha_jm: Vec<String> = if ha_args.is_empty() {
                Vec::new()
            } else {
                let mut a = ha_args.clone();
                a.extend(["--rest-advertise".to_string(), format!("127.0.0.1:{rest}")]);
                a
            };
            let args = [
                "jobmanager",
                "--job",
                &job,
                "--data-dir",
                &node_data_dir(run_dir, &n.name),
                "--id",
                &n.name,
                "--rpc-bind",
                &format!("127.0.0.1:{rpc}"),
                "--rest-bind",
                &format!("127.0.0.1:{rest}"),
                "--advertise",
                &format!("127.0.0.1:{rpc}"),
            ];
            records.push(NodeRecord {
                name: n.name.clone(),
                role: n.role,
                args: args.iter().map(|s| s.to_string()).chain(ha_jm).collect(),
                program: None,
                ports: NodePorts { rpc: Some(rpc), rest: Some(rest), ..NodePorts::default() },
                pid: None,
            });
        }
        let jm = format!("127.0.0.1:{}", jm_rpc.unwrap_or_default());
        for n in &tms {
            let data = next()?;
            // Node-local storage: per node, outside the shared checkpoint directory; it
            // survives the node's restarts as the container filesystem does on docker.
            let local = run_dir.join("local").join(&n.name).display().to_string();
            let args = [
                "taskmanager",
                "--jobmanager",
                &jm,
                "--slots",
                &n.slots.to_string(),
                "--data-dir",
                &node_data_dir(run_dir, &n.name),
                "--id",
                &n.name,
                "--data-bind",
                &format!("127.0.0.1:{data}"),
                "--advertise",
                &format!("127.0.0.1:{data}"),
                "--local-dir",
                &local,
            ];
            // Through a disk-fault view of /data, the job's input (the source system's data,
            // not the node's storage) is still read from the run directory itself.
            let input_root: Vec<String> = match crate::diskfault::mount::view_if_mounted(run_dir, &n.name) {
                Some(_) => vec!["--input-root".into(), run_dir.display().to_string()],
                None => Vec::new(),
            };
            records.push(NodeRecord {
                name: n.name.clone(),
                role: n.role,
                args: args
                    .iter()
                    .map(|s| s.to_string())
                    .chain(ha_args.iter().cloned())
                    .chain(tm_lines.iter().cloned())
                    .chain(input_root)
                    .collect(),
                program: None,
                ports: NodePorts { data: Some(data), ..NodePorts::default() },
                pid: None,
            });
        }
        Ok(records)
    }
}

impl Runtime for ProcessRuntime {
    fn name(&self) -> &'static str {
        "process"
    }

    async fn up(&mut self, def: &ClusterDef) -> Result<()> {
        if self.lock_state().is_some() {
            let alive: Vec<String> = self
                .nodes()
                .await?
                .into_iter()
                .filter(|n| matches!(n.state, NodeState::Running | NodeState::Paused))
                .map(|n| n.name)
                .collect();
            if !alive.is_empty() {
                return Err(RuntimeError::Usage(format!(
                    "this runtime already runs a cluster ({} alive): bring it down first",
                    alive.join(", ")
                )));
            }
        }
        if !self.streamd.is_file() {
            return Err(RuntimeError::Infrastructure(format!(
                "streamd binary {} not found: build it with `chaos build` or point {STREAMD_BIN_ENV} at one",
                self.streamd.display()
            )));
        }
        std::fs::create_dir_all(&def.run_dir)
            .map_err(|e| RuntimeError::Infrastructure(format!("cannot create {}: {e}", def.run_dir.display())))?;
        let run_dir = std::path::absolute(&def.run_dir)
            .map_err(|e| RuntimeError::Infrastructure(format!("{}: {e}", def.run_dir.display())))?;
        let nodes = self.plan(def, &run_dir)?;
        let state =
            ClusterState { id: def.id.clone(), run_dir, streamd: self.streamd.clone(), env: def.env.clone(), nodes };
        // On disk before the first spawn: if chaos dies half-way, `down` still finds them.
        write_state(&state)?;
        let names: Vec<String> = state.nodes.iter().map(|n| n.name.clone()).collect();
        *self.lock_state() = Some(state);
        for name in names {
            if let Err(e) = self.start_node(&name) {
                let _ = self.down().await;
                return Err(e);
            }
        }
        Ok(())
    }

    async fn rest_url(&self, node: &str) -> Result<String> {
        let rec = self.record(node)?;
        match rec.ports.rest {
            Some(port) => Ok(format!("http://127.0.0.1:{port}")),
            None => Err(RuntimeError::Usage(format!("{node} is a {}: only jobmanagers serve REST", rec.role.as_str()))),
        }
    }

    async fn node_address(&self, node: &str) -> Result<String> {
        // Every node listens on loopback (its own ports).
        self.record(node).map(|_| "127.0.0.1".to_string())
    }

    async fn feed_address(&self, node: &str) -> Result<String> {
        let rec = self.record(node)?;
        match rec.ports.feed {
            Some(port) => Ok(format!("127.0.0.1:{port}")),
            None => Err(RuntimeError::Usage(format!("{node} is a {}: only the line server takes lines", rec.role.as_str()))),
        }
    }

    async fn kill(&self, node: &str, signal: Signal) -> Result<()> {
        let sig = signal.number();
        let rec = self.record(node)?;
        let pid = self.running_pid(&rec)?;
        if !signal_node(pid, sig) {
            return Err(RuntimeError::Other(format!("cannot signal {node} (pid {pid}): {}", io::Error::last_os_error())));
        }
        // Like `docker kill`, a SIGKILL returns once the node is gone, so a `start` right
        // after it starts a new process instead of finding the dying one "running".
        if signal == Signal::KILL && !self.wait_gone(&rec, KILL_WAIT).await {
            return Err(RuntimeError::Other(format!(
                "{node} (pid {pid}) is still alive {}s after SIGKILL",
                KILL_WAIT.as_secs()
            )));
        }
        Ok(())
    }

    async fn stop(&self, node: &str, grace: Duration) -> Result<()> {
        let rec = self.record(node)?;
        // Like `docker stop`: stopping a node that is not running is not an error.
        let Some(pid) = self.live_pid(&rec) else { return Ok(()) };
        signal_node(pid, libc::SIGTERM);
        // A paused node would hold the SIGTERM pending forever; let it act on it.
        signal_node(pid, libc::SIGCONT);
        if self.wait_gone(&rec, grace).await {
            return Ok(());
        }
        tracing::debug!("{node} outlived its {grace:?} grace: SIGKILL");
        self.kill_and_wait(&rec).await
    }

    async fn start(&self, node: &str) -> Result<()> {
        let rec = self.record(node)?;
        // Like `docker start`: starting a running node changes nothing.
        if self.live_pid(&rec).is_some() {
            return Ok(());
        }
        self.start_node(node)
    }

    async fn restart(&self, node: &str, grace: Duration) -> Result<()> {
        self.stop(node, grace).await?;
        self.start(node).await
    }

    async fn pause(&self, node: &str) -> Result<()> {
        let rec = self.record(node)?;
        let pid = self.running_pid(&rec)?;
        if !signal_node(pid, libc::SIGSTOP) {
            return Err(RuntimeError::Other(format!("cannot pause {node}: {}", io::Error::last_os_error())));
        }
        // SIGSTOP is asynchronous: return once the kernel shows the process stopped, so
        // "paused" means paused when we say it.
        let deadline = Instant::now() + Duration::from_secs(2);
        while self.liveness(&rec) == Liveness::Running && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        Ok(())
    }

    async fn unpause(&self, node: &str) -> Result<()> {
        let rec = self.record(node)?;
        let pid = self.running_pid(&rec)?;
        if !signal_node(pid, libc::SIGCONT) {
            return Err(RuntimeError::Other(format!("cannot unpause {node}: {}", io::Error::last_os_error())));
        }
        Ok(())
    }

    async fn nodes(&self) -> Result<Vec<NodeStatus>> {
        self.refresh();
        let records = self.lock_state().as_ref().map(|s| s.nodes.clone()).unwrap_or_default();
        Ok(records
            .iter()
            .map(|rec| NodeStatus {
                name: rec.name.clone(),
                role: rec.role,
                state: match (rec.pid, self.liveness(rec)) {
                    (None, _) => NodeState::Missing,
                    (_, Liveness::Running) => NodeState::Running,
                    (_, Liveness::Paused) => NodeState::Paused,
                    (_, Liveness::Gone) => NodeState::Exited,
                },
            })
            .collect())
    }

    async fn shared_dir(&self, node: &str) -> Result<PathBuf> {
        self.record(node)?;
        self.run_dir().ok_or_else(|| RuntimeError::Usage("no live process cluster".into()))
    }

    async fn read_local_files(&self, node: &str) -> Result<Vec<(String, Vec<u8>)>> {
        let dir = self.shared_dir(node).await?.join("local").join(node);
        let mut out = Vec::new();
        let mut stack = vec![dir.clone()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
                let path = e.path();
                if path.is_dir() {
                    stack.push(path);
                } else if let Ok(bytes) = std::fs::read(&path) {
                    let rel = path.strip_prefix(&dir).unwrap_or(&path).to_string_lossy().to_string();
                    out.push((rel, bytes));
                }
            }
        }
        Ok(out)
    }

    async fn write_local_file(&self, node: &str, path: &str, bytes: &[u8]) -> Result<()> {
        let file = self.shared_dir(node).await?.join("local").join(node).join(path);
        std::fs::write(&file, bytes).map_err(|e| RuntimeError::Other(format!("writing {}: {e}", file.display())))
    }

    async fn down(&mut self) -> Result<()> {
        self.refresh();
        let records = self.lock_state().as_ref().map(|s| s.nodes.clone()).unwrap_or_default();
        // Signal all first, then wait: the nodes die in parallel.
        for rec in &records {
            if let Some(pid) = self.live_pid(rec) {
                signal_node(pid, libc::SIGCONT);
                signal_node(pid, libc::SIGKILL);
            }
        }
        let mut first_err = None;
        for rec in &records {
            if let Err(e) = self.kill_and_wait(rec).await {
                first_err.get_or_insert(e);
            }
        }
        if let Some(e) = first_err {
            return Err(e);
        }
        // Every node is gone (dead or a zombie): reap what is ours.
        for (_, mut child) in self.lock_children().drain() {
            let _ = child.try_wait();
        }
        if let Some(s) = self.lock_state().as_mut() {
            for n in &mut s.nodes {
                n.pid = None;
            }
            // etcd preallocates 64 MB of write-ahead log; nothing reads it after `down`.
            if s.nodes.iter().any(|n| n.role == Role::Etcd) {
                let _ = std::fs::remove_dir_all(etcd_data_dir(&s.run_dir));
            }
        }
        self.persist()
    }
}

fn not_up() -> RuntimeError {
    RuntimeError::Usage("no cluster is up on the process runtime".into())
}

/// Where the etcd node keeps its data (kept across restarts of the node, removed by `down`).
fn etcd_data_dir(run_dir: &Path) -> PathBuf {
    run_dir.join("etcd")
}

fn log_path(run_dir: &Path, node: &str) -> PathBuf {
    run_dir.join("logs").join(format!("{node}.log"))
}

fn read_state(path: &Path) -> Result<Option<ClusterState>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(RuntimeError::Other(format!("cannot read {}: {e}", path.display()))),
    };
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|e| RuntimeError::Other(format!("{} is not a process-cluster state file: {e}", path.display())))
}

/// Writes `cluster.json` atomically (temp + rename): a concurrent `chaos` never reads half.
fn write_state(state: &ClusterState) -> Result<()> {
    let path = state.run_dir.join(STATE_FILE);
    let err = |e: &dyn std::fmt::Display| RuntimeError::Other(format!("cannot write {}: {e}", path.display()));
    let text = serde_json::to_string_pretty(state).map_err(|e| err(&e))?;
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, text + "\n").map_err(|e| err(&e))?;
    std::fs::rename(&tmp, &path).map_err(|e| err(&e))
}

/// `n` distinct free ports on 127.0.0.1. All listeners are held until every port is
/// known, so the kernel cannot hand the same port out twice.
fn free_ports(n: usize) -> io::Result<Vec<u16>> {
    let listeners = (0..n).map(|_| std::net::TcpListener::bind("127.0.0.1:0")).collect::<io::Result<Vec<_>>>()?;
    listeners.iter().map(|l| l.local_addr().map(|a| a.port())).collect()
}

/// The state letter of `/proc/<pid>/stat` (R, S, D, T, t, Z, ...), `None` when gone.
fn proc_state(pid: i32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // `pid (comm) S ...`: comm may hold spaces and parentheses, so cut at the last `)`.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.trim_start().chars().next()
}

/// Whether `pid` runs `program` as node `name` (argv[0], and `--id name` for streamd or
/// `--name name` for etcd).
fn is_node_process(pid: i32, program: &Path, name: &str) -> bool {
    let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else { return false };
    let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
    args.first().is_some_and(|a0| OsStr::from_bytes(a0) == program.as_os_str())
        && args.windows(2).any(|w| (w[0] == b"--id" || w[0] == b"--name") && w[1] == name.as_bytes())
}

/// Signals the node's process group (its leader is the node: we spawned it with
/// `process_group(0)`), or the process alone if it somehow leads no group. True on success.
fn signal_node(pid: i32, sig: i32) -> bool {
    // SAFETY: getpgid and kill take plain integers and have no memory effects.
    let target = if unsafe { libc::getpgid(pid) } == pid { -pid } else { pid };
    unsafe { libc::kill(target, sig) == 0 }
}

/// A streamd node's data directory: its disk-fault passthrough when one is mounted (see
/// `crate::diskfault`), else the run directory itself.
fn node_data_dir(run_dir: &Path, node: &str) -> String {
    crate::diskfault::mount::view_if_mounted(run_dir, node).unwrap_or_else(|| run_dir.to_path_buf()).display().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_process_is_seen_running_and_not_as_a_node() {
        let me = std::process::id() as i32;
        assert!(matches!(proc_state(me), Some('R' | 'S')));
        assert!(!is_node_process(me, Path::new("/nonexistent/streamd"), "taskmanager-1"));
        assert_eq!(proc_state(i32::MAX), None);
    }

    #[test]
    fn free_ports_are_distinct() {
        let ports = free_ports(8).unwrap();
        let set: std::collections::HashSet<_> = ports.iter().collect();
        assert_eq!(set.len(), 8);
    }

    #[test]
    fn network_faults_are_refused_as_usage() {
        assert!(matches!(refuse_network_fault(), RuntimeError::Usage(m) if m.contains("docker runtime")));
    }
}

