//! Probing what the kernel offers network faults (netem, tbf, iptables NFQUEUE and
//! statistic), once per run, from a throwaway sidecar.

use bollard::Docker;

use super::rules::{self, Iptables, Mechanism, QUEUE, TC};
use super::sidecar::{self, SidecarSpec};
use super::NetfaultError;

type Result<T> = std::result::Result<T, NetfaultError>;

/// Probes the kernel from a sidecar with its own, empty namespace (`network_mode: none`):
/// adds and removes a netem qdisc, a tbf qdisc, and the iptables rules the fallbacks use.
pub(super) async fn probe(docker: &Docker, image: &str, cluster: &str) -> Result<Mechanism> {
    let spec = SidecarSpec {
        image,
        cluster,
        node: "probe",
        fault: "probe",
        network_mode: "none".into(),
        cmd: vec!["hold".into(), "--max-secs".into(), "60".into()],
    };
    let id = sidecar::start(docker, spec).await?;
    let mech = probe_in(docker, &id).await;
    let _ = sidecar::remove(docker, &id).await;
    let mech = mech?;
    tracing::info!(?mech, "network-fault mechanisms probed");
    Ok(mech)
}

async fn probe_in(docker: &Docker, id: &str) -> Result<Mechanism> {
    let s = |v: &[&str]| v.iter().map(|a| a.to_string()).collect::<Vec<String>>();
    let ok = |argv: Vec<String>| async move {
        sidecar::exec(docker, id, &argv).await.map(|o| o.code == 0)
    };
    let netem = ok(s(&[
        TC, "qdisc", "add", "dev", "lo", "root", "netem", "delay", "1ms",
    ]))
    .await?;
    if netem {
        ok(s(&[TC, "qdisc", "del", "dev", "lo", "root"])).await?;
    }
    let tbf = ok(s(&[
        TC, "qdisc", "add", "dev", "lo", "root", "tbf", "rate", "1mbit", "burst", "32kbit",
        "latency", "50ms",
    ]))
    .await?;
    if tbf {
        ok(s(&[TC, "qdisc", "del", "dev", "lo", "root"])).await?;
    }
    let mut found: Option<(Iptables, bool, bool)> = None;
    for ipt in [Iptables::Nft, Iptables::Legacy] {
        let base = |args: &[&str]| {
            let mut v = s(&ipt.argv());
            v.extend(s(args));
            v
        };
        if !ok(base(&["-S", "INPUT"])).await? {
            continue;
        }
        let stat = [
            "INPUT",
            "-i",
            "lo",
            "-m",
            "statistic",
            "--mode",
            "random",
            "--probability",
            "0.5",
            "-m",
            "comment",
            "--comment",
            "chaos:probe",
            "-j",
            "DROP",
        ];
        let queue = QUEUE.to_string();
        let mark = format!("{:#x}", rules::DUP_MARK);
        let nfq = [
            "INPUT",
            "-i",
            "lo",
            "-m",
            "mark",
            "!",
            "--mark",
            &mark,
            "-m",
            "comment",
            "--comment",
            "chaos:probe",
            "-j",
            "NFQUEUE",
            "--queue-num",
            &queue,
            "--queue-bypass",
        ];
        let mut results = [false; 2];
        for (i, rule) in [&stat[..], &nfq[..]].into_iter().enumerate() {
            let mut add = base(&["-A"]);
            add.extend(s(rule));
            results[i] = ok(add).await?;
            if results[i] {
                let mut del = base(&["-D"]);
                del.extend(s(rule));
                ok(del).await?;
            }
        }
        let candidate = (ipt, results[0], results[1]);
        let complete = results[0] && results[1];
        if found.is_none() || complete {
            found = Some(candidate);
        }
        if complete {
            break;
        }
    }
    Ok(Mechanism {
        netem,
        iptables: found.map(|f| f.0),
        statistic: found.is_some_and(|f| f.1),
        nfqueue: found.is_some_and(|f| f.2),
        tbf,
    })
}
