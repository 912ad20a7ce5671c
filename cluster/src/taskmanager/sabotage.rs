//! Deliberate engine bugs, for tests that prove the verdict catches them (a checker that
//! cannot fail proves nothing). Switched on by the `STREAMD_SABOTAGE` environment variable,
//! which no real run sets; a value that does not parse is ignored with a warning.
//!
//! - `drop-epoch:<subtask>:<epoch>`: sink subtask `<subtask>` stages epoch `<epoch>` with
//!   none of its updates — a complete, well-formed, empty transaction. Words that change
//!   again later still end right: only the intermediate state is wrong.
//! - `skip-commit:<subtask>:<epoch>`: that sink forgets epoch `<epoch>` at commit time
//!   (its staged file deleted, nothing committed), as the engine once did when a staged
//!   file went missing.
//! - `no-catch-up`: the jobmanager restores an older checkpoint without re-taking the
//!   newer completed ones at their cuts (`jobmanager::catch_up`), as the engine did before
//!   it had the catch-up.

/// The environment variable that switches a sabotage on.
pub const ENV: &str = "STREAMD_SABOTAGE";

/// One deliberate bug.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sabotage {
    DropEpoch { subtask: u32, epoch: u64 },
    SkipCommit { subtask: u32, epoch: u64 },
    NoCatchUp,
}

impl Sabotage {
    /// The sabotage the environment asks for, if any.
    pub fn from_env() -> Option<Sabotage> {
        let v = std::env::var(ENV).ok().filter(|v| !v.is_empty())?;
        let s = Sabotage::parse(&v);
        match s {
            Some(s) => tracing::warn!(?s, "{ENV} is set: this engine is deliberately broken"),
            None => tracing::warn!("{ENV}={v:?} is not a known sabotage; ignored"),
        }
        s
    }

    fn parse(v: &str) -> Option<Sabotage> {
        if v == "no-catch-up" {
            return Some(Sabotage::NoCatchUp);
        }
        let mut it = v.split(':');
        let (kind, subtask, epoch) = (it.next()?, it.next()?.parse().ok()?, it.next()?.parse().ok()?);
        match (kind, it.next()) {
            ("drop-epoch", None) => Some(Sabotage::DropEpoch { subtask, epoch }),
            ("skip-commit", None) => Some(Sabotage::SkipCommit { subtask, epoch }),
            _ => None,
        }
    }

    /// Whether sink `subtask` must stage `epoch` empty.
    pub fn drops(this: Option<Sabotage>, subtask: u32, epoch: u64) -> bool {
        this == Some(Sabotage::DropEpoch { subtask, epoch })
    }

    /// Whether sink `subtask` must forget `epoch` instead of committing it.
    pub fn skips_commit(this: Option<Sabotage>, subtask: u32, epoch: u64) -> bool {
        this == Some(Sabotage::SkipCommit { subtask, epoch })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_three_sabotages_and_nothing_else() {
        assert_eq!(Sabotage::parse("drop-epoch:1:3"), Some(Sabotage::DropEpoch { subtask: 1, epoch: 3 }));
        assert_eq!(Sabotage::parse("skip-commit:0:4"), Some(Sabotage::SkipCommit { subtask: 0, epoch: 4 }));
        assert_eq!(Sabotage::parse("no-catch-up"), Some(Sabotage::NoCatchUp));
        for bad in ["", "drop-epoch", "drop-epoch:1", "drop-epoch:x:3", "drop-epoch:1:3:4", "other:1:3", "no-catch-up:1"] {
            assert_eq!(Sabotage::parse(bad), None, "{bad}");
        }
    }
}
