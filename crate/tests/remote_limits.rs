//! A server that stalls, trickles, redirects elsewhere, answers too much or lies about
//! log-probabilities: each a clear error naming the URL, in bounded time, never a silent result.
//! The servers are threads on 127.0.0.1 in this process.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use genprm::engine::CompletionRequest;
use genprm::remote::{RemoteClient, RemoteConfig, ServerLogprobs, parse_completion};
use genprm::{Error, Sampling};

/// Reads one request's head and body (by Content-Length); returns the request line.
fn read_request(s: &mut TcpStream) -> String {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        match s.read(&mut byte) {
            Ok(1) => buf.push(byte[0]),
            _ => return String::new(),
        }
    }
    let head = String::from_utf8_lossy(&buf).to_string();
    let len = head
        .lines()
        .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse::<usize>().unwrap_or(0)))
        .unwrap_or(0);
    let mut body = vec![0u8; len];
    let _ = s.read_exact(&mut body);
    head.lines().next().unwrap_or_default().to_string()
}

/// A server answering each connection with `handle` (given the request line); returns its URL
/// and the number of requests it has seen.
fn serve(handle: impl Fn(&str, &mut TcpStream) + Send + Sync + 'static) -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://127.0.0.1:{}", listener.local_addr().unwrap().port());
    let count = Arc::new(AtomicUsize::new(0));
    let seen = count.clone();
    let handle = Arc::new(handle);
    std::thread::spawn(move || {
        for stream in listener.incoming().take(64) {
            let Ok(mut s) = stream else { continue };
            let (handle, seen) = (handle.clone(), seen.clone());
            std::thread::spawn(move || {
                loop {
                    let line = read_request(&mut s);
                    if line.is_empty() {
                        return;
                    }
                    seen.fetch_add(1, Ordering::SeqCst);
                    handle(&line, &mut s);
                }
            });
        }
    });
    (url, count)
}

fn config(url: &str) -> RemoteConfig {
    let mut c = RemoteConfig::new(url);
    c.retries = 2;
    c.backoff = Duration::from_millis(10);
    c.connect_timeout = Duration::from_secs(2);
    c.read_timeout = Duration::from_millis(400);
    c.timeout = Duration::from_secs(3);
    c
}

fn json_response(s: &mut TcpStream, status: &str, body: &str, extra: &str) {
    let _ = write!(s, "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{extra}\r\n{body}", body.len());
}

const MODELS: &str = r#"{"data":[{"id":"tiny"}]}"#;

fn connect_err(c: RemoteConfig) -> (String, Duration) {
    let start = Instant::now();
    let e = RemoteClient::connect(c).unwrap_err();
    assert!(matches!(e, Error::Remote { .. }), "{e}");
    (e.to_string(), start.elapsed())
}

#[test]
fn a_server_that_stops_sending_is_cut_off_by_the_read_timeout() {
    let (url, _) = serve(|_, _| std::thread::sleep(Duration::from_secs(30)));
    let mut c = config(&url);
    c.retries = 0;
    let (e, took) = connect_err(c);
    assert!(e.contains(&url) && e.to_lowercase().contains("timeout"), "{e}");
    assert!(took < Duration::from_secs(3), "{took:?}");
}

#[test]
fn a_server_that_trickles_is_cut_off_by_the_deadline() {
    let (url, _) = serve(|_, s| {
        let _ = write!(s, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n");
        for _ in 0..1000 {
            if s.write_all(b" ").and_then(|()| s.flush()).is_err() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    });
    let mut c = config(&url);
    c.retries = 0;
    c.timeout = Duration::from_secs(1);
    let (e, took) = connect_err(c);
    assert!(e.contains(&url) && e.to_lowercase().contains("timeout"), "{e}");
    assert!(took < Duration::from_secs(4), "{took:?}");
}

#[test]
fn redirects_to_another_host_are_refused_and_same_host_ones_followed() {
    let (url, _) = serve(|_, s| json_response(s, "301 Moved Permanently", "", "Location: http://elsewhere.invalid:9/v1/models\r\n"));
    let (e, _) = connect_err(config(&url));
    assert!(e.contains(&url) && e.contains("another server") && e.contains("elsewhere.invalid"), "{e}");

    let (url, count) = serve(|line, s| {
        if line.contains("/v1/models") {
            json_response(s, "302 Found", "", "Location: /moved/models\r\n");
        } else {
            json_response(s, "200 OK", MODELS, "");
        }
    });
    let client = RemoteClient::connect(config(&url)).unwrap();
    assert_eq!(client.model(), "tiny");
    assert_eq!(count.load(Ordering::SeqCst), 2);
}

#[test]
fn a_body_over_the_cap_is_an_error_and_not_retried() {
    let (url, count) = serve(|_, s| {
        let body = format!("{{\"data\":[{{\"id\":\"{}\"}}]}}", "x".repeat(3 << 20));
        json_response(s, "200 OK", &body, "");
    });
    let mut c = config(&url);
    c.max_body_bytes = 1 << 20;
    c.timeout = Duration::from_secs(20);
    c.read_timeout = Duration::from_secs(10);
    let (e, _) = connect_err(c);
    assert!(e.contains(&url) && e.contains("larger than") && e.contains("--max-response-mib"), "{e}");
    assert_eq!(count.load(Ordering::SeqCst), 1, "not retried");
}

#[test]
fn impossible_log_probabilities_are_an_error_naming_the_server() {
    let stops = ["\n```\n"];
    let request = CompletionRequest { prompt: "p", max_tokens: 4, stop: &stops, sampling: Sampling::Greedy, path: 0 };
    let url = "http://judge.example:8000/v1/completions";
    for bad in ["1e39", "5.0", "-1e39", "\"high\""] {
        let body = format!(
            r#"{{"choices":[{{"text":"{{Yes}}","finish_reason":"stop","logprobs":{{"tokens":["token_id:7"],"top_logprobs":[{{"token_id:7":{bad},"token_id:9":-2.0}}]}}}}]}}"#
        );
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        let e = parse_completion(&v, &request, (7, "Yes"), (9, "No"), ServerLogprobs::Raw, url).unwrap_err().to_string();
        assert!(e.contains(url) && e.contains("impossible log-probability"), "{bad}: {e}");
    }
    // A plausible answer still reads.
    let v: serde_json::Value = serde_json::from_str(
        r#"{"choices":[{"text":"{Yes}","finish_reason":"stop","logprobs":{"tokens":["token_id:7"],"top_logprobs":[{"token_id:7":-0.01,"token_id:9":-4.6}]}}]}"#,
    )
    .unwrap();
    let c = parse_completion(&v, &request, (7, "Yes"), (9, "No"), ServerLogprobs::Raw, url).unwrap();
    assert_eq!(c.answer_scores.len(), 1);
}
