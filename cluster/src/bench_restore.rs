//! `streamd bench --restore`: how long a task takes to get a large state back, from its
//! task-local copy against shared checkpoint storage, through the engine's own restore
//! path ([`crate::snapshot::restore_task`]: read, verify checksum and checkpoint id,
//! decode) on real files.
//!
//! The state is a count task's: `--state-words` distinct words (generated like the job's
//! vocabulary) with counts. Shared storage is a local directory here, so it is read
//! through the remote-storage stand-in ([`crate::snapshot::REMOTE_READ_STANDIN_ENV`]:
//! latency plus size / bandwidth per read); the local copy is read plainly. Both files
//! were just written, so both reads come from the page cache: the difference is the
//! stand-in's remote cost, and what the two paths share (verify, decode) is measured once
//! in each. Each is repeated `--reps` times, alternating; medians are reported.

use crate::snapshot;
use crate::taskmanager::count::CountState;
use crate::wire::TaskId;

/// The figures of one run.
#[derive(Debug, serde::Serialize)]
pub struct RestoreBench {
    pub state_words: u64,
    pub snapshot_bytes: u64,
    pub remote_standin: String,
    pub local_ms: f64,
    pub remote_ms: f64,
    pub speedup: f64,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

pub fn run(words: u64, reps: usize, standin: &str, json: bool) -> anyhow::Result<()> {
    let parsed = snapshot::parse_standin(standin)
        .ok_or_else(|| anyhow::anyhow!("--remote-standin {standin:?}: expected `<latency>,<MB/s>` like `20ms,100`"))?;
    snapshot::set_remote_standin(Some(parsed));
    let dir = std::env::temp_dir().join(format!("streamd-bench-restore-{}", std::process::id()));
    let _cleanup = crate::bench::RemoveDir(dir.clone());
    let (data, local) = (dir.join("data"), dir.join("local"));
    eprintln!("building a count state of {words} distinct words ...");
    let state = CountState {
        counts: (0..words).map(|i| (crate::input::word_of_rank(i as u32), i % 977 + 1)).collect(),
        pending: vec![],
        attempt: 1,
    };
    let task = TaskId::Count(0);
    let handle = snapshot::write_task_snapshot(&data, Some(&local), "bench", 7, task, &state)?;
    drop(state);
    let (mut local_ms, mut remote_ms) = (Vec::new(), Vec::new());
    for _ in 0..reps.max(1) {
        let r = snapshot::restore_task::<CountState>(&data, Some(&local), "bench", 7, task, &handle)?;
        anyhow::ensure!(r.source == crate::api::RestoreSource::Local, "the local copy was not used: {:?}", r.fallback);
        local_ms.push(r.duration.as_secs_f64() * 1e3);
        let r = snapshot::restore_task::<CountState>(&data, None, "bench", 7, task, &handle)?;
        remote_ms.push(r.duration.as_secs_f64() * 1e3);
    }
    let (l, r) = (median(local_ms), median(remote_ms));
    let res = RestoreBench {
        state_words: words,
        snapshot_bytes: handle.size,
        remote_standin: standin.to_string(),
        local_ms: l,
        remote_ms: r,
        speedup: r / l,
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&res)?);
    } else {
        let (lat, bw) = parsed;
        println!("restore of one count task: {words} words, snapshot {:.1} MB", res.snapshot_bytes as f64 / 1e6);
        println!("  local copy (task-local recovery)   {:>9.1} ms", l);
        println!(
            "  shared storage (remote stand-in: {} + {:.0} MB/s)   {:>9.1} ms",
            crate::duration::format_duration(lat),
            bw / 1e6,
            r
        );
        println!("  local is {:.2}x faster (median of {} each)", res.speedup, reps.max(1));
    }
    Ok(())
}
