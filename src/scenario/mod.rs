//! Scenarios: a YAML file (DESIGN.md section 5) -> a validated, resolved [`Plan`], with
//! every error found before anything starts and reported as `file:line:column: path: what
//! is wrong: what was expected` ([`ScenarioError`], exit code 2).
//!
//! # How it works
//! The text is deserialized by serde_yaml into raw structs that deny unknown keys and check
//! each value's syntax (durations, sizes, percentages, signals, picks), so serde_yaml places
//! those errors itself. The raw scenario is then validated as a whole (parallelism against
//! slots, targets against the cluster, which fields each action takes); those errors are
//! placed with positions from a second, span-keeping parse (saphyr-parser), looked up by key
//! path. Then picks are resolved with the seeded RNG and the plan is complete.
//!
//! # Layout
//! `raw` (the YAML shapes) -> `validate` (the scenario as a whole) and `faults` (each
//! fault, picks, repeats), both placing errors through `locate`; `values` (small value
//! syntaxes), `pos` (positions), `plan` (the result), `timeline` (`chaos lint`'s text).
//!
//! # Reference (beyond DESIGN.md section 5)
//! - **Defaults**: `seed` 0; `cluster` 1 jobmanager, 3 taskmanagers, 2 slots;
//!   `job.checkpoint_interval` 1s, `delivery` exactly-once, `restart` exponential-delay
//!   200ms..5s; `input.rate` 0 (as fast as possible); `expect.output` exactly-once,
//!   `recovery_within` 20s, `timeout` 120s; `name` the file stem. `job.parallelism` and
//!   `input` are required.
//! - **Restart strategies** (Flink's): `{ strategy: none }`; `fixed-delay`: `attempts`
//!   (required), `delay` (1s); `failure-rate`: `max_failures` (required), `interval` (1m),
//!   `delay` (1s); `exponential-delay`: `initial` (200ms), `max` (5s), `multiplier` (2.0),
//!   `jitter` (0.1, a fraction), `reset_threshold` (1h), `attempts` (unbounded).
//! - **Adaptive checkpoint interval** (streamd only; Flink: an error at the `adaptive` key):
//!   `job.checkpoint_interval: { adaptive: { min: 200ms, max: 5s, target_recovery: 3s,
//!   mtbf: 30s } }`. `min` and `max` are required (`0 < min <= max`); `target_recovery`
//!   (none) bounds the expected replay after a failure, `interval / 2 + latency`; `mtbf` (1m)
//!   is the prior mean time between failures, worth 10 s of running at that rate. The jobmanager
//!   chooses `sqrt(2 · cost · MTBF)` as it runs (see `streamd::jobmanager::interval`).
//!   Checkpoint triggers and `chaos lint` take the interval to be `min`.
//! - **Task-local recovery** (streamd only): `job.local_recovery: true` (default `false`).
//!   Each taskmanager also keeps its tasks' latest snapshots in its node-local directory
//!   (on docker `/local` inside the container: it survives `kill`/`stop` + `start` and
//!   `restart`, not a re-created container); a restart puts each pipeline back on its
//!   previous taskmanager when that one is up with a free slot, and a task placed there
//!   restores from the local copy once its checkpoint id and checksum match, else from
//!   shared storage. The report lists every task's restore source and time.
//! - **Heartbeats** (optional): `job.heartbeat: { interval: 250ms, timeout: 2s }` (these are
//!   the defaults); a paused taskmanager is declared lost after `timeout`.
//! - **Input**: `generate: { lines, words_per_line (8), vocabulary (2000) }` is seeded by
//!   the scenario's seed; `file: text.txt` is relative to the scenario file, must exist, and
//!   is copied into the run directory as `input/<basename>`. `socket: { port: 9000 }` with
//!   either of them: the job reads a line server (`lines-1`, like `nc -l 9000`) and chaos
//!   feeds it that input at `rate`; the job spec then holds only the socket. streamd only
//!   (Flink: an error at `input.socket`); the port may not be the feed port (6125).
//! - **Resources**: `cluster.resources: { taskmanager-3: { cpus: 0.5, memory: 256m } }`,
//!   keyed by node name or alias; memory in docker's binary units (`512k`, `256m`, `1g`, or
//!   bytes), at least 6m.
//! - **Nodes**: `jobmanager-N` (alias `jmN`), `taskmanager-N` (`tmN`), `etcd-1` (exists
//!   when `jobmanagers > 1`), `lines-1` (with `input.socket`), and `leader`: the jobmanager
//!   leading when the fault fires.
//! - **Triggers**: `at: 4s` (since the job first reached RUNNING) or `at: { checkpoint: N }`
//!   (when checkpoint N has completed).
//! - **Actions** and the fields each takes (any other field is an error at its key):
//!   `kill` (`signal`, default SIGKILL; names like `SIGTERM` or `term`), `stop` (`grace`,
//!   default 2s: SIGTERM, then SIGKILL), `start`, `restart` (`grace`, 2s), `pause` (`for`),
//!   `unpause`, `netem` (`delay`, `jitter` (needs `delay`), `loss`, `duplicate`, `corrupt`
//!   as percentages like `5%`, `rate` like `1mbit`/`500kbit`/`1mbps`, `for`), `partition`
//!   (`groups: [[a], [b, c]]`, two or more groups, no node twice; `one_way: true` drops only
//!   traffic from the first group to the others; `for`), `corrupt` (streamd only: `what`
//!   required, one of `snapshot`, `metadata`, `staged`, `local` (needs a taskmanager);
//!   `how` `flip` (default) or `truncate`; see `crate::fault::corrupt`; no `for`: damage
//!   stays). A killed or stopped node stays down
//!   until a `start` fault; `for` is refused on them for that reason.
//! - **Targets**: a node name, an alias, `leader`, or `{ role: taskmanager|jobmanager,
//!   pick: one|all|N|P% }`. Picks are resolved when the plan is built, with ChaCha8 seeded by
//!   the seed (`--seed` overrides `seed:`), so one seed always gives one plan. A pick chooses
//!   among the nodes the action can apply to *at that point of the plan*: kill, stop,
//!   restart and pause pick running nodes; `start` picks nodes that an earlier fault took
//!   down; `unpause` paused ones; netem running or paused ones. `P%` rounds up (never zero).
//!   Checkpoint triggers are placed at N x checkpoint_interval for this bookkeeping.
//! - **Repeat** (for seeded random faults): `repeat: { every: 4s, count: 3 }` on a fault
//!   with a time trigger expands it into `count` occurrences (`at`, `at + every`, ...), each
//!   with its own pick. Random kills that keep the job able to run pair a repeated
//!   `kill` of `{ role: taskmanager, pick: one }` with a repeated `start` of
//!   `{ role: taskmanager, pick: all }` a little later (see `scenarios/random-kills.yaml`).
//! - **Checks of the whole plan**: parallelism at most taskmanagers x slots; targets exist;
//!   every fault before `expect.timeout`; `recovery_within` at most `timeout`; a pick must be
//!   satisfiable. Legal but suspicious plans (too few slots up after a fault) give
//!   [`Plan::warnings`], shown by `chaos lint`.

mod faults;
mod locate;
mod plan;
mod pos;
mod raw;
mod timeline;
mod validate;
pub mod values;

#[cfg(test)]
mod tests;

pub use faults::DEFAULT_GRACE;
pub use plan::{Action, ClusterPlan, Expectations, NetemParams, OutputExpectation, Plan, PlannedFault, Target, Trigger};
pub use timeline::NETEM_UNPROBED;
pub use values::{parse_rate, Pick};

use std::path::{Path, PathBuf};

/// An invalid scenario: where and what. Displayed as `file:line:column: message`; callers
/// map it to exit code 2.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}:{line}:{column}: {message}", file.display())]
pub struct ScenarioError {
    /// The scenario file, as given.
    pub file: PathBuf,
    /// 1-based.
    pub line: usize,
    /// 1-based, in characters.
    pub column: usize,
    /// `path: what is wrong: what was expected`, e.g.
    /// ``faults[1].target: unknown node `taskmanager-9` ...``.
    pub message: String,
}

/// Reads and validates a scenario file. `seed_override` (`--seed`) replaces `seed:`.
pub fn load(path: &Path, seed_override: Option<u64>) -> Result<Plan, ScenarioError> {
    load_on(path, seed_override, None)
}

/// [`load`], on `engine` instead of the file's `cluster.engine` (`--engine`). On streamd
/// a `flink` section is ignored, so one file can run on both engines.
pub fn load_on(path: &Path, seed_override: Option<u64>, engine: Option<crate::engine::Engine>) -> Result<Plan, ScenarioError> {
    let text = std::fs::read_to_string(path).map_err(|e| ScenarioError {
        file: path.to_path_buf(),
        line: 1,
        column: 1,
        message: format!("cannot read the scenario: {e}: expected a readable YAML file"),
    })?;
    parse_str_on(&text, path, seed_override, engine)
}

/// Validates scenario text; `file` names it in errors and anchors a relative `input.file`.
pub fn parse_str(text: &str, file: &Path, seed_override: Option<u64>) -> Result<Plan, ScenarioError> {
    parse_str_on(text, file, seed_override, None)
}

/// [`parse_str`] with an engine override (see [`load_on`]).
pub fn parse_str_on(
    text: &str,
    file: &Path,
    seed_override: Option<u64>,
    engine: Option<crate::engine::Engine>,
) -> Result<Plan, ScenarioError> {
    let parsed = pos::PosIndex::parse(text);
    if text.trim().is_empty() {
        return Err(ScenarioError {
            file: file.to_path_buf(),
            line: 1,
            column: 1,
            message: "empty scenario: expected a mapping with at least `job` and `input`".into(),
        });
    }
    let mut raw: raw::RawScenario = match serde_yaml::from_str(text) {
        Ok(raw) => raw,
        // When the text is not YAML at all, saphyr's syntax error is the one to show:
        // serde_yaml streams, so it may trip over a type error the broken syntax caused.
        Err(e) => {
            return Err(match &parsed {
                Err((pos, info)) => ScenarioError {
                    file: file.to_path_buf(),
                    line: pos.line,
                    column: pos.column,
                    message: format!("malformed YAML: {info}: expected valid YAML (check indentation, quotes and brackets)"),
                },
                Ok(idx) => locate::from_serde(file, &e, idx),
            })
        }
    };
    // serde_yaml accepted it, so a saphyr failure here is a disagreement between parsers
    // on some corner of YAML: carry on with positions at the file start rather than fail.
    let idx = parsed.unwrap_or_default();
    if let Some(engine) = engine {
        let cluster = raw.cluster.get_or_insert_with(raw::RawCluster::default);
        cluster.engine = Some(engine);
        if engine != crate::engine::Engine::Flink {
            raw.flink = None;
        }
    }
    validate::plan(raw, &locate::Ctx { file, idx }, seed_override)
}

/// The canonical name of the node `name` (a name or alias) if the plan's cluster has it:
/// `tm2` -> `taskmanager-2`. `leader` is not a node name: see [`resolve_target`].
pub fn resolve_node(name: &str, plan: &Plan) -> Option<String> {
    crate::nodes::canonical(name).filter(|c| plan.cluster.has_node(c))
}

/// As [`resolve_node`], but also accepts `leader` (resolved when used).
pub fn resolve_target(name: &str, plan: &Plan) -> Option<Target> {
    if crate::nodes::is_leader(name) {
        return Some(Target::Leader);
    }
    resolve_node(name, plan).map(Target::Node)
}
