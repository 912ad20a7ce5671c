//! The interactive commands on the live cluster ([`chaos::live`]): what they print. Faults
//! go through the fault layer ([`chaos::fault`]), exactly as a scenario's do. Results go to
//! stdout (so they can be piped); notes and progress go to stderr.

use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use streamd_contract::api::JobState;

use chaos::client::StreamdClient;
use chaos::error::{exit, ChaosError};
use chaos::fault::hold::{hold, Interrupt};
use chaos::fault::Injector;
use chaos::live::{resolve_node, LiveCluster, FOLLOW_INPUT};
use chaos::netfault;
use chaos::runtime::docker;
use chaos::runtime::Runtime;
use chaos::scenario::Action;

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
    let leader = chaos::nodes::leader(&rt).await;
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

/// `chaos kill|stop|start|restart|pause|unpause NODE [--for D]`, `chaos netem NODE ...`,
/// `chaos partition ...`: applies `action` to the nodes named (each resolved against the
/// live cluster) through the fault layer, says what it did and how long the call took.
/// With `for_`, holds the fault that long (Ctrl-C undoes it at once), then undoes it.
pub(super) async fn fault(action: Action, nodes: &[String], for_: Option<Duration>) -> Result<u8, ChaosError> {
    let cluster = LiveCluster::find().await?;
    let rt = cluster.connect().await?;
    let mut targets = Vec::new();
    for n in nodes {
        targets.push(resolve_node(&cluster, &rt, n).await?);
    }
    let action = match action {
        // The groups were given as node names: resolve them too.
        Action::Partition { groups, one_way } => {
            let mut resolved = Vec::new();
            for g in groups {
                let mut group = Vec::new();
                for t in g {
                    group.push(chaos::scenario::Target::Node(resolve_node(&cluster, &rt, &t.to_string()).await?));
                }
                resolved.push(group);
            }
            Action::Partition { groups: resolved, one_way }
        }
        a => a,
    };
    let net = match chaos::host::is_network_fault(&action) {
        true => rt.net_faults(&cluster).await?,
        false => None,
    };
    let injector = Injector::new(&rt, net.as_ref()).with_disk(&cluster.run_dir);
    // Listening for Ctrl-C starts before the fault is applied: see `Interrupt`.
    let mut interrupt = for_.map(|_| Interrupt::new());
    let applied = injector.apply(&action, &targets).await?;
    println!("{} in {}", applied.description, took(applied.latency));
    let (Some(d), Some(interrupt)) = (for_, interrupt.as_mut()) else {
        if applied.undo.is_some() && chaos::host::is_network_fault(&action) {
            eprintln!("in place until `chaos heal` or `chaos down`");
        }
        return Ok(exit::PASS);
    };
    if applied.undo.is_some() {
        eprintln!("undoing in {} (Ctrl-C undoes now)", streamd_contract::duration::format_duration(d));
    }
    match hold(&injector, applied, d, interrupt).await? {
        Some(r) => {
            println!("{} in {}{}", r.description, took(r.latency), if r.interrupted { " (interrupted)" } else { "" });
            Ok(if r.interrupted { exit::INTERRUPTED } else { exit::PASS })
        }
        None => Ok(exit::PASS),
    }
}

/// `chaos feed`: appends stdin's lines to the live cluster's follow-mode input, one write
/// per complete line, so the sources see each line as soon as it is typed.
pub(super) async fn feed() -> Result<u8, ChaosError> {
    let cluster = LiveCluster::find().await?;
    // A job that reads a socket is fed through its line server; any other (or a cluster
    // whose spec cannot be read) through the followed input file.
    let job = streamd_contract::spec::JobSpec::load(&cluster.run_dir.join("job.yaml")).ok();
    if job.is_some_and(|j| j.input.socket.is_some()) {
        return feed_socket(&cluster).await;
    }
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
    let lines = tokio::task::spawn_blocking(move || chaos::live::feed_lines(&path, std::io::stdin().lock()))
        .await
        .map_err(other)?
        .map_err(|e| ChaosError::Other(format!("feeding {}: {e}", input.display())))?;
    eprintln!("fed {lines} line{} to {}", if lines == 1 { "" } else { "s" }, input.display());
    Ok(exit::PASS)
}

/// `chaos feed` when the job reads a socket: stdin's lines go to the line server as they
/// are typed, as into `nc -l 9000`.
async fn feed_socket(cluster: &LiveCluster) -> Result<u8, ChaosError> {
    let rt = cluster.connect().await?;
    let addr = rt.feed_address(streamd_contract::lines::NODE).await?;
    let (tx, rx) = tokio::sync::mpsc::channel::<String>(1024);
    // stdin blocks: a thread reads it, line by line, and hands each line on at once.
    let reader = tokio::task::spawn_blocking(move || -> std::io::Result<u64> {
        let mut n = 0;
        for line in std::io::BufRead::lines(std::io::stdin().lock()) {
            if tx.blocking_send(line?).is_err() {
                break;
            }
            n += 1;
        }
        Ok(n)
    });
    let total = chaos::feed::feed_channel(&addr, rx).await.map_err(ChaosError::Other)?;
    let n = reader.await.map_err(other)?.map_err(|e| ChaosError::Other(format!("reading stdin: {e}")))?;
    eprintln!(
        "fed {n} line{} to the line server {} ({total} in all)",
        if n == 1 { "" } else { "s" },
        streamd_contract::lines::NODE
    );
    Ok(exit::PASS)
}

/// `chaos counts [--top N]`: `word<TAB>count`, highest count first, then by word.
pub(super) async fn counts(top: Option<usize>) -> Result<u8, ChaosError> {
    let cluster = LiveCluster::find().await?;
    let (counts, notes) = chaos::live::committed_counts(&cluster.run_dir)
        .map_err(|e| ChaosError::Other(format!("reading the committed output of {}: {e}", cluster.id)))?;
    for n in &notes {
        eprintln!("warning: {n}");
    }
    let total: u64 = counts.values().sum();
    let mut sorted: Vec<(String, u64)> = counts.into_iter().collect();
    // A windowed job's keys are `<start><TAB><word>`: window by window, in time order.
    let window = |k: &str| streamd_contract::window::split_key(k).map(|(s, _)| s);
    sorted.sort_by(|a, b| window(&a.0).cmp(&window(&b.0)).then_with(|| b.1.cmp(&a.1)).then_with(|| a.0.cmp(&b.0)));
    let words = sorted.len();
    let windows: std::collections::BTreeSet<u64> = sorted.iter().filter_map(|(k, _)| window(k)).collect();
    let mut out = std::io::stdout().lock();
    for (w, c) in sorted.iter().take(top.unwrap_or(usize::MAX)) {
        // A closed pipe (`| head`) is not an error worth reporting.
        if writeln!(out, "{w}\t{c}").is_err() {
            break;
        }
    }
    if windows.is_empty() {
        eprintln!("{words} distinct words, {total} in all, committed so far in {}", cluster.id);
    } else {
        eprintln!("{} windows fired, {words} (window, word) counts, {total} words in all, committed so far in {}", windows.len(), cluster.id);
    }
    Ok(exit::PASS)
}

/// `chaos down [--images]`: see [`chaos::live::down`].
pub(super) async fn down(images: bool) -> Result<u8, ChaosError> {
    let rep = chaos::live::down(images).await?;
    for l in &rep.done {
        println!("{l}");
    }
    for w in &rep.warnings {
        eprintln!("warning: {w}");
    }
    Ok(exit::PASS)
}

/// `chaos build`: the static streamd binary and its image, and the network-fault sidecar image.
pub(super) async fn build(engines: &[chaos::engine::Engine]) -> Result<u8, ChaosError> {
    use chaos::engine::Engine;
    if engines.contains(&Engine::Flink) {
        // Say everything Flink lacks on this machine before downloading anything.
        let mut missing = Vec::new();
        for need in [chaos::host::Need::Jdk, chaos::host::Need::FlinkDist] {
            let f = chaos::host::check(need, None).await;
            if !f.ok {
                missing.push(format!("{}: {}{}", need.title(), f.detail, f.fix.map(|x| format!("\n  fix: {x}")).unwrap_or_default()));
            }
        }
        if !missing.is_empty() {
            return Err(ChaosError::Infrastructure(format!("cannot build the Flink image:\n{}", missing.join("\n"))));
        }
    }
    let t = Instant::now();
    let binary = tokio::task::spawn_blocking(chaos::images::build_streamd_binary).await.map_err(other)??;
    println!("built {} in {}", binary.display(), took(t.elapsed()));
    let t = Instant::now();
    let docker = docker::connect_docker().await?;
    let tag = chaos::images::ensure_streamd_image(&docker, &binary).await?;
    println!("image {tag} ready in {}", took(t.elapsed()));
    // The network-fault sidecar image, so the first `chaos netem` does not build it.
    let t = Instant::now();
    let netd = tokio::task::spawn_blocking(netfault::netd_binary).await.map_err(other)??;
    let tag = netfault::ensure_image(&docker, &netd).await?;
    println!("image {tag} ready in {}", took(t.elapsed()));
    if engines.contains(&Engine::Flink) {
        let t = Instant::now();
        let tag = chaos::flink::image::ensure_flink_image(&docker, &chaos::flink::cache_dir()).await?;
        println!("image {tag} ready in {}", took(t.elapsed()));
    }
    Ok(exit::PASS)
}

/// `chaos lint SCENARIO...`: validates every file and prints each planned timeline (with
/// the plan's warnings); every invalid file is reported, and any one makes the exit code 2.
pub(super) fn lint(scenarios: &[PathBuf], seed: Option<u64>) -> Result<u8, ChaosError> {
    let mut invalid = 0;
    for (i, path) in scenarios.iter().enumerate() {
        match chaos::scenario::load(path, seed) {
            Ok(plan) => {
                if i > 0 {
                    println!();
                }
                print!("{}", plan.timeline_with(|p| {
                    netfault::describe(&chaos::fault::net::to_netfault(p), None)
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
