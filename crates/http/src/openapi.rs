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
        ] {
            assert!(paths.contains_key(p), "{p} missing from openapi.json");
        }
        assert_eq!(
            paths.len(),
            16,
            "openapi.json lists a route the router lacks"
        );
    }
}
