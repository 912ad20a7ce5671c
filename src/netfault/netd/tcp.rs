//! Bulk TCP throughput: `sink` discards whatever connects, `send` pushes data for a while
//! and reports what was delivered. Counts only bytes the sink acknowledged by closing: the
//! sender shuts its side down, waits for the sink's EOF, and divides by the whole time.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::netfault::probe::Throughput;

/// Accepts connections on `port` until `stop` is set; reads each to its end, then closes.
pub fn sink(port: u16, stop: &'static AtomicBool) -> io::Result<()> {
    let listener = TcpListener::bind(("0.0.0.0", port))?;
    listener.set_nonblocking(true)?;
    eprintln!("chaos-netd sink: listening on tcp {port}");
    while !stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((mut conn, _)) => {
                conn.set_nonblocking(false)?;
                std::thread::spawn(move || {
                    let mut buf = vec![0u8; 1 << 16];
                    while let Ok(n) = conn.read(&mut buf) {
                        if n == 0 || stop.load(Ordering::Relaxed) {
                            break;
                        }
                    }
                });
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(20))
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Sends for `duration`, then waits (bounded) until the sink has read everything.
pub fn send(to: SocketAddr, duration: Duration, stop: &AtomicBool) -> io::Result<Throughput> {
    let start = Instant::now();
    let mut conn = TcpStream::connect_timeout(&to, Duration::from_secs(10))?;
    // A bounded write timeout keeps a stalled path from hanging the sender.
    conn.set_write_timeout(Some(Duration::from_millis(200)))?;
    let buf = vec![0x5au8; 1 << 16];
    let mut bytes = 0u64;
    while start.elapsed() < duration && !stop.load(Ordering::Relaxed) {
        match conn.write(&buf) {
            Ok(n) => bytes += n as u64,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::Interrupted
                ) => {}
            Err(e) => return Err(e),
        }
    }
    conn.shutdown(Shutdown::Write)?;
    // The sink closes once it has read our EOF: every byte sent has then arrived.
    conn.set_read_timeout(Some(Duration::from_secs(60)))?;
    let mut rest = [0u8; 64];
    let _ = conn.read(&mut rest);
    let secs = start.elapsed().as_secs_f64();
    Ok(Throughput {
        bytes,
        secs,
        bits_per_s: bytes as f64 * 8.0 / secs,
    })
}
