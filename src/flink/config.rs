//! What a Flink cluster is told: [`FlinkSettings`] rendered as Flink's `config.yaml`
//! (written to `/data/flink/conf/`, shared by every node through the bind mount) and each
//! node's command line. The JVMs are started directly (`java ... <EntryPoint>`), without
//! Flink's shell scripts, so the memory flags those scripts would compute are derived here
//! from the same fixed memory model ([`TM_MEMORY`], [`JM_MEMORY`]).
//!
//! High availability ([`ZooKeeperHa`], when [`FlinkSettings::ha`] is set): Flink's classic
//! ZooKeeper setup. The ZooKeeper server is Flink's own bundled peer
//! ([`ZOOKEEPER_CLASS`], what `bin/start-zookeeper-quorum.sh` runs) from the same image,
//! configured by a `zoo.cfg` next to `config.yaml`; HA storage is on the shared `/data`.
//! Since `config.yaml` is shared, what differs per jobmanager (the address it advertises)
//! is passed as `-D` on its command line.

use std::time::Duration;

use super::job::JOB_CLASS;

/// Where the image keeps Flink's jars (the class path is `<this>/*`).
pub const FLINK_LIB: &str = "/opt/flink/lib";
/// The log4j configuration baked into the image.
pub const LOG4J_CONF: &str = "/opt/flink/conf/log4j-console.properties";
/// Where the nodes read `config.yaml`: inside the bind-mounted run directory.
pub const CONF_DIR: &str = "/data/flink/conf";
/// Checkpoint storage, shared by all nodes through the bind mount.
pub const CHECKPOINT_DIR: &str = "file:///data/flink/checkpoints";
/// The standalone application-mode jobmanager: starts the job with the cluster.
pub const JOBMANAGER_CLASS: &str =
    "org.apache.flink.container.entrypoint.StandaloneApplicationClusterEntryPoint";
/// Flink's bundled ZooKeeper server (standalone when `zoo.cfg` lists no `server.N`).
pub const ZOOKEEPER_CLASS: &str = "org.apache.flink.runtime.zookeeper.FlinkZooKeeperQuorumPeer";
/// The taskmanager.
pub const TASKMANAGER_CLASS: &str = "org.apache.flink.runtime.taskexecutor.TaskManagerRunner";
/// Flink's RPC port on the jobmanager.
pub const RPC_PORT: u16 = 6123;
/// Flink's REST port on the jobmanager.
pub const REST_PORT: u16 = 8081;
/// The blob server port on the jobmanager.
pub const BLOB_PORT: u16 = 6124;
/// Taskmanager RPC port.
pub const TM_RPC_PORT: u16 = 6122;
/// Taskmanager data (shuffle) port.
pub const TM_DATA_PORT: u16 = 6121;
/// ZooKeeper's client port.
pub const ZK_CLIENT_PORT: u16 = 2181;
/// ZooKeeper's configuration inside the containers, next to `config.yaml`.
pub const ZOO_CFG: &str = "/data/flink/conf/zoo.cfg";
/// ZooKeeper's snapshots and transaction log, in the run directory.
pub const ZK_DATA_DIR: &str = "/data/flink/zookeeper";
/// HA storage (execution plans, checkpoint metadata, blobs, job results), shared by all
/// jobmanagers through the bind mount: what a new leader recovers the job from.
pub const HA_STORAGE_DIR: &str = "file:///data/flink/ha";
/// `high-availability.zookeeper.path.root` (Flink's default, stated because
/// [`ZooKeeperHa::connection_info_path`] depends on it).
pub const ZK_ROOT: &str = "/flink";
/// ZooKeeper's tick: sessions may last 2 to 20 ticks (ZooKeeper's defaults for
/// `minSessionTimeout`/`maxSessionTimeout`), so 1 s allows the short sessions chaos wants.
pub const ZK_TICK: Duration = Duration::from_secs(1);
/// ZooKeeper's JVM heap, MiB: one cluster's few dozen znodes need little.
pub const ZK_HEAP_MIB: u32 = 64;

/// The `--add-opens`/`--add-exports` Flink's own `env.java.opts.all` default passes to
/// every JVM (Kryo and Pekko reflect into the JDK).
pub const JVM_MODULE_OPTS: &[&str] = &[
    "--add-exports=java.rmi/sun.rmi.registry=ALL-UNNAMED",
    "--add-exports=java.security.jgss/sun.security.krb5=ALL-UNNAMED",
    "--add-opens=java.base/java.lang=ALL-UNNAMED",
    "--add-opens=java.base/java.net=ALL-UNNAMED",
    "--add-opens=java.base/java.io=ALL-UNNAMED",
    "--add-opens=java.base/java.nio=ALL-UNNAMED",
    "--add-opens=java.base/sun.nio.ch=ALL-UNNAMED",
    "--add-opens=java.base/java.lang.reflect=ALL-UNNAMED",
    "--add-opens=java.base/java.text=ALL-UNNAMED",
    "--add-opens=java.base/java.time=ALL-UNNAMED",
    "--add-opens=java.base/java.util=ALL-UNNAMED",
    "--add-opens=java.base/java.util.concurrent=ALL-UNNAMED",
    "--add-opens=java.base/java.util.concurrent.atomic=ALL-UNNAMED",
    "--add-opens=java.base/java.util.concurrent.locks=ALL-UNNAMED",
];

/// The taskmanager memory model, MiB, every component explicit so that Flink derives
/// nothing and the JVM flags below match what it expects:
/// (framework heap, task heap, framework off-heap, task off-heap, managed, network,
/// metaspace, overhead). Process size: 1056 MiB.
pub const TM_MEMORY: [u32; 8] = [128, 256, 128, 0, 32, 64, 256, 192];
/// The jobmanager memory model, MiB: (heap, off-heap, metaspace, overhead).
pub const JM_MEMORY: [u32; 4] = [256, 128, 256, 192];

/// Delivery guarantee of the job's sink.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// Aligned checkpoints and FileSink's two-phase commit.
    ExactlyOnce,
    /// The negative control: AT_LEAST_ONCE checkpoints (no barrier alignment) and a sink
    /// that writes straight into visible files, so a restore duplicates updates.
    AtLeastOnce,
}

impl Delivery {
    /// The job's `--delivery` value.
    pub fn as_str(self) -> &'static str {
        match self {
            Delivery::ExactlyOnce => "exactly-once",
            Delivery::AtLeastOnce => "at-least-once",
        }
    }
}

/// Flink's restart strategies, with Flink's own parameters.
#[derive(Debug, Clone, PartialEq)]
pub enum RestartStrategy {
    /// Fail the job on the first failure.
    None,
    /// `attempts` restarts, `delay` apart.
    FixedDelay { attempts: u32, delay: Duration },
    /// Fail once more than `max_failures` happen within `interval`.
    FailureRate {
        max_failures: u32,
        interval: Duration,
        delay: Duration,
    },
    /// Backoff from `initial` to `max`, times `multiplier` per failure.
    ExponentialDelay {
        initial: Duration,
        max: Duration,
        multiplier: f64,
        reset_threshold: Duration,
        jitter: f64,
        attempts: u32,
    },
}

impl RestartStrategy {
    /// The `restart-strategy.*` keys.
    pub fn config(&self) -> Vec<(String, String)> {
        let kv = |k: &str, v: String| (format!("restart-strategy.{k}"), v);
        match self {
            RestartStrategy::None => vec![kv("type", "none".into())],
            RestartStrategy::FixedDelay { attempts, delay } => vec![
                kv("type", "fixed-delay".into()),
                kv("fixed-delay.attempts", attempts.to_string()),
                kv("fixed-delay.delay", ms(*delay)),
            ],
            RestartStrategy::FailureRate {
                max_failures,
                interval,
                delay,
            } => vec![
                kv("type", "failure-rate".into()),
                kv("failure-rate.max-failures-per-interval", max_failures.to_string()),
                kv("failure-rate.failure-rate-interval", ms(*interval)),
                kv("failure-rate.delay", ms(*delay)),
            ],
            RestartStrategy::ExponentialDelay {
                initial,
                max,
                multiplier,
                reset_threshold,
                jitter,
                attempts,
            } => vec![
                kv("type", "exponential-delay".into()),
                kv("exponential-delay.initial-backoff", ms(*initial)),
                kv("exponential-delay.max-backoff", ms(*max)),
                kv("exponential-delay.backoff-multiplier", multiplier.to_string()),
                kv("exponential-delay.reset-backoff-threshold", ms(*reset_threshold)),
                kv("exponential-delay.jitter-factor", jitter.to_string()),
                kv("exponential-delay.attempts-before-reset-backoff", attempts.to_string()),
            ],
        }
    }
}

/// A Flink duration value: `<n> ms`.
fn ms(d: Duration) -> String {
    format!("{} ms", d.as_millis())
}

/// ZooKeeper high availability: with it every jobmanager runs for leadership through a
/// ZooKeeper latch, the leader publishes its addresses in ZooKeeper (where taskmanagers,
/// the other jobmanagers' REST handlers and [`super::ha::leader`] find it), and job
/// graphs and checkpoint metadata live in [`HA_STORAGE_DIR`] so a new leader recovers
/// the running job from its latest checkpoint.
#[derive(Debug, Clone, PartialEq)]
pub struct ZooKeeperHa {
    /// `high-availability.zookeeper.quorum`: `host:port[,host:port...]`.
    pub quorum: String,
    /// `high-availability.cluster-id`: this cluster's znode under [`ZK_ROOT`].
    pub cluster_id: String,
    /// `high-availability.storageDir`.
    pub storage_dir: String,
    /// The job's id (32 hex digits), the same on every jobmanager: each one runs the
    /// application's `main`, and only a fixed id lets a new leader's run find the job it
    /// recovered instead of submitting a second one.
    pub job_id: String,
    /// `high-availability.zookeeper.client.session-timeout`: a SIGKILLed leader's latch
    /// and published address live until its session expires, so this is the floor of a
    /// failover (Flink's default is 60 s). Within 2..20 x [`ZK_TICK`].
    pub session_timeout: Duration,
}

impl ZooKeeperHa {
    /// HA for chaos cluster `cluster_id` with its ZooKeeper node `zookeeper`: the cluster
    /// id names the znode, the job id is derived from it.
    pub fn for_cluster(cluster_id: &str, zookeeper: &str) -> Self {
        ZooKeeperHa {
            quorum: format!("{zookeeper}:{ZK_CLIENT_PORT}"),
            cluster_id: cluster_id.to_string(),
            storage_dir: HA_STORAGE_DIR.into(),
            job_id: job_id_for(cluster_id),
            session_timeout: Duration::from_secs(5),
        }
    }

    /// The `high-availability.*` keys and the ZooKeeper client's.
    pub fn config(&self) -> Vec<(String, String)> {
        let kv = |k: &str, v: String| (format!("high-availability.{k}"), v);
        vec![
            kv("type", "zookeeper".into()),
            kv("zookeeper.quorum", self.quorum.clone()),
            kv("zookeeper.path.root", ZK_ROOT.into()),
            kv("cluster-id", self.cluster_id.clone()),
            kv("storageDir", self.storage_dir.clone()),
            kv("zookeeper.client.session-timeout", ms(self.session_timeout)),
            // Curator warns when a connection attempt may outlast the session (Flink's
            // default is 15 s): give up on a connection when the session would expire.
            kv("zookeeper.client.connection-timeout", ms(self.session_timeout)),
            // With HA the jobmanager's RPC port comes from here, and defaults to a random
            // one: keep the fixed port so addresses (and port-based faults) stay stable.
            kv("jobmanager.port", RPC_PORT.to_string()),
            // The server has no SASL (no JAAS file anywhere): without this every client
            // tries it first and logs an authentication ERROR before going on without.
            ("zookeeper.sasl.disable".into(), "true".into()),
        ]
    }

    /// The znode where the leader of `component` (`dispatcher`, `rest_server`,
    /// `resource_manager`, `job-<id>`) publishes its address: Flink's layout under
    /// `<root>/<cluster-id>/leader/` (see `ZooKeeperLeaderElectionHaServices`).
    pub fn connection_info_path(&self, component: &str) -> String {
        format!("{ZK_ROOT}/{}/leader/{component}/connection_info", self.cluster_id.trim_matches('/'))
    }

    /// The `zoo.cfg` of a standalone ZooKeeper server.
    pub fn zoo_cfg(&self) -> String {
        let port = self.quorum.rsplit_once(':').map_or(ZK_CLIENT_PORT.to_string(), |(_, p)| p.to_string());
        [
            "# Written by chaos (src/flink/config.rs): Flink's bundled ZooKeeper, standalone.".to_string(),
            format!("tickTime={}", ZK_TICK.as_millis()),
            format!("clientPort={port}"),
            format!("dataDir={ZK_DATA_DIR}"),
            "initLimit=10".into(),
            "syncLimit=5".into(),
            // No fsync per write: a killed ZooKeeper process loses nothing the page cache
            // holds, and fsyncs on a shared 2-core machine would slow every leader write.
            "forceSync=no".into(),
            // Transaction log files grow in 4 MiB steps instead of 64 MiB.
            "preAllocSize=4096".into(),
            // Keep a few snapshots only.
            "autopurge.snapRetainCount=3".into(),
            "autopurge.purgeInterval=1".into(),
        ]
        .join("\n")
            + "\n"
    }
}

/// A job id (32 hex digits) derived from `cluster_id`: stable across jobmanagers and
/// restarts, distinct across clusters.
pub fn job_id_for(cluster_id: &str) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(format!("chaos-flink-job:{cluster_id}")).iter().take(16).map(|b| format!("{b:02x}")).collect()
}

/// Everything a Flink word-count cluster is configured with.
#[derive(Debug, Clone, PartialEq)]
pub struct FlinkSettings {
    /// Job name; the output goes to `/data/output/<job>/flink/`.
    pub job_name: String,
    /// Input file inside the containers.
    pub input: String,
    /// Parallelism of every operator.
    pub parallelism: u32,
    /// Slots per taskmanager.
    pub slots: u32,
    /// Lines per second over all source subtasks; 0 = unlimited.
    pub rate: u64,
    pub checkpoint_interval: Duration,
    pub delivery: Delivery,
    pub restart: RestartStrategy,
    pub heartbeat_interval: Duration,
    pub heartbeat_timeout: Duration,
    /// ZooKeeper high availability; `None`: Flink's `none` (one jobmanager, no recovery
    /// of the jobmanager's own state).
    pub ha: Option<ZooKeeperHa>,
    /// Any other Flink option (the scenario's `flink.config`), written last: a key given
    /// here replaces the one chaos would write.
    pub extra: Vec<(String, String)>,
}

impl Default for FlinkSettings {
    fn default() -> Self {
        FlinkSettings {
            job_name: "wordcount".into(),
            input: "/data/input/input.txt".into(),
            parallelism: 2,
            slots: 1,
            rate: 0,
            checkpoint_interval: Duration::from_secs(1),
            delivery: Delivery::ExactlyOnce,
            restart: RestartStrategy::FixedDelay {
                attempts: 10,
                delay: Duration::from_secs(1),
            },
            heartbeat_interval: Duration::from_secs(1),
            heartbeat_timeout: Duration::from_secs(5),
            ha: None,
            extra: Vec::new(),
        }
    }
}

impl FlinkSettings {
    /// The committed output directory inside the containers.
    pub fn output_dir(&self) -> String {
        format!("/data/output/{}/flink", self.job_name)
    }

    /// Flink's `config.yaml` (flat keys, which Flink's YAML parser accepts).
    pub fn config_yaml(&self) -> String {
        let [fh, th, fo, to, managed, net, meta, over] = TM_MEMORY;
        let [jh, jo, jmeta, jover] = JM_MEMORY;
        let mut kv: Vec<(String, String)> = vec![
            ("jobmanager.rpc.address".into(), "jobmanager-1".into()),
            ("jobmanager.rpc.port".into(), RPC_PORT.to_string()),
            ("jobmanager.bind-host".into(), "0.0.0.0".into()),
            ("rest.address".into(), "jobmanager-1".into()),
            ("rest.bind-address".into(), "0.0.0.0".into()),
            ("rest.port".into(), REST_PORT.to_string()),
            ("blob.server.port".into(), BLOB_PORT.to_string()),
            ("taskmanager.bind-host".into(), "0.0.0.0".into()),
            ("taskmanager.rpc.port".into(), TM_RPC_PORT.to_string()),
            ("taskmanager.data.port".into(), TM_DATA_PORT.to_string()),
            ("taskmanager.numberOfTaskSlots".into(), self.slots.to_string()),
            ("parallelism.default".into(), self.parallelism.to_string()),
            // Keep the jobmanager (and its REST API) up after the job ends, so FINISHED
            // can be observed rather than inferred from the process exiting.
            ("execution.shutdown-on-application-finish".into(), "false".into()),
            ("execution.checkpointing.interval".into(), ms(self.checkpoint_interval)),
            (
                "execution.checkpointing.mode".into(),
                match self.delivery {
                    Delivery::ExactlyOnce => "EXACTLY_ONCE",
                    Delivery::AtLeastOnce => "AT_LEAST_ONCE",
                }
                .into(),
            ),
            // Bounded input: the final checkpoint after the last record commits the
            // sink's last part files (Flink 2's default, stated because it matters).
            ("execution.checkpointing.checkpoints-after-tasks-finish.enabled".into(), "true".into()),
            ("execution.checkpointing.storage".into(), "filesystem".into()),
            ("execution.checkpointing.dir".into(), CHECKPOINT_DIR.into()),
            ("state.backend.type".into(), "hashmap".into()),
            ("heartbeat.interval".into(), ms(self.heartbeat_interval)),
            ("heartbeat.timeout".into(), ms(self.heartbeat_timeout)),
            ("jobmanager.memory.heap.size".into(), format!("{jh}m")),
            ("jobmanager.memory.off-heap.size".into(), format!("{jo}m")),
            ("jobmanager.memory.jvm-metaspace.size".into(), format!("{jmeta}m")),
            ("jobmanager.memory.jvm-overhead.min".into(), format!("{jover}m")),
            ("jobmanager.memory.jvm-overhead.max".into(), format!("{jover}m")),
            ("taskmanager.memory.framework.heap.size".into(), format!("{fh}m")),
            ("taskmanager.memory.task.heap.size".into(), format!("{th}m")),
            ("taskmanager.memory.framework.off-heap.size".into(), format!("{fo}m")),
            ("taskmanager.memory.task.off-heap.size".into(), format!("{to}m")),
            ("taskmanager.memory.managed.size".into(), format!("{managed}m")),
            ("taskmanager.memory.network.min".into(), format!("{net}m")),
            ("taskmanager.memory.network.max".into(), format!("{net}m")),
            ("taskmanager.memory.jvm-metaspace.size".into(), format!("{meta}m")),
            ("taskmanager.memory.jvm-overhead.min".into(), format!("{over}m")),
            ("taskmanager.memory.jvm-overhead.max".into(), format!("{over}m")),
            // Flink's scripts pass these to the TaskManagerRunner (which refuses to start
            // without them); one CPU per slot, as their default says.
            ("taskmanager.cpu.cores".into(), format!("{}.0", self.slots)),
            ("external-resources".into(), "none".into()),
            ("io.tmp.dirs".into(), "/tmp".into()),
            // The REST API's metrics (the source's input position) refresh this often
            // (Flink's default is 10 s: too coarse to time a recovery).
            ("metrics.fetcher.update-interval".into(), "500 ms".into()),
            // Every checkpoint of a run in the REST history, for the report's timeline.
            ("web.checkpoints.history".into(), "1000".into()),
        ];
        kv.extend(self.restart.config());
        match &self.ha {
            Some(ha) => kv.extend(ha.config()),
            None => kv.push(("high-availability.type".into(), "none".into())),
        }
        for (k, v) in &self.extra {
            kv.retain(|(key, _)| key != k);
            kv.push((k.clone(), v.clone()));
        }
        let mut out = String::from("# Written by chaos (src/flink/config.rs); one file for every node.\n");
        for (k, v) in kv {
            out.push_str(&format!("{k}: {}\n", yaml_scalar(&v)));
        }
        out
    }

    /// The job's program arguments.
    pub fn program_args(&self) -> Vec<String> {
        vec![
            "--input".into(),
            self.input.clone(),
            "--output".into(),
            self.output_dir(),
            "--parallelism".into(),
            self.parallelism.to_string(),
            "--rate".into(),
            self.rate.to_string(),
            "--checkpoint-interval-ms".into(),
            self.checkpoint_interval.as_millis().to_string(),
            "--delivery".into(),
            self.delivery.as_str().into(),
            "--job-name".into(),
            self.job_name.clone(),
        ]
    }

    /// The command of jobmanager `node` (its hostname and network alias; after the `java`
    /// entrypoint).
    pub fn jobmanager_command(&self, node: &str) -> Vec<String> {
        let [heap, _, meta, _] = JM_MEMORY;
        let mut cmd = jvm_opts(&[format!("-Xmx{heap}m"), format!("-Xms{heap}m"), format!("-XX:MaxMetaspaceSize={meta}m")]);
        cmd.push(JOBMANAGER_CLASS.into());
        cmd.extend(["--configDir".into(), CONF_DIR.into()]);
        cmd.extend(["--job-classname".into(), JOB_CLASS.into()]);
        // Each jobmanager advertises its own alias (what it publishes in ZooKeeper when
        // it leads); config.yaml's value is jobmanager-1's, for taskmanagers without HA.
        cmd.extend(["-D".into(), format!("jobmanager.rpc.address={node}")]);
        cmd.extend(["-D".into(), format!("rest.address={node}")]);
        if let Some(ha) = &self.ha {
            cmd.extend(["--job-id".into(), ha.job_id.clone()]);
        }
        // Options end here: the entry point passes the first unknown argument and the
        // rest to the job.
        cmd.extend(self.program_args());
        cmd
    }

    /// The command of taskmanager `node` (its hostname and network alias).
    pub fn taskmanager_command(&self, node: &str) -> Vec<String> {
        let [fh, th, fo, to, _, net, meta, _] = TM_MEMORY;
        let mut cmd = jvm_opts(&[
            format!("-Xmx{}m", fh + th),
            format!("-Xms{}m", fh + th),
            format!("-XX:MaxDirectMemorySize={}m", fo + to + net),
            format!("-XX:MaxMetaspaceSize={meta}m"),
        ]);
        cmd.push(TASKMANAGER_CLASS.into());
        cmd.extend(["--configDir".into(), CONF_DIR.into()]);
        // Advertise the network alias, not the container's IP: stable across restarts.
        cmd.extend(["-D".into(), format!("taskmanager.host={node}")]);
        cmd.extend(["-D".into(), format!("taskmanager.resource-id={node}")]);
        cmd
    }
}

/// The ZooKeeper node's command: Flink's bundled server with [`ZOO_CFG`] as peer 1.
pub fn zookeeper_command() -> Vec<String> {
    let mut cmd = jvm_opts(&[
        format!("-Xmx{ZK_HEAP_MIB}m"),
        "-XX:MaxMetaspaceSize=64m".into(),
        // ZooKeeper's admin server (Jetty on :8080) is not needed: the client port answers.
        "-Dzookeeper.admin.enableServer=false".into(),
    ]);
    cmd.push(ZOOKEEPER_CLASS.into());
    cmd.extend(["--zkConfigFile".into(), ZOO_CFG.into(), "--peerId".into(), "1".into()]);
    cmd
}

/// Common JVM options, then `extra`, then the class path.
fn jvm_opts(extra: &[String]) -> Vec<String> {
    let mut cmd: Vec<String> = JVM_MODULE_OPTS.iter().map(|s| s.to_string()).collect();
    cmd.extend(extra.iter().cloned());
    cmd.extend([
        // No hsperfdata mmap in /tmp: less RSS, nothing for jps to find anyway.
        "-XX:-UsePerfData".into(),
        "-XX:+ExitOnOutOfMemoryError".into(),
        format!("-Dlog4j.configurationFile=file:{LOG4J_CONF}"),
        "-cp".into(),
        format!("{FLINK_LIB}/*"),
    ]);
    cmd
}

/// A YAML plain scalar when safe, else a double-quoted one.
fn yaml_scalar(v: &str) -> String {
    let plain = !v.is_empty()
        && v.chars().all(|c| c.is_ascii_alphanumeric() || " ._-/:".contains(c))
        && !v.starts_with(' ')
        && !v.ends_with(' ')
        && !v.contains(": ");
    match plain {
        true => v.to_string(),
        false => format!("{:?}", v),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_carries_the_settings_with_flinks_keys() {
        let s = FlinkSettings {
            restart: RestartStrategy::ExponentialDelay {
                initial: Duration::from_millis(500),
                max: Duration::from_secs(10),
                multiplier: 2.0,
                reset_threshold: Duration::from_secs(60),
                jitter: 0.1,
                attempts: 5,
            },
            ..FlinkSettings::default()
        };
        let y = s.config_yaml();
        for line in [
            "heartbeat.interval: 1000 ms",
            "heartbeat.timeout: 5000 ms",
            "execution.checkpointing.interval: 1000 ms",
            "execution.checkpointing.mode: EXACTLY_ONCE",
            "execution.checkpointing.dir: file:///data/flink/checkpoints",
            "restart-strategy.type: exponential-delay",
            "restart-strategy.exponential-delay.initial-backoff: 500 ms",
            "restart-strategy.exponential-delay.backoff-multiplier: 2",
            "execution.shutdown-on-application-finish: false",
        ] {
            assert!(y.lines().any(|l| l == line), "missing {line:?} in\n{y}");
        }
        // No key twice (Flink's YAML parser would refuse the file).
        let keys: Vec<&str> = y.lines().filter_map(|l| l.split_once(": ").map(|(k, _)| k)).collect();
        let mut unique = keys.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(keys.len(), unique.len());
    }

    #[test]
    fn commands_start_the_entry_points_directly() {
        let s = FlinkSettings { rate: 2000, delivery: Delivery::AtLeastOnce, ..FlinkSettings::default() };
        let jm = s.jobmanager_command("jobmanager-1").join(" ");
        assert!(jm.contains(&format!("-cp /opt/flink/lib/* {JOBMANAGER_CLASS} --configDir /data/flink/conf --job-classname chaos.flink.WordCount")), "{jm}");
        assert!(jm.contains(" -D jobmanager.rpc.address=jobmanager-1 -D rest.address=jobmanager-1 --input "), "{jm}");
        assert!(!jm.contains("--job-id"), "no fixed job id without HA: {jm}");
        assert!(jm.ends_with("--rate 2000 --checkpoint-interval-ms 1000 --delivery at-least-once --job-name wordcount"), "{jm}");
        let tm = s.taskmanager_command("taskmanager-2").join(" ");
        assert!(tm.contains("-Xmx384m") && tm.contains("-XX:MaxDirectMemorySize=192m"), "{tm}");
        assert!(tm.ends_with("-D taskmanager.host=taskmanager-2 -D taskmanager.resource-id=taskmanager-2"), "{tm}");
        assert!(s.config_yaml().contains("execution.checkpointing.mode: AT_LEAST_ONCE\n"));
    }

    #[test]
    fn fixed_delay_and_failure_rate_keys() {
        let f = RestartStrategy::FailureRate { max_failures: 3, interval: Duration::from_secs(60), delay: Duration::from_secs(2) };
        assert_eq!(
            f.config(),
            vec![
                ("restart-strategy.type".to_string(), "failure-rate".to_string()),
                ("restart-strategy.failure-rate.max-failures-per-interval".into(), "3".into()),
                ("restart-strategy.failure-rate.failure-rate-interval".into(), "60000 ms".into()),
                ("restart-strategy.failure-rate.delay".into(), "2000 ms".into()),
            ]
        );
        assert_eq!(yaml_scalar("a: b"), "\"a: b\"");
    }

    #[test]
    fn ha_config_zoo_cfg_and_per_node_commands() {
        let ha = ZooKeeperHa::for_cluster("flinkdev-ha-1", "zookeeper-1");
        let s = FlinkSettings { ha: Some(ha.clone()), ..FlinkSettings::default() };
        let y = s.config_yaml();
        for line in [
            "high-availability.type: zookeeper",
            "high-availability.zookeeper.quorum: zookeeper-1:2181",
            "high-availability.zookeeper.path.root: /flink",
            "high-availability.cluster-id: flinkdev-ha-1",
            "high-availability.storageDir: file:///data/flink/ha",
            "high-availability.zookeeper.client.session-timeout: 5000 ms",
            "high-availability.zookeeper.client.connection-timeout: 5000 ms",
            "zookeeper.sasl.disable: true",
            "high-availability.jobmanager.port: 6123",
        ] {
            assert!(y.lines().any(|l| l == line), "missing {line:?} in\n{y}");
        }
        assert!(!y.contains("high-availability.type: none"), "{y}");
        assert!(FlinkSettings::default().config_yaml().contains("\nhigh-availability.type: none\n"));
        let keys: Vec<&str> = y.lines().filter_map(|l| l.split_once(": ").map(|(k, _)| k)).collect();
        let mut unique = keys.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(keys.len(), unique.len(), "a key twice in\n{y}");

        // Same job id on every jobmanager, derived from the cluster id; own address each.
        assert_eq!(ha.job_id.len(), 32);
        assert!(ha.job_id.chars().all(|c| c.is_ascii_hexdigit()));
        assert_eq!(ha.job_id, job_id_for("flinkdev-ha-1"));
        assert_ne!(ha.job_id, job_id_for("flinkdev-ha-2"));
        for node in ["jobmanager-1", "jobmanager-2"] {
            let jm = s.jobmanager_command(node).join(" ");
            let expect = format!(
                "-D jobmanager.rpc.address={node} -D rest.address={node} --job-id {} --input ",
                ha.job_id
            );
            assert!(jm.contains(&expect), "{jm}");
        }

        assert_eq!(ha.connection_info_path("dispatcher"), "/flink/flinkdev-ha-1/leader/dispatcher/connection_info");
        let cfg = ha.zoo_cfg();
        for line in ["tickTime=1000", "clientPort=2181", "dataDir=/data/flink/zookeeper"] {
            assert!(cfg.lines().any(|l| l == line), "missing {line:?} in\n{cfg}");
        }
        // The session timeout must be one ZooKeeper grants (2..20 ticks), else it is clamped.
        assert!(ha.session_timeout >= ZK_TICK * 2 && ha.session_timeout <= ZK_TICK * 20);
        let zk = zookeeper_command().join(" ");
        assert!(zk.ends_with(&format!("{ZOOKEEPER_CLASS} --zkConfigFile /data/flink/conf/zoo.cfg --peerId 1")), "{zk}");
    }
}
