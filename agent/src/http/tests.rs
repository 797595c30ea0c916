//! Tests of the HTTP endpoint: the answers as data, then the server over TCP.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::*;

fn metrics() -> Metrics {
    Metrics::new("test", "none")
}

/// A parsed raw HTTP/1.1 answer.
#[derive(Debug)]
struct Answer {
    status_line: String,
    headers: Vec<(String, String)>,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn status(&self) -> u16 {
        self.status_line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_default()
    }
}

/// Serves `metrics` on a free loopback port, sends `request` as is and
/// reads the answer until the server closes.
async fn exchange(metrics: &Metrics, request: &str) -> Answer {
    let server = MetricsServer::bind("127.0.0.1:0".parse().expect("addr"), metrics.clone())
        .await
        .expect("bind");
    let addr = server.local_addr();
    let task = tokio::spawn(server.serve());
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut raw = String::new();
    stream.read_to_string(&mut raw).await.expect("read");
    task.abort();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    let mut lines = head.lines();
    let status_line = lines.next().unwrap_or_default().to_owned();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
        .collect();
    Answer {
        status_line,
        headers,
        body: body.to_owned(),
    }
}

async fn request(metrics: &Metrics, method: &str, target: &str) -> Answer {
    exchange(
        metrics,
        &format!("{method} {target} HTTP/1.1\r\nHost: t\r\n\r\n"),
    )
    .await
}

#[test]
fn metrics_page_is_openmetrics() {
    let r = metrics_page(&metrics());
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.content_type, OPENMETRICS_CONTENT_TYPE);
    assert!(r.body.contains("margay_build_info"));
    assert!(r.body.ends_with("# EOF\n"));
}

#[test]
fn readyz_follows_the_first_apply() {
    let m = metrics();
    assert_eq!(readyz(&m).status, StatusCode::SERVICE_UNAVAILABLE);
    m.observe_apply("none", Duration::from_millis(1), false);
    assert_eq!(readyz(&m).status, StatusCode::SERVICE_UNAVAILABLE);
    m.observe_apply("none", Duration::from_millis(1), true);
    assert_eq!(readyz(&m), Reply::text(StatusCode::OK, "ready\n"));
}

#[test]
fn readyz_fails_after_consecutive_failed_applies_until_one_succeeds() {
    let m = metrics();
    m.observe_apply("none", Duration::from_millis(1), true);
    for _ in 1..NOT_READY_AFTER_FAILED_APPLIES {
        m.observe_apply("none", Duration::from_millis(1), false);
        assert_eq!(readyz(&m).status, StatusCode::OK);
    }
    m.observe_apply("none", Duration::from_millis(1), false);
    let r = readyz(&m);
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        r.body.contains("the last 3 dataplane applies failed"),
        "{}",
        r.body
    );
    m.observe_apply("none", Duration::from_millis(1), true);
    assert_eq!(readyz(&m).status, StatusCode::OK);
}

#[test]
fn livez_follows_the_main_loop() {
    let m = metrics();
    assert_eq!(livez(&m), Reply::text(StatusCode::OK, "ok\n"));
    m.loop_turned();
    assert_eq!(livez(&m).status, StatusCode::OK);
    m.set_loop_turn_for_test(1);
    assert_eq!(
        livez(&m),
        Reply::text(StatusCode::SERVICE_UNAVAILABLE, "main loop stalled\n")
    );
    m.loop_turned();
    assert_eq!(livez(&m).status, StatusCode::OK);
}

#[tokio::test]
async fn serves_over_tcp_on_loopback() {
    let answer = request(&metrics(), "GET", "/metrics").await;
    assert!(
        answer.status_line.starts_with("HTTP/1.1 200 OK"),
        "{answer:?}"
    );
    assert_eq!(
        answer.header("content-type"),
        Some(OPENMETRICS_CONTENT_TYPE)
    );
    assert!(answer
        .body
        .contains("# TYPE margay_datastore_connected gauge"));
}

#[tokio::test]
async fn answers_carry_their_length_and_close() {
    let answer = request(&metrics(), "GET", "/livez").await;
    assert_eq!(answer.status(), 200);
    assert_eq!(answer.header("content-type"), Some(TEXT_CONTENT_TYPE));
    assert_eq!(answer.header("content-length"), Some("3"));
    assert_eq!(answer.header("connection"), Some("close"));
    assert_eq!(answer.body, "ok\n");
}

/// HEAD gets exactly GET's status and headers (the real `Content-Length`
/// included) and no body. The hand-written server this replaced sent
/// `Content-Length: 0`.
#[tokio::test]
async fn head_answers_like_get_without_the_body() {
    let m = metrics();
    for path in ["/readyz", "/livez", "/nope"] {
        let get = request(&m, "GET", path).await;
        let head = request(&m, "HEAD", path).await;
        assert_eq!(head.status_line, get.status_line, "{path}");
        assert_eq!(head.header("content-type"), get.header("content-type"));
        let length = get.body.len().to_string();
        assert_eq!(get.header("content-length"), Some(length.as_str()));
        assert_eq!(
            head.header("content-length"),
            Some(length.as_str()),
            "{path}"
        );
        assert_eq!(head.body, "", "{path}");
    }
    // /metrics changes between two scrapes; its HEAD length is non-zero.
    let head = request(&m, "HEAD", "/metrics").await;
    assert_eq!(head.status(), 200);
    assert_eq!(head.header("content-type"), Some(OPENMETRICS_CONTENT_TYPE));
    let length: usize = head
        .header("content-length")
        .and_then(|l| l.parse().ok())
        .expect("a content-length");
    assert!(length > 100, "{length}");
    assert_eq!(head.body, "");
}

#[tokio::test]
async fn other_methods_paths_and_garbage_are_refused() {
    let m = metrics();
    let post = request(&m, "POST", "/metrics").await;
    assert_eq!(post.status(), 405);
    assert_eq!(post.body, "only GET and HEAD\n");
    assert_eq!(request(&m, "DELETE", "/nope").await.status(), 405);
    let missing = request(&m, "GET", "/nope").await;
    assert_eq!(missing.status(), 404);
    assert_eq!(missing.body, "not found; try /metrics\n");
    assert_eq!(request(&m, "GET", "/healthz").await.status(), 200);
    assert_eq!(request(&m, "GET", "/metrics?x=1").await.status(), 200);
    assert_eq!(exchange(&m, "garbage\r\n\r\n").await.status(), 400);
}

#[tokio::test]
async fn bind_error_names_the_address() {
    let first = MetricsServer::bind("127.0.0.1:0".parse().expect("addr"), metrics())
        .await
        .expect("bind");
    let taken = first.local_addr();
    let err = MetricsServer::bind(taken, metrics())
        .await
        .expect_err("second bind must fail");
    assert!(err.to_string().contains(&taken.to_string()), "{err}");
}
