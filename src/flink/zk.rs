//! The smallest ZooKeeper client that reads what Flink's HA services publish: one TCP
//! session, `getData` and `getChildren` without watches, then `closeSession`. ZooKeeper's
//! wire format (jute) is simple enough that a crate is not worth its dependency tree:
//! every message is a 4-byte big-endian length and a body of big-endian integers and
//! length-prefixed byte strings.
//!
//! Errors say which server and znode; a server that answers something malformed is an
//! error, never a panic.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Opcodes and error codes of ZooKeeper's protocol (`ZooDefs.OpCode`, `KeeperException.Code`).
const OP_GET_DATA: i32 = 4;
const OP_GET_CHILDREN: i32 = 8;
const OP_CLOSE: i32 = -11;
const ERR_NO_NODE: i32 = -101;
/// The longest reply accepted: ZooKeeper's own `jute.maxbuffer` default (1 MiB) plus room
/// for the header and stat.
const MAX_FRAME: usize = (1 << 20) + 4096;
/// The session timeout asked for, ms: these sessions last a request or two and are
/// closed, so this only bounds how long the server remembers a client that vanished
/// (servers grant at least 2 ticks).
const SESSION_MS: i32 = 4000;

/// A ZooKeeper request or answer that failed.
#[derive(Debug, thiserror::Error)]
pub enum ZkError {
    /// Connecting, writing or reading failed, or took longer than the timeout.
    #[error("zookeeper {server}: {message}")]
    Io { server: String, message: String },
    /// The server answered something this client cannot decode.
    #[error("zookeeper {server}: malformed answer: {message}")]
    Protocol { server: String, message: String },
    /// The server refused the request with ZooKeeper error `code` (e.g. -4 connection
    /// loss, -112 session expired).
    #[error("zookeeper {server}: {what}: error code {code}")]
    Server { server: String, what: String, code: i32 },
}

/// One session with one ZooKeeper server.
pub struct ZkSession {
    server: String,
    stream: TcpStream,
    timeout: Duration,
    xid: i32,
}

impl ZkSession {
    /// Connects to `server` (`host:port`) and opens a session; each network step may take
    /// up to `timeout`.
    pub async fn connect(server: &str, timeout: Duration) -> Result<ZkSession, ZkError> {
        let io = |message: String| ZkError::Io { server: server.to_string(), message };
        let stream = tokio::time::timeout(timeout, TcpStream::connect(server))
            .await
            .map_err(|_| io(format!("no connection within {timeout:?}")))?
            .map_err(|e| io(format!("connecting: {e}")))?;
        let mut session = ZkSession { server: server.to_string(), stream, timeout, xid: 0 };
        // ConnectRequest: protocolVersion, lastZxidSeen, timeOut (ms, the session's),
        // sessionId (0: a new one), passwd (16 zero bytes), readOnly.
        let mut req = Vec::with_capacity(45);
        req.extend(0i32.to_be_bytes());
        req.extend(0i64.to_be_bytes());
        req.extend(SESSION_MS.to_be_bytes());
        req.extend(0i64.to_be_bytes());
        put_bytes(&mut req, &[0u8; 16]);
        req.push(0);
        session.send(&req).await?;
        let reply = session.recv().await?;
        // ConnectResponse: protocolVersion, timeOut, sessionId, passwd[, readOnly]. A
        // granted timeout of 0 is the server's way of refusing the session.
        let r = Reader::new(&reply);
        let granted = r.i32_at(4).ok_or_else(|| session.protocol("connect reply too short"))?;
        if granted <= 0 {
            return Err(io("the server refused the session".into()));
        }
        Ok(session)
    }

    /// The data of `path`; `None` when the znode does not exist.
    pub async fn get_data(&mut self, path: &str) -> Result<Option<Vec<u8>>, ZkError> {
        let Some(body) = self.request(OP_GET_DATA, path).await? else { return Ok(None) };
        let mut r = Reader::new(&body);
        // GetDataResponse: data (length -1: null), then the znode's Stat (ignored).
        match r.bytes() {
            Some(data) => Ok(Some(data.unwrap_or_default())),
            None => Err(self.protocol(&format!("getData {path}: truncated data"))),
        }
    }

    /// The children of `path` (names, unordered); `None` when the znode does not exist.
    pub async fn get_children(&mut self, path: &str) -> Result<Option<Vec<String>>, ZkError> {
        let Some(body) = self.request(OP_GET_CHILDREN, path).await? else { return Ok(None) };
        let mut r = Reader::new(&body);
        let bad = || format!("getChildren {path}: malformed list");
        let n = r.i32().ok_or_else(|| self.protocol(&bad()))?;
        let mut out = Vec::new();
        for _ in 0..n.max(0) {
            let name = r.bytes().flatten().ok_or_else(|| self.protocol(&bad()))?;
            out.push(String::from_utf8_lossy(&name).into_owned());
        }
        Ok(Some(out))
    }

    /// Closes the session (so the server forgets it now rather than after its timeout).
    /// Best effort: the session expires anyway.
    pub async fn close(mut self) {
        self.xid += 1;
        let mut req = Vec::new();
        req.extend(self.xid.to_be_bytes());
        req.extend(OP_CLOSE.to_be_bytes());
        if self.send(&req).await.is_ok() {
            let _ = self.recv().await;
        }
    }

    /// Sends `op` on `path` (no watch) and returns the reply body; `None` for "no node".
    async fn request(&mut self, op: i32, path: &str) -> Result<Option<Vec<u8>>, ZkError> {
        self.xid += 1;
        let mut req = Vec::new();
        req.extend(self.xid.to_be_bytes());
        req.extend(op.to_be_bytes());
        put_bytes(&mut req, path.as_bytes());
        req.push(0); // watch: false
        self.send(&req).await?;
        loop {
            let reply = self.recv().await?;
            // ReplyHeader: xid, zxid, err. Negative xids are pings and notifications
            // (none are asked for, but a server may still send them): skip.
            let mut r = Reader::new(&reply);
            let (Some(xid), Some(_zxid), Some(err)) = (r.i32(), r.i64(), r.i32()) else {
                return Err(self.protocol("reply header too short"));
            };
            if xid < 0 {
                continue;
            }
            if xid != self.xid {
                return Err(self.protocol(&format!("reply to request {xid}, expected {}", self.xid)));
            }
            return match err {
                0 => Ok(Some(r.rest().to_vec())),
                ERR_NO_NODE => Ok(None),
                code => Err(ZkError::Server { server: self.server.clone(), what: format!("op {op} on {path}"), code }),
            };
        }
    }

    async fn send(&mut self, body: &[u8]) -> Result<(), ZkError> {
        let mut frame = Vec::with_capacity(body.len() + 4);
        frame.extend((body.len() as u32).to_be_bytes());
        frame.extend(body);
        match tokio::time::timeout(self.timeout, self.stream.write_all(&frame)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(self.io(&format!("writing: {e}"))),
            Err(_) => Err(self.io(&format!("writing took more than {:?}", self.timeout))),
        }
    }

    async fn recv(&mut self) -> Result<Vec<u8>, ZkError> {
        let timeout = self.timeout;
        let read = async {
            let mut len = [0u8; 4];
            self.stream.read_exact(&mut len).await?;
            let len = u32::from_be_bytes(len) as usize;
            if len > MAX_FRAME {
                return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, format!("frame of {len} bytes")));
            }
            let mut body = vec![0u8; len];
            self.stream.read_exact(&mut body).await?;
            Ok(body)
        };
        match tokio::time::timeout(timeout, read).await {
            Ok(Ok(body)) => Ok(body),
            Ok(Err(e)) => Err(self.io(&format!("reading: {e}"))),
            Err(_) => Err(self.io(&format!("no answer within {timeout:?}"))),
        }
    }

    fn io(&self, message: &str) -> ZkError {
        ZkError::Io { server: self.server.clone(), message: message.to_string() }
    }

    fn protocol(&self, message: &str) -> ZkError {
        ZkError::Protocol { server: self.server.clone(), message: message.to_string() }
    }
}

/// Appends a jute buffer/string: 4-byte length, bytes.
fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    out.extend((b.len() as i32).to_be_bytes());
    out.extend(b);
}

/// Big-endian reads that return `None` past the end instead of panicking.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let s = self.buf.get(self.pos..self.pos.checked_add(n)?)?;
        self.pos += n;
        Some(s)
    }

    fn i32(&mut self) -> Option<i32> {
        Some(i32::from_be_bytes(self.take(4)?.try_into().ok()?))
    }

    fn i64(&mut self) -> Option<i64> {
        Some(i64::from_be_bytes(self.take(8)?.try_into().ok()?))
    }

    /// The i32 at byte `at`, without moving.
    fn i32_at(&self, at: usize) -> Option<i32> {
        Some(i32::from_be_bytes(self.buf.get(at..at + 4)?.try_into().ok()?))
    }

    /// A jute buffer: `Some(None)` for the null buffer (length -1), `None` when truncated.
    fn bytes(&mut self) -> Option<Option<Vec<u8>>> {
        let n = self.i32()?;
        if n < 0 {
            return Some(None);
        }
        Some(Some(self.take(n as usize)?.to_vec()))
    }

    fn rest(&self) -> &'a [u8] {
        &self.buf[self.pos.min(self.buf.len())..]
    }
}

/// Per-step timeout of a ZooKeeper read.
pub const ZK_TIMEOUT: Duration = Duration::from_secs(2);

/// Waits until ZooKeeper at `zk` serves reads (the jobmanagers' Curator gives up after a
/// few retries, so it must be up before they start).
pub async fn wait_zookeeper(zk: &str, timeout: Duration) -> super::Result<()> {
    let start = Instant::now();
    let mut last;
    loop {
        match ZkSession::connect(zk, ZK_TIMEOUT).await {
            Ok(mut s) => {
                let root = s.get_children("/").await;
                s.close().await;
                match root {
                    Ok(_) => return Ok(()),
                    Err(e) => last = e.to_string(),
                }
            }
            Err(e) => last = e.to_string(),
        }
        if start.elapsed() > timeout {
            return Err(super::FlinkError::Timeout(format!("ZooKeeper at {zk} serving within {timeout:?} (last: {last})")));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// `<ip>:<client port>` of a ZooKeeper node with IP `ip`.
pub fn zk_address(ip: &str) -> String {
    format!("{ip}:{}", super::config::ZK_CLIENT_PORT)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    /// A fake server answering one connect, one getData (`/a` exists, `/b` does not),
    /// one getChildren and the close, as a real server frames them.
    async fn fake_server(listener: TcpListener) {
        let (mut s, _) = listener.accept().await.unwrap();
        let frame = |body: Vec<u8>| {
            let mut f = (body.len() as u32).to_be_bytes().to_vec();
            f.extend(body);
            f
        };
        let connect = read(&mut s).await;
        assert_eq!(connect.len(), 4 + 8 + 4 + 8 + 4 + 16 + 1);
        let mut reply = Vec::new();
        reply.extend(0i32.to_be_bytes());
        reply.extend(4000i32.to_be_bytes());
        reply.extend(77i64.to_be_bytes());
        put_bytes(&mut reply, &[0u8; 16]);
        s.write_all(&frame(reply)).await.unwrap();
        for _ in 0..4 {
            let req = read(&mut s).await;
            let mut r = Reader::new(&req);
            let (xid, op) = (r.i32().unwrap(), r.i32().unwrap());
            let path = r.bytes().flatten().map(|p| String::from_utf8(p).unwrap()).unwrap_or_default();
            // A ping first, which the client must skip.
            let mut ping = Vec::new();
            ping.extend((-2i32).to_be_bytes());
            ping.extend(0i64.to_be_bytes());
            ping.extend(0i32.to_be_bytes());
            s.write_all(&frame(ping)).await.unwrap();
            let mut reply = Vec::new();
            reply.extend(xid.to_be_bytes());
            reply.extend(5i64.to_be_bytes());
            match (op, path.as_str()) {
                (OP_GET_DATA, "/a") => {
                    reply.extend(0i32.to_be_bytes());
                    put_bytes(&mut reply, b"hello");
                    reply.extend([0u8; 68]);
                }
                (OP_GET_CHILDREN, "/") => {
                    reply.extend(0i32.to_be_bytes());
                    reply.extend(2i32.to_be_bytes());
                    put_bytes(&mut reply, b"flink");
                    put_bytes(&mut reply, b"zookeeper");
                }
                (OP_CLOSE, _) => reply.extend(0i32.to_be_bytes()),
                _ => reply.extend(ERR_NO_NODE.to_be_bytes()),
            }
            s.write_all(&frame(reply)).await.unwrap();
        }
    }

    async fn read(s: &mut TcpStream) -> Vec<u8> {
        let mut len = [0u8; 4];
        s.read_exact(&mut len).await.unwrap();
        let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
        s.read_exact(&mut body).await.unwrap();
        body
    }

    #[tokio::test]
    async fn reads_data_and_children_and_tells_missing_nodes() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let server = tokio::spawn(fake_server(listener));
        let mut zk = ZkSession::connect(&addr, Duration::from_secs(2)).await.unwrap();
        assert_eq!(zk.get_data("/a").await.unwrap(), Some(b"hello".to_vec()));
        assert_eq!(zk.get_data("/b").await.unwrap(), None);
        assert_eq!(zk.get_children("/").await.unwrap(), Some(vec!["flink".to_string(), "zookeeper".to_string()]));
        zk.close().await;
        server.await.unwrap();
    }

    #[tokio::test]
    async fn a_silent_or_absent_server_is_an_error_not_a_hang() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        // Accepts, never answers.
        let _keep = tokio::spawn(async move {
            let _conn = listener.accept().await;
            tokio::time::sleep(Duration::from_secs(5)).await;
        });
        let err = ZkSession::connect(&addr, Duration::from_millis(200)).await.err().unwrap();
        assert!(err.to_string().contains("no answer within"), "{err}");
        let closed = TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap().to_string();
        let err = ZkSession::connect(&closed, Duration::from_millis(500)).await.err().unwrap();
        assert!(matches!(err, ZkError::Io { .. }), "{err}");
    }
}
