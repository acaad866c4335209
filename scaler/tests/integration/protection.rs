//! TaskProtection against a tiny local HTTP server standing in for the ECS agent: the exact
//! requests it sends, and how it reads the agent's answers.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use scaler::{ProtectionError, TaskProtection};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

#[derive(Debug, Clone, PartialEq)]
struct Request {
    method: String,
    path: String,
    host: String,
    body: String,
}

/// Serve `answers` (status, body) in turn, recording each request.
async fn agent(answers: Vec<(u16, &'static str)>) -> (String, Arc<Mutex<Vec<Request>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    tokio::spawn(async move {
        for (status, body) in answers {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = Vec::new();
            let mut chunk = [0u8; 1024];
            // Read the head, then Content-Length bytes of body.
            let (head, mut rest) = loop {
                let n = s.read(&mut chunk).await.unwrap();
                assert!(n > 0, "client closed before a full request");
                buf.extend_from_slice(&chunk[..n]);
                if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    break (
                        String::from_utf8(buf[..i].to_vec()).unwrap(),
                        buf[i + 4..].to_vec(),
                    );
                }
            };
            let header = |name: &str| {
                head.lines()
                    .find_map(|l| {
                        let (k, v) = l.split_once(':')?;
                        k.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
                    })
                    .unwrap_or_default()
            };
            let len: usize = header("content-length").parse().unwrap_or(0);
            while rest.len() < len {
                let n = s.read(&mut chunk).await.unwrap();
                assert!(n > 0);
                rest.extend_from_slice(&chunk[..n]);
            }
            let mut words = head.split_whitespace();
            log.lock().unwrap().push(Request {
                method: words.next().unwrap().into(),
                path: words.next().unwrap().into(),
                host: header("host"),
                body: String::from_utf8(rest).unwrap(),
            });
            let reply = format!(
                "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            s.write_all(reply.as_bytes()).await.unwrap();
            s.shutdown().await.unwrap();
        }
    });
    (format!("http://127.0.0.1:{port}/api/task-1234"), seen)
}

const ON: &str = r#"{"protection":{"ExpirationDate":"2026-01-01T00:30:00Z","ProtectionEnabled":true,"TaskArn":"arn:aws:ecs:us-east-1:1:task/c/1234"}}"#;
const OFF: &str = r#"{"protection":{"ExpirationDate":null,"ProtectionEnabled":false,"TaskArn":"arn:aws:ecs:us-east-1:1:task/c/1234"}}"#;

#[tokio::test]
async fn protects_while_busy_and_lifts_when_idle() {
    let (uri, seen) = agent(vec![(200, ON), (200, OFF)]).await;
    let p = TaskProtection::new(&uri).unwrap();
    let on = p.set(true, Duration::from_secs(30 * 60)).await.unwrap();
    assert!(on.enabled);
    assert_eq!(on.expiration.as_deref(), Some("2026-01-01T00:30:00Z"));
    let off = p.set(false, Duration::ZERO).await.unwrap();
    assert!(!off.enabled);
    let seen = seen.lock().unwrap().clone();
    let port = uri.split(':').nth(2).unwrap().split('/').next().unwrap();
    assert_eq!(
        seen,
        vec![
            Request {
                method: "PUT".into(),
                path: "/api/task-1234/task-protection/v1/state".into(),
                host: format!("127.0.0.1:{port}"),
                body: r#"{"ProtectionEnabled":true,"ExpiresInMinutes":30}"#.into(),
            },
            Request {
                method: "PUT".into(),
                path: "/api/task-1234/task-protection/v1/state".into(),
                host: format!("127.0.0.1:{port}"),
                body: r#"{"ProtectionEnabled":false}"#.into(),
            },
        ]
    );
}

#[tokio::test]
async fn expiry_is_whole_minutes_between_1_and_2880() {
    let (uri, seen) = agent(vec![(200, ON), (200, ON), (200, ON)]).await;
    let p = TaskProtection::new(&format!("{uri}/")).unwrap();
    for secs in [61, 0, 100 * 3600] {
        p.set(true, Duration::from_secs(secs)).await.unwrap();
    }
    let bodies: Vec<String> = seen
        .lock()
        .unwrap()
        .iter()
        .map(|r| r.body.clone())
        .collect();
    assert_eq!(
        bodies,
        vec![
            r#"{"ProtectionEnabled":true,"ExpiresInMinutes":2}"#,
            r#"{"ProtectionEnabled":true,"ExpiresInMinutes":1}"#,
            r#"{"ProtectionEnabled":true,"ExpiresInMinutes":2880}"#,
        ]
    );
    assert!(
        seen.lock().unwrap()[0]
            .path
            .starts_with("/api/task-1234/task"),
        "no double slash"
    );
}

#[tokio::test]
async fn refusals_are_errors() {
    let failure = r#"{"failure":{"Arn":"arn","Detail":null,"Reason":"TASK_NOT_VALID"}}"#;
    let error = r#"{"error":{"Arn":"arn","Code":"AccessDeniedException","Message":"denied"}}"#;
    let (uri, _) = agent(vec![(200, failure), (400, error), (200, "not json")]).await;
    let p = TaskProtection::new(&uri).unwrap();
    for expected in ["TASK_NOT_VALID", "AccessDenied", "not json"] {
        match p.set(true, Duration::from_secs(60)).await {
            Err(ProtectionError::Refused { body, .. }) => {
                assert!(body.contains(expected), "{body}")
            }
            other => panic!("expected a refusal with {expected}, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn unreachable_agent_and_bad_uris() {
    let port = testkit::free_port();
    let p = TaskProtection::new(&format!("http://127.0.0.1:{port}/api/x")).unwrap();
    assert!(matches!(
        p.set(true, Duration::from_secs(60)).await,
        Err(ProtectionError::Connect { .. })
    ));
    for bad in [
        "",
        "https://169.254.170.2/api/x",
        "169.254.170.2/api",
        "http:///api",
    ] {
        assert!(
            matches!(TaskProtection::new(bad), Err(ProtectionError::BadUri(_))),
            "{bad:?}"
        );
    }
    // No port: the agent's default, 80.
    assert!(TaskProtection::new("http://169.254.170.2/api/abc").is_ok());
}
