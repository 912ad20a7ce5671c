//! `streamd` as a program: bad job specs are refused with the field named, exit code 2.

use std::process::Command;

fn jobmanager_with(spec: &str) -> (i32, String) {
    let d = tempfile::tempdir().unwrap();
    let job = d.path().join("job.yaml");
    std::fs::write(&job, spec).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_streamd"))
        .args(["jobmanager", "--job"])
        .arg(&job)
        .arg("--data-dir")
        .arg(d.path())
        .args(["--rpc-bind", "127.0.0.1:0", "--rest-bind", "127.0.0.1:0"])
        .output()
        .unwrap();
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stderr).to_string())
}

#[test]
fn an_unknown_field_is_named_and_exits_2() {
    let (code, err) = jobmanager_with("parallelism: 2\nparalelism: 3\ninput: { file: { path: x } }\n");
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("paralelism") && err.contains("job.yaml"), "{err}");
}

#[test]
fn a_bad_value_is_named_and_exits_2() {
    let (code, err) = jobmanager_with("parallelism: 0\ninput: { file: { path: x } }\n");
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("parallelism"), "{err}");
    let (code, err) = jobmanager_with("parallelism: 2\ncheckpoint_interval: soon\ninput: { file: { path: x } }\n");
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("soon"), "{err}");
}

#[test]
fn a_missing_job_file_exits_2() {
    let out = Command::new(env!("CARGO_BIN_EXE_streamd"))
        .args(["jobmanager", "--job", "/nonexistent/job.yaml", "--rpc-bind", "127.0.0.1:0", "--rest-bind", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/job.yaml"));
}
