//! The socket source's reading side (Flink's `socketTextStream`): a background task that
//! connects to the line server (retrying while it is unreachable, as a restarted job must
//! wait for it), says which attempt it is and what its checkpoint restored, and hands each
//! line on with its global index in feed order (the server's header says where it starts).
//! Not replayable: a restored source gets whatever the server sends next.

use crate::input::ReadOutcome;
use crate::lines;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// How long between connection attempts while the server is unreachable.
const RETRY: Duration = Duration::from_millis(100);
/// Lines read ahead of the source; more wait in the socket (TCP holds the server back).
const AHEAD: usize = 4096;

enum Item {
    Line(u64, String),
    End,
    Failed(String),
}

/// Lines from the line server, each with its global index.
pub struct SocketLines {
    rx: mpsc::Receiver<Item>,
    task: JoinHandle<()>,
    /// The index after the last line handed out: what a checkpoint restores to.
    next: u64,
    ended: bool,
}

impl Drop for SocketLines {
    fn drop(&mut self) {
        // A cancelled source closes its connection, which the server journals.
        self.task.abort();
    }
}

impl SocketLines {
    /// Starts connecting to `addr` as `attempt`, restored up to line `restored`.
    pub fn connect(addr: String, attempt: u64, restored: u64) -> SocketLines {
        let (tx, rx) = mpsc::channel(AHEAD);
        let task = tokio::spawn(async move {
            if let Err(e) = read(&addr, attempt, restored, &tx).await {
                let _ = tx.send(Item::Failed(e)).await;
            }
        });
        SocketLines { rx, task, next: restored, ended: false }
    }

    /// The index after the last line handed out.
    pub fn next_index(&self) -> u64 {
        self.next
    }

    /// The next line (text appended to `out`) with its global index, `Pending` when none
    /// has arrived yet, `End` once the server ended the input. A broken connection is an
    /// error: the task fails and the job restarts from its checkpoint, as in Flink.
    pub fn next_line(&mut self, out: &mut String) -> Result<ReadOutcome, String> {
        if self.ended {
            return Ok(ReadOutcome::End);
        }
        match self.rx.try_recv() {
            Ok(Item::Line(i, text)) => {
                out.push_str(&text);
                self.next = i + 1;
                Ok(ReadOutcome::Line(i))
            }
            Ok(Item::End) => {
                self.ended = true;
                Ok(ReadOutcome::End)
            }
            Ok(Item::Failed(e)) => Err(e),
            Err(mpsc::error::TryRecvError::Empty) => Ok(ReadOutcome::Pending),
            Err(mpsc::error::TryRecvError::Disconnected) => Err("the line server reader stopped".into()),
        }
    }
}

async fn read(addr: &str, attempt: u64, restored: u64, tx: &mpsc::Sender<Item>) -> Result<(), String> {
    let stream = loop {
        match TcpStream::connect(addr).await {
            Ok(s) => break s,
            Err(e) => {
                tracing::debug!("line server {addr} unreachable ({e}); retrying");
                tokio::time::sleep(RETRY).await;
            }
        }
    };
    let _ = stream.set_nodelay(true);
    let (r, mut w) = stream.into_split();
    w.write_all(lines::hello(attempt, restored).as_bytes())
        .await
        .map_err(|e| format!("line server {addr}: sending hello: {e}"))?;
    let mut r = BufReader::with_capacity(256 * 1024, r);
    let mut buf = Vec::new();
    (&mut r).take(256).read_until(b'\n', &mut buf).await.map_err(|e| format!("line server {addr}: reading the header: {e}"))?;
    let header = String::from_utf8_lossy(&buf).trim_end_matches('\n').to_string();
    let mut index =
        lines::parse_header(&header).ok_or_else(|| format!("line server {addr}: expected a header `lines <next>`, got {header:?}"))?;
    tracing::info!(attempt, restored, first = index, "connected to the line server {addr}");
    loop {
        buf.clear();
        let max = crate::line_server::MAX_LINE as u64 + 1;
        let n = (&mut r).take(max).read_until(b'\n', &mut buf).await.map_err(|e| format!("line server {addr}: {e}"))?;
        if n == 0 || buf.last() != Some(&b'\n') {
            if buf.len() as u64 >= max {
                return Err(format!("line server {addr}: a line over {} bytes", max - 1));
            }
            return Err(format!("line server {addr} closed the connection before the end of the input (after line {index})"));
        }
        let line = &buf[..buf.len() - 1];
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line == lines::END.as_bytes() {
            let _ = tx.send(Item::End).await;
            return Ok(());
        }
        if tx.send(Item::Line(index, String::from_utf8_lossy(line).into_owned())).await.is_err() {
            return Ok(()); // the source is gone
        }
        index += 1;
    }
}
