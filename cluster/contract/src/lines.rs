//! The line server (`streamd line-server`, node `lines-1`): what `nc -l 9000` is in Flink's
//! SocketWindowWordCount demo, as a node of the cluster. Its protocols and its journal are
//! here because three parties share them: the server, the engine's socket source, and
//! `chaos` (which feeds it and reads the journal to say which fault lost which lines).
//!
//! # Source port (the job's `input.socket.port`, 9000)
//! The source sends one hello line, `hello <attempt> <restored>` (`restored`: the index of
//! the first line its restored checkpoint has not counted). The server answers one header
//! line, `lines <next>` (the global index, in feed order, of the next line it sends), then
//! raw lines, each ended by `\n`. Once the input has ended and every line was sent it sends
//! the line [`END`] and closes: a close without it is a broken connection, not the end.
//! Lines sent are never sent again (a socket cannot be rewound), and only the newest
//! connection is served: a new one (a restarted job) replaces the old.
//!
//! # Feed port ([`FEED_PORT`])
//! The server greets with `fed <lines> ended <0|1>`; the client sends raw lines; the line
//! [`END`] ends the input. When the client half-closes, the server answers `ok <lines>`
//! (every line fed so far, durably stored) or `error <why>`, and closes.
//!
//! # Files, under `<data dir>/lines/`
//! `fed.txt`: every line fed, in order (the oracle's input); `journal.jsonl`: one
//! [`Event`] per line.

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The line server's node name (and network alias).
pub const NODE: &str = "lines-1";
/// Where `chaos` pushes lines in (the source port is the job's).
pub const FEED_PORT: u16 = 6125;
/// The line that ends the input (on both ports). A fed line equal to it is refused.
pub const END: &str = "\0end";

/// The line server's directory in a data directory.
pub fn dir(data: &Path) -> PathBuf {
    data.join("lines")
}

/// Every line fed, in feed order.
pub fn fed_path(data: &Path) -> PathBuf {
    dir(data).join("fed.txt")
}

/// The journal of connections.
pub fn journal_path(data: &Path) -> PathBuf {
    dir(data).join("journal.jsonl")
}

/// One journal record; `t_ms` is wall-clock milliseconds (the cluster's clock).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "kebab-case")]
pub enum Event {
    /// The server (re)started with `fed` lines stored; it sends from `cursor` on. After a
    /// restart `cursor == fed`: what the previous life had not sent is lost with it, as with
    /// a restarted `nc`.
    Start { t_ms: u64, fed: u64, cursor: u64 },
    /// A source connected: it restored up to `restored`, and is sent lines from `first` on.
    /// Lines `restored..first` were sent to earlier connections and are lost.
    Open { t_ms: u64, conn: u64, peer: String, attempt: u64, restored: u64, first: u64 },
    /// A connection ended; lines `..sent` were sent on it. `reason`: why.
    Close { t_ms: u64, conn: u64, sent: u64, reason: String },
    /// The input ended after `lines` lines.
    Ended { t_ms: u64, lines: u64 },
}

/// Reads a journal; a line that does not parse (a write cut short by a kill) is skipped.
pub fn read_journal(path: &Path) -> std::io::Result<Vec<Event>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    Ok(text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect())
}

/// `hello <attempt> <restored>`.
pub fn hello(attempt: u64, restored: u64) -> String {
    format!("hello {attempt} {restored}\n")
}

/// Parses a hello line (without its newline): `(attempt, restored)`.
pub fn parse_hello(line: &str) -> Option<(u64, u64)> {
    let mut it = line.trim_end_matches('\r').split(' ');
    match (it.next(), it.next(), it.next(), it.next()) {
        (Some("hello"), Some(a), Some(r), None) => Some((a.parse().ok()?, r.parse().ok()?)),
        _ => None,
    }
}

/// Parses the header line: the index of the next line.
pub fn parse_header(line: &str) -> Option<u64> {
    line.trim_end_matches('\r').strip_prefix("lines ")?.parse().ok()
}

/// Parses the feed greeting: `(lines fed, ended)`.
pub fn parse_greeting(line: &str) -> Option<(u64, bool)> {
    let mut it = line.trim_end().split(' ');
    match (it.next(), it.next(), it.next(), it.next(), it.next()) {
        (Some("fed"), Some(n), Some("ended"), Some(e), None) => Some((n.parse().ok()?, e == "1")),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocol_lines_round_trip() {
        assert_eq!(parse_hello(hello(3, 42).trim_end()), Some((3, 42)));
        assert_eq!(parse_hello("hello 3"), None);
        assert_eq!(parse_hello("GET / HTTP/1.1"), None);
        assert_eq!(parse_header("lines 17"), Some(17));
        assert_eq!(parse_header("line 17"), None);
        assert_eq!(parse_greeting("fed 5 ended 1\n"), Some((5, true)));
        assert_eq!(parse_greeting("fed x ended 0"), None);
    }

    #[test]
    fn journal_events_are_json_lines_and_torn_lines_are_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("j.jsonl");
        let e = Event::Open { t_ms: 1, conn: 2, peer: "x".into(), attempt: 3, restored: 4, first: 5 };
        std::fs::write(&p, format!("{}\n{{\"event\":\"clo", serde_json::to_string(&e).unwrap())).unwrap();
        assert_eq!(read_journal(&p).unwrap(), vec![e]);
        assert!(read_journal(&dir.path().join("none")).unwrap().is_empty());
    }
}
