//! What a Flink cluster is told: [`FlinkSettings`] rendered as Flink's `config.yaml`
//! (written to `/data/flink/conf/`, shared by every node through the bind mount) and each
//! node's command line. The JVMs are started directly (`java ... <EntryPoint>`), without
//! Flink's shell scripts, so the memory flags those scripts would compute are derived here
//! from the same fixed memory model ([`TM_MEMORY`], [`JM_MEMORY`]).

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
            ("high-availability.type".into(), "none".into()),
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

    /// The jobmanager container's command (after the `java` entrypoint).
    pub fn jobmanager_command(&self) -> Vec<String> {
        let [heap, _, meta, _] = JM_MEMORY;
        let mut cmd = jvm_opts(&[format!("-Xmx{heap}m"), format!("-Xms{heap}m"), format!("-XX:MaxMetaspaceSize={meta}m")]);
        cmd.push(JOBMANAGER_CLASS.into());
        cmd.extend(["--configDir".into(), CONF_DIR.into()]);
        cmd.extend(["--job-classname".into(), JOB_CLASS.into()]);
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
        let jm = s.jobmanager_command().join(" ");
        assert!(jm.contains(&format!("-cp /opt/flink/lib/* {JOBMANAGER_CLASS} --configDir /data/flink/conf --job-classname chaos.flink.WordCount")), "{jm}");
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
}
