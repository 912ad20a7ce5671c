//! The RPC side: the listener taskmanagers connect to. A connection task reads the
//! `Register` frame, then turns every frame into an [`Event`] for the master and writes
//! what the master sends through the channel it handed over with the registration.
//! Nothing is decided here: a broken or garbled connection is reported, not judged.

use crate::wire::{self, JmToTm, TmToJm};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::AbortHandle;

/// What connection tasks tell the actor.
#[derive(Debug)]
pub enum Event {
    Registered { conn: u64, id: String, data_address: String, slots: u32, tx: mpsc::UnboundedSender<JmToTm>, reader: AbortHandle },
    Message { conn: u64, msg: TmToJm },
    Lost { conn: u64, cause: String },
}

pub(super) async fn accept_loop(listener: TcpListener, events: mpsc::UnboundedSender<Event>) {
    let mut next_conn = 0u64;
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!("RPC accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        next_conn += 1;
        let conn = next_conn;
        let events = events.clone();
        tokio::spawn(async move {
            if let Err(e) = connection(conn, stream, events).await {
                tracing::warn!(%peer, "RPC connection closed: {e}");
            }
        });
    }
}

/// One taskmanager connection: the first frame must be `Register`; then frames become
/// events until the connection breaks (a garbage frame closes this connection only).
async fn connection(conn: u64, stream: TcpStream, events: mpsc::UnboundedSender<Event>) -> Result<(), String> {
    let _ = stream.set_nodelay(true);
    let (r, mut w) = stream.into_split();
    let mut r = tokio::io::BufReader::new(r);
    let mut buf = Vec::new();
    let first: TmToJm = tokio::time::timeout(Duration::from_secs(5), wire::read_json(&mut r, &mut buf))
        .await
        .map_err(|_| "no registration within 5 s".to_string())?
        .map_err(|e| e.to_string())?;
    let TmToJm::Register { id, data_address, slots } = first else {
        return Err("unexpected first frame (expected Register)".into());
    };
    let (tx, mut rx) = mpsc::unbounded_channel::<JmToTm>();
    let writer = tokio::spawn(async move {
        while let Some(m) = rx.recv().await {
            if wire::write_json(&mut w, &m).await.is_err() {
                break;
            }
        }
    });
    let ev2 = events.clone();
    let reader = tokio::spawn(async move {
        let mut buf = Vec::new();
        let cause = loop {
            match wire::read_json::<_, TmToJm>(&mut r, &mut buf).await {
                Ok(msg) => {
                    if ev2.send(Event::Message { conn, msg }).is_err() {
                        return;
                    }
                }
                Err(e) => break e.to_string(),
            }
        };
        let _ = ev2.send(Event::Lost { conn, cause });
    });
    let _ = events.send(Event::Registered { conn, id, data_address, slots, tx, reader: reader.abort_handle() });
    let _ = reader.await;
    writer.abort();
    Ok(())
}
