//! Test harness shared by the process-runtime and CLI tests: a stand-in for `streamd`
//! (compiled once per test binary with rustc) so the runtime can be tested without the
//! engine, and a guard that SIGKILLs whatever a test started, even when it fails.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// A tiny program that accepts streamd's command line, binds the ports it is given (so a
/// restart proves the same ports are free again), prints `up <id>`, and sleeps until
/// SIGTERM, on which it exits 0. The node named in `STANDIN_IGNORE_TERM` ignores SIGTERM.
const STANDIN: &str = r#"
use std::sync::atomic::{AtomicBool, Ordering};
static TERM: AtomicBool = AtomicBool::new(false);
extern "C" fn on_term(_: i32) { TERM.store(true, Ordering::SeqCst); }
extern "C" { fn signal(sig: i32, handler: usize) -> usize; }
fn after<'a>(args: &'a [String], flag: &str) -> Option<&'a str> {
    args.windows(2).find(|w| w[0] == flag).map(|w| w[1].as_str())
}
fn main() {
    let args: Vec<String> = std::env::args().collect();
    let id = after(&args, "--id").unwrap_or("?").to_string();
    let mut held = Vec::new();
    for flag in ["--rpc-bind", "--rest-bind", "--data-bind"] {
        if let Some(addr) = after(&args, flag) {
            match std::net::TcpListener::bind(addr) {
                Ok(l) => held.push(l),
                Err(e) => { eprintln!("{id}: cannot bind {addr}: {e}"); std::process::exit(3); }
            }
        }
    }
    let ignore = std::env::var("STANDIN_IGNORE_TERM").ok().as_deref() == Some(id.as_str());
    unsafe { signal(15, if ignore { 1 } else { on_term as usize }); }
    println!("up {id} pid {}", std::process::id());
    while !TERM.load(Ordering::SeqCst) {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    println!("{id}: SIGTERM, exiting 0");
}
"#;

/// Path of the compiled stand-in, compiled once into cargo's test scratch directory (named
/// by a hash of its source; written under a temporary name and renamed, so test binaries
/// running side by side never execute a half-written file).
pub fn standin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        STANDIN.hash(&mut h);
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("standin-{:016x}", h.finish()));
        let bin = dir.join("streamd");
        if bin.is_file() {
            return bin;
        }
        std::fs::create_dir_all(&dir).unwrap();
        let src = dir.join(format!("standin-{}.rs", std::process::id()));
        std::fs::write(&src, STANDIN).unwrap();
        let tmp = dir.join(format!("streamd.{}", std::process::id()));
        let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
        let out = std::process::Command::new(rustc)
            .args(["--edition", "2021", "-O", "-o"])
            .arg(&tmp)
            .arg(&src)
            .output()
            .expect("run rustc");
        assert!(out.status.success(), "compiling the stand-in: {}", String::from_utf8_lossy(&out.stderr));
        std::fs::rename(&tmp, &bin).unwrap();
        let _ = std::fs::remove_file(&src);
        bin
    })
    .clone()
}

/// SIGKILLs every process recorded in `<run_dir>/cluster.json` that still runs the
/// cluster's binary (stand-in or real streamd), on drop: tests clean up even when an
/// assertion fails half-way.
pub struct KillOnDrop(pub PathBuf);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let Ok(text) = std::fs::read_to_string(self.0.join("cluster.json")) else { return };
        let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) else { return };
        let Some(bin) = v["streamd"].as_str() else { return };
        for node in v["nodes"].as_array().into_iter().flatten() {
            let Some(pid) = node["pid"].as_u64() else { continue };
            let program = node["program"].as_str().unwrap_or(bin);
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            if cmdline.split(|b| *b == 0).next() == Some(program.as_bytes()) {
                unsafe {
                    libc::kill(pid as i32, libc::SIGCONT);
                    libc::kill(pid as i32, libc::SIGKILL);
                }
            }
        }
    }
}

/// Polls `cond` every 10 ms for up to `limit`.
pub fn wait_until(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// How many times the stand-in announced `up <node>` in its log (one per life).
pub fn lives(run_dir: &Path, node: &str) -> usize {
    let log = std::fs::read_to_string(run_dir.join("logs").join(format!("{node}.log"))).unwrap_or_default();
    log.lines().filter(|l| l.starts_with(&format!("up {node} "))).count()
}
