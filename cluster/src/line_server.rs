//! `streamd line-server`: `nc -l 9000` as a node of the cluster. Lines pushed in on the
//! feed port are stored (`lines/fed.txt`), numbered in feed order, and sent to the newest
//! source connection on the source port, each line once: what a connection was sent is
//! gone from the server, as typed text is gone from netcat. Every connection, what it was
//! sent and how it ended goes to `lines/journal.jsonl`, so `chaos` can say which fault lost
//! which lines. Protocols: [`crate::lines`].
//!
//! A peer's fault (garbage, a dropped connection) ends that connection with a logged error;
//! the server lives on.

use crate::lines::{self, Event};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use streamd_contract::api::now_ms;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Notify};

/// The longest line accepted, as for input files (a source sends a chunk as one frame).
pub const MAX_LINE: usize = 8 << 20;
/// Lines per write to a source: the cursor advances by a batch at a time.
const BATCH: usize = 1024;
/// How long a source may take to say hello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(5);

/// What the server holds.
struct State {
    /// Every line fed (in memory, to send; on disk, for the oracle and a restart).
    lines: Vec<Arc<str>>,
    /// The next line to send to anyone.
    cursor: u64,
    ended: bool,
    /// Connections so far (ids count from 1).
    conns: u64,
    fed_file: std::fs::File,
    journal: std::fs::File,
}

/// The line server: shared by its listeners and connections.
pub struct LineServer {
    state: Mutex<State>,
    /// Woken when lines are fed or the input ends.
    fed: Notify,
    /// The connection being served; an older one sees it change and closes.
    current: watch::Sender<u64>,
}

impl LineServer {
    /// Opens (or reopens, after a restart) the server's files under `data`.
    pub fn open(data: &Path) -> io::Result<Arc<LineServer>> {
        std::fs::create_dir_all(lines::dir(data))?;
        let fed_path = lines::fed_path(data);
        let lines = read_fed(&fed_path)?;
        let journal = lines::read_journal(&lines::journal_path(data))?;
        let ended = journal.iter().any(|e| matches!(e, Event::Ended { .. }));
        // Connection ids go on across restarts, so the journal names each connection once.
        let conns = journal.iter().filter_map(|e| if let Event::Open { conn, .. } = e { Some(*conn) } else { None }).max().unwrap_or(0);
        let fed_file = std::fs::OpenOptions::new().create(true).append(true).open(&fed_path)?;
        let journal = std::fs::OpenOptions::new().create(true).append(true).open(lines::journal_path(data))?;
        let n = lines.len() as u64;
        let server = Arc::new(LineServer {
            state: Mutex::new(State { lines, cursor: n, ended, conns, fed_file, journal }),
            fed: Notify::new(),
            current: watch::channel(0).0,
        });
        server.record(&mut server.lock(), Event::Start { t_ms: now_ms(), fed: n, cursor: n });
        Ok(server)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Appends a journal event. A journal that cannot be written loses attribution, not
    /// lines: logged, not fatal.
    fn record(&self, st: &mut State, e: Event) {
        let line = serde_json::to_string(&e).unwrap_or_default();
        if let Err(err) = writeln!(st.journal, "{line}") {
            tracing::error!("cannot write the journal: {err}");
        }
    }

    /// Lines fed so far, and whether the input has ended.
    pub fn fed(&self) -> (u64, bool) {
        let st = self.lock();
        (st.lines.len() as u64, st.ended)
    }

    /// Stores and numbers `batch` (lines without their `\n`); `Err` once the input ended.
    pub fn feed(&self, batch: Vec<String>) -> Result<u64, String> {
        let mut st = self.lock();
        if st.ended {
            return Err("the input has ended: no more lines are taken".into());
        }
        if batch.iter().any(|l| l == lines::END) {
            return Err("a line equal to the end marker cannot be fed".into());
        }
        let mut bytes = Vec::with_capacity(batch.iter().map(|l| l.len() + 1).sum());
        for l in &batch {
            bytes.extend_from_slice(l.as_bytes());
            bytes.push(b'\n');
        }
        // Stored before it can be sent: the oracle never lacks a line a source saw.
        st.fed_file.write_all(&bytes).map_err(|e| format!("cannot store the lines: {e}"))?;
        st.lines.extend(batch.into_iter().map(Arc::from));
        let n = st.lines.len() as u64;
        drop(st);
        self.fed.notify_waiters();
        Ok(n)
    }

    /// Ends the input: sources get [`lines::END`] once they have every line.
    pub fn end(&self) {
        let mut st = self.lock();
        if !st.ended {
            st.ended = true;
            let n = st.lines.len() as u64;
            self.record(&mut st, Event::Ended { t_ms: now_ms(), lines: n });
        }
        drop(st);
        self.fed.notify_waiters();
    }

    /// Serves sources on `source` and feeders on `feed` until `shutdown` resolves.
    pub async fn serve(self: Arc<Self>, source: TcpListener, feed: TcpListener, shutdown: impl std::future::Future<Output = ()>) {
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => return,
                a = source.accept() => match a {
                    Ok((s, peer)) => { tokio::spawn(self.clone().source_conn(s, peer.to_string())); }
                    Err(e) => { tracing::warn!("accepting a source: {e}"); tokio::time::sleep(Duration::from_millis(50)).await; }
                },
                a = feed.accept() => match a {
                    Ok((s, peer)) => {
                        let me = self.clone();
                        tokio::spawn(async move {
                            if let Err(e) = me.feed_conn(s).await { tracing::warn!("feeder {peer}: {e}"); }
                        });
                    }
                    Err(e) => { tracing::warn!("accepting a feeder: {e}"); tokio::time::sleep(Duration::from_millis(50)).await; }
                },
            }
        }
    }

    /// One feeder: greeting, lines, and the answer when it half-closes.
    async fn feed_conn(&self, s: TcpStream) -> io::Result<()> {
        let (r, mut w) = s.into_split();
        let (n, ended) = self.fed();
        w.write_all(format!("fed {n} ended {}\n", u8::from(ended)).as_bytes()).await?;
        let mut r = BufReader::with_capacity(256 * 1024, r);
        let mut buf = Vec::new();
        let mut batch = Vec::new();
        let mut outcome: Result<u64, String> = Ok(n);
        loop {
            buf.clear();
            let got = (&mut r).take(MAX_LINE as u64 + 1).read_until(b'\n', &mut buf).await?;
            let eof = got == 0;
            if !eof {
                if buf.len() > MAX_LINE {
                    outcome = Err(format!("a line over {MAX_LINE} bytes"));
                    break;
                }
                let Some(line) = buf.strip_suffix(b"\n") else {
                    // A last line without its newline is a write cut short (a feeder that
                    // died mid-line): not stored, so a resumed feed sends it whole.
                    tracing::warn!("a feeder closed mid-line; {} bytes dropped", buf.len());
                    if !batch.is_empty() {
                        outcome = self.feed(std::mem::take(&mut batch));
                    }
                    break;
                };
                let line = String::from_utf8_lossy(line).into_owned();
                if line == lines::END {
                    if !batch.is_empty() {
                        outcome = self.feed(std::mem::take(&mut batch));
                    }
                    if outcome.is_ok() {
                        self.end();
                        outcome = Ok(self.fed().0);
                    }
                    continue;
                }
                batch.push(line);
            }
            // Store what arrived whenever the socket has nothing more buffered, so a slow
            // feeder's lines go out at once and a fast one's in large batches.
            if (eof || r.buffer().is_empty() || batch.len() >= BATCH) && !batch.is_empty() {
                outcome = self.feed(std::mem::take(&mut batch));
                if outcome.is_err() {
                    break;
                }
            }
            if eof {
                break;
            }
        }
        let answer = match &outcome {
            Ok(_) => format!("ok {}\n", self.fed().0),
            Err(e) => format!("error {e}\n"),
        };
        w.write_all(answer.as_bytes()).await?;
        w.shutdown().await
    }

    /// One source connection: hello, header, then lines until the input ends, the peer
    /// goes, or a newer connection replaces this one.
    async fn source_conn(self: Arc<Self>, s: TcpStream, peer: String) {
        let _ = s.set_nodelay(true);
        let (r, mut w) = s.into_split();
        let mut r = BufReader::new(r);
        let mut hello = Vec::new();
        let said = tokio::time::timeout(HELLO_TIMEOUT, (&mut r).take(256).read_until(b'\n', &mut hello)).await;
        let Some((attempt, restored)) = (match said {
            Ok(Ok(_)) => lines::parse_hello(String::from_utf8_lossy(&hello).trim_end_matches('\n')),
            _ => None,
        }) else {
            tracing::warn!("source {peer}: no valid hello ({:?}); closing", String::from_utf8_lossy(&hello));
            return;
        };
        let (conn, first) = {
            let mut st = self.lock();
            st.conns += 1;
            let (conn, first) = (st.conns, st.cursor);
            self.record(&mut st, Event::Open { t_ms: now_ms(), conn, peer: peer.clone(), attempt, restored, first });
            // Under the lock: an older connection takes no batch once this one starts.
            self.current.send_replace(conn);
            (conn, first)
        };
        tracing::info!(conn, attempt, restored, first, "source {peer} connected");
        let mut current = self.current.subscribe();
        // The peer never sends after its hello: a read that returns is the peer gone.
        let mut gone = Box::pin(async move {
            let mut b = [0u8; 64];
            loop {
                match r.read(&mut b).await {
                    Ok(0) => return "the source closed the connection".to_string(),
                    Ok(_) => {}
                    Err(e) => return format!("the connection broke: {e}"),
                }
            }
        });
        let mut sent = first;
        let header = w.write_all(format!("lines {first}\n").as_bytes()).await;
        let reason = loop {
            if let Err(e) = &header {
                break format!("the connection broke: {e}");
            }
            let fed = self.fed.notified();
            tokio::pin!(fed);
            fed.as_mut().enable();
            let (batch, ended) = {
                let mut st = self.lock();
                if *current.borrow_and_update() != conn {
                    break format!("replaced by connection {}", *current.borrow());
                }
                let end = (st.cursor as usize + BATCH).min(st.lines.len());
                let batch: Vec<Arc<str>> = st.lines[st.cursor as usize..end].to_vec();
                // Sent is sent: the cursor moves before the write, so a line is never sent
                // twice, whatever becomes of this connection.
                st.cursor = end as u64;
                (batch, st.ended && end == st.lines.len())
            };
            sent += batch.len() as u64;
            let mut bytes = Vec::new();
            for l in &batch {
                bytes.extend_from_slice(l.as_bytes());
                bytes.push(b'\n');
            }
            if ended {
                bytes.extend_from_slice(lines::END.as_bytes());
                bytes.push(b'\n');
            }
            if !bytes.is_empty() {
                tokio::select! {
                    r = w.write_all(&bytes) => if let Err(e) = r { break format!("the connection broke: {e}") },
                    why = &mut gone => break why,
                    _ = current.changed() => break format!("replaced by connection {}", *current.borrow()),
                }
            }
            if ended {
                let _ = w.shutdown().await;
                break "the input ended".into();
            }
            if batch.is_empty() {
                // Nothing to send: wait for lines, the end, a replacement or the peer.
                tokio::select! {
                    _ = fed => {}
                    why = &mut gone => break why,
                    _ = current.changed() => {}
                }
            }
        };
        let mut st = self.lock();
        self.record(&mut st, Event::Close { t_ms: now_ms(), conn, sent, reason: reason.clone() });
        drop(st);
        tracing::info!(conn, sent, "source {peer}: {reason}");
    }
}

/// Reads `fed.txt`; a last line without its newline (a write cut short by a kill) is
/// dropped from the file, since its feeder was never told it was stored.
fn read_fed(path: &PathBuf) -> io::Result<Vec<Arc<str>>> {
    let mut bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let keep = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    if keep < bytes.len() {
        bytes.truncate(keep);
        std::fs::write(path, &bytes)?;
    }
    Ok(bytes
        .split(|&b| b == b'\n')
        .take(bytes.iter().filter(|&&b| b == b'\n').count())
        .map(|l| Arc::from(String::from_utf8_lossy(l).as_ref()))
        .collect())
}

/// `streamd line-server`: binds both ports, serves until `shutdown`.
pub async fn run(data: &Path, source_bind: &str, feed_bind: &str, shutdown: impl std::future::Future<Output = ()>) -> anyhow::Result<()> {
    let server = LineServer::open(data).map_err(|e| anyhow::anyhow!("cannot open {}: {e}", lines::dir(data).display()))?;
    let source = TcpListener::bind(source_bind).await.map_err(|e| anyhow::anyhow!("cannot bind {source_bind}: {e}"))?;
    let feed = TcpListener::bind(feed_bind).await.map_err(|e| anyhow::anyhow!("cannot bind {feed_bind}: {e}"))?;
    tracing::info!("line server: sources on {source_bind}, feeders on {feed_bind}");
    server.serve(source, feed, shutdown).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::input::ReadOutcome;
    use crate::taskmanager::socket::SocketLines;

    /// A server on ephemeral ports: (server, source address, feed address).
    async fn start(data: &Path) -> (Arc<LineServer>, String, String, tokio::sync::oneshot::Sender<()>) {
        let server = LineServer::open(data).unwrap();
        let source = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let feed = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (sa, fa) = (source.local_addr().unwrap().to_string(), feed.local_addr().unwrap().to_string());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(server.clone().serve(source, feed, async move {
            let _ = stopped.await;
        }));
        (server, sa, fa, stop)
    }

    /// Feeds `text` through the feed port; returns the server's answer.
    async fn feed(addr: &str, text: &str) -> String {
        let mut s = TcpStream::connect(addr).await.unwrap();
        let mut greeting = vec![0u8; 0];
        let mut r = BufReader::new(&mut s);
        r.read_until(b'\n', &mut greeting).await.unwrap();
        assert!(lines::parse_greeting(&String::from_utf8_lossy(&greeting)).is_some());
        s.write_all(text.as_bytes()).await.unwrap();
        s.shutdown().await.unwrap();
        let mut answer = String::new();
        s.read_to_string(&mut answer).await.unwrap();
        answer
    }

    /// Reads from a source until `n` lines, the end, or an error.
    async fn take(src: &mut SocketLines, n: usize) -> (Vec<(u64, String)>, Result<bool, String>) {
        let mut got = Vec::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while got.len() < n && tokio::time::Instant::now() < deadline {
            let mut text = String::new();
            match src.next_line(&mut text) {
                Ok(ReadOutcome::Line(i)) => got.push((i, text)),
                Ok(ReadOutcome::End) => return (got, Ok(true)),
                Ok(ReadOutcome::Pending) => tokio::time::sleep(Duration::from_millis(5)).await,
                Err(e) => return (got, Err(e)),
            }
        }
        (got, Ok(false))
    }

    #[tokio::test]
    async fn numbers_lines_in_feed_order_and_never_sends_one_twice() {
        let dir = tempfile::tempdir().unwrap();
        let (_server, sa, fa, _stop) = start(dir.path()).await;
        assert_eq!(feed(&fa, "a b\nc\n").await, "ok 2\n");
        let mut first = SocketLines::connect(sa.clone(), 1, 0);
        let (got, _) = take(&mut first, 2).await;
        assert_eq!(got, vec![(0, "a b".to_string()), (1, "c".to_string())]);
        // A restarted job reconnects (restored to line 1): the server goes on from where it
        // was, and journals that lines 1..2 went to a connection that is gone.
        drop(first);
        assert_eq!(feed(&fa, "d\n").await, "ok 3\n");
        let mut second = SocketLines::connect(sa.clone(), 2, 1);
        let (got, _) = take(&mut second, 1).await;
        assert_eq!(got, vec![(2, "d".to_string())]);
        assert_eq!(second.next_index(), 3);
        let journal = lines::read_journal(&lines::journal_path(dir.path())).unwrap();
        let opens: Vec<(u64, u64, u64)> = journal
            .iter()
            .filter_map(|e| match e {
                Event::Open { attempt, restored, first, .. } => Some((*attempt, *restored, *first)),
                _ => None,
            })
            .collect();
        assert_eq!(opens, vec![(1, 0, 0), (2, 1, 2)]);
        assert!(journal.iter().any(|e| matches!(e, Event::Close { conn: 1, sent: 2, .. })), "{journal:?}");
        assert_eq!(std::fs::read_to_string(lines::fed_path(dir.path())).unwrap(), "a b\nc\nd\n");
        // A feeder that dies mid-line: the half line is not stored.
        assert_eq!(feed(&fa, "e\nhal").await, "ok 4\n");
        assert_eq!(std::fs::read_to_string(lines::fed_path(dir.path())).unwrap(), "a b\nc\nd\ne\n");
    }

    #[tokio::test]
    async fn a_source_waits_for_an_unreachable_server_and_sees_the_end() {
        let dir = tempfile::tempdir().unwrap();
        // Reserve a port, free it, and connect before anything listens there.
        let port = TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap().port();
        let mut src = SocketLines::connect(format!("127.0.0.1:{port}"), 1, 0);
        let mut text = String::new();
        assert_eq!(src.next_line(&mut text), Ok(ReadOutcome::Pending));
        tokio::time::sleep(Duration::from_millis(250)).await;
        let server = LineServer::open(dir.path()).unwrap();
        let source = TcpListener::bind(format!("127.0.0.1:{port}")).await.unwrap();
        let feed_l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let fa = feed_l.local_addr().unwrap().to_string();
        tokio::spawn(server.clone().serve(source, feed_l, std::future::pending()));
        assert_eq!(feed(&fa, "x\n\0end\n").await, "ok 1\n");
        let (got, end) = take(&mut src, 10).await;
        assert_eq!(got, vec![(0, "x".to_string())]);
        assert_eq!(end, Ok(true));
        // After the end a new connection gets the end at once, and feeding is refused.
        let mut late = SocketLines::connect(format!("127.0.0.1:{port}"), 2, 1);
        assert_eq!(take(&mut late, 10).await, (vec![], Ok(true)));
        assert!(feed(&fa, "more\n").await.starts_with("error "), "input ended");
    }

    #[tokio::test]
    async fn garbage_and_a_vanished_server_are_errors_on_that_connection() {
        let dir = tempfile::tempdir().unwrap();
        let (server, sa, fa, stop) = start(dir.path()).await;
        // Garbage instead of a hello: that connection is closed, the server serves on.
        let mut junk = TcpStream::connect(&sa).await.unwrap();
        junk.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
        let mut rest = Vec::new();
        let _ = junk.read_to_end(&mut rest).await;
        assert!(rest.is_empty(), "no header for garbage");
        assert_eq!(feed(&fa, "one\n").await, "ok 1\n");
        let mut src = SocketLines::connect(sa.clone(), 1, 0);
        assert_eq!(take(&mut src, 1).await.0, vec![(0, "one".to_string())]);
        // A newer connection replaces the older, which is closed without the end marker:
        // to the old source that is a broken input, not the end.
        let _newer = SocketLines::connect(sa.clone(), 2, 1);
        let (_, res) = take(&mut src, 1).await;
        assert!(matches!(&res, Err(e) if e.contains("before the end")), "{res:?}");
        drop(stop);
        drop(server);
    }

    #[test]
    fn a_restarted_server_keeps_what_was_fed_and_drops_a_torn_last_line() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(lines::dir(dir.path())).unwrap();
        std::fs::write(lines::fed_path(dir.path()), "a\nb\nhal").unwrap();
        let open = Event::Open { t_ms: 1, conn: 3, peer: "p".into(), attempt: 1, restored: 0, first: 0 };
        std::fs::write(lines::journal_path(dir.path()), format!("{}\n", serde_json::to_string(&open).unwrap())).unwrap();
        let s = LineServer::open(dir.path()).unwrap();
        assert_eq!(s.lock().conns, 3, "connection ids go on from the journal's");
        assert_eq!(s.fed(), (2, false));
        assert_eq!(std::fs::read_to_string(lines::fed_path(dir.path())).unwrap(), "a\nb\n");
        assert!(s.feed(vec![lines::END.to_string()]).is_err());
        s.end();
        drop(s);
        let s = LineServer::open(dir.path()).unwrap();
        assert_eq!(s.fed(), (2, true));
        assert_eq!(s.lock().cursor, 2, "what a previous life did not send is not sent");
    }
}
