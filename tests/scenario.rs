//! Every scenario shipped in `scenarios/` is valid, and plans what its name promises.

use chaos::scenario::{self, Action, OutputExpectation, Target, Trigger};
use std::path::{Path, PathBuf};
use std::time::Duration;

fn scenarios_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios")
}

fn load(name: &str) -> scenario::Plan {
    let path = scenarios_dir().join(name);
    scenario::load(&path, None).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn every_shipped_scenario_is_valid() {
    let mut seen = 0;
    for entry in std::fs::read_dir(scenarios_dir()).expect("scenarios/ exists") {
        let path = entry.expect("readable dir entry").path();
        if path.extension().and_then(|e| e.to_str()) != Some("yaml") {
            continue;
        }
        let plan = scenario::load(&path, None).unwrap_or_else(|e| panic!("{e}"));
        assert!(!plan.description.is_empty(), "{}: add a description", path.display());
        assert_eq!(Some(plan.name.as_str()), path.file_stem().and_then(|s| s.to_str()), "{}: name differs from the file", path.display());
        // CI runs them all on 2 cores: keep each one short.
        assert!(plan.expect.timeout <= Duration::from_secs(90), "{}: timeout above 90s", path.display());
        if let (Some(g), rate) = (&plan.job.input.generate, plan.job.input.rate) {
            assert!(rate > 0 && g.lines / rate <= 15, "{}: input lasts more than 15 s", path.display());
        }
        // Waiting for the killed taskmanager is the point of these: every slot is needed,
        // so the restart puts every task back where its local copies are.
        let waits_on_purpose = ["kill-two-tms", "local-recovery-restart-tm", "local-copy-corrupt"];
        assert!(plan.warnings.is_empty() || waits_on_purpose.contains(&plan.name.as_str()), "{}: {:?}", path.display(), plan.warnings);
        assert!(!plan.timeline().is_empty());
        seen += 1;
    }
    assert!(seen >= 9, "expected at least the 9 basic lifecycle scenarios, found {seen}");
}

#[test]
fn kill_tm2_is_the_classic_flink_demo_a_taskmanager_killed() {
    let p = load("kill-tm2.yaml");
    assert_eq!((p.cluster.jobmanagers, p.cluster.taskmanagers, p.cluster.slots, p.job.parallelism), (1, 3, 2, 4));
    assert_eq!(p.faults.len(), 1);
    assert_eq!(p.faults[0].trigger, Trigger::At(Duration::from_secs(4)));
    assert_eq!(p.faults[0].action, Action::Kill { signal: chaos::signal::Signal::KILL, lose_unsynced: false });
    assert_eq!(p.faults[0].targets, vec![Target::Node("taskmanager-2".into())]);
}

#[test]
fn pause_outlasts_the_heartbeat_timeout() {
    let p = load("pause-tm.yaml");
    let f = &p.faults[0];
    assert_eq!(f.action, Action::Pause);
    assert!(f.undo_after.expect("pause has `for`") > p.job.heartbeat.timeout);
}

#[test]
fn at_least_once_caught_expects_what_it_cannot_deliver() {
    let p = load("at-least-once-caught.yaml");
    assert_eq!(p.job.delivery, streamd_contract::spec::Delivery::AtLeastOnce);
    assert_eq!(p.expect.output, OutputExpectation::ExactlyOnce);
    assert!(matches!(p.faults[0].action, Action::Kill { .. }));
}

#[test]
fn heterogeneous_limits_one_taskmanager() {
    let p = load("heterogeneous.yaml");
    let def = p.cluster_def("t", PathBuf::from("/tmp/x"));
    let tm3 = def.nodes.iter().find(|n| n.name == "taskmanager-3").expect("taskmanager-3");
    assert_eq!((tm3.resources.cpus, tm3.resources.memory_bytes), (Some(0.5), Some(256 << 20)));
}

#[test]
fn random_kills_depend_on_the_seed_only() {
    let path = scenarios_dir().join("random-kills.yaml");
    let kills = |seed| {
        let p = scenario::load(&path, Some(seed)).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(p.faults.len(), 6);
        p.faults.iter().filter(|f| matches!(f.action, Action::Kill { .. })).map(|f| f.targets.clone()).collect::<Vec<_>>()
    };
    assert_eq!(kills(1), kills(1));
    let distinct: std::collections::HashSet<_> = (0..10).map(kills).collect();
    assert!(distinct.len() > 1, "10 seeds gave one sequence");
}

#[test]
fn load_names_a_missing_file() {
    let e = scenario::load(Path::new("scenarios/does-not-exist.yaml"), None).unwrap_err();
    assert_eq!(e.file, Path::new("scenarios/does-not-exist.yaml"));
    assert!(e.message.contains("cannot read the scenario"), "{e}");
}
