//! The REST client against a fake jobmanager over real TCP: typed answers, the three
//! kinds of failure, and `wait_ready` polling until every taskmanager has registered.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chaos::client::{ClientError, StreamdClient};
use streamd_contract::api::{CheckpointsInfo, JobState, Overview};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

fn overview(taskmanagers: usize) -> Overview {
    Overview {
        jobmanager: "jobmanager-1".into(),
        leader: true,
        leader_address: None,
        leader_epoch: 1,
        job_id: "wordcount".into(),
        job_state: JobState::Running,
        taskmanagers,
        slots_total: 2 * taskmanagers as u32,
        slots_available: 0,
    }
}

/// Serves until the test ends. `/overview` reports one more taskmanager per request (up
/// to 3), so `wait_ready(3, ..)` must poll several times.
async fn fake_jobmanager() -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else { return };
            let hits = counter.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let n = sock.read(&mut buf).await.unwrap_or(0);
                let req = String::from_utf8_lossy(&buf[..n]);
                let path = req.split_whitespace().nth(1).unwrap_or("/").to_string();
                let (status, body) = match path.as_str() {
                    "/overview" => {
                        let n = hits.fetch_add(1, Ordering::SeqCst) + 1;
                        ("200 OK", serde_json::to_string(&overview(n.min(3))).unwrap())
                    }
                    "/jobs/wordcount/checkpoints" => (
                        "200 OK",
                        serde_json::to_string(&CheckpointsInfo {
                            completed: vec![],
                            completed_total: 4,
                            failed_total: 1,
                            in_progress: Some(5),
                            latest: None,
                            restored: None,
                        })
                        .unwrap(),
                    ),
                    "/jobs/garbled" => ("200 OK", "{\"id\": 3".to_string()),
                    "/metrics" => ("200 OK", "streamd_records_in_total 42\n".to_string()),
                    "/slow/overview" => {
                        tokio::time::sleep(Duration::from_secs(5)).await;
                        ("200 OK", String::new())
                    }
                    _ => ("404 Not Found", "no such job".to_string()),
                };
                let resp = format!(
                    "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = sock.write_all(resp.as_bytes()).await;
            });
        }
    });
    (url, hits)
}

#[tokio::test]
async fn answers_are_typed_and_failures_classified() {
    let (url, _) = fake_jobmanager().await;
    let client = StreamdClient::new(format!("{url}/")).unwrap();
    assert_eq!(client.base_url(), url);

    let o = client.overview().await.unwrap();
    assert_eq!((o.job_id.as_str(), o.job_state, o.taskmanagers), ("wordcount", JobState::Running, 1));
    let c = client.checkpoints("wordcount").await.unwrap();
    assert_eq!((c.completed_total, c.in_progress), (4, Some(5)));
    assert!(client.metrics().await.unwrap().contains("streamd_records_in_total 42"));

    match client.job("nope").await {
        Err(ClientError::Status { status: 404, body, .. }) => assert_eq!(body, "no such job"),
        other => panic!("expected a 404, got {other:?}"),
    }
    assert!(matches!(client.job("garbled").await, Err(ClientError::Json { .. })));

    // Nothing listening: a connection error, reported as unreachable.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let dead = StreamdClient::new(format!("http://127.0.0.1:{port}")).unwrap();
    let err = dead.overview().await.unwrap_err();
    assert!(matches!(err, ClientError::Connect { .. }) && err.is_unreachable(), "{err:?}");
    assert!(err.to_string().to_lowercase().contains("refused"), "{err}");

    // A jobmanager that never answers: a timeout after ~2 s, not a hang.
    let slow = StreamdClient::new(format!("{url}/slow")).unwrap();
    let t = Instant::now();
    let err = slow.overview().await.unwrap_err();
    assert!(matches!(err, ClientError::Timeout { .. }), "{err:?}");
    assert!(t.elapsed() < Duration::from_secs(4), "{:?}", t.elapsed());
}

#[tokio::test]
async fn wait_ready_polls_until_every_taskmanager_registered() {
    let (url, hits) = fake_jobmanager().await;
    let client = StreamdClient::new(url).unwrap();
    let t = Instant::now();
    let o = client.wait_ready(3, Duration::from_secs(5)).await.unwrap();
    assert_eq!(o.taskmanagers, 3);
    assert_eq!(hits.load(Ordering::SeqCst), 3, "one request per poll until ready");
    assert!(t.elapsed() < Duration::from_secs(1), "polls every 50 ms: {:?}", t.elapsed());

    // Never ready: gives up at the deadline with the last thing it saw.
    let err = client.wait_ready(4, Duration::from_millis(300)).await.unwrap_err();
    match err {
        ClientError::NotReady { waited, last, .. } => {
            assert!(waited >= Duration::from_millis(300) && waited < Duration::from_secs(2), "{waited:?}");
            assert!(last.contains("3 of 4 taskmanagers"), "{last}");
        }
        other => panic!("expected NotReady, got {other:?}"),
    }

    // Not started at all: also NotReady, naming the connection failure.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let dead = StreamdClient::new(format!("http://127.0.0.1:{port}")).unwrap();
    let err = dead.wait_ready(1, Duration::from_millis(200)).await.unwrap_err();
    assert!(err.to_string().contains("cannot connect"), "{err}");
}
