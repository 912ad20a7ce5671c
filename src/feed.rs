//! Feeding the line server (`lines-1`) — chaos's side of `nc -l 9000`: the run loop feeds a
//! scenario's input at `input.rate` and then ends it; `chaos feed` writes stdin's lines;
//! `chaos verify` ends the input. Protocol: [`streamd_contract::lines`].
//!
//! A feed survives a line server that goes away: it reconnects, and the server's greeting
//! says how many lines it holds, so the feed goes on from there and no line is stored twice.

use std::time::Duration;
use streamd_contract::lines;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader, BufWriter};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// Between connection attempts while the line server is unreachable.
const RETRY: Duration = Duration::from_millis(200);

/// A connection to the feed port, after its greeting.
struct Conn {
    stream: BufReader<TcpStream>,
    fed: u64,
    ended: bool,
}

async fn connect(addr: &str) -> Result<Conn, String> {
    let s = TcpStream::connect(addr).await.map_err(|e| format!("cannot reach the line server at {addr}: {e}"))?;
    let mut stream = BufReader::new(s);
    let mut greeting = String::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_line(&mut greeting))
        .await
        .map_err(|_| format!("the line server at {addr} sent no greeting"))?
        .map_err(|e| format!("the line server at {addr}: {e}"))?;
    let (fed, ended) =
        lines::parse_greeting(&greeting).ok_or_else(|| format!("the line server at {addr} greeted with {greeting:?}: expected `fed <n> ended <0|1>`"))?;
    Ok(Conn { stream, fed, ended })
}

/// Half-closes and reads the server's answer: the lines it holds.
async fn finish(mut c: Conn) -> Result<u64, String> {
    c.stream.get_mut().shutdown().await.map_err(|e| format!("line server: {e}"))?;
    let mut answer = String::new();
    c.stream.read_to_string(&mut answer).await.map_err(|e| format!("line server: {e}"))?;
    match answer.trim_end().split_once(' ') {
        Some(("ok", n)) => n.parse().map_err(|_| format!("line server answered {answer:?}")),
        Some(("error", why)) => Err(format!("the line server refused the lines: {why}")),
        _ => Err(format!("the line server answered {answer:?}: expected `ok <lines>`")),
    }
}

/// Writes each line from `lines` to the line server at `addr` as it comes (nothing is held
/// back: a typed line reaches the job at once, as through `nc`), until the channel closes.
/// Returns the lines the server holds afterwards.
pub async fn feed_channel(addr: &str, mut lines: tokio::sync::mpsc::Receiver<String>) -> Result<u64, String> {
    let mut c = connect(addr).await?;
    if c.ended {
        return Err("the input has ended (`chaos verify` ends it): start a new cluster to feed more".into());
    }
    {
        let w = c.stream.get_mut();
        while let Some(mut l) = lines.recv().await {
            l.push('\n');
            w.write_all(l.as_bytes()).await.map_err(|e| format!("feeding the line server: {e}"))?;
        }
    }
    finish(c).await
}

/// Ends the input (sources get the end once they have every line); idempotent.
pub async fn end(addr: &str) -> Result<u64, String> {
    let mut c = connect(addr).await?;
    if c.ended {
        return Ok(c.fed);
    }
    c.stream.get_mut().write_all(format!("{}\n", lines::END).as_bytes()).await.map_err(|e| format!("line server: {e}"))?;
    finish(c).await
}

/// Feeds all of `input` at `rate` lines/s (0: as fast as possible), then ends the input.
/// Retries while the line server is unreachable and resumes after the lines it holds,
/// until `give_up` passes. `addr` is where the server is now: a restarted container may
/// come back on another address, which the run loop then sends. Returns the lines fed.
pub async fn feed_all(addr: tokio::sync::watch::Receiver<String>, input: &[String], rate: u64, give_up: Instant) -> Result<u64, String> {
    let start = Instant::now();
    let mut last_err = String::new();
    loop {
        if Instant::now() > give_up {
            return Err(format!("feeding stopped: {last_err}"));
        }
        let now = addr.borrow().clone();
        let c = match connect(&now).await {
            Ok(c) => c,
            Err(e) => {
                last_err = e;
                tokio::time::sleep(RETRY).await;
                continue;
            }
        };
        if c.ended {
            return Ok(c.fed);
        }
        match pace(c, input, rate, start).await {
            Ok(n) => return Ok(n),
            Err(e) => {
                tracing::info!("feeding the line server: {e}; reconnecting");
                last_err = e;
                tokio::time::sleep(RETRY).await;
            }
        }
    }
}

/// One connection's share of [`feed_all`]: from the line the server holds on, paced from
/// `start` (line `i` is due at `i / rate` s), in writes of about 10 ms of lines.
async fn pace(mut c: Conn, input: &[String], rate: u64, start: Instant) -> Result<u64, String> {
    let from = c.fed as usize;
    if from > input.len() {
        return Err(format!("the line server holds {from} lines, more than the input's {}: a different input was fed", input.len()));
    }
    let chunk = if rate == 0 { 4096 } else { (rate / 100).max(1) as usize };
    {
        let mut w = BufWriter::with_capacity(256 * 1024, c.stream.get_mut());
        let err = |e: std::io::Error| format!("the connection broke: {e}");
        let mut i = from;
        while i < input.len() {
            if rate > 0 {
                tokio::time::sleep_until(start + Duration::from_secs_f64(i as f64 / rate as f64)).await;
            }
            let end = (i + chunk).min(input.len());
            for l in &input[i..end] {
                w.write_all(l.as_bytes()).await.map_err(err)?;
                w.write_all(b"\n").await.map_err(err)?;
            }
            w.flush().await.map_err(err)?;
            i = end;
        }
        w.write_all(format!("{}\n", lines::END).as_bytes()).await.map_err(err)?;
        w.flush().await.map_err(err)?;
    }
    finish(c).await
}
