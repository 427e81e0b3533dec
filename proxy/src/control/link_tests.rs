//! The control link against a stand-in control plane on 127.0.0.1 (real sockets, real
//! time, short silence limits): the bearer token, the hello and the ack, the pings that
//! keep a quiet link, giving up on one that never answers and dialling again, and
//! `leaving` on stop.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::Message;

use super::health::{HealthProbe, Target};
use super::link::ControlLink;
use crate::wire::bootstrap::Bootstrap;

/// What the stand-in saw: the Authorization of each dial, and every frame's kind or text.
#[derive(Default)]
struct Seen {
    authorizations: Vec<String>,
    frames: Vec<String>,
}

/// A stand-in control plane: sends one snapshot to each link; if `answer` it reads on
/// (answering pings), else it never reads again (its pongs never come).
async fn stand_in(answer: bool) -> (String, Arc<Mutex<Seen>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(Seen::default()));
    let shared = seen.clone();
    tokio::spawn(async move {
        loop {
            let (socket, _) = listener.accept().await.unwrap();
            let seen = shared.clone();
            tokio::spawn(async move {
                let record = seen.clone();
                // The handshake callback's type is tungstenite's, error response and all.
                #[allow(clippy::result_large_err)]
                let callback = move |request: &Request, response: Response| {
                    let auth = request.headers().get("authorization");
                    let auth = auth.map(|v| v.to_str().unwrap().to_string());
                    record
                        .lock()
                        .unwrap()
                        .authorizations
                        .push(auth.unwrap_or_default());
                    Ok(response)
                };
                let mut ws = tokio_tungstenite::accept_hdr_async(socket, callback)
                    .await
                    .unwrap();
                let snapshot =
                    json!({"type": "snapshot", "snapshot": {"version": 1, "routes": {}}});
                ws.send(Message::text(snapshot.to_string())).await.unwrap();
                if !answer {
                    let hello = ws.next().await;
                    seen.lock().unwrap().frames.push(format!("{hello:?}"));
                    std::future::pending::<()>().await;
                }
                while let Some(Ok(frame)) = ws.next().await {
                    let shown = match frame {
                        Message::Text(text) => text.to_string(),
                        Message::Ping(_) => "PING".to_string(),
                        other => format!("{other:?}"),
                    };
                    seen.lock().unwrap().frames.push(shown);
                }
            });
        }
    });
    (url, seen)
}

fn linked(url: &str, name: &str) -> (ControlLink, std::path::PathBuf) {
    let dir = std::env::temp_dir().join(format!("rlink-stand-in-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("token"), "the-token\n").unwrap();
    let boot = Bootstrap::from_value(&json!({
        "service": "web", "version": "v1", "instance": "web-1", "control_plane": url,
        "token_file": dir.join("token"), "state_dir": dir.join("state"),
    }))
    .unwrap();
    let health = Arc::new(HealthProbe::new(Target {
        app_port: None,
        path: None,
    }));
    let link = ControlLink::new(boot, health)
        .with_silence(Duration::from_millis(100), Duration::from_millis(500));
    (link, dir)
}

async fn wait_for(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !check() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_quiet_link_that_answers_pings_holds_and_says_leaving_on_stop() {
    let (url, seen) = stand_in(true).await;
    let (mut link, dir) = linked(&url, "answers");
    let (stop, stopped) = watch::channel(false);
    let task = tokio::spawn(async move { link.run(stopped).await });
    // Ten silence limits' worth of pings: their pongs alone keep the link.
    wait_for("ten pings", || {
        seen.lock()
            .unwrap()
            .frames
            .iter()
            .filter(|f| *f == "PING")
            .count()
            >= 10
    })
    .await;
    stop.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .unwrap()
        .unwrap();
    wait_for("leaving", || {
        seen.lock()
            .unwrap()
            .frames
            .iter()
            .any(|f| f == r#"{"type":"leaving"}"#)
    })
    .await;
    let seen = seen.lock().unwrap();
    assert_eq!(
        seen.authorizations,
        ["Bearer the-token"],
        "one dial, with the token stripped"
    );
    let texts: Vec<Value> = seen
        .frames
        .iter()
        .filter_map(|f| serde_json::from_str(f).ok())
        .collect();
    assert_eq!(texts[0]["type"], "hello");
    assert_eq!(texts[0]["node"]["instance"], "web-1");
    assert_eq!(texts[0]["node"]["inbound"], Value::Null);
    assert_eq!(texts[0]["snapshot_version"], 0);
    assert!(
        texts.contains(&json!({"type": "ack", "version": 1})),
        "{texts:?}"
    );
    assert!(
        texts.contains(&json!({"type": "health", "state": "ready", "detail": "no port to probe"}))
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn a_link_that_never_answers_is_given_up_and_dialled_again() {
    let (url, seen) = stand_in(false).await;
    let (mut link, dir) = linked(&url, "silent");
    let (stop, stopped) = watch::channel(false);
    let task = tokio::spawn(async move { link.run(stopped).await });
    wait_for("a second dial", || {
        seen.lock().unwrap().authorizations.len() >= 2
    })
    .await;
    stop.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .unwrap()
        .unwrap();
    let kept = std::fs::read_to_string(dir.join("state").join("snapshot.json")).unwrap();
    assert_eq!(serde_json::from_str::<Value>(&kept).unwrap()["version"], 1);
    std::fs::remove_dir_all(&dir).unwrap();
}
