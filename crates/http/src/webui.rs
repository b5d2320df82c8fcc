//! The built-in web UI: a chat page at `/` and a live dashboard at `/dashboard`, plain HTML,
//! CSS and JavaScript modules from `crates/http/webui/`, embedded in the binary
//! (`include_str!`), nothing fetched from elsewhere. Every page goes out with a strict
//! Content-Security-Policy (scripts and styles from this server only, no inline code, no
//! frames), so even a rendering bug could not run model output as script; the pages themselves
//! never insert model output as HTML (`markdown.js` builds DOM nodes from text).
//!
//! The static assets are open (they hold no data); the data the pages show comes from the API
//! routes (`/v1/models`, `/v1/chat/completions`, `/v1/completions`, `/metrics`) and
//! `GET /ui/info` (what the pages need to know about the server: whether the model has a chat
//! template, the device, the SIMD level, the flags), all behind the API key when one is set.
//! `serve --no-webui` leaves every route of this module out (404).

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

use crate::{json_response, ApiError, AppState};

/// The policy of every page and asset: only this origin, no inline script or style, no
/// plugins, no frames, no form posts elsewhere.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
    img-src 'self'; connect-src 'self'; font-src 'self'; manifest-src 'self'; \
    base-uri 'none'; form-action 'none'; frame-ancestors 'none'; object-src 'none'";

/// The embedded files: name under `/ui/`, content type, bytes.
const ASSETS: &[(&str, &str, &str)] = &[
    ("style.css", "text/css", include_str!("../webui/style.css")),
    ("common.js", JS, include_str!("../webui/common.js")),
    ("markdown.js", JS, include_str!("../webui/markdown.js")),
    ("chat.js", JS, include_str!("../webui/chat.js")),
    ("store.js", JS, include_str!("../webui/store.js")),
    ("prom.js", JS, include_str!("../webui/prom.js")),
    ("charts.js", JS, include_str!("../webui/charts.js")),
    ("dashboard.js", JS, include_str!("../webui/dashboard.js")),
    (
        "favicon.svg",
        "image/svg+xml",
        include_str!("../webui/favicon.svg"),
    ),
];
const JS: &str = "text/javascript; charset=utf-8";
const INDEX: &str = include_str!("../webui/index.html");
const DASHBOARD: &str = include_str!("../webui/dashboard.html");

/// Bytes of everything this module embeds (reported by the browser test and the README).
pub fn embedded_bytes() -> usize {
    ASSETS.iter().map(|a| a.2.len()).sum::<usize>() + INDEX.len() + DASHBOARD.len()
}

/// The strong ETag of an embedded file: the first 128 bits of the SHA-256 of its bytes, in hex
/// and quotes; computed once per file, at its first request.
fn etag(name: &str) -> &'static HeaderValue {
    static TAGS: OnceLock<HashMap<&'static str, HeaderValue>> = OnceLock::new();
    let tags = TAGS.get_or_init(|| {
        let files = [("", INDEX), ("dashboard", DASHBOARD)];
        files
            .into_iter()
            .chain(ASSETS.iter().map(|&(n, _, b)| (n, b)))
            .map(|(n, b)| {
                let hex: String = Sha256::digest(b.as_bytes())[..16]
                    .iter()
                    .map(|x| format!("{x:02x}"))
                    .collect();
                let v = HeaderValue::from_str(&format!("\"{hex}\"")).expect("hex is ASCII");
                (n, v)
            })
            .collect()
    });
    &tags[name]
}

/// Whether `If-None-Match` names `tag` (or is `*`): the client's copy is current. Weak
/// comparison, as RFC 9110 asks for this header (`W/"x"` matches `"x"`).
fn not_modified(req: &HeaderMap, tag: &HeaderValue) -> bool {
    let tag = tag.as_bytes();
    req.get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .any(|t| t == "*" || t.strip_prefix("W/").unwrap_or(t).as_bytes() == tag)
}

/// A static response with the security headers and the file's ETag (`name`: its key in
/// [`etag`]); 304 with an empty body when the request's `If-None-Match` holds that tag.
fn page(req: &HeaderMap, name: &str, content_type: &'static str, body: &'static str) -> Response {
    let tag = etag(name);
    let mut r = if not_modified(req, tag) {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        let mut r = body.into_response();
        r.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
        r
    };
    let h = r.headers_mut();
    h.insert(header::ETAG, tag.clone());
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    // Revalidated each load (the ETag makes that a 304); they change with the binary.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r
}

async fn index(h: HeaderMap) -> Response {
    page(&h, "", "text/html; charset=utf-8", INDEX)
}

async fn dashboard(h: HeaderMap) -> Response {
    page(&h, "dashboard", "text/html; charset=utf-8", DASHBOARD)
}

async fn asset(h: HeaderMap, Path(name): Path<String>) -> Response {
    match ASSETS.iter().find(|a| a.0 == name) {
        Some(&(n, ct, body)) => page(&h, n, ct, body),
        None => ApiError::route_not_found("GET", &format!("/ui/{name}")).into_response(),
    }
}

/// `GET /ui/info`: what the pages show and need about the server.
pub async fn info(State(state): State<Arc<AppState>>) -> Response {
    let e = state.engine.info();
    let d = &state.config.sampling_defaults;
    let facts: Map<String, Value> = state
        .config
        .server_facts
        .iter()
        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
        .collect();
    let flags: Map<String, Value> = state
        .config
        .server_flags
        .iter()
        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
        .collect();
    json_response(
        StatusCode::OK,
        &json!({
            "version": env!("CARGO_PKG_VERSION"),
            "models": state.config.served_model_names,
            "chat": state.chat_template.is_some(),
            "chat_template_error": state.chat_template_error,
            "backend": state.config.backend,
            "max_model_len": e.max_model_len,
            "max_num_seqs": e.max_num_seqs,
            "max_num_batched_tokens": e.max_num_batched_tokens,
            "kv_blocks": e.num_blocks,
            "block_size": e.block_size,
            "prefix_caching": e.enable_prefix_caching,
            "sampling_defaults": {
                "temperature": d.temperature, "top_p": d.top_p, "top_k": d.top_k,
            },
            "uptime_s": state.started.elapsed().as_secs_f64(),
            "facts": facts,
            "flags": flags,
        }),
    )
}

/// The open routes of the web UI (pages and assets); `/ui/info` goes with the protected ones.
pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/", get(index))
        .route("/dashboard", get(dashboard))
        .route("/ui/{name}", get(asset))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_load_only_embedded_same_origin_assets() {
        // Every script and stylesheet a page names is one we embed, under /ui/; no inline code.
        for html in [INDEX, DASHBOARD] {
            assert!(!html.contains("<script>") && !html.contains("<style"));
            assert!(!html.contains("http://") && !html.contains("https://"));
            for part in html
                .split("src=\"")
                .skip(1)
                .chain(html.split("href=\"").skip(1))
            {
                let url = &part[..part.find('"').unwrap()];
                if let Some(name) = url.strip_prefix("/ui/") {
                    assert!(ASSETS.iter().any(|a| a.0 == name), "{url} is not embedded");
                } else {
                    assert!(url == "/" || url == "/dashboard", "unexpected link {url}");
                }
            }
        }
        // Modules import only each other.
        for (name, _, body) in ASSETS {
            for line in body.lines().filter(|l| l.starts_with("import ")) {
                let from = line.rsplit('"').nth(1).unwrap();
                let target = from.strip_prefix("./").unwrap();
                assert!(
                    ASSETS.iter().any(|a| a.0 == target),
                    "{name} imports {from}"
                );
            }
        }
        assert!(embedded_bytes() < 1 << 20);
    }

    #[test]
    fn etags_differ_per_file_and_if_none_match_compares_weakly() {
        let names = ["", "dashboard"]
            .into_iter()
            .chain(ASSETS.iter().map(|a| a.0));
        let mut tags: Vec<&HeaderValue> = names.map(etag).collect();
        assert!(tags.iter().all(|t| t.len() == 34));
        let n = tags.len();
        tags.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
        tags.dedup();
        assert_eq!(tags.len(), n);
        let tag = etag("chat.js");
        let t = tag.to_str().unwrap();
        let with = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert(header::IF_NONE_MATCH, HeaderValue::from_str(v).unwrap());
            h
        };
        assert!(!not_modified(&HeaderMap::new(), tag));
        assert!(not_modified(&with(t), tag));
        assert!(not_modified(&with(&format!("\"x\", W/{t}")), tag));
        assert!(not_modified(&with("*"), tag));
        assert!(!not_modified(
            &with(etag("chat.js").to_str().unwrap().trim_matches('"')),
            tag
        ));
        assert!(!not_modified(
            &with(etag("style.css").to_str().unwrap()),
            tag
        ));
    }
}
