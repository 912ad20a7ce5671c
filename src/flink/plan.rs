//! A scenario plan on Flink: the plan's cluster, job and input mapped onto a Flink
//! cluster ([`settings`]), started so that the faults hit busy nodes ([`start`]), and its
//! committed output judged ([`judge`]).
//!
//! Which taskmanagers run tasks: Flink takes slots as taskmanagers register, so with
//! spares (more slots than the parallelism) any taskmanager could end up idle and a kill
//! of `taskmanager-2` might test nothing. The first `ceil(parallelism / slots)`
//! taskmanagers start with the jobmanager; the rest join once every task has a slot, as spares a
//! restart can use. streamd gets the same effect by deploying only when every
//! taskmanager has registered.

use std::path::Path;

use bollard::Docker;
use streamd_contract::input::Generator;
use streamd_contract::spec::{Delivery as SpecDelivery, RestartStrategy as SpecRestart};

use super::cluster::{FlinkCluster, FlinkClusterDef};
use super::config::{Delivery, FlinkSettings, RestartStrategy};
use super::{io_err, Result};
use crate::scenario::Plan;
use crate::verdict::{self, Expectation, Verdict};

/// Where the input goes for Flink, inside the run directory (`/data/...` in the nodes).
pub const INPUT: &str = "input/input.txt";

/// Flink's settings for `plan`. Heartbeats: the scenario's when it gives them, else
/// Flink's own defaults (10 s / 50 s), so "the same kill with Flink's defaults" is a
/// scenario without `job.heartbeat`.
pub fn settings(plan: &Plan, input_in_container: &str) -> FlinkSettings {
    let job = &plan.job;
    let flink = plan.flink.clone().unwrap_or_default();
    let (heartbeat_interval, heartbeat_timeout) = match &flink.heartbeat {
        Some(h) => (h.interval, h.timeout),
        None => (std::time::Duration::from_secs(10), std::time::Duration::from_secs(50)),
    };
    FlinkSettings {
        job_name: job.job_id.clone(),
        input: input_in_container.to_string(),
        parallelism: job.parallelism,
        slots: plan.cluster.slots,
        rate: job.input.rate,
        // Validation refuses an adaptive interval on Flink, so this is the fixed one.
        checkpoint_interval: job.checkpoint_interval.nominal(),
        delivery: match job.delivery {
            SpecDelivery::ExactlyOnce => Delivery::ExactlyOnce,
            SpecDelivery::AtLeastOnce => Delivery::AtLeastOnce,
        },
        restart: restart(&job.restart),
        heartbeat_interval,
        heartbeat_timeout,
        // Filled from the cluster's id when it has more than one jobmanager (cluster.rs).
        ha: None,
        extra: flink.config,
    }
}

/// The scenario's restart strategy in Flink's terms (the names and meanings are Flink's
/// to begin with).
fn restart(r: &SpecRestart) -> RestartStrategy {
    match r {
        SpecRestart::None => RestartStrategy::None,
        SpecRestart::FixedDelay { attempts, delay } => RestartStrategy::FixedDelay { attempts: *attempts, delay: *delay },
        SpecRestart::FailureRate { max_failures, interval, delay } => {
            RestartStrategy::FailureRate { max_failures: *max_failures, interval: *interval, delay: *delay }
        }
        SpecRestart::ExponentialDelay { initial, max, multiplier, jitter, reset_threshold, attempts } => {
            RestartStrategy::ExponentialDelay {
                initial: *initial,
                max: *max,
                multiplier: *multiplier,
                reset_threshold: *reset_threshold,
                jitter: *jitter,
                // Flink's "attempts before reset": unbounded when the scenario sets none.
                attempts: attempts.unwrap_or(i32::MAX as u32),
            }
        }
    }
}

/// How many taskmanagers start with the jobmanager: enough slots for the job.
pub fn busy_taskmanagers(plan: &Plan) -> u32 {
    plan.job.parallelism.div_ceil(plan.cluster.slots).clamp(1, plan.cluster.taskmanagers)
}

/// Writes the job's input into the run directory: a generated input line by line (the
/// oracle regenerates the same lines), or nothing when `prepare` copied an input file.
/// Returns the path inside the containers.
pub fn write_input(plan: &Plan, run_dir: &Path) -> Result<String> {
    if let Some(f) = &plan.job.input.file {
        return Ok(format!("/data/{}", f.path.trim_start_matches('/')));
    }
    let Some(spec) = &plan.job.input.generate else {
        return Ok(format!("/data/{INPUT}"));
    };
    let path = run_dir.join(INPUT);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(io_err(parent))?;
    }
    let file = std::fs::File::create(&path).map_err(io_err(&path))?;
    Generator::new(spec).write_all(&mut std::io::BufWriter::new(file)).map_err(io_err(&path))?;
    Ok(format!("/data/{INPUT}"))
}

/// A Flink cluster started for a plan, with the spares still to start.
pub struct Started {
    pub cluster: FlinkCluster,
    /// Taskmanager numbers that join once the job runs.
    pub spares: Vec<u32>,
}

/// Writes the input and starts the jobmanager and the busy taskmanagers of `plan`.
pub async fn start(docker: Docker, plan: &Plan, cluster_id: &str, run_dir: &Path, image: &str) -> Result<Started> {
    let input = write_input(plan, run_dir)?;
    let busy = busy_taskmanagers(plan);
    let def = FlinkClusterDef {
        id: cluster_id.to_string(),
        run_dir: run_dir.to_path_buf(),
        image: image.to_string(),
        jobmanagers: plan.cluster.jobmanagers,
        taskmanagers: busy,
        settings: settings(plan, &input),
    };
    let cluster = FlinkCluster::up(docker, def).await?;
    Ok(Started { cluster, spares: (busy + 1..=plan.cluster.taskmanagers).collect() })
}

impl Started {
    /// Starts the spare taskmanagers.
    pub async fn add_spares(&self) -> Result<()> {
        for &i in &self.spares {
            self.cluster.add_taskmanager(i).await?;
        }
        Ok(())
    }
}

/// The verdict on the committed output in `output_dir`: final counts, well-formed lines,
/// and every update 1..N committed exactly once per word ([`verdict::verdict_updates`]).
pub fn judge(
    oracle: &std::collections::HashMap<String, u64>,
    output_dir: &Path,
    expectation: Expectation,
    run_failures: Vec<(String, String)>,
) -> Result<Verdict> {
    let committed = super::output::read_committed(output_dir)?;
    Ok(verdict::verdict_updates(oracle, &committed.updates, &committed.malformed, committed.files.len(), expectation, run_failures))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(extra: &str) -> Plan {
        let text = format!(
            "cluster: {{ engine: flink, taskmanagers: 3, slots: 1 }}\njob: {{ parallelism: 2, checkpoint_interval: 500ms }}\ninput: {{ generate: {{ lines: 10 }}, rate: 100 }}\n{extra}"
        );
        crate::scenario::parse_str(&text, Path::new("t.yaml"), None).unwrap()
    }

    #[test]
    fn settings_map_the_plan_and_keep_flinks_heartbeats_unless_given() {
        let p = plan("flink:\n  config:\n    taskmanager.memory.managed.size: 16m\n    pipeline.object-reuse: true\n");
        let s = settings(&p, "/data/input/input.txt");
        assert_eq!((s.parallelism, s.slots, s.rate), (2, 1, 100));
        assert_eq!(s.checkpoint_interval, std::time::Duration::from_millis(500));
        assert_eq!(s.heartbeat_timeout, std::time::Duration::from_secs(50), "Flink's default");
        assert_eq!(s.extra, vec![("taskmanager.memory.managed.size".into(), "16m".into()), ("pipeline.object-reuse".into(), "true".into())]);
        let yaml = s.config_yaml();
        assert!(yaml.contains("taskmanager.memory.managed.size: 16m\n") && !yaml.contains("managed.size: 32m"), "{yaml}");
        assert_eq!(busy_taskmanagers(&p), 2);
        let with_hb = crate::scenario::parse_str(
            "cluster: { engine: flink, taskmanagers: 3, slots: 1 }\njob: { parallelism: 2, heartbeat: { interval: 1s, timeout: 5s } }\ninput: { generate: { lines: 10 } }\n",
            Path::new("t.yaml"),
            None,
        )
        .unwrap();
        assert_eq!(settings(&with_hb, "x").heartbeat_timeout, std::time::Duration::from_secs(5));
    }

    #[test]
    fn generated_input_is_written_line_by_line() {
        let p = plan("");
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(write_input(&p, dir.path()).unwrap(), "/data/input/input.txt");
        let text = std::fs::read_to_string(dir.path().join(INPUT)).unwrap();
        assert_eq!(text.lines().count(), 10);
    }
}
