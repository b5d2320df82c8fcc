//! The OpenAPI 3.0 description of the API (`GET /openapi.json`), kept in `openapi.json` beside
//! this file; a test checks that it names every route the router serves.

/// The document.
pub const SPEC: &str = include_str!("openapi.json");

/// The document for a model with `vocab_size` tokens (`TokenId.maximum` set).
pub fn for_model(vocab_size: usize) -> serde_json::Value {
    let mut v: serde_json::Value = serde_json::from_str(SPEC).expect("openapi.json is valid JSON");
    v["components"]["schemas"]["TokenId"]["maximum"] = vocab_size.saturating_sub(1).into();
    v
}

/// Drops what only the web UI serves (`/ui/info` and its schema), for `--no-webui`.
pub fn without_webui(v: &mut serde_json::Value) {
    if let Some(p) = v["paths"].as_object_mut() {
        p.remove("/ui/info");
    }
    if let Some(s) = v["components"]["schemas"].as_object_mut() {
        s.remove("UiInfo");
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn spec_lists_every_route() {
        let v: serde_json::Value = serde_json::from_str(super::SPEC).unwrap();
        let paths = v["paths"].as_object().unwrap();
        for p in [
            "/v1/completions",
            "/v1/chat/completions",
            "/v1/embeddings",
            "/v1/responses",
            "/v1/responses/{id}",
            "/v1/messages",
            "/v1/messages/count_tokens",
            "/v1/models",
            "/health",
            "/ready",
            "/metrics",
            "/tokenize",
            "/detokenize",
            "/tokenizer_info",
            "/version",
            "/openapi.json",
            "/ui/info",
        ] {
            assert!(paths.contains_key(p), "{p} missing from openapi.json");
        }
        assert_eq!(
            paths.len(),
            17,
            "openapi.json lists a route the router lacks"
        );
        // Without the web UI, its route and schema leave the document, nothing else does.
        let mut w = v.clone();
        super::without_webui(&mut w);
        assert_eq!(w["paths"].as_object().unwrap().len(), 16);
        assert!(w["paths"].get("/ui/info").is_none());
        assert!(w["components"]["schemas"].get("UiInfo").is_none());
        assert!(!w.to_string().contains("UiInfo"), "a dangling $ref");
    }
}
