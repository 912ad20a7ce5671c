//! What this machine offers, and what a scenario needs from it.
//!
//! One home for the rule "scenario X needs Y from the host": [`needs`] derives a plan's
//! needs, [`check`] looks at the machine for one need and says how to fix what is
//! missing. `chaos run` refuses a scenario whose needs are missing before anything
//! starts ([`preflight`]), naming every missing piece; `chaos doctor` prints every check
//! with the scenarios each missing piece blocks.
//!
//! The default scenario (`scenarios/kill-tm2.yaml`) needs only a reachable Docker Engine:
//! the streamd image is a static binary built by cargo, wrapped `FROM scratch`.

use std::collections::BTreeSet;
use std::fmt;
use std::path::{Path, PathBuf};

use bollard::Docker;

use crate::engine::Engine;
use crate::error::ChaosError;
use crate::runtime::RuntimeKind;
use crate::netfault::{self, Mechanism};
use crate::scenario::{Action, Plan};

/// One thing a scenario can need from the machine beyond Rust.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Need {
    /// A reachable Docker Engine (the docker runtime).
    Docker,
    /// An `etcd` binary (jobmanager high availability: `cluster.jobmanagers` > 1).
    Etcd,
    /// The host's `iptables`, `tc` and `ip`, copied into the network-fault sidecar image.
    NetTools,
    /// Kernel support for the network faults the scenario asks for (netem, or the
    /// iptables `statistic` / `NFQUEUE` fallback; `tbf` for rate).
    NetKernel,
    /// cgroup cpu and memory controllers (`cluster.resources` limits).
    CgroupLimits,
    /// `/dev/fuse`, and root to mount it (the disk passthrough: disk faults, power loss,
    /// `cluster.checkpoint_storage`).
    Fuse,
    /// A JDK 17 (`javac`, `jar`, `jlink`): the Flink job is compiled and the Flink image's
    /// JRE is linked from it (`cluster.engine: flink`).
    Jdk,
    /// Flink's jars: already in the cache, or `python3 -m pip` to download the
    /// `apache-flink-libraries` wheel from PyPI (`cluster.engine: flink`).
    FlinkDist,
}

impl Need {
    /// Every need, in the order `chaos doctor` prints them.
    pub const ALL: [Need; 8] =
        [Need::Docker, Need::CgroupLimits, Need::Etcd, Need::NetTools, Need::NetKernel, Need::Fuse, Need::Jdk, Need::FlinkDist];

    /// What it is, for a line of `chaos doctor`.
    pub fn title(self) -> &'static str {
        match self {
            Need::Docker => "Docker Engine",
            Need::Etcd => "etcd",
            Need::NetTools => "iptables, tc, ip",
            Need::NetKernel => "network-fault kernel support",
            Need::CgroupLimits => "cgroup cpu, memory",
            Need::Fuse => "/dev/fuse",
            Need::Jdk => "JDK 17",
            Need::FlinkDist => "Flink 2.3.0 jars",
        }
    }

    /// Which scenarios need it, in words.
    pub fn used_by(self) -> &'static str {
        match self {
            Need::Docker => "every scenario on the docker runtime (the default)",
            Need::Etcd => "high availability (cluster.jobmanagers > 1)",
            Need::NetTools => "network faults (netem, partition): the sidecar image is built from them",
            Need::NetKernel => "network faults (netem, partition)",
            Need::CgroupLimits => "per-node limits (cluster.resources)",
            Need::Fuse => "disk faults and remote-like checkpoint storage (the FUSE passthrough of /data)",
            Need::Jdk | Need::FlinkDist => "the Flink engine (cluster.engine: flink, --engine flink)",
        }
    }
}

impl fmt::Display for Need {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.title())
    }
}

/// The result of checking one need on this machine.
#[derive(Debug, Clone)]
pub struct Finding {
    pub need: Need,
    pub ok: bool,
    /// What was found (a version, a path, the probe's answer) or what is missing.
    pub detail: String,
    /// How to fix it, when it is missing.
    pub fix: Option<String>,
}

/// What `plan` needs from the machine on `runtime`. The process runtime refuses network
/// faults by itself (a usage error) and applies no cgroup limits.
pub fn needs(plan: &Plan, runtime: RuntimeKind) -> BTreeSet<Need> {
    let mut out = BTreeSet::new();
    let docker = runtime == RuntimeKind::Docker;
    if docker {
        out.insert(Need::Docker);
        if !plan.cluster.resources.is_empty() {
            out.insert(Need::CgroupLimits);
        }
        if plan.faults.iter().any(|f| is_network_fault(&f.action)) {
            out.insert(Need::NetTools);
            out.insert(Need::NetKernel);
        }
    }
    // The passthrough daemons run on the host for both runtimes.
    if crate::diskfault::mount::plan_needs(plan) {
        out.insert(Need::Fuse);
    }
    match plan.cluster.engine {
        Engine::Streamd if plan.cluster.ha() => {
            out.insert(Need::Etcd);
        }
        Engine::Streamd => {}
        // Flink's HA coordinator (ZooKeeper) runs from the Flink image: no extra need.
        Engine::Flink => {
            out.insert(Need::Jdk);
            out.insert(Need::FlinkDist);
        }
    }
    out
}

/// `netem` and `partition`: the faults that act on a node's network namespace.
pub fn is_network_fault(action: &Action) -> bool {
    matches!(action, Action::Netem(_) | Action::Partition { .. })
}

/// Checks one need. `docker` is the connected daemon when there is one; the kernel probe
/// needs it (it runs in a throwaway sidecar) and the host tools.
pub async fn check(need: Need, docker: Option<&Docker>) -> Finding {
    let found = |detail: String| Finding { need, ok: true, detail, fix: None };
    let missing = |detail: String, fix: String| Finding { need, ok: false, detail, fix: Some(fix) };
    match need {
        Need::Docker => match docker {
            Some(d) => match d.version().await {
                Ok(v) => found(format!(
                    "version {}, API {}",
                    v.version.unwrap_or_else(|| "?".into()),
                    v.api_version.unwrap_or_else(|| "?".into())
                )),
                Err(e) => missing(format!("the daemon answered with an error: {e}"), DOCKER_FIX.into()),
            },
            None => missing("cannot reach the Docker daemon".into(), DOCKER_FIX.into()),
        },
        Need::Etcd => match crate::runtime::process::etcd_binary() {
            Ok(p) => found(p.display().to_string()),
            Err(e) => {
                // CHAOS_ETCD_BIN pointing at nothing is its own mistake: say that one.
                let env_set = std::env::var_os(crate::runtime::process::ETCD_BIN_ENV).is_some_and(|v| !v.is_empty());
                let detail = if env_set { e.to_string() } else { "no `etcd` binary on PATH".into() };
                missing(detail, "apt-get install etcd-server".into())
            }
        },
        Need::NetTools => match netfault::image::missing_host_tools() {
            m if m.is_empty() => found("found on the host".into()),
            m => missing(
                format!("missing on the host: {}", m.join(", ")),
                format!("apt-get install {}", netfault::HOST_PACKAGES.join(" ")),
            ),
        },
        Need::NetKernel => {
            let Some(d) = docker else {
                return missing("not probed: needs the Docker Engine".into(), DOCKER_FIX.into());
            };
            if !netfault::image::missing_host_tools().is_empty() {
                return missing(
                    "not probed: the probe runs the host's iptables and tc in a sidecar".into(),
                    format!("apt-get install {}", netfault::HOST_PACKAGES.join(" ")),
                );
            }
            match probe_kernel(d).await {
                Ok(m) => {
                    let detail = describe_mechanism(&m);
                    if m.netem || (m.iptables.is_some() && m.statistic && m.nfqueue) {
                        found(detail)
                    } else {
                        missing(
                            detail,
                            "load the kernel modules: modprobe sch_netem (or, for the fallback, xt_statistic and \
                             nfnetlink_queue / xt_NFQUEUE)"
                                .into(),
                        )
                    }
                }
                Err(e) => missing(format!("the probe failed: {e}"), "see the message; `chaos doctor -v` logs more".into()),
            }
        }
        Need::CgroupLimits => cgroup_limits(Path::new("/sys/fs/cgroup"), need),
        Need::Fuse => {
            // The passthrough mounts /dev/fuse itself (no fusermount): that takes root.
            // SAFETY: geteuid has no preconditions.
            let root = unsafe { libc::geteuid() } == 0;
            match (Path::new("/dev/fuse").exists(), root) {
                (true, true) => found("present; running as root, so the passthrough can mount it".into()),
                (false, _) => missing("no /dev/fuse".into(), "modprobe fuse (or give the container running chaos --device /dev/fuse)".into()),
                (true, false) => missing("present, but chaos is not running as root (it mounts /dev/fuse itself)".into(), "run chaos as root".into()),
            }
        }
        Need::Jdk => match crate::flink::job::ensure_jdk() {
            Ok(()) => found(crate::flink::job::jdk_tool("javac").display().to_string()),
            Err(e) => missing(e.to_string(), format!("apt-get install {}", crate::flink::job::JDK_PACKAGE)),
        },
        Need::FlinkDist => match crate::flink::dist::available(&crate::flink::cache_dir()) {
            Ok(how) => found(how),
            Err(why) => missing(why, "apt-get install python3-pip (PyPI must be reachable), or set CHAOS_FLINK_DIST to an unpacked Flink 2.3.0 distribution".into()),
        },
    }
}

const DOCKER_FIX: &str = "start the Docker Engine (systemctl start docker) and run chaos as a user who may use it \
                          (root, or a member of the docker group)";

/// The cpu and memory controllers, cgroup v2 (`cgroup.controllers`) or v1 (one hierarchy
/// per controller).
fn cgroup_limits(root: &Path, need: Need) -> Finding {
    let v2 = root.join("cgroup.controllers");
    let (have, version) = match std::fs::read_to_string(&v2) {
        Ok(text) => {
            let list: Vec<&str> = text.split_whitespace().collect();
            (["cpu", "memory"].map(|c| list.contains(&c)), "v2")
        }
        Err(_) => (["cpu", "memory"].map(|c| root.join(c).is_dir()), "v1"),
    };
    let absent: Vec<&str> = ["cpu", "memory"].iter().zip(have).filter(|(_, h)| !h).map(|(c, _)| *c).collect();
    if absent.is_empty() {
        Finding { need, ok: true, detail: format!("cgroup {version}: cpu and memory controllers"), fix: None }
    } else {
        Finding {
            need,
            ok: false,
            detail: format!("cgroup {version}: no {} controller", absent.join(" or ")),
            fix: Some("enable the controllers (cgroup v2: echo '+cpu +memory' > /sys/fs/cgroup/cgroup.subtree_control)".into()),
        }
    }
}

/// Probes the kernel's network-fault mechanisms from a throwaway sidecar (the same probe a
/// run makes before its first network fault).
pub async fn probe_kernel(docker: &Docker) -> Result<Mechanism, ChaosError> {
    let net = crate::fault::net::NetContext::new(docker.clone()).await?;
    let probe_id = format!("probe-{}", std::process::id());
    let faults = net.for_cluster(&probe_id, &std::env::temp_dir());
    Ok(faults.probe().await?)
}

/// One line on what the kernel offers network faults.
pub fn describe_mechanism(m: &Mechanism) -> String {
    let yes = |b: bool| if b { "yes" } else { "no" };
    format!(
        "netem {}; fallback: iptables {}, statistic {}, NFQUEUE {}; tbf {}",
        yes(m.netem),
        m.iptables.map(|i| format!("{i:?}").to_lowercase()).unwrap_or_else(|| "none".into()),
        yes(m.statistic),
        yes(m.nfqueue),
        yes(m.tbf)
    )
}

/// Before `chaos run` starts anything: every need of every plan is checked, and all that
/// is missing is reported at once (exit 3), each with its fix. On Docker, network faults
/// are also held against the kernel's mechanisms (a parameter no mechanism can carry out
/// is a usage error, exit 2, naming the fault's line).
pub async fn preflight(plans: &[Plan], runtime: RuntimeKind, docker: Option<&Docker>) -> Result<(), ChaosError> {
    // The process runtime cannot do network faults, nor run Flink: say so with the line.
    if runtime == RuntimeKind::Process {
        for plan in plans {
            if plan.cluster.engine == Engine::Flink {
                return Err(ChaosError::Usage(format!(
                    "{}: the flink engine runs on the docker runtime only: expected --runtime docker",
                    plan.file.display()
                )));
            }
            if let Some(f) = plan.faults.iter().find(|f| is_network_fault(&f.action)) {
                return Err(ChaosError::Usage(format!(
                    "{}:{}: {}",
                    plan.file.display(),
                    f.line,
                    crate::runtime::process::refuse_network_fault()
                )));
            }
        }
    }
    let all: BTreeSet<Need> = plans.iter().flat_map(|p| needs(p, runtime)).collect();
    let mut problems = Vec::new();
    let mut mechanism = None;
    for need in all {
        let f = check(need, docker).await;
        if f.ok {
            continue;
        }
        if need == Need::NetKernel && !netfault::image::missing_host_tools().is_empty() {
            continue; // already reported as NetTools
        }
        let users: Vec<&str> = plans.iter().filter(|p| needs(p, runtime).contains(&need)).map(|p| p.name.as_str()).collect();
        problems.push(format!(
            "{} ({}): {}{}\n  needed by: {}",
            need.title(),
            need.used_by(),
            f.detail,
            f.fix.map(|x| format!("\n  fix: {x}")).unwrap_or_default(),
            users.join(", ")
        ));
    }
    if !problems.is_empty() {
        return Err(ChaosError::Infrastructure(format!(
            "this machine cannot run {} yet (nothing was started):\n{}\n(`chaos doctor` checks everything)",
            if plans.len() == 1 { "this scenario" } else { "these scenarios" },
            problems.join("\n")
        )));
    }
    // Parameters the kernel cannot carry out, found before the cluster starts.
    if runtime == RuntimeKind::Docker {
        for plan in plans {
            for f in plan.faults.iter() {
                let Action::Netem(p) = &f.action else { continue };
                let Some(d) = docker else { continue };
                if mechanism.is_none() {
                    mechanism = Some(probe_kernel(d).await?);
                }
                if let Some(m) = &mechanism {
                    netfault::plan(&crate::fault::net::to_netfault(p), m).map_err(|e| {
                        ChaosError::Usage(format!("{}:{}: netem on this kernel: {e}", plan.file.display(), f.line))
                    })?;
                }
            }
        }
    }
    Ok(())
}

/// The scenario files under `dir` (`*.yaml`, sorted), for `chaos doctor`'s "blocks" lines.
pub fn scenario_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(yaml: &str) -> Plan {
        crate::scenario::parse_str(yaml, Path::new("t.yaml"), None).unwrap()
    }

    const BASE: &str = "job: { parallelism: 2 }\ninput: { generate: { lines: 100 } }\n";

    #[test]
    fn the_default_kind_of_scenario_needs_only_docker() {
        let p = plan(&format!("{BASE}faults:\n  - {{ at: 1s, action: kill, target: tm2 }}\n"));
        assert_eq!(needs(&p, RuntimeKind::Docker), BTreeSet::from([Need::Docker]));
        assert!(needs(&p, RuntimeKind::Process).is_empty());
    }

    #[test]
    fn ha_network_faults_and_limits_add_their_needs() {
        let p = plan(&format!(
            "cluster: {{ jobmanagers: 2, resources: {{ taskmanager-1: {{ cpus: 0.5 }} }} }}\n{BASE}faults:\n  - {{ at: 1s, action: netem, target: tm1, delay: 10ms, for: 1s }}\n"
        ));
        assert_eq!(
            needs(&p, RuntimeKind::Docker),
            BTreeSet::from([Need::Docker, Need::Etcd, Need::NetTools, Need::NetKernel, Need::CgroupLimits])
        );
        // The process runtime: only etcd (it refuses network faults itself, applies no limits).
        assert_eq!(needs(&p, RuntimeKind::Process), BTreeSet::from([Need::Etcd]));
    }

    #[test]
    fn the_disk_passthrough_needs_fuse_on_both_runtimes() {
        let p = plan(&format!("{BASE}faults:\n  - {{ at: 1s, action: disk, target: tm2, delay: 5ms, for: 1s }}\n"));
        assert_eq!(needs(&p, RuntimeKind::Docker), BTreeSet::from([Need::Docker, Need::Fuse]));
        assert_eq!(needs(&p, RuntimeKind::Process), BTreeSet::from([Need::Fuse]));
        let p = plan(&format!("cluster: {{ checkpoint_storage: {{ latency: 5ms }} }}\n{BASE}"));
        assert_eq!(needs(&p, RuntimeKind::Process), BTreeSet::from([Need::Fuse]));
    }

    #[test]
    fn cgroup_controllers_are_read_from_v2_or_v1_layouts() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("cgroup.controllers"), "cpuset cpu io memory pids\n").unwrap();
        assert!(cgroup_limits(d.path(), Need::CgroupLimits).ok);
        std::fs::write(d.path().join("cgroup.controllers"), "cpuset io pids\n").unwrap();
        let f = cgroup_limits(d.path(), Need::CgroupLimits);
        assert!(!f.ok && f.detail.contains("cpu or memory"), "{}", f.detail);
        let v1 = tempfile::tempdir().unwrap();
        std::fs::create_dir(v1.path().join("cpu")).unwrap();
        std::fs::create_dir(v1.path().join("memory")).unwrap();
        assert!(cgroup_limits(v1.path(), Need::CgroupLimits).ok);
    }
}
