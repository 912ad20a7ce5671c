//! Scenario parsing and validation: one test per error class (position and message), and
//! the plan's defaults, picks, repeats and outputs.

use super::*;
use crate::runtime::Role;
use std::time::Duration;
use streamd_contract::spec::{Delivery, RestartStrategy};

const FILE: &str = "scenarios/x.yaml";

/// A valid scenario to edit: 1 JM, 3 TMs x 2 slots, parallelism 4.
const BASE: &str = "\
name: base
seed: 7
cluster:
  taskmanagers: 3
  slots: 2
job:
  parallelism: 4
input:
  generate: { lines: 1000 }
faults:
  - at: 4s
    action: kill
    target: taskmanager-2
";

fn ok(text: &str) -> Plan {
    match parse_str(text, Path::new(FILE), None) {
        Ok(p) => p,
        Err(e) => panic!("expected a valid scenario, got {e}"),
    }
}

fn err(text: &str) -> ScenarioError {
    match parse_str(text, Path::new(FILE), None) {
        Ok(p) => panic!("expected an error, got a plan: {p:#?}"),
        Err(e) => e,
    }
}

/// Asserts position and message fragments.
fn check(e: &ScenarioError, line: usize, column: usize, parts: &[&str]) {
    assert_eq!((e.line, e.column), (line, column), "position of: {e}");
    for p in parts {
        assert!(e.message.contains(p), "`{p}` not in: {e}");
    }
}

#[test]
fn defaults_fill_what_is_absent() {
    let p = ok("job: { parallelism: 2 }\ninput: { generate: { lines: 10 } }\n");
    assert_eq!(p.name, "x");
    assert_eq!(p.seed, 0);
    assert_eq!((p.cluster.jobmanagers, p.cluster.taskmanagers, p.cluster.slots), (1, 3, 2));
    assert_eq!(p.job.job_id, "wordcount");
    assert_eq!(p.job.checkpoint_interval, streamd_contract::spec::CheckpointInterval::Fixed(Duration::from_secs(1)));
    assert_eq!(p.job.delivery, Delivery::ExactlyOnce);
    assert_eq!(p.job.restart, RestartStrategy::default());
    assert_eq!(p.job.input.rate, 0);
    let g = p.job.input.generate.as_ref().unwrap();
    assert_eq!((g.lines, g.words_per_line, g.vocabulary, g.seed), (10, 8, 2000, 0));
    assert_eq!(p.expect.output, OutputExpectation::ExactlyOnce);
    assert_eq!(p.expect.recovery_within, Duration::from_secs(20));
    assert_eq!(p.expect.timeout, Duration::from_secs(120));
    assert!(p.faults.is_empty());
}

#[test]
fn the_base_scenario_plans_one_kill() {
    let p = ok(BASE);
    assert_eq!(p.faults.len(), 1);
    let f = &p.faults[0];
    assert_eq!(f.trigger, Trigger::At(Duration::from_secs(4)));
    assert_eq!(f.action, Action::Kill { signal: crate::signal::Signal::KILL, lose_unsynced: false });
    assert_eq!(f.targets, vec![Target::Node("taskmanager-2".into())]);
    assert_eq!((f.index, f.line, f.undo_after), (0, 11, None));
}

#[test]
fn display_is_file_line_column_message() {
    let e = err(&BASE.replace("target: taskmanager-2", "target: taskmanager-9"));
    assert_eq!(
        e.to_string(),
        "scenarios/x.yaml:13:13: faults[0].target: unknown node `taskmanager-9` (`taskmanager-9`): the cluster has 3 \
         taskmanagers: expected one of jobmanager-1, taskmanager-1..3, or an alias (tm1, jm1), `leader`, or { role, pick }"
    );
}

#[test]
fn unknown_key_at_top_level() {
    let e = err(&format!("{BASE}faultz: []\n"));
    check(&e, 14, 1, &["unknown field `faultz`", "expected one of", "`faults`"]);
}

#[test]
fn unknown_key_in_a_fault() {
    let e = err(&BASE.replace("    target: taskmanager-2\n", "    target: taskmanager-2\n    signl: SIGTERM\n"));
    check(&e, 14, 5, &["faults[0]: unknown field `signl`", "expected one of", "`signal`"]);
}

#[test]
fn unknown_key_in_a_pick_target() {
    let e = err(&BASE.replace("target: taskmanager-2", "target: { role: taskmanager, pik: one }"));
    check(&e, 13, 34, &["faults[0].target: unknown field `pik`, expected `role` or `pick`"]);
}

#[test]
fn bad_duration() {
    let e = err(&BASE.replace("at: 4s", "at: 4 parsecs"));
    check(&e, 11, 9, &["faults[0].at: invalid duration `4 parsecs`", "expected one of ms, s, m, h"]);
    let e = err(&BASE.replace("at: 4s", "at: 4"));
    check(&e, 11, 9, &["invalid duration `4`", "e.g. `4s`"]);
    let e = err(&BASE.replace("  parallelism: 4\n", "  parallelism: 4\n  checkpoint_interval: soon\n"));
    check(&e, 8, 24, &["job.checkpoint_interval: invalid duration `soon`"]);
}

#[test]
fn wrong_type() {
    let e = err(&BASE.replace("parallelism: 4", "parallelism: four"));
    check(&e, 7, 16, &["job.parallelism: invalid type: string \"four\", expected a whole number (0 or more)"]);
}

#[test]
fn unknown_node() {
    let e = err(&BASE.replace("target: taskmanager-2", "target: worker-2"));
    check(&e, 13, 13, &["faults[0].target: unknown node `worker-2`: expected one of jobmanager-1, taskmanager-1..3"]);
}

#[test]
fn fault_on_a_node_the_cluster_does_not_have() {
    let e = err(&BASE.replace("target: taskmanager-2", "target: tm5"));
    check(&e, 13, 13, &["unknown node `tm5` (`taskmanager-5`): the cluster has 3 taskmanagers", "expected one of"]);
    // etcd-1 exists only with HA.
    let e = err(&BASE.replace("target: taskmanager-2", "target: etcd-1"));
    check(&e, 13, 13, &["etcd-1 exists only with jobmanagers > 1"]);
    let e = err(&BASE.replace("  taskmanagers: 3\n", "  taskmanagers: 3\n  resources:\n    tm4: { cpus: 1 }\n"));
    check(&e, 6, 5, &["cluster.resources.tm4: unknown node `tm4`"]);
}

#[test]
fn parallelism_above_slots() {
    let e = err(&BASE.replace("parallelism: 4", "parallelism: 7"));
    check(&e, 7, 16, &["job.parallelism: parallelism 7 is above the cluster's 6 slots (3 taskmanagers x 2 slots)", "expected at most 6"]);
}

#[test]
fn malformed_yaml() {
    let e = err("name: x\njob: { parallelism: 2\ninput: { generate: { lines: 10 } }\n");
    assert!(e.message.starts_with("malformed YAML: "), "{e}");
    assert!(e.message.contains("expected"), "{e}");
    assert!(e.line >= 2, "{e}");
    let e = err("name: x\njob: { parallelism: 2\ninput: { generate: { lines: 10 } }\n");
    check(&e, 3, 6, &["malformed YAML: while parsing a flow mapping, did not find expected ',' or '}'"]);
    let e = err("name: x\n  job: 1\n");
    check(&e, 2, 6, &["malformed YAML: mapping values are not allowed in this context"]);
    let e = err("job: { parallelism: 2 }\ninput: { generate: { lines: 10 } }\njob: { parallelism: 3 }\n");
    check(&e, 3, 1, &["duplicate field `job`", "expected each key once"]);
    let e = err("  \n");
    check(&e, 1, 1, &["empty scenario"]);
}

#[test]
fn bad_pick() {
    let e = err(&BASE.replace("target: taskmanager-2", "target: { role: taskmanager, pick: some }"));
    check(&e, 13, 40, &["faults[0].target.pick: invalid pick `some`", "expected `one`, `all`, a count like `2`, or a percentage like `50%`"]);
    let e = err(&BASE.replace("target: taskmanager-2", "target: { role: taskmanager, pick: 5 }"));
    check(&e, 13, 40, &["faults[0].target.pick: pick 5: the cluster has only 3 taskmanagers: expected at most 3"]);
    let e = err(&BASE.replace("target: taskmanager-2", "target: { role: etcd, pick: one }"));
    check(&e, 13, 21, &["faults[0].target.role: unknown variant `etcd`, expected `taskmanager` or `jobmanager`"]);
}

#[test]
fn pick_with_nothing_eligible() {
    // `start` picks among nodes that are down; none is at 2s.
    let e = err(&BASE.replace("  - at: 4s\n    action: kill\n    target: taskmanager-2\n", "  - at: 2s\n    action: start\n    target: { role: taskmanager, pick: one }\n"));
    check(&e, 13, 13, &["pick one: 0 taskmanager(s) down at 2s in this plan"]);
}

#[test]
fn for_on_kill() {
    let e = err(&BASE.replace("    target: taskmanager-2\n", "    target: taskmanager-2\n    for: 3s\n"));
    check(&e, 14, 5, &["faults[0].for: `for` does not apply to `kill`", "add a `start` fault"]);
}

#[test]
fn fields_of_other_actions() {
    let e = err(&BASE.replace("    target: taskmanager-2\n", "    target: taskmanager-2\n    grace: 3s\n"));
    check(&e, 14, 5, &["faults[0].grace: `grace` does not apply to `kill`: `kill` takes target, signal"]);
    let e = err(&BASE.replace("  parallelism: 4\n", "  parallelism: 4\n  restart: { strategy: exponential-delay, delay: 1s }\n"));
    check(&e, 8, 43, &["job.restart.delay: `delay` does not apply to strategy `exponential-delay`"]);
}

#[test]
fn missing_fields() {
    let e = err(&BASE.replace("    target: taskmanager-2\n", ""));
    check(&e, 11, 5, &["faults[0]: missing field `target` for `kill`", "expected a node name"]);
    let e = err(&BASE.replace("    action: kill\n", ""));
    check(&e, 11, 5, &["faults[0]: missing field `action`"]);
    let e = err(&BASE.replace("  parallelism: 4\n", "  delivery: exactly-once\n"));
    check(&e, 7, 3, &["job: missing field `parallelism`"]);
    let e = err("job: { parallelism: 1 }\n");
    check(&e, 1, 1, &["missing field `input`"]);
}

#[test]
fn percentages_out_of_range() {
    let e = err(&BASE.replace("    action: kill\n", "    action: netem\n    loss: 150%\n"));
    check(&e, 13, 11, &["faults[0].loss: percentage `150%` out of range", "0% to 100%"]);
    let e = err(&BASE.replace("    action: kill\n", "    action: netem\n    loss: 5\n"));
    check(&e, 13, 11, &["invalid percentage `5`", "like `5%`"]);
}

#[test]
fn memory_sizes() {
    let text = BASE.replace("  slots: 2\n", "  slots: 2\n  resources:\n    tm3: { cpus: 0.5, memory: 256 megs }\n");
    check(&err(&text), 7, 31, &["cluster.resources.tm3.memory: invalid memory size `256 megs`", "like `256m` or `1g`"]);
    let p = ok(&text.replace("256 megs", "256m"));
    let r = &p.cluster.resources["taskmanager-3"];
    assert_eq!((r.cpus, r.memory_bytes), (Some(0.5), Some(256 << 20)));
    let p = ok(&text.replace("256 megs", "1g"));
    assert_eq!(p.cluster.resources["taskmanager-3"].memory_bytes, Some(1 << 30));
}

#[test]
fn signals_are_checked_and_canonical() {
    let e = err(&BASE.replace("    target: taskmanager-2\n", "    target: taskmanager-2\n    signal: SIGBOOM\n"));
    check(&e, 14, 13, &["faults[0].signal: unknown signal `SIGBOOM`", "expected one of SIGHUP"]);
    // What passes here works on every runtime: SIGWINCH would not, and is refused here.
    let e = err(&BASE.replace("    target: taskmanager-2\n", "    target: taskmanager-2\n    signal: SIGWINCH\n"));
    check(&e, 14, 13, &["unknown signal `SIGWINCH`"]);
    let p = ok(&BASE.replace("    target: taskmanager-2\n", "    target: taskmanager-2\n    signal: term\n"));
    assert_eq!(p.faults[0].action, Action::Kill { signal: crate::signal::Signal::TERM, lose_unsynced: false });
}

#[test]
fn fault_after_the_timeout() {
    let e = err(&format!("{BASE}expect: {{ timeout: 3s, recovery_within: 1s }}\n"));
    check(&e, 11, 9, &["faults[0].at: fault at 4s is not before expect.timeout (3s)"]);
}

#[test]
fn input_file_is_resolved_against_the_scenario() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("words.txt"), "a b c\n").unwrap();
    let file = dir.path().join("s.yaml");
    let text = "job: { parallelism: 2 }\ninput:\n  file: words.txt\n  rate: 100\n";
    std::fs::write(&file, text).unwrap();
    let p = load(&file, None).unwrap();
    let f = p.job.input.file.as_ref().unwrap();
    assert_eq!((f.path.as_str(), f.follow), ("input/words.txt", false));
    assert_eq!(p.input_source.as_deref(), Some(std::fs::canonicalize(dir.path().join("words.txt")).unwrap().as_path()));
    assert_eq!(p.job.input.rate, 100);

    let e = parse_str(&text.replace("words.txt", "nope.txt"), &file, None).unwrap_err();
    check(&e, 3, 9, &["input.file: `nope.txt` not found", "relative to the scenario file"]);
    let e = parse_str("job: { parallelism: 2 }\ninput: { rate: 5 }\n", &file, None).unwrap_err();
    check(&e, 2, 8, &["input: missing input: expected `generate"]);
}

/// An input without words (its oracle is empty and would pass any
/// engine) and a line too long for a data frame are refused before anything starts.
#[test]
fn an_empty_input_file_and_an_overlong_line_are_refused_with_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("s.yaml");
    let text = "job: { parallelism: 2 }\ninput:\n  file: words.txt\n";
    for blank in ["", "\n\n", "  \t \n\u{a0}\n"] {
        std::fs::write(dir.path().join("words.txt"), blank).unwrap();
        let e = parse_str(text, &file, None).unwrap_err();
        check(&e, 3, 9, &["input.file: `words.txt` has no words", "an empty input tests nothing"]);
    }
    let long = "x".repeat(super::validate::MAX_LINE_BYTES + 1);
    std::fs::write(dir.path().join("words.txt"), format!("a b\n#end c\n{long}\nd\n")).unwrap();
    let e = parse_str(text, &file, None).unwrap_err();
    check(&e, 3, 9, &["input.file: `words.txt`:3: a line of 8388609 bytes"]);
    // `#end` and long (but not over-long) tokens are fine.
    std::fs::write(dir.path().join("words.txt"), format!("#end a\n{}\n", "y".repeat(100_000))).unwrap();
    assert!(parse_str(text, &file, None).is_ok());
}

#[test]
fn seeds_drive_picks_reproducibly() {
    let text = BASE.replace("target: taskmanager-2", "target: { role: taskmanager, pick: one }\n    repeat: { every: 2s, count: 2 }")
        + "  - at: 5s\n    action: start\n    target: { role: taskmanager, pick: all }\n    repeat: { every: 2s, count: 2 }\n";
    let pick_of = |seed: u64| {
        let p = parse_str(&text, Path::new(FILE), Some(seed)).unwrap();
        assert_eq!(p.seed, seed);
        assert_eq!(p.job.input.generate.as_ref().unwrap().seed, seed);
        assert_eq!(p.faults.len(), 4);
        // Each start brings back exactly the node the kill before it took down.
        assert_eq!(p.faults[0].targets, p.faults[2].targets, "seed {seed}: {:#?}", p.faults);
        assert_eq!(p.faults[1].targets, p.faults[3].targets, "seed {seed}: {:#?}", p.faults);
        p.faults.iter().map(|f| f.targets.clone()).collect::<Vec<_>>()
    };
    for seed in 0..5 {
        assert_eq!(pick_of(seed), pick_of(seed), "same seed, same plan");
    }
    let distinct: std::collections::HashSet<_> = (0..20).map(pick_of).collect();
    assert!(distinct.len() > 1, "20 seeds all gave the same picks");
    // Without an override, `seed:` applies.
    assert_eq!(ok(&text).seed, 7);
}

#[test]
fn repeat_expands_in_place() {
    let p = ok(&BASE.replace("    target: taskmanager-2\n", "    target: { role: taskmanager, pick: one }\n    repeat: { every: 3s, count: 3 }\n")
        .replace("parallelism: 4", "parallelism: 1"));
    let times: Vec<_> = p.faults.iter().map(|f| (f.repetition, f.trigger)).collect();
    assert_eq!(
        times,
        vec![
            (0, Trigger::At(Duration::from_secs(4))),
            (1, Trigger::At(Duration::from_secs(7))),
            (2, Trigger::At(Duration::from_secs(10)))
        ]
    );
    // Three kills of `pick: one` never pick a node already down.
    let mut all: Vec<_> = p.faults.iter().flat_map(|f| f.targets.clone()).collect();
    all.sort();
    all.dedup();
    assert_eq!(all.len(), 3);
    let e = err(&BASE.replace("at: 4s", "at: { checkpoint: 2 }").replace("    target: taskmanager-2\n", "    target: tm1\n    repeat: { every: 1s, count: 2 }\n"));
    check(&e, 14, 5, &["`repeat` needs a time trigger"]);
}

#[test]
fn actions_with_parameters() {
    let text = format!(
        "{BASE}  - at: {{ checkpoint: 5 }}\n    action: pause\n    target: tm1\n    for: 3s\n\
         \x20 - at: 12s\n    action: netem\n    target: taskmanager-1\n    delay: 100ms\n    jitter: 20ms\n    loss: 5%\n    rate: 1mbit\n    for: 10s\n\
         \x20 - at: 20s\n    action: partition\n    groups: [[taskmanager-1], [jobmanager-1, tm2, tm3]]\n    one_way: true\n    for: 5s\n\
         \x20 - at: 30s\n    action: restart\n    target: leader\n"
    );
    let p = ok(&text);
    assert_eq!(p.faults[1].trigger, Trigger::Checkpoint(5));
    assert_eq!(p.faults[1].undo_after, Some(Duration::from_secs(3)));
    let Action::Netem(n) = &p.faults[2].action else { panic!("{:?}", p.faults[2]) };
    assert_eq!(
        (n.delay, n.jitter, n.loss, n.rate, n.duplicate),
        (Some(Duration::from_millis(100)), Some(Duration::from_millis(20)), Some(5.0), Some(1_000_000), None)
    );
    let Action::Partition { groups, one_way } = &p.faults[3].action else { panic!("{:?}", p.faults[3]) };
    assert!(*one_way);
    assert_eq!(groups[1], vec![Target::Node("jobmanager-1".into()), Target::Node("taskmanager-2".into()), Target::Node("taskmanager-3".into())]);
    assert_eq!(p.faults[3].targets.len(), 4);
    assert_eq!(p.faults[4].action, Action::Restart { grace: DEFAULT_GRACE, lose_unsynced: false });
    assert_eq!(p.faults[4].targets, vec![Target::Leader]);

    let tl = p.timeline();
    assert!(tl.contains("checkpoint 5 (~5s)"), "{tl}");
    assert!(tl.contains("unpause 3s later"), "{tl}");
    assert!(tl.contains(&format!("delay 100ms, jitter 20ms, loss 5%, rate 1mbit; via {NETEM_UNPROBED}")), "{tl}");
    assert!(tl.contains("[taskmanager-1] | [jobmanager-1, taskmanager-2, taskmanager-3]"), "{tl}");
    assert!(tl.contains("heal at 25s"), "{tl}");
    let tl = p.timeline_with(|_| "tc netem".into());
    assert!(tl.contains("; via tc netem"), "{tl}");

    // Partition errors point into the groups.
    let e = err(&text.replace("[jobmanager-1, tm2, tm3]", "[jobmanager-1, tm1]"));
    check(&e, 28, 46, &["faults[3].groups[1][1]: `taskmanager-1` is already in groups[0][0]"]);
    let e = err(&text.replace("    jitter: 20ms\n", "    jitter: 20ms\n    signal: SIGKILL\n"));
    check(&e, 23, 5, &["faults[2].signal: `signal` does not apply to `netem`"]);
}

#[test]
fn warns_when_slots_run_short() {
    let p = ok(&format!("{BASE}  - at: 6s\n    action: kill\n    target: tm3\n"));
    assert_eq!(p.warnings.len(), 1, "{:?}", p.warnings);
    assert!(p.warnings[0].contains("only 2 slots are up for parallelism 4"), "{:?}", p.warnings);
    assert!(ok(BASE).warnings.is_empty());
}

#[test]
fn cluster_def_lists_every_node() {
    let text = BASE.replace("cluster:\n", "cluster:\n  jobmanagers: 2\n  resources: { taskmanager-3: { cpus: 0.5, memory: 256m } }\n");
    let p = ok(&text);
    let def = p.cluster_def("c1", "/tmp/run".into());
    let names: Vec<_> = def.nodes.iter().map(|n| (n.name.as_str(), n.role, n.slots)).collect();
    assert_eq!(
        names,
        vec![
            ("etcd-1", Role::Etcd, 0),
            ("jobmanager-1", Role::Jobmanager, 0),
            ("jobmanager-2", Role::Jobmanager, 0),
            ("taskmanager-1", Role::Taskmanager, 2),
            ("taskmanager-2", Role::Taskmanager, 2),
            ("taskmanager-3", Role::Taskmanager, 2)
        ]
    );
    assert_eq!(def.nodes[5].resources.memory_bytes, Some(256 << 20));
    assert_eq!(def.nodes[4].resources, crate::runtime::Resources::default());
    assert_eq!((def.id.as_str(), def.run_dir.as_path()), ("c1", Path::new("/tmp/run")));
    // HA makes etcd-1 a valid target.
    assert!(ok(&text.replace("target: taskmanager-2", "target: etcd-1")).faults[0].targets == vec![Target::Node("etcd-1".into())]);
}

#[test]
fn names_and_aliases_resolve() {
    let p = ok(BASE);
    assert_eq!(resolve_node("tm2", &p).as_deref(), Some("taskmanager-2"));
    assert_eq!(resolve_node("jobmanager-1", &p).as_deref(), Some("jobmanager-1"));
    assert_eq!(resolve_node("jm1", &p).as_deref(), Some("jobmanager-1"));
    assert_eq!(resolve_node("tm4", &p), None);
    assert_eq!(resolve_node("etcd-1", &p), None);
    assert_eq!(resolve_target("leader", &p), Some(Target::Leader));
}

#[test]
fn plan_serializes_for_the_report() {
    let p = ok(&BASE.replace("at: 4s", "at: 4500ms"));
    let v = serde_json::to_value(&p).unwrap();
    assert_eq!(v["faults"][0]["targets"][0], "taskmanager-2");
    assert_eq!(v["faults"][0]["trigger"]["at"], "4500ms");
    assert_eq!(v["faults"][0]["action"]["kind"], "kill");
    assert_eq!(v["expect"]["output"], "exactly-once");
    assert_eq!(v["job"]["job_id"], "wordcount");
}

#[test]
fn node_aliases_follow_the_one_rule_of_the_command_line() {
    for alias in ["TM2", "tm-2", "taskmanager2", "Taskmanager-2"] {
        let p = ok(&BASE.replace("    target: taskmanager-2\n", &format!("    target: {alias}\n")));
        assert_eq!(p.faults[0].targets, vec![Target::Node("taskmanager-2".into())], "{alias}");
    }
}

#[test]
fn engine_flink_with_its_config_and_coordinator() {
    let flink = BASE.replace("cluster:\n", "cluster:\n  engine: flink\n  jobmanagers: 2\n")
        + "flink:\n  config:\n    pipeline.object-reuse: true\n    taskmanager.memory.managed.size: 16m\n";
    let p = ok(&flink.replace("target: taskmanager-2", "target: zookeeper-1"));
    assert_eq!(p.cluster.engine, crate::engine::Engine::Flink);
    assert_eq!(p.cluster.node_names()[0], "zookeeper-1");
    let f = p.flink.expect("flink plan");
    assert_eq!(f.config, vec![("pipeline.object-reuse".to_string(), "true".to_string()), ("taskmanager.memory.managed.size".into(), "16m".into())]);
    assert_eq!(f.heartbeat, None, "no job.heartbeat: Flink keeps its defaults");
    // etcd-1 is streamd's coordinator, not Flink's.
    let e = err(&flink.replace("target: taskmanager-2", "target: etcd-1"));
    check(&e, 15, 13, &["etcd-1 exists only with jobmanagers > 1 on streamd"]);
    // A flink section on streamd would be ignored silently: refused, at its key.
    let e = err(&format!("{BASE}flink:\n  config: {{ a.b: 1 }}\n"));
    check(&e, 14, 1, &["`flink` applies only with `cluster.engine: flink`"]);
    // Unknown engine.
    let e = err(&BASE.replace("cluster:\n", "cluster:\n  engine: spark\n"));
    assert!(e.message.contains("spark") && e.message.contains("streamd") && e.message.contains("flink"), "{e}");
    // --engine overrides the file; on streamd the flink section is dropped.
    let p = parse_str_on(&flink, Path::new(FILE), None, Some(crate::engine::Engine::Streamd)).unwrap();
    assert_eq!((p.cluster.engine, p.flink.is_none(), p.cluster.node_names()[0].as_str()), (crate::engine::Engine::Streamd, true, "etcd-1"));
}

#[test]
fn a_windowed_job_and_its_errors_at_their_keys() {
    let p = ok(&BASE.replace("  parallelism: 4\n", "  kind: window-wordcount\n  window: 5s\n  parallelism: 4\n")
        .replace("  generate: { lines: 1000 }\n", "  generate: { lines: 1000 }\n  event_time_per_line: 2ms\n"));
    assert_eq!(p.job.window_clock(), Some(streamd_contract::window::WindowClock { width_ms: 5000, per_line_ms: 2 }));
    // No window.
    let e = err(&BASE.replace("  parallelism: 4\n", "  kind: window-wordcount\n  parallelism: 4\n"));
    check(&e, 7, 3, &["job.kind: a window-wordcount job needs its window width", "`window: 5s`"]);
    // A window on a running count.
    let e = err(&BASE.replace("  parallelism: 4\n", "  window: 5s\n  parallelism: 4\n"));
    check(&e, 7, 3, &["job.window: `window` applies only to `kind: window-wordcount`"]);
    // Not whole milliseconds.
    let e = err(&BASE.replace("  parallelism: 4\n", "  kind: window-wordcount\n  window: 0.5ms\n  parallelism: 4\n"));
    check(&e, 8, 11, &["job.window: expected a positive whole number of milliseconds"]);
    let e = err(&BASE.replace("  generate: { lines: 1000 }\n", "  generate: { lines: 1000 }\n  event_time_per_line: 0ms\n"));
    check(&e, 10, 24, &["input.event_time_per_line: expected a positive whole number of milliseconds"]);
    // An unknown kind names the known ones.
    let e = err(&BASE.replace("  parallelism: 4\n", "  kind: sessions\n  parallelism: 4\n"));
    check(&e, 7, 9, &["job.kind: unknown variant `sessions`", "`wordcount`", "`window-wordcount`"]);
    // Flink runs the running count only.
    let e = err(&BASE.replace("  slots: 2\n", "  slots: 2\n  engine: flink\n").replace("  parallelism: 4\n", "  kind: window-wordcount\n  window: 5s\n  parallelism: 4\n"));
    check(&e, 8, 9, &["job.kind: window-wordcount runs on streamd only"]);
}

#[test]
fn local_recovery_is_off_by_default_and_a_streamd_option() {
    assert!(!ok(BASE).job.local_recovery);
    let p = ok(&BASE.replace("  parallelism: 4\n", "  parallelism: 4\n  local_recovery: true\n"));
    assert!(p.job.local_recovery);
    // It reaches the engine's job spec.
    assert!(serde_yaml::to_string(&p.job).unwrap().contains("local_recovery: true"));
    let e = err(&BASE.replace("  parallelism: 4\n", "  parallelism: 4\n  local_recovery: yes please\n"));
    check(&e, 8, 19, &["job.local_recovery", "expected true or false"]);
    let e = err(&BASE.replace("  slots: 2\n", "  slots: 2\n  engine: flink\n").replace("  parallelism: 4\n", "  parallelism: 4\n  local_recovery: true\n"));
    check(&e, 9, 19, &["job.local_recovery: task-local recovery is a streamd option here"]);
}

/// `input.socket`: the engine reads the line server (`lines-1`, a node faults can target);
/// `generate`/`file` is what chaos feeds it, at `rate`.
#[test]
fn a_socket_input_adds_the_line_server_and_feeds_the_input() {
    let text = BASE.replace("  generate: { lines: 1000 }\n", "  socket: { port: 9000 }\n  generate: { lines: 1000 }\n  rate: 500\n")
        + "  - at: 6s\n    action: pause\n    target: lines1\n    for: 1s\n"
        + "expect: { output: at-most-once }\n";
    let p = ok(&text);
    let socket = p.job.input.socket.as_ref().expect("the job reads the socket");
    assert_eq!((socket.host.as_str(), socket.port), ("lines-1", 9000));
    assert!(p.job.input.generate.is_none() && p.job.input.file.is_none(), "the engine's spec has only the socket");
    assert_eq!(p.job.input.rate, 0, "the source is not paced: the feed is");
    let feed = p.feed.as_ref().expect("chaos feeds the generated input");
    assert_eq!((feed.generate.as_ref().map(|g| g.lines), feed.rate), (Some(1000), 500));
    assert_eq!(p.expect.output, OutputExpectation::AtMostOnce);
    assert_eq!(p.faults[1].targets, vec![Target::Node("lines-1".into())]);
    let def = p.cluster_def("c", "/tmp/r".into());
    assert!(def.nodes.iter().any(|n| n.name == "lines-1" && n.role == Role::Lines));
    assert!(p.timeline().contains("socket lines-1:9000"));
    // Without a socket there is no line server to target.
    check(&err(&BASE.replace("target: taskmanager-2", "target: lines-1")), 13, 13, &["lines-1"]);
}

#[test]
fn socket_errors_are_placed_at_their_key() {
    let with = |socket: &str| BASE.replace("  generate: { lines: 1000 }\n", &format!("  socket: {socket}\n  generate: {{ lines: 1000 }}\n"));
    check(&err(&with("{ port: 0 }")), 9, 19, &["input.socket.port", "expected 1 to 65535"]);
    check(&err(&with("{ port: 6125 }")), 9, 19, &["feed port"]);
    check(&err(&with("{ port: 70000 }")), 9, 19, &["70000"]);
    check(&err(&with("{ prot: 9000 }")), 9, 13, &["prot"]);
    let alone = BASE.replace("  generate: { lines: 1000 }\n", "  socket: { port: 9000 }\n");
    check(&err(&alone), 9, 3, &["missing input", "what chaos feeds"]);
    let flink = with("{ port: 9000 }").replace("  slots: 2\n", "  slots: 2\n  engine: flink\n");
    check(&err(&flink), 10, 3, &["input.socket", "flink engine has no socket source"]);
}

#[test]
fn an_adaptive_interval_is_checked_at_its_keys() {
    let with = |v: &str| BASE.replace("  parallelism: 4\n", &format!("  parallelism: 4\n  checkpoint_interval: {v}\n"));
    let p = ok(&with("{ adaptive: { min: 200ms, max: 5s, target_recovery: 3s } }"));
    let a = p.job.checkpoint_interval.adaptive().expect("adaptive");
    assert_eq!((a.min, a.max, a.target_recovery), (Duration::from_millis(200), Duration::from_secs(5), Some(Duration::from_secs(3))));
    assert_eq!(a.mtbf, streamd_contract::spec::default_prior_mtbf());
    let e = err(&with("adaptive"));
    check(&e, 8, 24, &["job.checkpoint_interval: `adaptive` needs its bounds", "{ adaptive: { min: 200ms, max: 5s } }"]);
    let e = err(&with("{ adaptive: { min: 2s, max: 1s } }"));
    check(&e, 8, 52, &["job.checkpoint_interval.adaptive.max: 1s is below min 2s"]);
    let e = err(&with("{ adaptive: { min: 0, max: 1s } }"));
    check(&e, 8, 43, &["job.checkpoint_interval.adaptive.min: expected a duration above 0"]);
    let e = err(&with("{ adaptive: { min: 1s, max: 2s, mtbf: 0 } }"));
    check(&e, 8, 62, &["job.checkpoint_interval.adaptive.mtbf: expected a duration above 0"]);
    let e = err(&with("{ adaptive: { min: 1s, max: 2s, target: 3s } }"));
    check(&e, 8, 56, &["unknown field `target`", "target_recovery"]);
    let e = err(&with("{ adaptive: { min: 1s } }"));
    check(&e, 8, 36, &["missing field `max`"]);
    let e = err(&with("{ adapt: { min: 1s, max: 2s } }"));
    check(&e, 8, 24, &["unknown field `adapt`", "adaptive"]);
    // Flink checkpoints at one interval for the job's life.
    let e = err(&with("{ adaptive: { min: 1s, max: 2s } }").replace("cluster:\n", "cluster:\n  engine: flink\n"));
    assert!(e.message.contains("job.checkpoint_interval.adaptive: an adaptive interval runs on streamd only"), "{e}");
}

#[test]
fn disk_faults_are_checked_where_they_are_written() {
    let disk = |body: &str| format!("{BASE}  - at: 6s\n    action: disk\n    target: tm1\n{body}");
    let p = ok(&disk("    error: EIO\n    probability: 10%\n    ops: [fsync]\n    path: /data/checkpoints/\n    for: 5s\n"));
    let Action::Disk(d) = &p.faults[1].action else { panic!("{:?}", p.faults[1]) };
    assert_eq!(d.kind, crate::diskfault::DiskKind::Error { errno: crate::diskfault::Errno::Eio, probability: 0.1 });
    assert_eq!((d.ops.as_slice(), d.path.as_str()), (&[crate::diskfault::Op::Fsync][..], "checkpoints"));
    let tl = p.timeline();
    assert!(tl.contains("EIO with probability 10% on fsync under /data/checkpoints; via the FUSE passthrough"), "{tl}");
    let p = ok(&disk("    full_after: 64k\n"));
    let Action::Disk(d) = &p.faults[1].action else { panic!() };
    assert_eq!(d.kind, crate::diskfault::DiskKind::FullAfter { bytes: 65536 });

    check(&err(&disk("    for: 5s\n")), 14, 5, &["disk without a kind: expected one of `delay`, `error` or `full_after`"]);
    check(&err(&disk("    delay: 5ms\n    error: EIO\n")), 18, 5, &["exactly one of"]);
    check(&err(&disk("    error: EIOO\n")), 17, 12, &["unknown error `EIOO`: expected one of EIO, ENOSPC, EROFS"]);
    check(&err(&disk("    delay: 5ms\n    ops: [write, sync]\n")), 18, 18, &["faults[1].ops[1]: unknown operation `sync`: expected one of open, read, write, fsync, rename"]);
    check(&err(&disk("    full_after: lots\n")), 17, 17, &["invalid size `lots`"]);
    check(&err(&disk("    full_after: 1k\n    ops: [fsync]\n")), 18, 10, &["full_after acts on writes only"]);
    check(&err(&disk("    delay: 5ms\n    path: ../etc\n")), 18, 11, &["leaves /data"]);
    check(&err(&disk("    delay: 5ms\n    path: /data/input\n")), 18, 11, &["is the job's input, which is read beside the node's storage"]);
    check(&err(&disk("    probability: 5%\n    delay: 1ms\n")), 17, 5, &["probability without error"]);
    check(&err(&disk("    delay: 5ms\n    loss: 5%\n")), 18, 5, &["`loss` does not apply to `disk`"]);
}

#[test]
fn checkpoint_storage_models_remote_storage_through_the_passthrough() {
    let with = |body: &str| BASE.replace("  slots: 2\n", &format!("  slots: 2\n  checkpoint_storage: {body}\n"));
    let p = ok(&with("{ latency: 20ms, bandwidth: 100mbps }"));
    let m = p.cluster.checkpoint_storage.clone().expect("a model");
    assert_eq!((m.path.as_str(), m.latency, m.bandwidth), ("checkpoints", Duration::from_millis(20), 100_000_000));
    assert!(crate::diskfault::mount::plan_needs(&p), "the model needs every node's passthrough");
    let tl = p.timeline();
    assert!(tl.contains("checkpoint storage: remote-like, 20ms per operation, 100 MB/s under /data/checkpoints; via the FUSE passthrough"), "{tl}");
    assert_eq!(ok(&with("{ latency: 5ms }")).cluster.checkpoint_storage.unwrap().bandwidth, 0, "unlimited");
    assert!(!crate::diskfault::mount::plan_needs(&ok(BASE)), "no model, no disk faults: the plain bind mount");

    check(&err(&with("{}")), 6, 3, &["checkpoint_storage without a model: expected `latency`, `bandwidth` or both"]);
    check(&err(&with("{ latency: 20ms, bandwidth: fast }")), 6, 51, &["invalid rate `fast`"]);
    check(&err(&with("{ latency: 20ms, iops: 5 }")), 6, 40, &["unknown field `iops`"]);
    let flink = with("{ latency: 20ms }").replace("cluster:\n", "cluster:\n  engine: flink\n");
    check(&err(&flink), 7, 3, &["expected no `checkpoint_storage` with `cluster.engine: flink`"]);
}

#[test]
fn lose_unsynced_is_checked_where_it_is_written() {
    let fault = |body: &str| format!("{BASE}  - at: 6s\n{body}");
    let p = ok(&fault("    action: restart\n    target: tm1\n    lose_unsynced: true\n"));
    assert_eq!(p.faults[1].action, Action::Restart { grace: DEFAULT_GRACE, lose_unsynced: true });
    assert!(!p.faults[0].action.loses_unsynced());
    assert!(crate::diskfault::mount::plan_needs(&p), "a power loss needs the passthrough");
    assert!(crate::diskfault::mount::plan_loses_power(&p));
    assert!(!crate::diskfault::mount::plan_needs(&ok(BASE)), "a plain kill does not");
    let tl = p.timeline();
    assert!(tl.contains("grace 2s; while down power loss: writes not fsynced"), "{tl}");
    assert!(tl.contains("via the FUSE passthrough of /data (chaos-netd disk)"), "{tl}");
    let p = ok(&fault("    action: kill\n    target: tm1\n    lose_unsynced: true\n"));
    assert_eq!(p.faults[1].action, Action::Kill { signal: crate::signal::Signal::KILL, lose_unsynced: true });
    let p = ok(&fault("    action: stop\n    target: { role: taskmanager, pick: one }\n    lose_unsynced: false\n"));
    assert!(!p.faults[1].action.loses_unsynced());
    assert!(!crate::diskfault::mount::plan_needs(&p));

    check(
        &err(&fault("    action: pause\n    target: tm1\n    lose_unsynced: true\n")),
        17,
        5,
        &["faults[1].lose_unsynced", "`lose_unsynced` does not apply to `pause`: `pause` takes target, for"],
    );
    check(&err(&fault("    action: kill\n    target: tm1\n    lose_unsynced: yes please\n")), 17, 20, &["invalid type"]);
    let flink = fault("    action: kill\n    target: tm1\n    lose_unsynced: true\n").replace("cluster:\n", "cluster:\n  engine: flink\n");
    check(&err(&flink), 18, 5, &["`lose_unsynced` rolls back what a streamd node did not fsync", "expected `cluster.engine: streamd`"]);
    let ha = fault("    action: kill\n    target: etcd-1\n    lose_unsynced: true\n").replace("cluster:\n", "cluster:\n  jobmanagers: 2\n");
    check(&err(&ha), 17, 13, &["`etcd-1` has no passthrough of /data", "expected a jobmanager or a taskmanager"]);
}
