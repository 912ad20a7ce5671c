//! Signals: the one list `chaos` accepts, for scenarios (`signal: SIGTERM`), the command line
//! (`chaos kill tm2 --signal term`) and both runtimes (Docker's kill API takes the name, the
//! process runtime sends the number). A name that passes here works everywhere.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The signals a node can be sent, by name without `SIG` and by number (Linux, x86_64).
/// Others (`SIGWINCH`, real-time signals) are refused: sent to a stream node they test
/// nothing, and not every runtime could deliver them the same way.
const TABLE: [(&str, i32); 18] = [
    ("HUP", libc::SIGHUP),
    ("INT", libc::SIGINT),
    ("QUIT", libc::SIGQUIT),
    ("ILL", libc::SIGILL),
    ("TRAP", libc::SIGTRAP),
    ("ABRT", libc::SIGABRT),
    ("BUS", libc::SIGBUS),
    ("FPE", libc::SIGFPE),
    ("KILL", libc::SIGKILL),
    ("USR1", libc::SIGUSR1),
    ("SEGV", libc::SIGSEGV),
    ("USR2", libc::SIGUSR2),
    ("PIPE", libc::SIGPIPE),
    ("ALRM", libc::SIGALRM),
    ("TERM", libc::SIGTERM),
    ("CONT", libc::SIGCONT),
    ("STOP", libc::SIGSTOP),
    ("TSTP", libc::SIGTSTP),
];

/// A signal `chaos` can send: written `SIGKILL` in reports and to Docker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Signal {
    /// Index into [`TABLE`].
    index: usize,
}

impl Signal {
    pub const KILL: Signal = Signal { index: 8 };
    pub const TERM: Signal = Signal { index: 14 };

    /// Parses `SIGTERM`, `TERM`, `term` or `15`.
    pub fn parse(s: &str) -> Result<Signal, String> {
        let t = s.trim();
        let found = match t.parse::<i32>() {
            Ok(n) => TABLE.iter().position(|&(_, num)| num == n),
            Err(_) => {
                let upper = t.to_ascii_uppercase();
                let bare = upper.strip_prefix("SIG").unwrap_or(&upper).to_string();
                TABLE.iter().position(|&(name, _)| name == bare)
            }
        };
        found.map(|index| Signal { index }).ok_or_else(|| {
            let names: Vec<String> = TABLE.iter().map(|(n, _)| format!("SIG{n}")).collect();
            format!("unknown signal `{s}`: expected one of {} (or its number)", names.join(", "))
        })
    }

    /// `SIGKILL`.
    pub fn name(self) -> String {
        format!("SIG{}", TABLE[self.index].0)
    }

    /// The signal number, for `kill(2)`.
    pub fn number(self) -> i32 {
        TABLE[self.index].1
    }
}

impl fmt::Display for Signal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SIG{}", TABLE[self.index].0)
    }
}

impl Serialize for Signal {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.name())
    }
}

impl<'de> Deserialize<'de> for Signal {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Signal, D::Error> {
        let s = String::deserialize(d)?;
        Signal::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_numbers_and_case_all_parse_to_one_signal() {
        for s in ["SIGTERM", "TERM", "term", "sigterm", "15", " 15 "] {
            assert_eq!(Signal::parse(s).unwrap(), Signal::TERM, "{s}");
        }
        assert_eq!(Signal::parse("9").unwrap(), Signal::KILL);
        assert_eq!(Signal::KILL.name(), "SIGKILL");
        assert_eq!(Signal::KILL.number(), libc::SIGKILL);
        assert_eq!(Signal::TERM.number(), libc::SIGTERM);
    }

    #[test]
    fn what_no_runtime_can_send_the_same_way_is_refused() {
        for s in ["SIGWINCH", "WINCH", "40", "0", "SIGFOO", ""] {
            let e = Signal::parse(s).unwrap_err();
            assert!(e.contains("SIGKILL"), "{e}");
        }
    }
}
