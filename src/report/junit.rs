//! JUnit XML for CI: one test suite `chaos`, one test case per scenario run. A failed run
//! is a `<failure>` whose message names the failed checks and the first lost and
//! over-counted words; the terminal summary goes to the case's system-out.

use super::{terminal, write_atomic, Outcome, ReportError, RunReport};
use crate::verdict::top_diffs;
use quick_junit::{NonSuccessKind, Property, Report, TestCase, TestCaseStatus, TestSuite};
use std::path::Path;
use std::time::Duration;

/// The JUnit document for `runs`, as text.
pub fn to_string(runs: &[RunReport]) -> Result<String, ReportError> {
    let mut report = Report::new("chaos");
    let mut suite = TestSuite::new("chaos");
    let mut total = Duration::ZERO;
    for run in runs {
        let time = Duration::from_millis(run.duration_ms);
        total += time;
        let status = match run.verdict {
            Outcome::Pass => TestCaseStatus::success(),
            Outcome::Fail => {
                let mut s = TestCaseStatus::non_success(NonSuccessKind::Failure);
                s.set_message(failure_message(run));
                s.set_type("verdict");
                s.set_description(failure_description(run));
                s
            }
        };
        let mut case = TestCase::new(run.scenario.clone(), status);
        case.set_classname("chaos")
            .set_time(time)
            .set_system_out(terminal::summary(run))
            .add_property(Property::new("seed", run.seed.to_string()))
            .add_property(Property::new("run_dir", run.run_dir.display().to_string()));
        suite.add_test_case(case);
    }
    suite.set_time(total);
    report.add_test_suite(suite).set_time(total);
    Ok(report.to_string()?)
}

/// Writes the JUnit XML of `runs` to `path`, atomically.
pub fn write(runs: &[RunReport], path: &Path) -> Result<(), ReportError> {
    write_atomic(path, to_string(runs)?.as_bytes())
}

/// One line: `failed: final_counts, monotonic; lost: kalo 10 -> 8; over-counted: mi 4 -> 5`.
fn failure_message(run: &RunReport) -> String {
    let mut msg = format!("failed: {}", run.failed_checks().join(", "));
    if run.failed_checks().is_empty() {
        msg = "failed: no verdict".into();
    }
    for (what, map) in [("lost", &run.lost), ("over-counted", &run.overcounted), ("unexpected", &run.unexpected)] {
        if map.is_empty() {
            continue;
        }
        let top: Vec<String> = top_diffs(map, 5).iter().map(|(w, d)| format!("{} {} -> {}", crate::verdict::display_key(w), d.expected, d.got)).collect();
        let more = if map.len() > top.len() { format!(" (+{} more)", map.len() - top.len()) } else { String::new() };
        msg.push_str(&format!("; {what}: {}{more}", top.join(", ")));
    }
    if run.duplicates_total > 0 {
        msg.push_str(&format!("; {} duplicated commit(s)", run.duplicates_total));
    }
    msg
}

/// Every failed check with its details, one per line.
fn failure_description(run: &RunReport) -> String {
    run.checks
        .iter()
        .filter(|(_, c)| !c.ok && c.required)
        .map(|(k, c)| format!("{k}: {}\n", c.details))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::super::sample;
    use super::*;

    #[test]
    fn junit_parses_and_has_a_failure_for_a_failed_run() {
        let failed = sample::failed();
        let mut passed = sample::failed();
        passed.scenario = "stop-tm".into();
        passed.verdict = Outcome::Pass;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("junit.xml");
        write(&[failed, passed], &path).unwrap();
        let xml = std::fs::read_to_string(&path).unwrap();

        let parsed = Report::deserialize_from_str(&xml).unwrap();
        assert_eq!(parsed.test_suites.len(), 1);
        let suite = &parsed.test_suites[0];
        assert_eq!(suite.name.as_str(), "chaos");
        assert_eq!((suite.tests, suite.failures), (2, 1));
        let case = &suite.test_cases[0];
        assert_eq!(case.name.as_str(), "kill-tm2");
        match &case.status {
            TestCaseStatus::NonSuccess { kind: NonSuccessKind::Failure, message, .. } => {
                let m = message.as_ref().unwrap().as_str();
                assert!(m.contains("final_counts") && m.contains("monotonic"), "{m}");
                assert!(m.contains("kalo 10 -> 8") && m.contains("mi 4 -> 5"), "{m}");
            }
            other => panic!("expected a failure, got {other:?}"),
        }
        assert!(case.system_out.as_ref().unwrap().as_str().contains("FAIL"));
        assert!(matches!(suite.test_cases[1].status, TestCaseStatus::Success { .. }));
        assert!(xml.contains("<failure"), "{xml}");
    }
}
