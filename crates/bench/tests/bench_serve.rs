//! `bench serve` against an in-process mock OpenAI server that streams SSE with controlled
//! delays and fails chosen requests with chosen HTTP statuses; then `bench report`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clap::Parser;
use serde_json::{json, Value};
use switchyard_bench::cli::{run_report, run_serve, ReportArgs, ServeArgs};
use switchyard_bench::result::BenchResult;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const TTFT_MS: u64 = 40;
const ITL_MS: u64 = 15;
const PROMPT_TOKENS: u64 = 17;

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    serve: ServeArgs,
}

struct Mock {
    addr: SocketAddr,
    seen: Arc<AtomicUsize>,
    bodies: Arc<Mutex<Vec<Value>>>,
}

/// Starts the mock on a thread of its own; `fail` maps the arrival number of a POST to the
/// HTTP status it gets.
fn start_mock(fail: HashMap<usize, u16>) -> Mock {
    let seen = Arc::new(AtomicUsize::new(0));
    let bodies = Arc::new(Mutex::new(Vec::new()));
    let (tx, rx) = std::sync::mpsc::channel();
    let (s2, b2) = (seen.clone(), bodies.clone());
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
            tx.send(l.local_addr().unwrap()).unwrap();
            let fail = Arc::new(fail);
            loop {
                let Ok((sock, _)) = l.accept().await else {
                    break;
                };
                let (s, b, f) = (s2.clone(), b2.clone(), fail.clone());
                tokio::spawn(async move {
                    let _ = handle(sock, s, b, f).await;
                });
            }
        });
    });
    let addr = rx.recv().unwrap();
    Mock { addr, seen, bodies }
}

async fn handle(
    mut sock: TcpStream,
    seen: Arc<AtomicUsize>,
    bodies: Arc<Mutex<Vec<Value>>>,
    fail: Arc<HashMap<usize, u16>>,
) -> std::io::Result<()> {
    // Read the head, then Content-Length bytes of body.
    let mut buf = Vec::new();
    let mut tmp = [0u8; 4096];
    let head_end = loop {
        let n = sock.read(&mut tmp).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&tmp[..n]);
        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break p + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let len: usize = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())?
        })
        .unwrap_or(0);
    while buf.len() < head_end + len {
        let n = sock.read(&mut tmp).await?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&tmp[..n]);
    }
    let first = head.lines().next().unwrap_or("").to_string();
    if first.starts_with("GET /v1/models") {
        let body =
            json!({"object": "list", "data": [{"id": "mock-model", "owned_by": "mockserver"}]})
                .to_string();
        let resp = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        sock.write_all(resp.as_bytes()).await?;
        return sock.shutdown().await;
    }
    let body: Value = serde_json::from_slice(&buf[head_end..]).unwrap_or(Value::Null);
    let n = seen.fetch_add(1, Ordering::SeqCst);
    bodies.lock().unwrap().push(body.clone());
    if let Some(code) = fail.get(&n) {
        let msg = format!("{{\"error\":{{\"message\":\"mock failure {n}\"}}}}");
        let resp = format!(
            "HTTP/1.1 {code} Mock\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{msg}",
            msg.len()
        );
        sock.write_all(resp.as_bytes()).await?;
        return sock.shutdown().await;
    }
    let chat = first.contains("/v1/chat/completions");
    let tokens = body["max_tokens"].as_u64().unwrap_or(4);
    sock.write_all(
        b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\nconnection: close\r\n\r\n",
    )
    .await?;
    if chat {
        // A role-only chunk at once, before the "prefill" (as Switchyard sent it until
        // 2026-12): it carries no output, so TTFT must not start counting from it.
        let role =
            json!({"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]});
        sock.write_all(format!("data: {role}\n\n").as_bytes())
            .await?;
    }
    sock.flush().await?;
    tokio::time::sleep(Duration::from_millis(TTFT_MS)).await;
    for k in 0..tokens {
        if k > 0 {
            tokio::time::sleep(Duration::from_millis(ITL_MS)).await;
        }
        let chunk = if chat {
            json!({"choices": [{"index": 0, "delta": {"content": format!("t{k} ")}}]})
        } else {
            json!({"choices": [{"index": 0, "text": format!("t{k} ")}]})
        };
        let ev = format!("data: {chunk}\n\n");
        if k % 2 == 1 {
            // An event split across two writes (and so, usually, two reads).
            let (a, b) = ev.as_bytes().split_at(ev.len() / 2);
            sock.write_all(a).await?;
            sock.flush().await?;
            tokio::time::sleep(Duration::from_millis(2)).await;
            sock.write_all(b).await?;
        } else {
            sock.write_all(ev.as_bytes()).await?;
        }
        sock.flush().await?;
    }
    let usage = json!({"choices": [], "usage": {"prompt_tokens": PROMPT_TOKENS, "completion_tokens": tokens}});
    sock.write_all(format!("data: {usage}\n\ndata: [DONE]\n\n").as_bytes())
        .await?;
    sock.shutdown().await
}

fn args(mock: &Mock, extra: &[&str]) -> ServeArgs {
    let url = format!("http://{}", mock.addr);
    let mut v = vec!["t", "--base-url", &url, "--no-progress"];
    v.extend_from_slice(extra);
    Cli::try_parse_from(v).unwrap().serve
}

fn tmpdir(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("sy-bench-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn closed_loop_counts_failures_by_status_and_times_tokens() {
    // Arrivals 0 and 1 are the warm-up; point c=1 gets arrivals 2..=7, point c=2 gets 8..=13.
    let mock = start_mock(HashMap::from([(4, 503), (7, 503), (9, 429)]));
    let dir = tmpdir("closed");
    let file = dir.join("mock.json");
    let a = args(
        &mock,
        &[
            "--concurrency",
            "1,2",
            "--num-prompts",
            "6",
            "--warmup",
            "2",
            "--input-len",
            "12",
            "--output-len",
            "8",
            "--slo",
            "ttft:10s,tpot:10s",
            "--instance",
            "aws:g6.xlarge",
            "--note",
            "purpose=test",
            "--result-file",
            file.to_str().unwrap(),
        ],
    );
    let r = run_serve(a).unwrap();
    assert_eq!(mock.seen.load(Ordering::SeqCst), 14);
    assert_eq!(r.server.model, "mock-model"); // from /v1/models
    assert_eq!(r.server.backend, "mockserver");
    assert_eq!(r.points.len(), 2);
    let (p1, p2) = (&r.points[0].metrics, &r.points[1].metrics);
    assert_eq!((p1.completed, p1.failed), (4, 2));
    assert_eq!(p1.errors.get("503"), Some(&2));
    assert_eq!((p2.completed, p2.failed), (5, 1));
    assert_eq!(p2.errors.get("429"), Some(&1));
    assert!(r.points[0].sample_errors[0].starts_with("503: "));
    for (p, done) in [(p1, 4u64), (p2, 5)] {
        assert_eq!(p.total_output_tokens, 8 * done);
        assert_eq!(p.total_input_tokens, PROMPT_TOKENS * done); // from usage
                                                                // 7 gaps per request.
        assert_eq!(p.itl_ms.n, 7 * done as usize);
        assert_eq!(p.tpot_ms.n, done as usize);
        // Delays are lower bounds; upper bounds are loose for a loaded machine.
        assert!(p.ttft_ms.median >= TTFT_MS as f64 - 1.0, "{:?}", p.ttft_ms);
        assert!(p.ttft_ms.median < TTFT_MS as f64 + 400.0, "{:?}", p.ttft_ms);
        assert!(p.itl_ms.median >= ITL_MS as f64 - 1.0, "{:?}", p.itl_ms);
        assert!(p.tpot_ms.mean >= ITL_MS as f64 - 1.0, "{:?}", p.tpot_ms);
        // E2EL >= TTFT + 7 gaps.
        assert!(p.e2el_ms.median >= (TTFT_MS + 7 * ITL_MS) as f64 - 1.0);
        assert!((p.request_goodput - p.request_throughput).abs() < 1e-9);
        let expect_tp = p.total_output_tokens as f64 / p.duration;
        assert!((p.output_throughput - expect_tp).abs() < 1e-9);
    }
    assert_eq!(p1.max_concurrent_requests, 1);
    assert!(p2.max_concurrent_requests <= 2);
    let cost = r.points[0].usd_per_million_output_tokens.unwrap();
    assert!((cost - 0.8048 / 3600.0 / p1.output_throughput * 1e6).abs() < 1e-6);
    // The request bodies.
    let bodies = mock.bodies.lock().unwrap();
    assert!(bodies.iter().all(|b| b["stream"] == true
        && b["ignore_eos"] == true
        && b["max_tokens"] == 8
        && b["stream_options"]["include_usage"] == true
        && b["model"] == "mock-model"
        && b["prompt"].as_str().is_some_and(|p| !p.is_empty())));
    drop(bodies);
    // The file round-trips and carries the documented top-level fields.
    let back = BenchResult::load(&file).unwrap();
    // (Floats may differ in the last bit through JSON; compare the rest exactly.)
    assert_eq!(
        (&back.label, &back.server, &back.workload),
        (&r.label, &r.server, &r.workload)
    );
    assert_eq!(
        (&back.tool, &back.machine, &back.slo),
        (&r.tool, &r.machine, &r.slo)
    );
    for (a, b) in back.points.iter().zip(&r.points) {
        assert_eq!(a.load, b.load);
        assert_eq!(a.metrics.errors, b.metrics.errors);
        assert_eq!(a.metrics.total_output_tokens, b.metrics.total_output_tokens);
        assert!((a.metrics.ttft_ms.p99 - b.metrics.ttft_ms.p99).abs() < 1e-9);
    }
    let v: Value = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    for k in [
        "schema",
        "label",
        "tool",
        "started_at",
        "machine",
        "server",
        "workload",
        "slo",
        "pricing",
        "points",
    ] {
        assert!(v.get(k).is_some(), "missing {k}");
    }
    assert_eq!(v["schema"], "switchyard.bench.serve/v1");
    assert_eq!(v["points"][0]["mode"], "closed");
    assert_eq!(v["points"][0]["concurrency"], 1);
    assert!(v["points"][0]["ttft_ms"]["p99"].is_number());
    assert!(v["machine"]["cpu_model"].is_string());
    assert_eq!(v["notes"]["purpose"], "test");

    // A second "server" for the side-by-side report: same file under another label.
    let mut other = back.clone();
    other.label = "other run".into();
    let file2 = dir.join("other.json");
    other.save(&file2).unwrap();
    let out = dir.join("report");
    run_report(ReportArgs {
        files: vec![file.clone(), file2],
        out: out.clone(),
    })
    .unwrap();
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(md.contains("mockserver mock-model") && md.contains("other run"));
    assert!(md.contains("Side by side") && md.contains("throughput.svg"));
    assert!(md.contains("503: 2"));
    for svg in ["throughput.svg", "ttft.svg", "itl.svg"] {
        let s = std::fs::read_to_string(out.join(svg)).unwrap();
        assert!(
            s.starts_with("<svg") && s.trim_end().ends_with("</svg>"),
            "{svg}"
        );
        assert!(
            s.contains("<text") && s.contains("other run"),
            "{svg}: labels"
        );
        assert!(
            s.contains("<polyline") || s.contains("<path"),
            "{svg}: lines"
        );
    }
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn chat_open_loop_and_duration() {
    let mock = start_mock(HashMap::new());
    // Chat endpoint, open loop at 50 req/s, 5 requests, words prompts from the bundled set.
    let r = run_serve(args(
        &mock,
        &[
            "--endpoint",
            "/v1/chat/completions",
            "--model",
            "mock-model",
            "--request-rate",
            "50",
            "--num-prompts",
            "5",
            "--warmup",
            "0",
            "--dataset",
            "bundled",
            "--ignore-eos",
            "false",
        ],
    ))
    .unwrap();
    let p = &r.points[0];
    assert_eq!(p.load.request_rate, Some(50.0));
    // Bundled prompts carry their own output_len (>= 32): the mock sends that many tokens.
    assert_eq!(p.metrics.completed, 5);
    assert!(p.metrics.total_output_tokens >= 5 * 32);
    assert!(r.workload.per_prompt_output_len && r.workload.input_len.is_none());
    // TTFT counts from the first content, not from the role chunk the mock sends at once.
    assert!(
        p.metrics.ttft_ms.median >= TTFT_MS as f64 - 1.0
            && p.metrics.ttft_ms.mean >= TTFT_MS as f64 - 1.0,
        "{:?}",
        p.metrics.ttft_ms
    );
    // Gaps are between content chunks.
    assert!(
        p.metrics.itl_ms.median >= ITL_MS as f64 - 1.0,
        "{:?}",
        p.metrics.itl_ms
    );
    // --output-len replaces the prompts' own lengths; --input-len does not apply to them.
    let r2 = run_serve(args(
        &mock,
        &[
            "--endpoint",
            "/v1/chat/completions",
            "--model",
            "mock-model",
            "--num-prompts",
            "3",
            "--concurrency",
            "1",
            "--warmup",
            "0",
            "--dataset",
            "bundled",
            "--output-len",
            "3",
            "--ignore-eos",
            "false",
        ],
    ))
    .unwrap();
    assert_eq!(r2.points[0].metrics.total_output_tokens, 9);
    assert!(!r2.workload.per_prompt_output_len);
    let e = run_serve(args(
        &mock,
        &[
            "--model",
            "mock-model",
            "--dataset",
            "bundled",
            "--input-len",
            "64",
        ],
    ))
    .unwrap_err()
    .to_string();
    assert!(e.contains("--input-len") && e.contains("bundled"), "{e}");
    let bodies = mock.bodies.lock().unwrap();
    assert!(bodies
        .iter()
        .all(|b| b["messages"][0]["role"] == "user" && b.get("ignore_eos").is_none()));
    drop(bodies);
    // An open-loop file plots against the request rate.
    let dir = tmpdir("open");
    r.save(&dir.join("open.json")).unwrap();
    run_report(ReportArgs {
        files: vec![dir.join("open.json")],
        out: dir.join("rep"),
    })
    .unwrap();
    let svg = std::fs::read_to_string(dir.join("rep/throughput.svg")).unwrap();
    assert!(svg.contains("request rate (req/s)"));
    std::fs::remove_dir_all(&dir).ok();

    // Duration-bounded closed loop: stops issuing after 0.3 s.
    let r = run_serve(args(
        &mock,
        &[
            "--model",
            "mock-model",
            "--concurrency",
            "2",
            "--duration",
            "0.3",
            "--warmup",
            "0",
            "--output-len",
            "2",
        ],
    ))
    .unwrap();
    let m = &r.points[0].metrics;
    assert!(m.completed >= 2 && m.failed == 0, "{m:?}");
    assert_eq!(r.workload.num_prompts, None);

    // A server that is not there: every warm-up request fails, with a clear error.
    let dead = Mock {
        addr: "127.0.0.1:9".parse().unwrap(),
        seen: Default::default(),
        bodies: Default::default(),
    };
    let e = run_serve(args(&dead, &["--model", "m", "--num-prompts", "1"]))
        .unwrap_err()
        .to_string();
    assert!(e.contains("warm-up") && e.contains("connect"), "{e}");
}
