//! The interactive commands that act on the live cluster without the executor.
//! Results go to stdout (so they can be piped); notes and progress go to stderr.

use std::collections::HashMap;
use std::io::{BufRead, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use streamd_contract::api::JobState;

use super::live::{leader, resolve_node, LiveCluster};
use crate::client::StreamdClient;
use crate::current::{self, CurrentCluster};
use crate::executor::{exit, ChaosError, RuntimeKind};
use crate::netfault;
use crate::runtime::docker::{self, DockerRuntime};
use crate::runtime::process::{self, ProcessRuntime};
use crate::runtime::Runtime;

/// Exit code after a Ctrl-C / SIGTERM that cut a `--for` wait short (the shell's 128+2).
pub const EXIT_INTERRUPTED: u8 = 130;

/// The follow-mode input of a cluster started by `chaos up`, relative to its run dir.
const FOLLOW_INPUT: &str = "input/input.txt";

fn other(e: impl std::fmt::Display) -> ChaosError {
    ChaosError::Other(e.to_string())
}

/// A duration for humans: `0.4 ms`, `12 ms`, `1.52 s`.
pub(super) fn took(d: Duration) -> String {
    let ms = d.as_secs_f64() * 1000.0;
    if ms < 10.0 {
        format!("{ms:.1} ms")
    } else if ms < 1000.0 {
        format!("{ms:.0} ms")
    } else {
        format!("{:.2} s", ms / 1000.0)
    }
}

/// A job state as the REST API spells it (`RUNNING`), not as Rust's Debug does.
fn state_name(state: JobState) -> String {
    serde_json::to_value(state).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_else(|| format!("{state:?}"))
}

/// `chaos status`: the nodes as the runtime sees them, then the job as the leader's REST
/// API reports it.
pub(super) async fn status() -> Result<u8, ChaosError> {
    let cluster = LiveCluster::find().await?;
    let rt = cluster.connect().await?;
    let nodes = rt.nodes().await?;
    let leader = leader(&rt, &nodes).await;
    println!("cluster {} ({} runtime), run dir {}", cluster.id, cluster.runtime_name(), cluster.run_dir.display());
    println!("  {:<16} {:<12} STATE", "NODE", "ROLE");
    for n in &nodes {
        let state = format!("{:?}", n.state).to_lowercase();
        let mark = if leader.as_ref().is_ok_and(|l| *l == n.name) { "  (leader)" } else { "" };
        println!("  {:<16} {:<12} {state}{mark}", n.name, n.role.as_str());
    }
    let leader = match leader {
        Ok(l) => l,
        Err(e) => {
            println!("job: unknown: {e}");
            return Ok(exit::PASS);
        }
    };
    let client = StreamdClient::new(rt.rest_url(&leader).await?).map_err(other)?;
    let overview = match client.overview().await {
        Ok(o) => o,
        Err(e) => {
            println!("job: unknown: {e}");
            return Ok(exit::PASS);
        }
    };
    match client.job(&overview.job_id).await {
        Ok(job) => {
            println!(
                "job {}: {}, attempt {}, {} restart{}",
                job.id,
                state_name(job.state),
                job.attempt,
                job.restarts,
                if job.restarts == 1 { "" } else { "s" }
            );
            let last = job.last_completed_checkpoint.map(|c| format!(", last #{c}")).unwrap_or_default();
            println!("  checkpoints: {} completed{last}", job.checkpoints_completed);
            let of = job.input_lines.map(|n| format!(" of {n}")).unwrap_or_default();
            println!("  records: {} lines in{of}, {} words out", job.records_in, job.records_out);
            if let Some(cause) = job.failure_cause.filter(|_| job.state != JobState::Running) {
                println!("  last failure: {cause}");
            }
        }
        Err(e) => println!("job {}: {} (details unavailable: {e})", overview.job_id, state_name(overview.job_state)),
    }
    println!(
        "  taskmanagers: {} registered, {} of {} slots free",
        overview.taskmanagers, overview.slots_available, overview.slots_total
    );
    Ok(exit::PASS)
}

/// A lifecycle action on one node.
pub(super) enum Lifecycle {
    Kill { signal: String },
    Stop { grace: Duration },
    Start,
    Restart { grace: Duration },
    Unpause,
}

/// `chaos kill|stop|start|restart|unpause NODE`: acts through the runtime and says what it
/// did and how long the runtime took.
pub(super) async fn lifecycle(node: &str, action: Lifecycle) -> Result<u8, ChaosError> {
    // A bad signal is a usage error before anything is looked up.
    let signal = match &action {
        Lifecycle::Kill { signal } => Some(process::canonical_signal(signal)?),
        _ => None,
    };
    let cluster = LiveCluster::find().await?;
    let rt = cluster.connect().await?;
    let name = resolve_node(&cluster, &rt, node).await?;
    let fmt = streamd_contract::duration::format_duration;
    let t = Instant::now();
    let did = match action {
        Lifecycle::Kill { .. } => {
            let sig = signal.unwrap_or_else(|| "SIGKILL".into());
            rt.kill(&name, &sig).await?;
            format!("killed {name} with {sig}")
        }
        Lifecycle::Stop { grace } => {
            rt.stop(&name, grace).await?;
            format!("stopped {name} (SIGTERM, SIGKILL after {})", fmt(grace))
        }
        Lifecycle::Start => {
            rt.start(&name).await?;
            format!("started {name}")
        }
        Lifecycle::Restart { grace } => {
            rt.restart(&name, grace).await?;
            format!("restarted {name} (grace {})", fmt(grace))
        }
        Lifecycle::Unpause => {
            rt.unpause(&name).await?;
            format!("unpaused {name}")
        }
    };
    println!("{did} in {}", took(t.elapsed()));
    Ok(exit::PASS)
}

/// Waits for `d`, or less if Ctrl-C or SIGTERM arrives; true when interrupted.
/// The handlers are installed by [`Interrupt::new`] *before* the fault is applied, so a
/// Ctrl-C at any point after it cannot kill chaos with the fault still in place.
pub(super) struct Interrupt {
    int: Option<tokio::signal::unix::Signal>,
    term: Option<tokio::signal::unix::Signal>,
}

impl Interrupt {
    pub(super) fn new() -> Interrupt {
        use tokio::signal::unix::{signal, SignalKind};
        Interrupt { int: signal(SignalKind::interrupt()).ok(), term: signal(SignalKind::terminate()).ok() }
    }

    pub(super) async fn sleep(&mut self, d: Duration) -> bool {
        async fn recv(s: &mut Option<tokio::signal::unix::Signal>) {
            match s {
                Some(s) => {
                    s.recv().await;
                }
                None => std::future::pending().await,
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(d) => false,
            _ = recv(&mut self.int) => true,
            _ = recv(&mut self.term) => true,
        }
    }
}

/// `chaos pause NODE [--for D]`: with `--for`, unpauses after D, or at once on Ctrl-C.
pub(super) async fn pause(node: &str, for_: Option<Duration>) -> Result<u8, ChaosError> {
    let cluster = LiveCluster::find().await?;
    let rt = cluster.connect().await?;
    let name = resolve_node(&cluster, &rt, node).await?;
    let mut interrupt = for_.map(|_| Interrupt::new());
    let t = Instant::now();
    rt.pause(&name).await?;
    println!("paused {name} in {}", took(t.elapsed()));
    let (Some(d), Some(interrupt)) = (for_, interrupt.as_mut()) else { return Ok(exit::PASS) };
    eprintln!("unpausing in {} (Ctrl-C unpauses now)", streamd_contract::duration::format_duration(d));
    let interrupted = interrupt.sleep(d).await;
    let t = Instant::now();
    rt.unpause(&name).await?;
    println!("unpaused {name} in {}{}", took(t.elapsed()), if interrupted { " (interrupted)" } else { "" });
    Ok(if interrupted { EXIT_INTERRUPTED } else { exit::PASS })
}

/// `chaos feed`: appends stdin's lines to the live cluster's follow-mode input, one write
/// per complete line, so the sources see each line as soon as it is typed.
pub(super) async fn feed() -> Result<u8, ChaosError> {
    let cluster = LiveCluster::find().await?;
    let input = cluster.run_dir.join(FOLLOW_INPUT);
    if !input.is_file() {
        return Err(ChaosError::Usage(format!(
            "cluster {} has no growing input ({} is missing): `chaos up` without a scenario, or with a \
             scenario whose input is a file, creates one",
            cluster.id,
            input.display()
        )));
    }
    if streamd_contract::input::end_marker(&input).exists() {
        return Err(ChaosError::Usage(format!(
            "the input of cluster {} has ended (`chaos verify` ends it); start a new cluster to feed more",
            cluster.id
        )));
    }
    let path = input.clone();
    let lines = tokio::task::spawn_blocking(move || feed_lines(&path, std::io::stdin().lock()))
        .await
        .map_err(other)?
        .map_err(|e| ChaosError::Other(format!("feeding {}: {e}", input.display())))?;
    eprintln!("fed {lines} line{} to {}", if lines == 1 { "" } else { "s" }, input.display());
    Ok(exit::PASS)
}

/// Appends every line of `from` to `path` (adding a final newline if missing: the source
/// only reads complete lines). Returns how many lines were written.
fn feed_lines(path: &Path, mut from: impl BufRead) -> std::io::Result<u64> {
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

/// `chaos counts [--top N]`: `word<TAB>count`, highest count first, then by word.
pub(super) async fn counts(top: Option<usize>) -> Result<u8, ChaosError> {
    let cluster = LiveCluster::find().await?;
    let (counts, notes) = committed_counts(&cluster.run_dir)
        .map_err(|e| ChaosError::Other(format!("reading the committed output of {}: {e}", cluster.id)))?;
    for n in &notes {
        eprintln!("warning: {n}");
    }
    let total: u64 = counts.values().sum();
    let mut sorted: Vec<(String, u64)> = counts.into_iter().collect();
    sorted.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    let words = sorted.len();
    let mut out = std::io::stdout().lock();
    for (w, c) in sorted.iter().take(top.unwrap_or(usize::MAX)) {
        // A closed pipe (`| head`) is not an error worth reporting.
        if writeln!(out, "{w}\t{c}").is_err() {
            break;
        }
    }
    eprintln!("{words} distinct words, {total} in all, committed so far in {}", cluster.id);
    Ok(exit::PASS)
}

/// `chaos down [--images]`: removes the current cluster; with none recorded, everything
/// chaos left behind (Docker resources labelled `chaos.cluster`, live nodes of every
/// process cluster under `target/chaos/runs`).
pub(super) async fn down(images: bool) -> Result<u8, ChaosError> {
    match CurrentCluster::load().map_err(other)? {
        Some(cur) => {
            let t = Instant::now();
            match cur.runtime {
                RuntimeKind::Process => match ProcessRuntime::attach(&cur.run_dir) {
                    Ok(mut rt) => rt.down().await?,
                    Err(e) => eprintln!("warning: {e}; nothing to stop"),
                },
                RuntimeKind::Docker => {
                    let mut rt = DockerRuntime::connect(Some(&cur.cluster_id)).await?;
                    // Rules first, while their namespaces still exist; then the containers.
                    undo_network_faults(netfault::undo_all(rt.docker(), &cur.run_dir).await);
                    rt.down().await?;
                    if images {
                        remove_images_if_unused(&rt).await?;
                    }
                }
            }
            CurrentCluster::clear().map_err(other)?;
            println!("removed cluster {} in {}", cur.cluster_id, took(t.elapsed()));
        }
        None => {
            let killed = ProcessRuntime::down_leftovers(&current::runs_dir()).await?;
            for (cluster, node) in &killed {
                println!("killed {node} of process cluster {cluster}");
            }
            match docker::connect_docker().await {
                Ok(d) => {
                    undo_network_faults(netfault::undo_all_runs(&d, &current::runs_dir()).await);
                    let s = docker::down_all(&d, images).await?;
                    println!(
                        "removed {} container{}, {} network{}, {} image{} labelled by chaos",
                        s.containers,
                        plural(s.containers),
                        s.networks,
                        plural(s.networks),
                        s.images,
                        plural(s.images)
                    );
                }
                Err(e) => eprintln!("docker: nothing removed ({e})"),
            }
        }
    }
    Ok(exit::PASS)
}

/// Reports what undoing journaled network faults did; failures are warnings, since the
/// containers holding the rules are removed next anyway.
fn undo_network_faults(r: Result<netfault::UndoReport, netfault::NetfaultError>) {
    match r {
        Ok(r) => {
            let n = r.undone.len() + r.ended.len();
            if n > 0 || r.sidecars_removed > 0 {
                println!("undid {n} network fault rule set{}, removed {} sidecar{}", plural(n), r.sidecars_removed, plural(r.sidecars_removed));
            }
            for e in &r.errors {
                eprintln!("warning: network fault not undone: {e}");
            }
        }
        Err(e) => eprintln!("warning: network faults not undone: {e}"),
    }
}

/// Removes chaos's images unless another cluster still runs them.
async fn remove_images_if_unused(rt: &DockerRuntime) -> Result<(), ChaosError> {
    let live = docker::discover(rt.docker()).await?;
    if live.is_empty() {
        let s = docker::down_all(rt.docker(), true).await?;
        println!("removed {} image{}", s.images, plural(s.images));
    } else {
        let ids: Vec<&str> = live.iter().map(|c| c.id.as_str()).collect();
        eprintln!("images kept: other clusters still run them ({})", ids.join(", "));
    }
    Ok(())
}

fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

/// `chaos build`: the static streamd binary and its image, and the network-fault sidecar image.
pub(super) async fn build() -> Result<u8, ChaosError> {
    let t = Instant::now();
    let binary = tokio::task::spawn_blocking(crate::images::build_streamd_binary).await.map_err(other)??;
    println!("built {} in {}", binary.display(), took(t.elapsed()));
    let t = Instant::now();
    let docker = docker::connect_docker().await?;
    let tag = crate::images::ensure_streamd_image(&docker, &binary).await?;
    println!("image {tag} ready in {}", took(t.elapsed()));
    // The network-fault sidecar image, so the first `chaos netem` does not build it.
    let t = Instant::now();
    let netd = tokio::task::spawn_blocking(netfault::netd_binary).await.map_err(other)?.map_err(super::net::nf_err)?;
    let tag = netfault::ensure_image(&docker, &netd).await.map_err(super::net::nf_err)?;
    println!("image {tag} ready in {}", took(t.elapsed()));
    Ok(exit::PASS)
}

/// `chaos lint SCENARIO...`: validates every file and prints each planned timeline (with
/// the plan's warnings); every invalid file is reported, and any one makes the exit code 2.
pub(super) fn lint(scenarios: &[std::path::PathBuf], seed: Option<u64>) -> Result<u8, ChaosError> {
    let mut invalid = 0;
    for (i, path) in scenarios.iter().enumerate() {
        match crate::scenario::load(path, seed) {
            Ok(plan) => {
                if i > 0 {
                    println!();
                }
                print!("{}", plan.timeline_with(|p| {
                    crate::netfault::describe(&crate::executor::net::to_netfault(p), None)
                        .map(|lines| lines.join("; "))
                        .unwrap_or_else(|e| e.to_string())
                }));
            }
            Err(e) => {
                eprintln!("error: {e}");
                invalid += 1;
            }
        }
    }
    if invalid > 0 && scenarios.len() > 1 {
        eprintln!("{invalid} of {} scenarios are invalid", scenarios.len());
    }
    Ok(if invalid > 0 { exit::USAGE } else { exit::PASS })
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

    #[test]
    fn job_states_read_as_rest_spells_them() {
        assert_eq!(state_name(JobState::Restarting), "RESTARTING");
    }

    #[test]
    fn durations_read_well() {
        assert_eq!(took(Duration::from_micros(400)), "0.4 ms");
        assert_eq!(took(Duration::from_millis(12)), "12 ms");
        assert_eq!(took(Duration::from_millis(1520)), "1.52 s");
    }
}
