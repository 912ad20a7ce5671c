//! `report.json`: the machine-readable report for CI (pretty-printed, stable keys first).

use super::{write_atomic, ReportError, RunReport};
use std::path::Path;

/// The report as pretty JSON text.
pub fn to_string(report: &RunReport) -> Result<String, ReportError> {
    let mut s = serde_json::to_string_pretty(report)?;
    s.push('\n');
    Ok(s)
}

/// Writes the report as pretty JSON to `path`, atomically.
pub fn write(report: &RunReport, path: &Path) -> Result<(), ReportError> {
    write_atomic(path, to_string(report)?.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::super::{sample, STABLE_FAULT_KEYS, STABLE_KEYS};
    use super::*;
    use std::collections::BTreeSet;

    /// Keys beyond the stable ones; a rename of a stable key breaks this test.
    const EXTRAS: [&str; 16] = [
        "scenario_file",
        "description",
        "runtime",
        "expectation",
        "plan",
        "cluster_start_ms",
        "duration_ms",
        "words_total",
        "words_distinct",
        "final_state",
        "transactions",
        "duplicates",
        "duplicates_total",
        "malformed",
        "timeline",
        "engine",
    ];

    #[test]
    fn json_has_the_stable_keys_with_their_types() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("report.json");
        write(&sample::failed(), &path).unwrap();
        let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let obj = v.as_object().unwrap();
        let keys: BTreeSet<&str> = obj.keys().map(|k| k.as_str()).collect();
        let want: BTreeSet<&str> = STABLE_KEYS.iter().chain(EXTRAS.iter()).copied().collect();
        assert_eq!(keys, want);

        assert_eq!(v["scenario"], "kill-tm2");
        assert_eq!(v["seed"], 7);
        assert_eq!(v["verdict"], "fail");
        assert_eq!(v["checks"]["final_counts"]["ok"], false);
        assert!(v["checks"]["final_counts"]["details"].as_str().unwrap().contains("lost"));
        assert_eq!(v["checks"]["well_formed"]["ok"], true);
        assert_eq!(v["lost"]["kalo"]["expected"], 10);
        assert_eq!(v["lost"]["kalo"]["got"], 8);
        assert_eq!(v["overcounted"]["mi"]["got"], 5);
        assert!(v["unexpected"].as_object().unwrap().is_empty());
        assert_eq!(v["restarts"], 1);
        assert_eq!(v["checkpoints_completed"], 11);
        assert!(v["words_per_s"].as_f64().unwrap() > 0.0);
        assert_eq!(v["run_dir"], "target/chaos/runs/kill-tm2-7");
        assert!(v["counts_file"].as_str().unwrap().ends_with("counts.tsv"));

        let faults = v["faults"].as_array().unwrap();
        assert_eq!(faults.len(), 2);
        for f in faults {
            let fk: BTreeSet<&str> = f.as_object().unwrap().keys().map(|k| k.as_str()).collect();
            for k in STABLE_FAULT_KEYS {
                assert!(fk.contains(k), "fault lacks {k}: {f}");
            }
        }
        assert_eq!(faults[0]["action"], "kill");
        assert_eq!(faults[0]["applied_ms"], 4010);
        assert_eq!(faults[0]["undone_ms"], serde_json::Value::Null);
        assert_eq!(faults[1]["undone_ms"], 10_500);
        assert_eq!(v["timeline"]["events"][0]["kind"], "checkpoint");

        // And it reads back.
        let back: RunReport = serde_json::from_value(v).unwrap();
        assert_eq!(back.faults, sample::failed().faults);
    }

    #[test]
    fn passing_verdict_says_pass() {
        let mut r = sample::failed();
        r.verdict = super::super::Outcome::Pass;
        assert!(to_string(&r).unwrap().contains("\"verdict\": \"pass\""));
    }
}
