//! A runtime for tests: no processes, no Docker. It records every call (what, on which
//! node, when) and can refuse calls on one node, so tests assert on what the fault layer
//! and the run loop asked for; a scripted job can read the same log to react to a kill.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use streamd_contract::api::now_ms;

use super::{ClusterDef, NodeStatus, Result, Runtime, RuntimeError};
use crate::signal::Signal;

/// One call: `kill SIGKILL taskmanager-2` at `at_ms` (wall clock).
#[derive(Debug, Clone)]
pub struct Call {
    pub at_ms: u64,
    pub what: String,
}

/// The call log, shared with whoever watches it.
pub type Calls = Arc<Mutex<Vec<Call>>>;

/// Records what it is asked to do.
#[derive(Default)]
pub struct Recorder {
    calls: Calls,
    /// Calls ending with this node name fail (and are not recorded).
    refuse: Option<&'static str>,
}

impl Recorder {
    /// A recorder whose calls on `node` fail.
    pub fn refusing(node: &'static str) -> Recorder {
        Recorder { refuse: Some(node), ..Recorder::default() }
    }

    fn log(&self, what: String) -> Result<()> {
        if self.refuse.is_some_and(|n| what.ends_with(n)) {
            return Err(RuntimeError::Usage(format!("{what}: not running")));
        }
        self.calls.lock().unwrap().push(Call { at_ms: now_ms(), what });
        Ok(())
    }

    /// What was asked, in order.
    pub fn calls(&self) -> Vec<String> {
        self.calls.lock().unwrap().iter().map(|c| c.what.clone()).collect()
    }

    /// The log itself, to watch it while the calls come.
    pub fn log_handle(&self) -> Calls {
        self.calls.clone()
    }
}

impl Runtime for Recorder {
    fn name(&self) -> &'static str {
        "recorder"
    }
    async fn up(&mut self, _: &ClusterDef) -> Result<()> {
        Ok(())
    }
    async fn rest_url(&self, _: &str) -> Result<String> {
        Ok("http://127.0.0.1:9".into())
    }
    async fn node_address(&self, _: &str) -> Result<String> {
        Ok("127.0.0.1".into())
    }
    async fn feed_address(&self, _: &str) -> Result<String> {
        Ok("127.0.0.1:9".into())
    }
    async fn kill(&self, node: &str, signal: Signal) -> Result<()> {
        self.log(format!("kill {signal} {node}"))
    }
    async fn stop(&self, node: &str, grace: Duration) -> Result<()> {
        self.log(format!("stop {}ms {node}", grace.as_millis()))
    }
    async fn start(&self, node: &str) -> Result<()> {
        self.log(format!("start {node}"))
    }
    async fn restart(&self, node: &str, _: Duration) -> Result<()> {
        self.log(format!("restart {node}"))
    }
    async fn pause(&self, node: &str) -> Result<()> {
        self.log(format!("pause {node}"))
    }
    async fn unpause(&self, node: &str) -> Result<()> {
        self.log(format!("unpause {node}"))
    }
    async fn nodes(&self) -> Result<Vec<NodeStatus>> {
        Ok(Vec::new())
    }
    async fn down(&mut self) -> Result<()> {
        Ok(())
    }
}
