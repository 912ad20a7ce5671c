//! Holding a fault for a while, then taking it back: `chaos pause tm2 --for 5s`,
//! `chaos netem tm1 --delay 100ms --for 10s`. Ctrl-C or SIGTERM ends the wait early, and
//! the fault is still undone: an interrupted command never leaves a fault behind.

use std::time::Duration;

use super::{Applied, Injector};
use crate::error::ChaosError;
use crate::runtime::Runtime;

/// Ctrl-C and SIGTERM, listened for from [`Interrupt::new`] on. Made *before* a fault is
/// applied, so a signal at any moment after cannot end `chaos` with the fault in place.
pub struct Interrupt {
    int: Option<tokio::signal::unix::Signal>,
    term: Option<tokio::signal::unix::Signal>,
}

impl Interrupt {
    pub fn new() -> Interrupt {
        use tokio::signal::unix::{signal, SignalKind};
        Interrupt { int: signal(SignalKind::interrupt()).ok(), term: signal(SignalKind::terminate()).ok() }
    }

    /// Waits for `d`, or less if Ctrl-C or SIGTERM arrives; true when interrupted.
    pub async fn sleep(&mut self, d: Duration) -> bool {
        async fn recv(s: &mut Option<tokio::signal::unix::Signal>) {
            match s {
                Some(s) => {
                    s.recv().await;
                }
                None => std::future::pending().await,
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(d) => false,
            _ = recv(&mut self.int) => true,
            _ = recv(&mut self.term) => true,
        }
    }
}

impl Default for Interrupt {
    fn default() -> Self {
        Interrupt::new()
    }
}

/// How a held fault ended.
#[derive(Debug)]
pub struct Released {
    /// What the undo did (`unpaused taskmanager-2`).
    pub description: String,
    /// How long the undo call took.
    pub latency: Duration,
    /// Ctrl-C or SIGTERM cut the wait short.
    pub interrupted: bool,
}

/// Keeps `applied` for `d` (less on Ctrl-C / SIGTERM), then undoes it. A fault with
/// nothing to undo is returned at once.
pub async fn hold<R: Runtime>(
    inj: &Injector<'_, R>,
    applied: Applied,
    d: Duration,
    interrupt: &mut Interrupt,
) -> Result<Option<Released>, ChaosError> {
    let Some(undo) = applied.undo else { return Ok(None) };
    let interrupted = interrupt.sleep(d).await;
    let t = std::time::Instant::now();
    let description = inj.undo(undo).await?;
    Ok(Some(Released { description, latency: t.elapsed(), interrupted }))
}
