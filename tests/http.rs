//! The HTTP server end to end: the real binary on a free loopback port with the real models.
//! Every endpoint, streaming with and without usage, the error table, auth, 429 under
//! overload, disconnect-frees-blocks (through /metrics), SIGTERM drain.

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

struct Server {
    child: Child,
    base: String,
    logs: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Server {
    /// Starts `switchyard serve --port 0 ARGS` and waits until it listens.
    fn start(model: &str, args: &[&str]) -> Server {
        Self::start_with_env(model, args, &[])
    }

    /// [`start`](Self::start) with extra environment variables.
    fn start_with_env(model: &str, args: &[&str], env: &[(&str, &str)]) -> Server {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_switchyard"));
        cmd.args(["serve", "--no-fetch", "--port", "0", "--model", model])
            .args(args)
            .envs(env.iter().copied());
        Self::spawn(cmd)
    }

    /// Spawns `cmd` (a `serve` command) with INFO logs captured (unless `cmd` sets
    /// `SWITCHYARD_LOG`), and waits until it listens.
    fn spawn(mut cmd: Command) -> Server {
        if !cmd.get_envs().any(|(k, _)| k == "SWITCHYARD_LOG") {
            cmd.env("SWITCHYARD_LOG", "info");
        }
        let mut child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn switchyard serve");
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel();
        let logs = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = logs.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("[server] {line}");
                sink.lock().unwrap().push(line.clone());
                if let Some(i) = line.find("on http://") {
                    let url: String = line[i + 3..].split_whitespace().next().unwrap().into();
                    let _ = tx.send(url);
                }
            }
        });
        let base = rx
            .recv_timeout(Duration::from_secs(120))
            .expect("server did not start (is the model cached? scripts/test.sh fetches it)");
        Server { child, base, logs }
    }

    /// Lines the server wrote to stderr so far.
    fn logs(&self) -> Vec<String> {
        self.logs.lock().unwrap().clone()
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        let r = client().post(self.url(path)).json(body).send().unwrap();
        let s = r.status().as_u16();
        (s, r.json().unwrap_or(Value::Null))
    }

    fn get(&self, path: &str) -> (u16, String) {
        let r = client().get(self.url(path)).send().unwrap();
        (r.status().as_u16(), r.text().unwrap())
    }

    /// A metric's value (first line starting with `name{`).
    fn metric(&self, name: &str) -> f64 {
        let (_, m) = self.get("/metrics");
        m.lines()
            .find(|l| l.starts_with(&format!("{name}{{")))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("metric {name} missing"))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(300))
        .build()
        .unwrap()
}

/// The `data:` payloads of an SSE body.
fn sse_events(body: &str) -> Vec<String> {
    body.lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .map(str::to_string)
        .collect()
}

fn stream(server: &Server, path: &str, body: &Value) -> Vec<Value> {
    let r = client().post(server.url(path)).json(body).send().unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    let events = sse_events(&r.text().unwrap());
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e).unwrap())
        .collect()
}

const GEMMA: &str = "gemma-3-270m";
const QWEN: &str = "qwen2.5-coder-0.5b-instruct";

#[test]
fn completions_endpoints_and_errors_gemma() {
    let s = Server::start(GEMMA, &["--max-body-bytes", "65536"]);
    // Small endpoints.
    assert_eq!(s.get("/health").0, 200);
    assert_eq!(s.get("/ready").0, 200);
    let (st, v) = s.get("/version");
    assert_eq!(st, 200);
    assert!(v.contains("\"version\""));
    let (st, spec) = s.get("/openapi.json");
    assert_eq!(st, 200);
    let spec: Value = serde_json::from_str(&spec).unwrap();
    assert!(spec["paths"]["/v1/completions"].is_object());
    assert!(spec["paths"]["/ui/info"].is_object());
    let (st, models) = s.get("/v1/models");
    assert_eq!(st, 200);
    let models: Value = serde_json::from_str(&models).unwrap();
    assert_eq!(models["data"][0]["id"], GEMMA);

    // Greedy completion, then the same streamed: identical text and usage. (Greedy is asked
    // for: the default sampling is the model's, else OpenAI's temperature 1.)
    let req = json!({"model": GEMMA, "prompt": "The capital of France is", "max_tokens": 12,
                     "temperature": 0});
    let (st, a) = s.post("/v1/completions", &req);
    assert_eq!(st, 200, "{a}");
    assert_eq!(a["object"], "text_completion");
    let text = a["choices"][0]["text"].as_str().unwrap().to_string();
    assert!(!text.is_empty());
    assert_eq!(a["choices"][0]["finish_reason"], "length");
    assert_eq!(a["usage"]["completion_tokens"], 12);
    let prompt_tokens = a["usage"]["prompt_tokens"].as_u64().unwrap();
    let mut sreq = req.clone();
    sreq["stream"] = json!(true);
    let chunks = stream(&s, "/v1/completions", &sreq);
    let streamed: String = chunks
        .iter()
        .map(|c| c["choices"][0]["text"].as_str().unwrap())
        .collect();
    assert_eq!(streamed, text);
    assert!(chunks.iter().all(|c| c.get("usage").is_none()));
    assert_eq!(
        chunks.last().unwrap()["choices"][0]["finish_reason"],
        "length"
    );
    sreq["stream_options"] = json!({"include_usage": true});
    let chunks = stream(&s, "/v1/completions", &sreq);
    let last = chunks.last().unwrap();
    assert_eq!(last["choices"], json!([]));
    assert_eq!(last["usage"]["completion_tokens"], 12);
    assert_eq!(last["usage"]["prompt_tokens"], prompt_tokens);
    assert!(chunks[..chunks.len() - 1]
        .iter()
        .all(|c| c["usage"].is_null()));

    // Prompt forms: list of strings, token ids, lists of token ids; n > 1.
    let (_, tk) = s.post("/tokenize", &json!({"prompt": "The capital of France is"}));
    let ids = tk["tokens"].clone();
    assert_eq!(tk["count"], prompt_tokens);
    let (_, dt) = s.post("/detokenize", &json!({"tokens": ids}));
    assert!(dt["prompt"]
        .as_str()
        .unwrap()
        .ends_with("The capital of France is"));
    let (st, v) = s.post(
        "/v1/completions",
        &json!({"prompt": ids, "max_tokens": 12, "temperature": 0}),
    );
    assert_eq!(st, 200);
    assert_eq!(v["choices"][0]["text"], text, "token-id prompt differs");
    let (st, v) = s.post(
        "/v1/completions",
        &json!({"prompt": ["Once upon a time", "The capital of France is"], "max_tokens": 12,
                "temperature": 0}),
    );
    assert_eq!(st, 200);
    assert_eq!(v["choices"].as_array().unwrap().len(), 2);
    assert_eq!(v["choices"][1]["index"], 1);
    assert_eq!(v["choices"][1]["text"], text);
    let (st, v) = s.post(
        "/v1/completions",
        &json!({"prompt": [ids, ids], "max_tokens": 4, "n": 2, "temperature": 1.0, "seed": 7}),
    );
    assert_eq!(st, 200);
    let ch = v["choices"].as_array().unwrap();
    assert_eq!(ch.len(), 4);
    assert_eq!(v["usage"]["completion_tokens"], 16);
    assert_eq!(v["usage"]["prompt_tokens"], 2 * prompt_tokens);
    // Same seed, same prompt: choice i of both prompts agree.
    assert_eq!(ch[0]["text"], ch[2]["text"]);
    assert_eq!(ch[1]["text"], ch[3]["text"]);

    // logprobs: the greedy token is the best of the alternatives.
    let (st, v) = s.post(
        "/v1/completions",
        &json!({"prompt": "The capital of France is", "max_tokens": 6, "logprobs": 3,
                "temperature": 0}),
    );
    assert_eq!(st, 200);
    let lp = &v["choices"][0]["logprobs"];
    assert_eq!(lp["tokens"].as_array().unwrap().len(), 6);
    for (i, top) in lp["top_logprobs"].as_array().unwrap().iter().enumerate() {
        let top = top.as_object().unwrap();
        assert_eq!(top.len(), 3);
        let best = top
            .values()
            .map(|x| x.as_f64().unwrap())
            .fold(f64::MIN, f64::max);
        let chosen = lp["token_logprobs"][i].as_f64().unwrap();
        assert!(
            (best - chosen).abs() < 1e-6,
            "step {i}: {chosen} vs best {best}"
        );
    }

    // echo + logprobs + max_tokens 0: the prompt's logprobs (lm-eval loglikelihood); twice,
    // the second time with the prefix cached, must give the same numbers.
    let long =
        "The history of the railway begins with wagonways in the sixteenth century. ".repeat(4);
    let req = json!({"prompt": long, "max_tokens": 0, "echo": true, "logprobs": 1});
    let (st, a) = s.post("/v1/completions", &req);
    assert_eq!(st, 200, "{a}");
    let (_, b) = s.post("/v1/completions", &req);
    let la = &a["choices"][0]["logprobs"]["token_logprobs"];
    let n_prompt = a["usage"]["prompt_tokens"].as_u64().unwrap() as usize;
    assert_eq!(la.as_array().unwrap().len(), n_prompt);
    assert!(la[0].is_null());
    assert!(la.as_array().unwrap()[1..]
        .iter()
        .all(|x| x.as_f64().unwrap() <= 0.0));
    assert_eq!(la, &b["choices"][0]["logprobs"]["token_logprobs"]);
    assert_eq!(
        a["choices"][0]["text"].as_str().unwrap(),
        dt_text(&s, &a, &long)
    );
    assert_eq!(a["usage"]["completion_tokens"], 0);

    // Stop strings end the text before the stop.
    let first_word = text.split_whitespace().nth(1).unwrap().to_string();
    let (_, v) = s.post(
        "/v1/completions",
        &json!({"prompt": "The capital of France is", "max_tokens": 12, "stop": [first_word],
                "temperature": 0}),
    );
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    let t = v["choices"][0]["text"].as_str().unwrap();
    assert!(text.starts_with(t) && !t.contains(&first_word), "{t:?}");

    // The error table.
    let cases: Vec<(Value, u16, Option<&str>)> = vec![
        (json!({"prompt": "x", "suffix": "y"}), 400, Some("suffix")),
        (
            json!({"prompt": "x", "frobnicate": 1}),
            400,
            Some("frobnicate"),
        ),
        (json!({"prompt": "x", "best_of": 3}), 400, Some("best_of")),
        (
            json!({"prompt": "x", "temperature": -1}),
            400,
            Some("temperature"),
        ),
        (
            json!({"prompt": "x", "temperature": "hot"}),
            400,
            Some("temperature"),
        ),
        (
            json!({"prompt": "x", "max_tokens": 0}),
            400,
            Some("max_tokens"),
        ),
        (json!({"prompt": "x", "n": 0}), 400, Some("n")),
        (
            json!({"prompt": "x", "logprobs": 50}),
            400,
            Some("logprobs"),
        ),
        (
            json!({"prompt": "x", "stream_options": {"include_usage": true}}),
            400,
            Some("stream_options"),
        ),
        (json!({"prompt": [1, 99999999]}), 400, Some("prompt")),
        (json!({"prompt": []}), 400, Some("prompt")),
        (json!({"max_tokens": 3}), 400, Some("prompt")),
        (
            json!({"prompt": "x", "max_tokens": 40000}),
            400,
            Some("prompt"),
        ),
        (json!({"prompt": "x", "model": "gpt-9"}), 404, Some("model")),
        (json!({"prompt": "x".repeat(70000)}), 413, None),
    ];
    for (body, status, param) in cases {
        let (st, v) = s.post("/v1/completions", &body);
        let short: String = body.to_string().chars().take(80).collect();
        assert_eq!(st, status, "{short}: {v}");
        assert!(v["error"]["message"].is_string(), "{short}: {v}");
        assert!(v["error"]["type"].is_string(), "{short}: {v}");
        if let Some(p) = param {
            assert_eq!(v["error"]["param"], p, "{short}: {v}");
        }
    }
    let (_, v) = s.post(
        "/v1/completions",
        &json!({"prompt": "x", "max_tokens": 40000}),
    );
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(msg.contains("32768") && msg.contains("40000"), "{msg}");
    let r = client()
        .post(s.url("/v1/completions"))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    let (st, v) = s.post(
        "/v1/chat/completions",
        &json!({"messages": [{"role": "user", "content": "hi"}]}),
    );
    assert_eq!(st, 400);
    assert!(v["error"]["message"]
        .as_str()
        .unwrap()
        .contains("chat template"));
    let (st, _) = s.get("/v1/nothing");
    assert_eq!(st, 404);
    // X-Request-Id is echoed.
    let r = client()
        .get(s.url("/health"))
        .header("x-request-id", "abc-123")
        .send()
        .unwrap();
    assert_eq!(r.headers()["x-request-id"], "abc-123");

    // Metrics count what happened.
    assert!(s.metric("switchyard:generation_tokens_total") >= 12.0);
    let (_, m) = s.get("/metrics");
    assert!(
        m.contains("switchyard:http_requests_total{model_name=\"gemma-3-270m\",status=\"413\"} 1")
    );
    assert!(m.contains("status=\"404\"}"));
    assert!(s.metric("switchyard:time_to_first_token_seconds_count") >= 5.0);
    assert!(s.metric("switchyard:request_queue_time_seconds_count") >= 5.0);
    assert!(s.metric("switchyard:inter_token_latency_seconds_count") >= 11.0);
    assert!(s.metric("switchyard:e2e_request_latency_seconds_count") >= 5.0);
    assert!(s.metric("switchyard:prefix_cache_queries_total") > 0.0);
    assert_eq!(s.metric("switchyard:num_requests_running"), 0.0);
}

/// The echoed text of an echo-only completion is the detokenized prompt.
fn dt_text(s: &Server, _a: &Value, prompt: &str) -> String {
    let (_, tk) = s.post("/tokenize", &json!({"prompt": prompt}));
    let (_, dt) = s.post("/detokenize", &json!({"tokens": tk["tokens"]}));
    // Detokenize keeps special tokens (BOS); the echo skips them, as completions text does.
    dt["prompt"].as_str().unwrap().replace("<bos>", "")
}

#[test]
fn api_key_cors_names_and_json_logs_gemma() {
    let s = Server::start(
        GEMMA,
        &[
            "--api-key",
            "sekrit",
            "--served-model-name",
            "house-model,gemma",
            "--allowed-origins",
            "https://app.example",
            "--log-format",
            "json",
        ],
    );
    let body = json!({"prompt": "Hi", "max_tokens": 1});
    let (st, v) = s.post("/v1/completions", &body);
    assert_eq!(st, 401);
    assert_eq!(v["error"]["type"], "authentication_error");
    let r = client()
        .post(s.url("/v1/completions"))
        .bearer_auth("wrong")
        .json(&body)
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    let r = client()
        .post(s.url("/v1/completions"))
        .bearer_auth("sekrit")
        .json(&body)
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(s.get("/health").0, 200);
    assert_eq!(s.get("/ready").0, 200);
    for path in [
        "/v1/models",
        "/metrics",
        "/version",
        "/openapi.json",
        "/ui/info",
    ] {
        assert_eq!(s.get(path).0, 401, "{path}");
    }
    // The web UI's pages and assets are open (they hold no data), each with a strict CSP.
    for (path, ct) in [
        ("/", "text/html"),
        ("/dashboard", "text/html"),
        ("/ui/chat.js", "text/javascript"),
        ("/ui/style.css", "text/css"),
    ] {
        let r = client().get(s.url(path)).send().unwrap();
        assert_eq!(r.status().as_u16(), 200, "{path}");
        assert!(r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with(ct));
        let csp = r.headers()["content-security-policy"].to_str().unwrap();
        assert!(csp.contains("default-src 'none'") && csp.contains("script-src 'self'"));
        assert_eq!(r.headers()["x-content-type-options"], "nosniff");
    }
    assert_eq!(s.get("/ui/nope.js").0, 404);
    // Each page and asset has a strong ETag; If-None-Match with it is an empty 304 that keeps
    // the cache and security headers, and a stale tag gets the file again.
    let mut tags = Vec::new();
    for path in ["/", "/dashboard", "/ui/chat.js", "/ui/style.css"] {
        let r = client().get(s.url(path)).send().unwrap();
        let tag = r.headers()["etag"].to_str().unwrap().to_string();
        assert!(
            tag.len() == 34 && tag.starts_with('"') && tag.ends_with('"'),
            "{path}: etag {tag}"
        );
        let body = r.text().unwrap();
        assert!(!body.is_empty());
        let r = client()
            .get(s.url(path))
            .header("if-none-match", &tag)
            .send()
            .unwrap();
        assert_eq!(r.status().as_u16(), 304, "{path}");
        assert_eq!(r.headers()["etag"].to_str().unwrap(), tag);
        assert_eq!(r.headers()["cache-control"], "no-cache");
        assert!(r.headers()["content-security-policy"]
            .to_str()
            .unwrap()
            .contains("default-src 'none'"));
        assert_eq!(r.text().unwrap(), "", "{path}: 304 with a body");
        // A list holding the tag (weak or not) matches too; another tag does not.
        let r = client()
            .get(s.url(path))
            .header("if-none-match", format!("\"0000\", W/{tag}"))
            .send()
            .unwrap();
        assert_eq!(r.status().as_u16(), 304, "{path}");
        let r = client()
            .get(s.url(path))
            .header("if-none-match", "\"0123456789abcdef0123456789abcdef\"")
            .send()
            .unwrap();
        assert_eq!(r.status().as_u16(), 200, "{path}");
        assert_eq!(r.headers()["etag"].to_str().unwrap(), tag);
        assert_eq!(r.text().unwrap(), body, "{path}");
        tags.push(tag);
    }
    tags.sort();
    tags.dedup();
    assert_eq!(tags.len(), 4, "files share an ETag: {tags:?}");
    let info: Value = client()
        .get(s.url("/ui/info"))
        .bearer_auth("sekrit")
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(info["models"], json!(["house-model", "gemma"]));
    assert!(info["chat"].is_boolean() && info["facts"]["device"].is_string());
    assert_eq!(info["flags"]["--api-key"], "(set)");
    assert!(!info.to_string().contains("sekrit"), "{info}");
    // Served model names: the first is reported, any may be asked for, others are 404.
    let r = client()
        .get(s.url("/v1/models"))
        .bearer_auth("sekrit")
        .send()
        .unwrap();
    let v: Value = r.json().unwrap();
    let ids: Vec<&str> = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["house-model", "gemma"]);
    for (model, status) in [("gemma", 200), ("house-model", 200), (GEMMA, 404)] {
        let r = client()
            .post(s.url("/v1/completions"))
            .bearer_auth("sekrit")
            .json(&json!({"model": model, "prompt": "Hi", "max_tokens": 1}))
            .send()
            .unwrap();
        assert_eq!(r.status().as_u16(), status, "{model}");
        if status == 200 {
            assert_eq!(r.json::<Value>().unwrap()["model"], "house-model");
        }
    }
    // CORS: the allowed origin gets the headers (preflight included), another does not.
    let r = client()
        .request(reqwest::Method::OPTIONS, s.url("/v1/completions"))
        .header("origin", "https://app.example")
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "authorization,content-type",
        )
        .send()
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    assert_eq!(
        r.headers()["access-control-allow-origin"],
        "https://app.example"
    );
    let r = client()
        .get(s.url("/health"))
        .header("origin", "https://evil.example")
        .send()
        .unwrap();
    assert!(!r.headers().contains_key("access-control-allow-origin"));
    // JSON logs: the server's start-up log lines on stderr are JSON objects.
    let logs = s.logs();
    assert!(
        logs.iter().any(|l| l.starts_with('{')
            && serde_json::from_str::<Value>(l)
                .is_ok_and(|v| v["fields"]["message"] == "listening")),
        "no JSON log line: {logs:?}"
    );
    // Request lines: successful polls of /metrics, /health and /ready are DEBUG (not in this
    // INFO log); other routes, and a refused /metrics, are INFO.
    for _ in 0..3 {
        let r = client()
            .get(s.url("/metrics"))
            .bearer_auth("sekrit")
            .send()
            .unwrap();
        assert_eq!(r.status().as_u16(), 200);
    }
    std::thread::sleep(Duration::from_millis(300));
    let requests: Vec<(String, u64)> = s
        .logs()
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["fields"]["message"] == "request")
        .map(|v| {
            let f = &v["fields"];
            (
                f["path"].as_str().unwrap().to_string(),
                f["status"].as_u64().unwrap(),
            )
        })
        .collect();
    for (path, status) in [("/v1/models", 200), ("/ui/info", 200), ("/metrics", 401)] {
        assert!(
            requests.iter().any(|r| r.0 == path && r.1 == status),
            "no INFO line for {path} {status}: {requests:?}"
        );
    }
    for path in ["/metrics", "/health", "/ready"] {
        assert!(
            !requests.iter().any(|r| r.0 == path && r.1 == 200),
            "{path} 200 logged at INFO: {requests:?}"
        );
    }
}

#[test]
fn no_webui_turns_the_pages_off_gemma() {
    // At DEBUG (this crate's), the quiet polls are logged after all.
    let s = Server::start_with_env(
        GEMMA,
        &["--no-webui"],
        &[("SWITCHYARD_LOG", "info,switchyard_http=debug")],
    );
    for path in ["/", "/dashboard", "/ui/chat.js", "/ui/info"] {
        let (st, body) = s.get(path);
        assert_eq!(st, 404, "{path}: {body}");
    }
    assert_eq!(s.get("/v1/models").0, 200);
    // The served OpenAPI document leaves /ui/info out with the route.
    let (st, spec) = s.get("/openapi.json");
    assert_eq!(st, 200);
    let spec: Value = serde_json::from_str(&spec).unwrap();
    assert!(spec["paths"]["/v1/models"].is_object());
    assert!(
        spec["paths"].get("/ui/info").is_none(),
        "/ui/info in the spec"
    );
    assert!(spec["components"]["schemas"].get("UiInfo").is_none());
    assert_eq!(s.get("/metrics").0, 200);
    assert_eq!(s.get("/health").0, 200);
    std::thread::sleep(Duration::from_millis(300));
    let logs = s.logs();
    for path in ["/metrics", "/health", "/v1/models"] {
        assert!(
            logs.iter()
                .any(|l| l.contains("request") && l.contains(&format!("path={path} "))),
            "no request line for {path}: {logs:?}"
        );
    }
}

#[test]
fn overload_and_disconnect_gemma() {
    let s = Server::start(
        GEMMA,
        &["--max-num-seqs", "1", "--max-queued-requests", "0"],
    );
    // A long stream occupies the only slot.
    let body = json!({"prompt": "Once upon a time", "max_tokens": 2000, "ignore_eos": true, "stream": true});
    let mut r = client()
        .post(s.url("/v1/completions"))
        .json(&body)
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let mut buf = [0u8; 256];
    let n = r.read(&mut buf).unwrap();
    assert!(n > 0);
    let t0 = Instant::now();
    while s.metric("switchyard:num_requests_running") < 1.0 {
        assert!(t0.elapsed() < Duration::from_secs(30));
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(s.metric("switchyard:kv_cache_usage_perc") > 0.0);
    // The next request is refused with 429 and Retry-After.
    let r2 = client()
        .post(s.url("/v1/completions"))
        .json(&json!({"prompt": "Hi", "max_tokens": 1}))
        .send()
        .unwrap();
    assert_eq!(r2.status().as_u16(), 429);
    assert!(r2.headers().contains_key("retry-after"));
    let v: Value = r2.json().unwrap();
    assert_eq!(v["error"]["type"], "rate_limit_error");
    // The client goes away mid-stream: the engine frees its blocks within a step.
    drop(r);
    let t0 = Instant::now();
    while s.metric("switchyard:num_requests_running") > 0.0
        || s.metric("switchyard:kv_cache_usage_perc") > 0.0
    {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "blocks not freed after disconnect"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let gen = s.metric("switchyard:generation_tokens_total");
    assert!(
        gen < 2000.0,
        "the request ran on after the disconnect ({gen})"
    );
    let (_, m) = s.get("/metrics");
    assert!(m.contains("finished_reason=\"abort\"} 1"), "{m}");
    // And the slot is usable again.
    let (st, _) = s.post("/v1/completions", &json!({"prompt": "Hi", "max_tokens": 1}));
    assert_eq!(st, 200);
}

#[test]
fn sigterm_drains_in_flight_requests_gemma() {
    let mut s = Server::start(GEMMA, &["--drain-timeout", "120"]);
    let url = s.url("/v1/completions");
    let h = std::thread::spawn(move || {
        let r = client()
            .post(url)
            .json(&json!({"prompt": "Once upon a time", "max_tokens": 48, "ignore_eos": true}))
            .send()
            .unwrap();
        (r.status().as_u16(), r.json::<Value>().unwrap())
    });
    let t0 = Instant::now();
    while s.metric("switchyard:num_requests_running") < 1.0 {
        assert!(t0.elapsed() < Duration::from_secs(30));
        std::thread::sleep(Duration::from_millis(20));
    }
    let pid = s.child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let (st, v) = h.join().unwrap();
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["usage"]["completion_tokens"], 48, "{v}");
    assert_eq!(v["choices"][0]["finish_reason"], "length");
    let t0 = Instant::now();
    let status = loop {
        if let Some(st) = s.child.try_wait().unwrap() {
            break st;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "server did not exit"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "exit status {status}");
    assert!(client().get(s.url("/health")).send().is_err());
}

/// vLLM's tokenizer endpoints: `/tokenizer_info` names Gemma 3's special tokens (as its
/// Hugging Face `tokenizer_config.json` does) and its template; `/tokenize` answers `tokens`,
/// `count`, `max_model_len` and `token_strs`; BOS follows `add_special_tokens`; `/detokenize`
/// inverts it; the 400s name their field.
#[test]
fn tokenizer_endpoints_vllm_shapes_gemma() {
    let s = Server::start(GEMMA, &["--max-model-len", "2048"]);
    let (st, body) = s.get("/tokenizer_info");
    assert_eq!(st, 200, "{body}");
    let info: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(info["tokenizer_class"], "PreTrainedTokenizerFast");
    assert_eq!(info["bos_token"], "<bos>");
    assert_eq!(info["eos_token"], "<eos>");
    assert_eq!(info["pad_token"], "<pad>");
    assert_eq!(info["unk_token"], "<unk>");
    assert_eq!(info["add_bos_token"], true);
    assert_eq!(info["add_eos_token"], false);
    assert_eq!(info["model_max_length"], 2048);
    // The registry's Gemma GGUF carries no chat template: vLLM then leaves the key out.
    assert!(info.get("chat_template").is_none(), "{info}");

    let (st, with) = s.post(
        "/tokenize",
        &json!({"prompt": "Hello world", "return_token_strs": true}),
    );
    assert_eq!(st, 200, "{with}");
    let (_, without) = s.post(
        "/tokenize",
        &json!({"prompt": "Hello world", "add_special_tokens": false}),
    );
    let ids = |v: &Value| -> Vec<u64> {
        v["tokens"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_u64().unwrap())
            .collect()
    };
    // BOS (id 2 in Gemma's vocabulary) only with special tokens.
    assert_eq!(ids(&with)[0], 2);
    assert_eq!(ids(&with)[1..], ids(&without)[..]);
    assert_eq!(with["count"], ids(&with).len());
    assert_eq!(with["max_model_len"], 2048);
    assert_eq!(with["token_strs"][0], "<bos>");
    assert_eq!(with["token_strs"][1], "Hello");
    assert_eq!(with["token_strs"][2], "\u{2581}world");
    assert!(without.get("token_strs").is_none());
    // The EOS text tokenizes to one id, as lm-eval's remote tokenizer expects.
    let (_, eos) = s.post(
        "/tokenize",
        &json!({"prompt": info["eos_token"], "add_special_tokens": false}),
    );
    assert_eq!(ids(&eos), [1]);
    let (_, dt) = s.post("/detokenize", &json!({"tokens": ids(&without)}));
    assert_eq!(dt["prompt"], "Hello world");

    for (body, param) in [
        (
            json!({"messages": [{"role": "user", "content": "Hi"}]}),
            "messages",
        ),
        (
            json!({"prompt": "x", "add_generation_prompt": true}),
            "add_generation_prompt",
        ),
        (
            json!({"prompt": "x", "return_token_strs": 1}),
            "return_token_strs",
        ),
        (json!({"prompt": "x", "frobnicate": 1}), "frobnicate"),
        (json!({"tokens": [1, 999999999]}), "tokens"),
    ] {
        let path = if body.get("tokens").is_some() {
            "/detokenize"
        } else {
            "/tokenize"
        };
        let (st, e) = s.post(path, &body);
        assert_eq!(st, 400, "{body}: {e}");
        assert_eq!(e["error"]["param"], param, "{body}: {e}");
    }
    let r = client().post(s.url("/tokenizer_info")).send().unwrap();
    assert_eq!(r.status().as_u16(), 405);
}

#[test]
fn chat_qwen() {
    let s = Server::start(QWEN, &[]);
    let messages = json!([{"role": "system", "content": "You are terse."},
                          {"role": "user", "content": [{"type": "text", "text": "Write hello world in Python."}]}]);
    // vLLM's /tokenizer_info: Qwen's special tokens and its template.
    let (st, body) = s.get("/tokenizer_info");
    assert_eq!(st, 200, "{body}");
    let info: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(info["eos_token"], "<|im_end|>");
    assert_eq!(info["pad_token"], "<|endoftext|>");
    assert!(info["unk_token"].is_null());
    assert_eq!(info["add_bos_token"], false);
    assert!(info["chat_template"]
        .as_str()
        .unwrap()
        .contains("<|im_start|>"));
    // The template renders as Hugging Face's ChatML does.
    let (st, tk) = s.post("/tokenize", &json!({"messages": messages}));
    assert_eq!(st, 200, "{tk}");
    let (_, bare) = s.post(
        "/tokenize",
        &json!({"messages": messages, "add_generation_prompt": false}),
    );
    // Without the generation prompt: the same tokens less "<|im_start|>assistant\n".
    assert_eq!(
        bare["count"].as_u64().unwrap() + 3,
        tk["count"].as_u64().unwrap()
    );
    let (_, dt) = s.post("/detokenize", &json!({"tokens": tk["tokens"]}));
    assert_eq!(
        dt["prompt"],
        "<|im_start|>system\nYou are terse.<|im_end|>\n<|im_start|>user\nWrite hello world in Python.<|im_end|>\n<|im_start|>assistant\n"
    );
    let req = json!({"model": QWEN, "messages": messages, "max_tokens": 24, "temperature": 0});
    let (st, v) = s.post("/v1/chat/completions", &req);
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["choices"][0]["message"]["role"], "assistant");
    let content = v["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(!content.is_empty());
    assert_eq!(v["usage"]["prompt_tokens"], tk["count"]);
    // The same through /v1/completions on the rendered token ids.
    let (_, c) = s.post(
        "/v1/completions",
        &json!({"prompt": tk["tokens"], "max_tokens": 24, "temperature": 0}),
    );
    assert_eq!(c["choices"][0]["text"], content.as_str());
    // Streamed: the role with the first content delta (not before it), then content deltas,
    // finish, usage.
    let mut sreq = req.clone();
    sreq["stream"] = json!(true);
    sreq["stream_options"] = json!({"include_usage": true});
    let chunks = stream(&s, "/v1/chat/completions", &sreq);
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    assert_ne!(
        chunks[0]["choices"][0]["delta"]["content"], "",
        "{}",
        chunks[0]
    );
    assert_eq!(
        chunks
            .iter()
            .filter(|c| !c["choices"][0]["delta"]["role"].is_null())
            .count(),
        1
    );
    let streamed: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(streamed, content);
    assert!(chunks
        .iter()
        .all(|c| c["object"] == "chat.completion.chunk"));
    assert_eq!(
        chunks.last().unwrap()["usage"]["prompt_tokens"],
        tk["count"]
    );
    // n, logprobs + top_logprobs, max_completion_tokens.
    let (st, v) = s.post(
        "/v1/chat/completions",
        &json!({"messages": messages, "max_completion_tokens": 5, "n": 2, "temperature": 0.8,
                "seed": 1, "logprobs": true, "top_logprobs": 2}),
    );
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["choices"].as_array().unwrap().len(), 2);
    let lp = v["choices"][0]["logprobs"]["content"].as_array().unwrap();
    assert!(!lp.is_empty() && lp.len() <= 5);
    assert_eq!(lp[0]["top_logprobs"].as_array().unwrap().len(), 2);
    // Errors specific to chat.
    for (body, param) in [
        (
            json!({"messages": messages, "tools": [{"type": "function", "function": {"name": "f", "parameters": []}}]}),
            "tools[0].function.parameters",
        ),
        (
            json!({"messages": [{"role": "tool", "content": "x"}]}),
            "messages[0].tool_call_id",
        ),
        (
            json!({"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}),
            "messages[0].content[0]",
        ),
        (json!({"messages": []}), "messages"),
        (
            json!({"messages": messages, "top_logprobs": 2}),
            "top_logprobs",
        ),
    ] {
        let (st, v) = s.post("/v1/chat/completions", &body);
        assert_eq!(st, 400, "{body}: {v}");
        assert_eq!(v["error"]["param"], param, "{body}: {v}");
    }
}

/// The deltas of a streamed chat answer put together as OpenAI clients do: the content, the
/// tool calls by index (id, type and name from their first delta, argument fragments joined),
/// the finish reason; the role must come exactly once.
fn reassemble(chunks: &[Value]) -> (String, Vec<Value>, String) {
    let (mut content, mut finish) = (String::new(), String::new());
    let mut calls: Vec<Value> = Vec::new();
    let mut roles = 0;
    for c in chunks {
        let Some(ch) = c["choices"].get(0) else {
            continue;
        };
        let d = &ch["delta"];
        roles += usize::from(d["role"] == "assistant");
        content.push_str(d["content"].as_str().unwrap_or(""));
        for tc in d["tool_calls"].as_array().into_iter().flatten() {
            let i = tc["index"].as_u64().unwrap() as usize;
            if i == calls.len() {
                assert!(tc["id"].is_string() && tc["type"] == "function", "{tc}");
                assert!(tc["function"]["name"].is_string(), "name first: {tc}");
                calls.push(json!({"id": tc["id"], "type": "function",
                    "function": {"name": tc["function"]["name"], "arguments": ""}}));
            }
            let a = tc["function"]["arguments"].as_str().unwrap_or("");
            let prev = calls[i]["function"]["arguments"]
                .as_str()
                .unwrap()
                .to_string();
            calls[i]["function"]["arguments"] = json!(prev + a);
        }
        if let Some(f) = ch["finish_reason"].as_str() {
            finish = f.to_string();
        }
    }
    assert_eq!(roles, 1, "{chunks:?}");
    (content, calls, finish)
}

/// Tool calling end to end with the real Qwen2.5-Coder-0.5B-Instruct at temperature 0: the
/// model calls `get_weather` for a weather question (on its own: it writes the call as bare
/// JSON, which the hermes parser takes at the start of an answer), streamed and not; the call
/// and the tool's result go back and the model answers from it. This small model repeats the
/// call unless a user turn asks for the answer after the result, so the test adds one. Then
/// `tool_choice: none` (no parsing), `/tokenize` with tools, and the request errors.
#[test]
fn tool_round_trip_qwen() {
    let s = Server::start(QWEN, &[]);
    let tools = json!([{"type": "function", "function": {
        "name": "get_weather", "description": "Get the current weather in a city",
        "parameters": {"type": "object",
                       "properties": {"city": {"type": "string", "description": "City name"}},
                       "required": ["city"]}}}]);
    let user = json!({"role": "user", "content": "What is the weather in Paris?"});
    let req = json!({"messages": [user], "tools": tools, "temperature": 0, "max_tokens": 100});
    let (st, v) = s.post("/v1/chat/completions", &req);
    assert_eq!(st, 200, "{v}");
    let ch = &v["choices"][0];
    assert_eq!(ch["finish_reason"], "tool_calls", "{v}");
    assert!(ch["message"]["content"].is_null(), "{v}");
    let calls = ch["message"]["tool_calls"].as_array().unwrap();
    assert_eq!(calls.len(), 1, "{v}");
    let call = &calls[0];
    assert!(call["id"].as_str().unwrap().starts_with("call_"), "{call}");
    assert_eq!(call["type"], "function");
    assert_eq!(call["function"]["name"], "get_weather");
    let args: Value =
        serde_json::from_str(call["function"]["arguments"].as_str().unwrap()).unwrap();
    assert_eq!(args, json!({"city": "Paris"}));
    // Streamed: the same call, name first, then the arguments.
    let mut sreq = req.clone();
    sreq["stream"] = json!(true);
    let (content, scalls, finish) = reassemble(&stream(&s, "/v1/chat/completions", &sreq));
    assert_eq!((content.as_str(), finish.as_str()), ("", "tool_calls"));
    assert_eq!(scalls.len(), 1);
    assert_eq!(scalls[0]["function"], call["function"]);
    assert_ne!(scalls[0]["id"], call["id"]);
    // tool_choice none: nothing is parsed, the same text is the content.
    let mut nreq = req.clone();
    nreq["tool_choice"] = json!("none");
    let (_, v) = s.post("/v1/chat/completions", &nreq);
    assert_eq!(v["choices"][0]["finish_reason"], "stop", "{v}");
    assert!(v["choices"][0]["message"]["tool_calls"].is_null(), "{v}");
    let text: Value =
        serde_json::from_str(v["choices"][0]["message"]["content"].as_str().unwrap()).unwrap();
    assert_eq!(text["name"], "get_weather", "{v}");
    // The round trip: the assistant's call as returned, the tool's result, the answer.
    let messages = json!([user, ch["message"],
        {"role": "tool", "tool_call_id": call["id"], "content": "{\"temperature_c\": 18, \"sky\": \"sunny\"}"},
        {"role": "user", "content": "Now answer my question in one sentence."}]);
    let req2 = json!({"messages": messages, "tools": tools, "temperature": 0, "max_tokens": 60});
    let (st, v) = s.post("/v1/chat/completions", &req2);
    assert_eq!(st, 200, "{v}");
    let m = &v["choices"][0]["message"];
    assert_eq!(v["choices"][0]["finish_reason"], "stop", "{v}");
    assert!(m["tool_calls"].is_null(), "{v}");
    let answer = m["content"].as_str().unwrap();
    assert!(
        answer.contains("18") && answer.to_lowercase().contains("sunny"),
        "{answer}"
    );
    let mut sreq2 = req2.clone();
    sreq2["stream"] = json!(true);
    let (content, scalls, finish) = reassemble(&stream(&s, "/v1/chat/completions", &sreq2));
    assert_eq!((content.as_str(), finish.as_str()), (answer, "stop"));
    assert!(scalls.is_empty());
    // The prompt the model saw carries the tool, the call and the result (as Qwen's template
    // writes them), and /tokenize renders tools the same way.
    let (_, tk) = s.post("/tokenize", &json!({"messages": messages, "tools": tools}));
    let (_, dt) = s.post("/detokenize", &json!({"tokens": tk["tokens"]}));
    let prompt = dt["prompt"].as_str().unwrap();
    for part in [
        "<tools>\n{\"type\": \"function\", \"function\": {\"name\": \"get_weather\"",
        "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>",
        "<tool_response>\n{\"temperature_c\": 18, \"sky\": \"sunny\"}\n</tool_response>",
    ] {
        assert!(prompt.contains(part), "{part:?} not in {prompt:?}");
    }
    assert_eq!(tk["count"], v["usage"]["prompt_tokens"]);
    // Errors: each one line naming the field.
    let call_msg = ch["message"].clone();
    for (body, param) in [
        (
            json!({"messages": [user], "tools": tools,
                   "tool_choice": {"type": "function", "function": {"name": "nope"}}}),
            "tool_choice",
        ),
        (
            json!({"messages": [user], "tool_choice": "required"}),
            "tool_choice",
        ),
        (
            json!({"messages": [user], "tools": [{"type": "function", "function": {"parameters": {}}}]}),
            "tools[0].function.name",
        ),
        (
            json!({"messages": [user], "tools": [{"type": "function",
                 "function": {"name": "f", "parameters": "x"}}]}),
            "tools[0].function.parameters",
        ),
        (
            json!({"messages": [user, call_msg, {"role": "tool", "content": "1"}], "tools": tools}),
            "messages[2].tool_call_id",
        ),
        (
            json!({"messages": [user, {"role": "assistant", "tool_calls": {"id": "x"}}]}),
            "messages[1].tool_calls",
        ),
        (
            json!({"messages": [user, {"role": "assistant", "tool_calls": [{"id": "c1", "type": "function",
                 "function": {"name": "get_weather", "arguments": "{city: Paris}"}}]}]}),
            "messages[1].tool_calls[0].function.arguments",
        ),
        (
            json!({"messages": [user], "chat_template_kwargs": [1]}),
            "chat_template_kwargs",
        ),
        (
            json!({"messages": [user], "chat_template_kwargs": {"messages": []}}),
            "chat_template_kwargs",
        ),
    ] {
        let (st, v) = s.post("/v1/chat/completions", &body);
        assert_eq!(st, 400, "{body}: {v}");
        assert_eq!(v["error"]["param"], param, "{body}: {v}");
        assert!(
            !v["error"]["message"].as_str().unwrap().contains('\n'),
            "{v}"
        );
    }
}

/// Named SSE events (`event: NAME` then `data: JSON`), as `/v1/responses` and `/v1/messages`
/// send them: (name, data) in order; each data's `type` is its name.
fn named_events(
    server: &Server,
    path: &str,
    body: &Value,
    headers: &[(&str, &str)],
) -> Vec<(String, Value)> {
    let mut rb = client().post(server.url(path)).json(body);
    for (k, v) in headers {
        rb = rb.header(*k, *v);
    }
    let r = rb.send().unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let text = r.text().unwrap();
    let mut out = Vec::new();
    let mut name = None;
    for l in text.lines() {
        if let Some(n) = l.strip_prefix("event: ") {
            name = Some(n.to_string());
        } else if let Some(d) = l.strip_prefix("data: ") {
            let v: Value = serde_json::from_str(d).unwrap();
            let n = name.take().expect("every data line has an event name");
            assert_eq!(v["type"], n.as_str(), "{v}");
            out.push((n, v));
        }
    }
    out
}

/// `/v1/responses` and `/v1/messages` over plain HTTP with the real Qwen at temperature 0: the
/// same greedy answer as chat, the answer shapes, the streamed event order, a tool call in each
/// API's form, `previous_response_id` (its 404 too), `count_tokens` equal to chat's prompt
/// tokens, each API's error shape, and `x-api-key`.
#[test]
fn responses_and_messages_qwen() {
    let s = Server::start(QWEN, &["--api-key", "k"]);
    let post = |path: &str, body: &Value, headers: &[(&str, &str)]| {
        let mut rb = client().post(s.url(path)).json(body);
        for (k, v) in headers {
            rb = rb.header(*k, *v);
        }
        let r = rb.send().unwrap();
        (r.status().as_u16(), r.json::<Value>().unwrap())
    };
    let bearer = [("authorization", "Bearer k")];
    let xkey = [("x-api-key", "k")];
    let q = "What is the capital of France? Answer with one word.";
    let (st, chat) = post(
        "/v1/chat/completions",
        &json!({"messages": [{"role": "user", "content": q}], "temperature": 0, "max_tokens": 16}),
        &bearer,
    );
    assert_eq!(st, 200, "{chat}");
    let answer = chat["choices"][0]["message"]["content"].as_str().unwrap();
    let prompt_tokens = chat["usage"]["prompt_tokens"].as_u64().unwrap();
    // continue_final_message (vLLM's; what Anthropic's prefill uses): the model goes on with
    // the final assistant message.
    let pre = json!([{"role": "user", "content": q}, {"role": "assistant", "content": "The capital of France is"}]);
    let (st, c) = post(
        "/v1/chat/completions",
        &json!({"messages": pre, "continue_final_message": true, "temperature": 0, "max_tokens": 8}),
        &bearer,
    );
    assert_eq!(st, 200, "{c}");
    let cont = c["choices"][0]["message"]["content"].as_str().unwrap();
    assert!(
        cont.contains("Paris") && !cont.contains("capital"),
        "{cont}"
    );
    let (st, e) = post(
        "/v1/chat/completions",
        &json!({"messages": pre, "continue_final_message": true, "add_generation_prompt": true}),
        &bearer,
    );
    assert_eq!(
        (st, e["error"]["param"].as_str()),
        (400, Some("continue_final_message")),
        "{e}"
    );
    // Responses: the same answer and prompt.
    let rq = json!({"input": q, "temperature": 0, "max_output_tokens": 16});
    let (st, r) = post("/v1/responses", &rq, &bearer);
    assert_eq!(st, 200, "{r}");
    assert!(r["id"].as_str().unwrap().starts_with("resp_"), "{r}");
    assert_eq!(
        (r["object"].as_str(), r["status"].as_str()),
        (Some("response"), Some("completed"))
    );
    assert_eq!(r["output"][0]["type"], "message");
    assert_eq!(r["output"][0]["content"][0]["text"], answer, "{r}");
    assert_eq!(r["usage"]["input_tokens"], prompt_tokens);
    assert_eq!(
        r["usage"]["output_tokens"],
        chat["usage"]["completion_tokens"]
    );
    let mut sq = rq.clone();
    sq["stream"] = json!(true);
    let evs = named_events(&s, "/v1/responses", &sq, &bearer);
    let names: Vec<&str> = evs.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names[..4],
        [
            "response.created",
            "response.in_progress",
            "response.output_item.added",
            "response.content_part.added"
        ]
    );
    assert_eq!(
        names[names.len() - 4..],
        [
            "response.output_text.done",
            "response.content_part.done",
            "response.output_item.done",
            "response.completed"
        ]
    );
    for (i, (_, v)) in evs.iter().enumerate() {
        assert_eq!(v["sequence_number"], i as u64);
    }
    let deltas: String = evs
        .iter()
        .filter(|(n, _)| n == "response.output_text.delta")
        .map(|(_, v)| v["delta"].as_str().unwrap())
        .collect();
    assert_eq!(deltas, answer);
    // previous_response_id: the earlier turn is in the prompt; unknown ids are a 404.
    let (_, r2) = post(
        "/v1/responses",
        &json!({"input": "And of Italy?", "previous_response_id": r["id"], "temperature": 0, "max_output_tokens": 16}),
        &bearer,
    );
    assert!(
        r2["usage"]["input_tokens"].as_u64().unwrap()
            > prompt_tokens + r["usage"]["output_tokens"].as_u64().unwrap(),
        "{r2}"
    );
    assert!(
        r2["output"][0]["content"][0]["text"]
            .as_str()
            .unwrap()
            .contains("Rome"),
        "{r2}"
    );
    let (st, e) = post(
        "/v1/responses",
        &json!({"input": "x", "previous_response_id": "resp_0"}),
        &bearer,
    );
    assert_eq!(
        (st, e["error"]["param"].as_str()),
        (404, Some("previous_response_id")),
        "{e}"
    );
    let (st, got) = {
        let r = client()
            .get(s.url(&format!("/v1/responses/{}", r["id"].as_str().unwrap())))
            .header("x-api-key", "k")
            .send()
            .unwrap();
        (r.status().as_u16(), r.json::<Value>().unwrap())
    };
    assert_eq!((st, &got["output"]), (200, &r["output"]));
    // Messages: the same answer; count_tokens is the same prompt.
    let mq = json!({"model": QWEN, "max_tokens": 16, "temperature": 0, "messages": [{"role": "user", "content": q}]});
    let (st, m) = post("/v1/messages", &mq, &xkey);
    assert_eq!(st, 200, "{m}");
    assert!(m["id"].as_str().unwrap().starts_with("msg_"), "{m}");
    assert_eq!(
        (
            m["type"].as_str(),
            m["role"].as_str(),
            m["stop_reason"].as_str()
        ),
        (Some("message"), Some("assistant"), Some("end_turn"))
    );
    assert_eq!(m["content"], json!([{"type": "text", "text": answer}]));
    let u = &m["usage"];
    assert_eq!(
        u["input_tokens"].as_u64().unwrap() + u["cache_read_input_tokens"].as_u64().unwrap(),
        prompt_tokens
    );
    let (st, ct) = post(
        "/v1/messages/count_tokens",
        &json!({"model": QWEN, "messages": mq["messages"]}),
        &xkey,
    );
    assert_eq!((st, ct), (200, json!({"input_tokens": prompt_tokens})));
    let mut sm = mq.clone();
    sm["stream"] = json!(true);
    let evs = named_events(&s, "/v1/messages", &sm, &xkey);
    let names: Vec<&str> = evs.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names[..3], ["message_start", "ping", "content_block_start"]);
    assert_eq!(
        names[names.len() - 3..],
        ["content_block_stop", "message_delta", "message_stop"]
    );
    let text: String = evs
        .iter()
        .filter(|(n, _)| n == "content_block_delta")
        .map(|(_, v)| v["delta"]["text"].as_str().unwrap())
        .collect();
    assert_eq!(text, answer);
    assert_eq!(evs[evs.len() - 2].1["delta"]["stop_reason"], "end_turn");
    // A tool call in each API's form.
    let schema =
        json!({"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]});
    let weather = "What is the weather in Paris?";
    let (_, r) = post(
        "/v1/responses",
        &json!({"input": weather, "temperature": 0, "max_output_tokens": 100,
        "tools": [{"type": "function", "name": "get_weather", "parameters": schema}]}),
        &bearer,
    );
    let call = &r["output"][0];
    assert_eq!(
        (call["type"].as_str(), call["name"].as_str()),
        (Some("function_call"), Some("get_weather")),
        "{r}"
    );
    assert_eq!(
        serde_json::from_str::<Value>(call["arguments"].as_str().unwrap()).unwrap(),
        json!({"city": "Paris"})
    );
    let (_, m) = post(
        "/v1/messages",
        &json!({"model": QWEN, "max_tokens": 100, "temperature": 0,
        "messages": [{"role": "user", "content": weather}],
        "tools": [{"name": "get_weather", "input_schema": schema}]}),
        &xkey,
    );
    assert_eq!(m["stop_reason"], "tool_use", "{m}");
    let tu = m["content"].as_array().unwrap().last().unwrap();
    assert_eq!(
        (tu["type"].as_str(), &tu["input"]),
        (Some("tool_use"), &json!({"city": "Paris"})),
        "{m}"
    );
    assert!(tu["id"].as_str().unwrap().starts_with("toolu_"));
    // Errors: OpenAI's shape on /v1/responses, Anthropic's on /v1/messages.
    let (st, e) = post(
        "/v1/responses",
        &json!({"input": "x", "background": true}),
        &bearer,
    );
    assert_eq!(
        (
            st,
            e["error"]["param"].as_str(),
            e["error"]["type"].as_str()
        ),
        (400, Some("background"), Some("invalid_request_error")),
        "{e}"
    );
    let (st, e) = post(
        "/v1/messages",
        &json!({"messages": [{"role": "user", "content": "x"}]}),
        &xkey,
    );
    assert_eq!(st, 400);
    assert_eq!(
        (e["type"].as_str(), e["error"]["type"].as_str()),
        (Some("error"), Some("invalid_request_error")),
        "{e}"
    );
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("max_tokens"),
        "{e}"
    );
    let (st, e) = post("/v1/messages", &mq, &[("x-api-key", "wrong")]);
    assert_eq!(
        (st, e["error"]["type"].as_str()),
        (401, Some("authentication_error")),
        "{e}"
    );
    let (st, e) = post("/v1/responses", &rq, &[]);
    assert_eq!(
        (st, e["error"]["code"].as_str()),
        (401, Some("invalid_api_key")),
        "{e}"
    );
}

/// `switchyard bench serve` against the real server: a short sweep, then the JSON result is
/// checked (counts, no failures, token counts as asked, sane and ordered timings).
#[test]
fn bench_serve_against_the_real_server_gemma() {
    let s = Server::start(GEMMA, &[]);
    let dir = std::env::temp_dir().join(format!("sy-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("r.json");
    let out = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args([
            "bench",
            "serve",
            "--base-url",
            &s.base,
            "--concurrency",
            "1,3",
        ])
        .args([
            "--num-prompts",
            "6",
            "--input-len",
            "32",
            "--output-len",
            "8",
            "--warmup",
            "1",
        ])
        .args(["--tokenizer", GEMMA, "--no-progress", "--result-file"])
        .arg(&file)
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "bench serve failed: {log}");
    let r: Value = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    assert_eq!(r["schema"], "switchyard.bench.serve/v1");
    assert_eq!(r["server"]["model"], GEMMA);
    let points = r["points"].as_array().unwrap();
    assert_eq!(points.len(), 2);
    for (p, c) in points.iter().zip([1, 3]) {
        assert_eq!(p["concurrency"], c);
        assert_eq!(p["completed"], 6, "{p}");
        assert_eq!(p["failed"], 0, "{p}");
        assert_eq!(p["total_output_tokens"], 6 * 8, "{p}");
        // 32 random tokens (+ BOS, by the server's count).
        let input = p["total_input_tokens"].as_u64().unwrap();
        assert!((6 * 32..=6 * 33).contains(&input), "{p}");
        for m in ["ttft_ms", "tpot_ms", "itl_ms", "e2el_ms"] {
            let d = &p[m];
            let (med, p90, p99) = (
                d["median"].as_f64().unwrap(),
                d["p90"].as_f64().unwrap(),
                d["p99"].as_f64().unwrap(),
            );
            assert!(med > 0.0 && med <= p90 && p90 <= p99, "{m}: {d}");
        }
        assert!(p["ttft_ms"]["median"].as_f64() < p["e2el_ms"]["median"].as_f64());
        assert!(p["output_throughput"].as_f64().unwrap() > 0.0);
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// The /ready watchdog: a step that keeps the engine loop busy for seconds (one 8k-token prefill
/// chunk) turns /ready to 503 once the loop has not answered for `--watchdog-timeout`, and /ready
/// recovers when the loop answers again. /health stays 200 throughout.
#[test]
fn ready_watchdog_notices_a_stalled_loop_gemma() {
    let s = Server::start(
        GEMMA,
        &[
            "--watchdog-timeout",
            "1",
            "--max-num-batched-tokens",
            "8192",
        ],
    );
    assert_eq!(s.get("/ready").0, 200);
    let url = s.url("/v1/completions");
    let prompt = "word ".repeat(7000);
    let h = std::thread::spawn(move || {
        let r = client()
            .post(url)
            .json(&json!({"prompt": prompt, "max_tokens": 1}))
            .send()
            .unwrap();
        r.status().as_u16()
    });
    let (mut saw_503, mut health_ok) = (false, true);
    while !h.is_finished() {
        let (st, body) = s.get("/ready");
        if st == 503 {
            saw_503 = true;
            assert!(body.contains("has not answered"), "{body}");
        }
        health_ok &= s.get("/health").0 == 200;
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(h.join().unwrap(), 200);
    assert!(saw_503, "/ready never reported the busy loop");
    assert!(health_ok);
    let t0 = Instant::now();
    while s.get("/ready").0 != 200 {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "/ready did not recover"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Fault injection: a panic while processing one request's output fails that request with a
/// 500 in OpenAI's shape (an error event when streaming) and leaves the engine and a concurrent
/// request running; the server stays ready.
#[test]
fn a_panicking_request_fails_alone_gemma() {
    const POISON: u32 = 200_000;
    let mut s = Server::start_with_env(GEMMA, &[], &[("SWITCHYARD_TEST_PANIC_ON_TOKEN", "200000")]);
    let url = s.url("/v1/completions");
    let healthy = std::thread::spawn(move || {
        client()
            .post(url)
            .json(&json!({"prompt": "Once upon a time", "max_tokens": 40, "ignore_eos": true}))
            .send()
            .unwrap()
            .json::<Value>()
            .unwrap()
    });
    let bias = json!({POISON.to_string(): 100});
    let (st, v) = s.post(
        "/v1/completions",
        &json!({"prompt": "Hello", "max_tokens": 5, "logit_bias": bias, "temperature": 0}),
    );
    assert_eq!(st, 500, "{v}");
    assert_eq!(v["error"]["type"], "server_error");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("injected fault"),
        "{v}"
    );
    let chunks = client()
        .post(s.url("/v1/completions"))
        .json(
            &json!({"prompt": "Hello", "max_tokens": 5, "logit_bias": bias, "stream": true,
                      "temperature": 0}),
        )
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert!(
        chunks.contains("\"error\"") && chunks.contains("injected fault"),
        "{chunks}"
    );
    let ok = healthy.join().unwrap();
    assert_eq!(ok["usage"]["completion_tokens"], 40, "{ok}");
    assert_eq!(s.get("/ready").0, 200);
    let (st, _) = s.post("/v1/completions", &json!({"prompt": "Hi", "max_tokens": 2}));
    assert_eq!(st, 200);
    let (_, m) = s.get("/metrics");
    assert!(m.contains("finished_reason=\"error\"} 2"), "{m}");
    assert!(s.child.try_wait().unwrap().is_none(), "the server died");
}

/// KV exhaustion under a burst ends in preemption, not errors: 12 concurrent requests that need
/// ~5 blocks each on a pool of 24 blocks all complete, with the output each gives alone.
#[test]
fn kv_exhaustion_under_a_burst_preempts_gemma() {
    // Gemma: 18 KiB of KV per token, 16-token blocks: 24 blocks = 6.75 MiB.
    let s = Server::start(
        GEMMA,
        &["--kv-cache-memory", "7077888", "--max-num-seqs", "12"],
    );
    let body = |i: usize| {
        json!({"prompt": format!("Story number {i}: once upon a time, in a land far away,"),
               "max_tokens": 60, "ignore_eos": true, "temperature": 0})
    };
    let base = s.base.clone();
    let handles: Vec<_> = (0..12)
        .map(|i| {
            let url = format!("{base}/v1/completions");
            std::thread::spawn(move || {
                let r = client().post(url).json(&body(i)).send().unwrap();
                (r.status().as_u16(), r.json::<Value>().unwrap())
            })
        })
        .collect();
    let burst: Vec<(u16, Value)> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    for (i, (st, v)) in burst.iter().enumerate() {
        assert_eq!(*st, 200, "request {i}: {v}");
        assert_eq!(v["usage"]["completion_tokens"], 60, "request {i}: {v}");
    }
    assert!(s.metric("switchyard:num_preemptions_total") > 0.0);
    // Same greedy output as alone.
    for i in [0, 7, 11] {
        let (_, v) = s.post("/v1/completions", &body(i));
        assert_eq!(
            v["choices"][0]["text"], burst[i].1["choices"][0]["text"],
            "request {i}"
        );
    }
}

/// SIGKILL, then a restart: ready again within the start-up time.
#[test]
fn sigkill_restart_comes_back_ready_gemma() {
    let mut s = Server::start(GEMMA, &[]);
    assert_eq!(s.get("/ready").0, 200);
    s.child.kill().unwrap();
    s.child.wait().unwrap();
    let t0 = Instant::now();
    let s2 = Server::start(GEMMA, &[]);
    let t0_ready = loop {
        if s2.get("/ready").0 == 200 {
            break t0.elapsed();
        }
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "not ready after restart"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    eprintln!("restart to ready: {:.2} s", t0_ready.as_secs_f64());
    let (st, _) = s2.post("/v1/completions", &json!({"prompt": "Hi", "max_tokens": 2}));
    assert_eq!(st, 200);
}

/// Slow clients are bounded: a header block trickled a line at a time is cut off after
/// `--header-read-timeout`, an idle connection is closed after the same time, a body that
/// stops arriving gets 408 in OpenAI's shape after `--body-read-timeout`, connections above
/// `--max-connections` are closed at once, and normal requests are served throughout.
#[test]
fn slow_clients_are_cut_off_gemma() {
    use std::io::Write;
    use std::net::TcpStream;
    let s = Server::start(
        "gemma-3-270m",
        &[
            "--header-read-timeout",
            "2",
            "--body-read-timeout",
            "2",
            "--max-connections",
            "6",
        ],
    );
    let addr = s.base.trim_start_matches("http://").to_string();
    let connect = || {
        let c = TcpStream::connect(&addr).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        c
    };
    // Idle: closed by the server (EOF) after about the header timeout.
    let mut idle = connect();
    let t0 = Instant::now();
    let mut buf = [0u8; 512];
    assert_eq!(idle.read(&mut buf).unwrap_or(0), 0);
    let idle_s = t0.elapsed().as_secs_f64();
    assert!(
        (1.5..10.0).contains(&idle_s),
        "idle closed after {idle_s} s"
    );

    // Slowloris: one header line every 300 ms never completes the block.
    let mut slow = connect();
    let t0 = Instant::now();
    slow.write_all(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    let mut cut = None;
    for i in 0..100 {
        if slow
            .write_all(format!("X-Pad-{i}: y\r\n").as_bytes())
            .is_err()
        {
            cut = Some(t0.elapsed());
            break;
        }
        slow.set_nonblocking(true).unwrap();
        match slow.read(&mut buf) {
            Ok(_) => {
                cut = Some(t0.elapsed());
                break;
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(_) => {
                cut = Some(t0.elapsed());
                break;
            }
        }
        slow.set_nonblocking(false).unwrap();
        // Meanwhile the server answers others.
        if i == 3 {
            let (st, v) = s.post("/v1/completions", &json!({"prompt": "Hi", "max_tokens": 2}));
            assert_eq!(st, 200, "{v}");
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    let cut = cut
        .expect("a trickled header block was never cut off")
        .as_secs_f64();
    assert!((1.5..10.0).contains(&cut), "slow headers cut after {cut} s");

    // An announced body over --max-body-bytes (8 MiB): 413 at once, before the body is read
    // (the client announces 64 MiB and sends 64 KiB, then waits).
    let mut big = connect();
    let t0 = Instant::now();
    big.write_all(
        b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 67108864\r\n\r\n",
    )
    .unwrap();
    big.write_all(&vec![b' '; 64 << 10]).unwrap();
    let mut head = [0u8; 12];
    big.read_exact(&mut head).unwrap();
    let big_s = t0.elapsed().as_secs_f64();
    assert_eq!(&head, b"HTTP/1.1 413", "{}", String::from_utf8_lossy(&head));
    assert!(big_s < 1.0, "413 after {big_s} s");
    drop(big);

    // A long stream that keeps making progress outlives the idle and header timeouts (2 s).
    let t0 = Instant::now();
    let chunks = stream(
        &s,
        "/v1/completions",
        &json!({"prompt": "Once upon a time", "max_tokens": 120, "ignore_eos": true,
                "stream": true, "stream_options": {"include_usage": true}}),
    );
    assert_eq!(chunks.last().unwrap()["usage"]["completion_tokens"], 120);
    eprintln!("long stream took {:?}", t0.elapsed());

    // A body that stops arriving: 408 in OpenAI's shape.
    let mut body = connect();
    let t0 = Instant::now();
    body.write_all(
        b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"prompt\":",
    )
    .unwrap();
    let mut resp = Vec::new();
    let _ = body.read_to_end(&mut resp);
    let text = String::from_utf8_lossy(&resp);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    let json: Value = serde_json::from_str(text.split("\r\n\r\n").nth(1).unwrap()).unwrap();
    assert_eq!(json["error"]["code"], "request_timeout", "{json}");
    assert_eq!(json["error"]["type"], "invalid_request_error");
    let body_s = t0.elapsed().as_secs_f64();
    assert!((1.5..10.0).contains(&body_s), "408 after {body_s} s");

    // Connection cap: of 9 fresh connections, those above 6 are closed at once. The earlier
    // connections are closed first so none of them still holds a slot on the server.
    drop((idle, slow, body));
    std::thread::sleep(Duration::from_millis(500));
    let extra: Vec<TcpStream> = (0..9).map(|_| connect()).collect();
    std::thread::sleep(Duration::from_millis(500));
    let mut closed = 0;
    for mut c in extra {
        c.set_nonblocking(true).unwrap();
        if matches!(c.read(&mut buf), Ok(0)) {
            closed += 1;
        }
    }
    assert_eq!(closed, 3, "connections closed at once above the cap");
    // Once the held connections time out, normal service resumes.
    std::thread::sleep(Duration::from_secs(3));
    let (st, v) = s.post("/v1/completions", &json!({"prompt": "Hi", "max_tokens": 2}));
    assert_eq!(st, 200, "{v}");
    assert_eq!(s.metric("switchyard:connections_rejected_total"), 3.0);
}

/// The cached Gemma GGUF, copied to a scratch file that the test may truncate.
fn scratch_gemma_copy(tag: &str) -> std::path::PathBuf {
    let src = match switchyard_runtime::registry::resolve(GEMMA).unwrap() {
        switchyard_runtime::registry::ModelRef::Manifest(m) => {
            switchyard_runtime::registry::locate_manifest(m, false).unwrap()
        }
        _ => unreachable!("{GEMMA} is a registry alias"),
    };
    let dir = std::env::temp_dir().join(format!("switchyard-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let dst = dir.join("gemma.gguf");
    std::fs::copy(&src, &dst).unwrap();
    dst
}

fn truncate(path: &std::path::Path, len: u64) {
    std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .unwrap()
        .set_len(len)
        .unwrap();
}

/// The model file truncated while it is served. With `--no-mmap` the weights live in the
/// process's own memory: requests keep succeeding with the same output. With the default memory
/// map the process either never touches the map again (every weight read from a load-time
/// copy) and answers the same, or dies by SIGBUS at its next touch of a dropped page
/// (documented in SECURITY.md); a restart then refuses the truncated file with a clear error
/// instead of serving garbage.
#[test]
fn model_file_truncated_while_serving_gemma() {
    use std::os::unix::process::ExitStatusExt;
    let body = json!({"prompt": "The capital of France is", "max_tokens": 12, "temperature": 0});

    let path = scratch_gemma_copy("no-mmap");
    let p = path.to_str().unwrap();
    let s = Server::start(p, &["--no-mmap"]);
    let (st, before) = s.post("/v1/completions", &body);
    assert_eq!(st, 200, "{before}");
    truncate(&path, 4096);
    for _ in 0..3 {
        let (st, after) = s.post("/v1/completions", &body);
        assert_eq!(st, 200, "{after}");
        assert_eq!(after["choices"][0]["text"], before["choices"][0]["text"]);
    }
    assert_eq!(s.get("/ready").0, 200);
    drop(s);
    let _ = std::fs::remove_dir_all(path.parent().unwrap());

    let path = scratch_gemma_copy("mmap");
    let p = path.to_str().unwrap();
    let mut s = Server::start(p, &[]);
    let (st, before) = s.post("/v1/completions", &body);
    assert_eq!(st, 200, "{before}");
    // Drop the file's cached pages too, so the next touch must go to the (now short) file.
    truncate(&path, 4096);
    // Where every weight the kernels read is a load-time copy (the SIMD levels' layouts; the
    // file map's pages are released after load), nothing touches the map again and the
    // answer is unchanged; where a weight is still read from the map, the process dies by
    // SIGBUS at that touch. Never a different answer.
    match client().post(s.url("/v1/completions")).json(&body).send() {
        Ok(r) => {
            assert_eq!(r.status().as_u16(), 200);
            let after: Value = r.json().unwrap();
            assert_eq!(after["choices"][0]["text"], before["choices"][0]["text"]);
            drop(s);
        }
        Err(_) => {
            let status = s.child.wait().unwrap();
            assert_eq!(status.signal(), Some(7), "expected SIGBUS, got {status:?}");
        }
    }

    let out = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["serve", "--no-fetch", "--port", "0", "--model", p])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "served a truncated file: {err}");
    assert!(
        err.contains("gemma.gguf") && !err.contains("panicked"),
        "unclear error for a truncated file: {err}"
    );
    let _ = std::fs::remove_dir_all(path.parent().unwrap());
}

/// SSE events of a streamed request with the time each arrived (from just before sending).
fn timed_stream(server: &Server, path: &str, body: &Value) -> (Vec<(Duration, Value)>, Duration) {
    let t0 = Instant::now();
    let mut r = client().post(server.url(path)).json(body).send().unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let mut out = Vec::new();
    let mut buf = Vec::new();
    let mut tmp = [0u8; 4096];
    loop {
        let n = r.read(&mut tmp).unwrap();
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&tmp[..n]);
        while let Some(p) = buf.windows(2).position(|w| w == b"\n\n") {
            let ev: Vec<u8> = buf.drain(..p + 2).collect();
            let ev = String::from_utf8(ev).unwrap();
            for data in sse_events(&ev) {
                if data != "[DONE]" {
                    out.push((t0.elapsed(), serde_json::from_str(&data).unwrap()));
                }
            }
        }
    }
    (out, t0.elapsed())
}

/// The first five minutes (issue 37): the default model chats; a streamed chat's first event
/// carries generated text (the role goes with it, not ahead of the prefill); a streamed
/// request is logged with its whole duration; start-up logs no CUDA warning and no colour
/// codes when stderr is not a terminal; requests without sampling fields sample (the model
/// gives no defaults: OpenAI's temperature 1), and `temperature: 0` is greedy.
#[test]
fn first_five_minutes_default_model_qwen() {
    // The default model, no --model: it must be the chat model. A small step budget makes the
    // prefill of a long prompt take many steps.
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_switchyard"));
    cmd.args(["serve", "--no-fetch", "--port", "0"])
        .args(["--max-num-batched-tokens", "32", "--no-prefix-caching"])
        .env_remove("SWITCHYARD_MODEL");
    let s = Server::spawn(cmd);
    let (_, models) = s.get("/v1/models");
    assert!(models.contains(QWEN), "{models}");
    let start_logs = s.logs();
    assert!(
        start_logs.iter().all(|l| !l.contains('\u{1b}')),
        "ANSI codes in logs written to a pipe: {start_logs:?}"
    );
    assert!(
        start_logs
            .iter()
            .all(|l| !(l.contains("WARN") && l.contains("CUDA"))),
        "{start_logs:?}"
    );
    assert!(
        start_logs.iter().any(|l| l.contains("device: cpu")),
        "{start_logs:?}"
    );
    assert!(
        start_logs.iter().any(|l| l.contains("default sampling")),
        "{start_logs:?}"
    );

    // A chat whose prefill takes ~20 steps of 32 tokens.
    let long = "Here is a list of railway stations, one per line, with their opening years:\n"
        .to_string()
        + &(0..60)
            .map(|i| format!("Station {i}: opened in {}\n", 1850 + i))
            .collect::<String>()
        + "Which station opened first? Answer in one sentence.";
    let msgs = json!([{"role": "user", "content": long}]);
    let (_, tk) = s.post("/tokenize", &json!({"messages": msgs}));
    let prompt_tokens = tk["count"].as_u64().unwrap();
    assert!(prompt_tokens > 400, "{prompt_tokens}");
    // The prefill alone (one token), for scale.
    let t = Instant::now();
    let (st, _) = s.post(
        "/v1/chat/completions",
        &json!({"messages": msgs, "max_tokens": 1, "temperature": 0}),
    );
    assert_eq!(st, 200);
    let prefill = t.elapsed();
    let body = json!({"messages": msgs, "max_tokens": 8, "temperature": 0, "stream": true});
    let (events, total) = timed_stream(&s, "/v1/chat/completions", &body);
    let (t_first, first) = &events[0];
    assert_eq!(first["choices"][0]["delta"]["role"], "assistant", "{first}");
    assert!(
        first["choices"][0]["delta"]["content"]
            .as_str()
            .is_some_and(|c| !c.is_empty()),
        "the first event carries no text: {first}"
    );
    // Nothing arrives before the prefill is done (loose bound: the machine's speed varies).
    assert!(
        *t_first >= prefill / 2,
        "first event after {t_first:?}, the prefill alone took {prefill:?}"
    );
    // The streamed request's log line comes at its end, with its whole duration.
    std::thread::sleep(Duration::from_millis(200));
    let logged_ms: Vec<u64> = s
        .logs()
        .iter()
        .filter(|l| l.contains("/v1/chat/completions") && l.contains("request"))
        .filter_map(|l| {
            let i = l.find("ms=")?;
            l[i + 3..]
                .split(|c: char| !c.is_ascii_digit())
                .next()?
                .parse()
                .ok()
        })
        .collect();
    let last = *logged_ms.last().expect("a log line for the streamed chat");
    assert!(
        last as f64 >= total.as_millis() as f64 * 0.5 && last > 0,
        "streamed request logged with ms={last}, it took {total:?}"
    );

    // Default sampling: no temperature given and no model defaults: OpenAI's temperature 1,
    // so four choices of 12 tokens do not all agree; asked for greedy, they do.
    let prompt = "Write a short poem about trains.";
    let texts = |extra: Value| -> Vec<String> {
        let mut b = json!({"prompt": prompt, "max_tokens": 12, "n": 4, "ignore_eos": true});
        for (k, v) in extra.as_object().unwrap() {
            b[k] = v.clone();
        }
        let (st, v) = s.post("/v1/completions", &b);
        assert_eq!(st, 200, "{v}");
        v["choices"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["text"].as_str().unwrap().to_string())
            .collect()
    };
    let sampled = texts(json!({}));
    assert!(
        sampled.iter().any(|t| t != &sampled[0]),
        "default sampling is greedy: {sampled:?}"
    );
    let greedy = texts(json!({"temperature": 0}));
    assert!(greedy.iter().all(|t| t == &greedy[0]), "{greedy:?}");
}

/// `--generation-config auto` takes a Hugging Face model's `generation_config.json`
/// (`do_sample: false` here, as `scripts/gguf-to-hf.py` writes it: greedy by default);
/// `--generation-config none` ignores it (OpenAI's temperature 1).
#[test]
fn generation_config_defaults_hf_gemma() {
    let dir = switchyard_runtime::registry::cache_dir()
        .join("hf")
        .join("gemma-3-270m-bf16");
    assert!(
        dir.join(".stamp").is_file(),
        "{} missing: run scripts/build-hf-test-models.sh first (scripts/test.sh does)",
        dir.display()
    );
    let gc = std::fs::read_to_string(dir.join("generation_config.json")).unwrap();
    assert!(gc.contains("\"do_sample\": false"), "{gc}");
    let d = dir.to_str().unwrap();
    let body = json!({"prompt": "Write a short poem about trains.", "max_tokens": 12, "n": 4,
                      "ignore_eos": true});
    let run = |args: &[&str]| -> (Vec<String>, Vec<String>) {
        let s = Server::start(d, args);
        let (st, v) = s.post("/v1/completions", &body);
        assert_eq!(st, 200, "{v}");
        let texts = v["choices"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["text"].as_str().unwrap().to_string())
            .collect();
        (texts, s.logs())
    };
    let (auto, logs) = run(&[]);
    assert!(auto.iter().all(|t| t == &auto[0]), "{auto:?}");
    assert!(
        logs.iter()
            .any(|l| l.contains("temperature 0") && l.contains("generation_config.json")),
        "{logs:?}"
    );
    let (none, _) = run(&["--generation-config", "none"]);
    assert!(none.iter().any(|t| t != &none[0]), "{none:?}");
}

/// Per-request bounds (400 naming the limit) and admission by queued prompt tokens (429 with
/// Retry-After); and prompt text stays out of the logs at the most verbose level unless
/// --log-request-text asks for it.
#[test]
fn request_bounds_token_admission_and_no_text_in_logs_gemma() {
    let s = Server::start_with_env(
        GEMMA,
        &[
            "--max-seqs-per-request",
            "8",
            "--max-tokens-per-request",
            "2000",
            "--max-queued-tokens",
            "1500",
            "--max-num-batched-tokens",
            "32",
        ],
        &[("SWITCHYARD_LOG", "trace")],
    );
    // Sequences: 3 prompts x n 3 = 9 > 8.
    let (st, v) = s.post(
        "/v1/completions",
        &json!({"prompt": ["a", "b", "c"], "n": 3, "max_tokens": 1}),
    );
    assert_eq!(st, 400, "{v}");
    assert_eq!(v["error"]["param"], "n");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("--max-seqs-per-request"),
        "{v}"
    );
    // 8 sequences are fine.
    let (st, v) = s.post(
        "/v1/completions",
        &json!({"prompt": ["a", "b"], "n": 4, "max_tokens": 1}),
    );
    assert_eq!(st, 200, "{v}");
    // Tokens: n 4 x max_tokens 600 > 2000.
    let (st, v) = s.post(
        "/v1/completions",
        &json!({"prompt": "a", "n": 4, "max_tokens": 600}),
    );
    assert_eq!(st, 400, "{v}");
    assert_eq!(v["error"]["param"], "max_tokens");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("--max-tokens-per-request"),
        "{v}"
    );
    // Queued prompt tokens: a ~900-token prompt prefills in ~30 steps of 32 tokens; while it
    // waits, a second one (900 + 900 > 1500) gets 429 with Retry-After, then is admitted once
    // the first has started generating.
    let secret = "zebra quartz lantern";
    let long = format!("{secret} ") + &"the railway runs along the coast ".repeat(150);
    let (_, tk) = s.post("/tokenize", &json!({"prompt": long}));
    assert!(tk["count"].as_u64().unwrap() > 600, "{tk}");
    let base = s.base.clone();
    let body = json!({"prompt": long, "max_tokens": 40, "ignore_eos": true, "temperature": 0});
    let b2 = body.clone();
    let first = std::thread::spawn(move || {
        let r = client()
            .post(format!("{base}/v1/completions"))
            .json(&b2)
            .send()
            .unwrap();
        (r.status().as_u16(), r.json::<Value>().unwrap())
    });
    // Only once the first request is in the engine (else the loop's could be admitted first).
    let t0 = Instant::now();
    while s.metric("switchyard:num_requests_running") + s.metric("switchyard:num_requests_waiting")
        < 1.0
    {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "the first request never started"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let mut saw_429 = false;
    let mut admitted = false;
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(60) {
        let r = client()
            .post(s.url("/v1/completions"))
            .json(&json!({"prompt": long, "max_tokens": 1}))
            .send()
            .unwrap();
        match r.status().as_u16() {
            429 => {
                assert!(r.headers().contains_key("retry-after"));
                let v: Value = r.json().unwrap();
                assert!(
                    v["error"]["message"]
                        .as_str()
                        .unwrap()
                        .contains("--max-queued-tokens"),
                    "{v}"
                );
                saw_429 = true;
                std::thread::sleep(Duration::from_millis(20));
            }
            200 => {
                admitted = true;
                break;
            }
            st => panic!("status {st}: {}", r.text().unwrap()),
        }
    }
    let (st, v) = first.join().unwrap();
    assert_eq!(st, 200, "{v}");
    assert!(saw_429, "no 429 while a long prompt waited for its prefill");
    assert!(
        admitted,
        "never admitted once the first prompt was prefilled"
    );
    // A streamed chat-less completion too, then the logs at trace level hold no prompt text.
    let _ = stream(
        &s,
        "/v1/completions",
        &json!({"prompt": format!("{secret} again"), "max_tokens": 3, "stream": true}),
    );
    std::thread::sleep(Duration::from_millis(200));
    let logs = s.logs();
    assert!(
        logs.len() > 20,
        "trace logging produced {} lines",
        logs.len()
    );
    for l in &logs {
        assert!(
            !l.contains(secret) && !l.contains("railway runs"),
            "prompt text in a log line: {l}"
        );
    }
    drop(s);
    // With --log-request-text the body is logged (and only then).
    let s = Server::start(GEMMA, &["--log-request-text"]);
    let (st, _) = s.post(
        "/v1/completions",
        &json!({"prompt": format!("{secret} logged"), "max_tokens": 1}),
    );
    assert_eq!(st, 200);
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        s.logs().iter().any(|l| l.contains(secret)),
        "--log-request-text did not log the prompt"
    );
}

/// Runs, under `--max-num-seqs 1`, a long request A and then B and C (each a completion or a
/// chat per `chat`) queued behind it in that order, with the given `priority` fields (`None`:
/// left out); returns the finish order of B and C.
fn queued_order(s: &Server, chat: bool, b: Option<i64>, c: Option<i64>) -> Vec<&'static str> {
    let a_tokens = if chat { 60 } else { 200 };
    let body = |max: u32, p: Option<i64>| {
        let mut v = if chat {
            json!({"messages": [{"role": "user", "content": "Count to ten."}]})
        } else {
            json!({"prompt": "Once upon a time"})
        };
        v["max_tokens"] = json!(max);
        v["ignore_eos"] = json!(true);
        v["temperature"] = json!(0);
        if let Some(p) = p {
            v["priority"] = json!(p);
        }
        v
    };
    let path = if chat {
        "/v1/chat/completions"
    } else {
        "/v1/completions"
    };
    let done = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let send = |name: &'static str, v: Value| {
        let (url, done) = (s.url(path), done.clone());
        std::thread::spawn(move || {
            let r = client().post(url).json(&v).send().unwrap();
            assert_eq!(r.status().as_u16(), 200, "{name}: {}", r.text().unwrap());
            done.lock().unwrap().push(name);
        })
    };
    let waiting = |n: f64| {
        let t0 = Instant::now();
        while s.metric("switchyard:num_requests_waiting") < n {
            assert!(t0.elapsed() < Duration::from_secs(30), "request not queued");
            std::thread::sleep(Duration::from_millis(5));
        }
    };
    let a = send("A", body(a_tokens, None));
    let t0 = Instant::now();
    while s.metric("switchyard:num_requests_running") < 1.0 {
        assert!(t0.elapsed() < Duration::from_secs(30), "A never ran");
        std::thread::sleep(Duration::from_millis(5));
    }
    let hb = send("B", body(4, b));
    waiting(1.0);
    let hc = send("C", body(4, c));
    waiting(2.0);
    for h in [a, hb, hc] {
        h.join().unwrap();
    }
    let order = done.lock().unwrap().clone();
    assert_eq!(order[0], "A", "A was not running first: {order:?}");
    order[1..].to_vec()
}

/// `priority` (vLLM's meaning: lower runs first) on completions and chat under a full batch
/// (`--max-num-seqs 1`): C, queued after B with a better priority, finishes first (its lower
/// value), equal priorities keep arrival order; FCFS (the
/// default) keeps arrival order, and there a non-zero `priority` is a 400 naming it.
#[test]
fn priority_scheduling_gemma() {
    let s = Server::start(
        GEMMA,
        &["--max-num-seqs", "1", "--scheduling-policy", "priority"],
    );
    assert_eq!(queued_order(&s, false, Some(10), Some(-10)), ["C", "B"]);
    // Equal priorities: arrival order.
    assert_eq!(queued_order(&s, false, Some(3), Some(3)), ["B", "C"]);
    let (st, e) = s.post(
        "/v1/completions",
        &json!({"prompt": "x", "max_tokens": 1, "priority": 1.5}),
    );
    assert_eq!(
        (st, e["error"]["param"].as_str()),
        (400, Some("priority")),
        "{e}"
    );
    drop(s);
    // Chat (Qwen: Gemma's GGUF has no chat template).
    let s = Server::start(
        QWEN,
        &["--max-num-seqs", "1", "--scheduling-policy", "priority"],
    );
    assert_eq!(queued_order(&s, true, Some(5), Some(1)), ["C", "B"]);
    let (st, e) = s.post(
        "/v1/chat/completions",
        &json!({"messages": [{"role": "user", "content": "x"}], "priority": "high"}),
    );
    assert_eq!(
        (st, e["error"]["param"].as_str()),
        (400, Some("priority")),
        "{e}"
    );
    drop(s);

    let s = Server::start(GEMMA, &["--max-num-seqs", "1"]);
    assert_eq!(queued_order(&s, false, None, Some(0)), ["B", "C"]);
    let (st, e) = s.post(
        "/v1/completions",
        &json!({"prompt": "x", "max_tokens": 1, "priority": -1}),
    );
    assert_eq!(st, 400, "{e}");
    assert_eq!(e["error"]["param"], "priority", "{e}");
    assert!(e["error"]["message"]
        .as_str()
        .unwrap()
        .contains("--scheduling-policy priority"));
}

/// The unit-length vectors of an embeddings answer (float format).
fn vectors(v: &Value) -> Vec<Vec<f64>> {
    v["data"]
        .as_array()
        .unwrap()
        .iter()
        .enumerate()
        .map(|(i, d)| {
            assert_eq!(d["index"], i);
            assert_eq!(d["object"], "embedding");
            d["embedding"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap())
                .collect()
        })
        .collect()
}

fn cosine(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    let dot: f64 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let na: f64 = a.iter().map(|x| x * x).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|x| x * x).sum::<f64>().sqrt();
    dot / (na * nb)
}

/// Our `/v1/embeddings` against llama.cpp's `llama-server --embeddings --pooling P` on the same
/// GGUF (golden vectors from scripts/gen-embedding-golden.py): cosine >= 0.999 for every
/// input, except where llama.cpp's own vectors move more than that between its two attention
/// paths (`-fa on` / `-fa off`, the golden's `self_cosine`: Gemma's two shortest inputs,
/// 0.9976 and 0.9983): there our distance must stay within 1.5x of that noise. A small step
/// budget makes the long input pool over several chunks and the inputs share steps.
fn embeddings_match_llamacpp(alias: &str, pooling: &str, flag: bool) {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/golden")
        .join(alias)
        .join(format!("embeddings-{pooling}.json"));
    let g: Value = serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
    let mut args = vec!["--max-num-batched-tokens", "48"];
    if flag {
        args.extend(["--pooling", pooling]);
    }
    let s = Server::start(alias, &args);
    let (st, v) = s.post("/v1/embeddings", &json!({"input": g["inputs"]}));
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["object"], "list");
    let ours = vectors(&v);
    let theirs: Vec<Vec<f64>> = g["embeddings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            e.as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap())
                .collect()
        })
        .collect();
    assert_eq!(ours.len(), theirs.len());
    let mut tokens = 0;
    let noise = g["self_cosine"].as_array().unwrap();
    for (((a, b), text), own) in ours
        .iter()
        .zip(&theirs)
        .zip(g["inputs"].as_array().unwrap())
        .zip(noise)
    {
        let norm: f64 = a.iter().map(|x| x * x).sum::<f64>().sqrt();
        assert!((norm - 1.0).abs() < 1e-4, "norm {norm}");
        let c = cosine(a, b);
        let allowed = 0.001f64.max(1.5 * (1.0 - own.as_f64().unwrap()));
        eprintln!(
            "{alias} {pooling}: cosine vs llama.cpp {c:.6} (llama.cpp fa on/off {own}) for {text}"
        );
        assert!(
            1.0 - c <= allowed,
            "{alias} {pooling}: cosine {c} for {text}, allowed {}",
            1.0 - allowed
        );
        let (_, tk) = s.post("/tokenize", &json!({"prompt": text}));
        tokens += tk["count"].as_u64().unwrap();
    }
    assert_eq!(v["usage"]["prompt_tokens"], tokens);
    assert_eq!(v["usage"]["total_tokens"], tokens);
}

#[test]
fn embeddings_match_llamacpp_gemma() {
    // Mean is the default for a model that declares no pooling.
    embeddings_match_llamacpp(GEMMA, "mean", false);
}

#[test]
fn embeddings_match_llamacpp_qwen() {
    embeddings_match_llamacpp(QWEN, "last", true);
    embeddings_match_llamacpp(QWEN, "mean", true);
}

/// `/v1/embeddings`: every `input` form gives the same vector for the same tokens; a vector
/// does not depend on its batch companions or on generations running beside it; embeddings
/// never put blocks in the prefix cache; `dimensions` only where allowed (truncate, then
/// renormalize); bad input is a 400 in OpenAI's shape naming the field.
#[test]
fn embeddings_forms_batching_cache_and_errors_gemma() {
    let s = Server::start(GEMMA, &["--max-num-batched-tokens", "64"]);
    let text = "A sentence about embeddings and the weather.";
    let (st, one) = s.post("/v1/embeddings", &json!({"input": text, "model": GEMMA}));
    assert_eq!(st, 200, "{one}");
    let alone = vectors(&one).remove(0);
    assert_eq!(alone.len(), 640);
    let (_, tk) = s.post("/tokenize", &json!({"prompt": text}));
    let ids = tk["tokens"].clone();
    let companions = json!(["Short.", "Another, much longer input that takes several chunks of the step budget to compute, so that it shares steps with the others in different ways.", "x"]);
    let mut batch = companions.as_array().unwrap().clone();
    batch.insert(1, json!(text));
    for body in [
        json!({"input": [text]}),
        json!({"input": ids}),
        json!({"input": [ids, [2, 100, 200]]}),
        json!({"input": batch}),
    ] {
        let (st, v) = s.post("/v1/embeddings", &body);
        assert_eq!(st, 200, "{v}");
        let vs = vectors(&v);
        let at = if body["input"].as_array().is_some_and(|a| a.len() == 4) {
            1
        } else {
            0
        };
        let c = cosine(&vs[at], &alone);
        assert!((1.0 - c).abs() < 1e-6, "{body}: cosine {c}");
    }
    // Beside a generation that streams meanwhile: the same vector, and the generation's greedy
    // text is the one it has alone.
    let gen = json!({"prompt": "Once upon a time", "max_tokens": 40, "temperature": 0, "ignore_eos": true});
    let (_, solo) = s.post("/v1/completions", &gen);
    let url = s.url("/v1/completions");
    let g2 = gen.clone();
    let h = std::thread::spawn(move || {
        client()
            .post(url)
            .json(&g2)
            .send()
            .unwrap()
            .json::<Value>()
            .unwrap()
    });
    for _ in 0..3 {
        let (_, v) = s.post("/v1/embeddings", &json!({"input": [text, "Short."]}));
        assert!((1.0 - cosine(&vectors(&v)[0], &alone)).abs() < 1e-6);
    }
    assert_eq!(
        h.join().unwrap()["choices"][0]["text"],
        solo["choices"][0]["text"]
    );

    // No prefix-cache entries from embeddings: a completion of the same long text right after
    // finds nothing cached, while a second completion does.
    let long = "Rivers and mountains. ".repeat(20);
    let (_, _) = s.post("/v1/embeddings", &json!({"input": long}));
    let cached = |s: &Server| {
        let (_, v) = s.post("/v1/completions", &json!({"prompt": long, "max_tokens": 1}));
        v["usage"]["prompt_tokens_details"]["cached_tokens"]
            .as_u64()
            .unwrap()
    };
    assert_eq!(
        cached(&s),
        0,
        "an embedding left blocks in the prefix cache"
    );
    assert!(cached(&s) > 0, "the prefix cache is off?");

    // base64: little-endian f32 of the same vector.
    let (_, b) = s.post(
        "/v1/embeddings",
        &json!({"input": text, "encoding_format": "base64"}),
    );
    assert!(b["data"][0]["embedding"].is_string());

    let bad = [
        (json!({}), "input"),
        (json!({"input": ""}), "input"),
        (json!({"input": []}), "input"),
        (json!({"input": [""]}), "input"),
        (json!({"input": 5}), "input"),
        (json!({"input": [1, "a"]}), "input"),
        (json!({"input": [[]]}), "input"),
        (json!({"input": [999999999]}), "input"),
        (
            json!({"input": "x", "encoding_format": "hex"}),
            "encoding_format",
        ),
        (json!({"input": "x", "dimensions": 64}), "dimensions"),
        (json!({"input": "x", "dimensions": 0}), "dimensions"),
        (
            json!({"input": "x", "truncate_prompt_tokens": 4}),
            "truncate_prompt_tokens",
        ),
        (json!({"input": "x", "priority": 1}), "priority"),
        (json!({"input": vec!["x"; 65]}), "input"),
    ];
    for (body, param) in bad {
        let (st, e) = s.post("/v1/embeddings", &body);
        assert_eq!(st, 400, "{body}: {e}");
        assert_eq!(e["error"]["type"], "invalid_request_error", "{e}");
        assert_eq!(e["error"]["param"], param, "{body}: {e}");
    }
    let (st, e) = s.post("/v1/embeddings", &json!({"input": "x", "model": "nope"}));
    assert_eq!(st, 404, "{e}");
    let long_ids: Vec<u32> = vec![100; 40000];
    let (st, e) = s.post("/v1/embeddings", &json!({"input": long_ids}));
    assert_eq!(
        (st, e["error"]["param"].as_str()),
        (400, Some("input")),
        "{e}"
    );
    drop(s);

    // Truncation where allowed: the first `d` components, renormalized.
    let s = Server::start(GEMMA, &["--matryoshka-dimensions", "64,128"]);
    let (_, full) = s.post("/v1/embeddings", &json!({"input": text}));
    let full = vectors(&full).remove(0);
    let (st, v) = s.post("/v1/embeddings", &json!({"input": text, "dimensions": 128}));
    assert_eq!(st, 200, "{v}");
    let cut = vectors(&v).remove(0);
    assert_eq!(cut.len(), 128);
    let norm: f64 = full[..128].iter().map(|x| x * x).sum::<f64>().sqrt();
    for (a, b) in cut.iter().zip(&full[..128]) {
        assert!((a - b / norm).abs() < 1e-5, "{a} vs {}", b / norm);
    }
    let (st, e) = s.post("/v1/embeddings", &json!({"input": text, "dimensions": 100}));
    assert_eq!(
        (st, e["error"]["param"].as_str()),
        (400, Some("dimensions")),
        "{e}"
    );
}
