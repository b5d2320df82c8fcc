//! `POST /v1/embeddings` (OpenAI's shape): each input's final hidden states pooled
//! (`--pooling`, else the model's own, else the mean), optionally truncated to `dimensions`
//! where the model allows it, L2-normalized; `encoding_format` `float` or `base64`
//! (little-endian f32, as OpenAI's clients decode it). The work runs in the engine beside
//! generations: prefill only, never through or into the prefix cache.

use super::*;
use switchyard_runtime::pooling::Matryoshka;

/// The inputs: a string, an array of strings, an array of token ids or an array of arrays of
/// token ids; strings get the model's special tokens (BOS) as prompts do.
fn parse_inputs(v: Value, tok: &Tokenizer, vocab: usize) -> Result<Vec<Vec<u32>>, ApiError> {
    let encode = |s: &str| {
        if s.is_empty() {
            return Err(ApiError::invalid(
                "input",
                "`input` must not be an empty string",
            ));
        }
        tok.encode(s, true)
            .map_err(|e| ApiError::invalid("input", format!("cannot tokenize the input: {e}")))
    };
    let bad = |v: &Value| {
        type_error(
            "input",
            "a string, an array of strings, an array of token ids or an array of arrays of \
             token ids",
            v,
        )
    };
    let out: Vec<Vec<u32>> = match &v {
        Value::String(s) => vec![encode(s)?],
        Value::Array(a) if a.is_empty() => {
            return Err(ApiError::invalid("input", "`input` must not be empty"))
        }
        Value::Array(a) => match &a[0] {
            Value::String(_) => a
                .iter()
                .map(|x| x.as_str().ok_or_else(|| bad(&v)).and_then(encode))
                .collect::<Result<_, _>>()?,
            Value::Number(_) => vec![params::token_ids(&v, "input", vocab)?],
            Value::Array(_) => a
                .iter()
                .map(|x| params::token_ids(x, "input", vocab))
                .collect::<Result<_, _>>()?,
            _ => return Err(bad(&v)),
        },
        _ => return Err(bad(&v)),
    };
    if out.iter().any(Vec::is_empty) {
        return Err(ApiError::invalid("input", "an input has no tokens"));
    }
    Ok(out)
}

/// Standard base64 (RFC 4648, padded).
fn base64(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut s = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for c in bytes.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for (i, shift) in [18, 12, 6, 0].into_iter().enumerate() {
            if i <= c.len() {
                s.push(A[(n >> shift) as usize & 63] as char);
            } else {
                s.push('=');
            }
        }
    }
    s
}

/// Truncates to `dims` (if given) and scales to unit length.
fn finish_vector(mut v: Vec<f32>, dims: Option<usize>) -> Vec<f32> {
    if let Some(d) = dims {
        v.truncate(d);
    }
    let norm = v
        .iter()
        .map(|x| f64::from(*x) * f64::from(*x))
        .sum::<f64>()
        .sqrt();
    if norm > 0.0 {
        let inv = (1.0 / norm) as f32;
        v.iter_mut().for_each(|x| *x *= inv);
    }
    v
}

/// `POST /v1/embeddings`.
pub async fn embeddings(
    State(state): State<Arc<AppState>>,
    b: Result<Bytes, BytesRejection>,
) -> AppResult {
    let t0 = Instant::now();
    check_draining(&state)?;
    let mut f = body(&state, b)?;
    check_model(&state, &mut f)?;
    let info = state.engine.info().clone();
    let input = f
        .take("input")
        .ok_or_else(|| ApiError::invalid("input", "`input` is required"))?;
    let inputs = parse_inputs(input, state.engine.tokenizer(), info.vocab_size)?;
    let most = state.config.max_seqs_per_request;
    if inputs.len() > most {
        return Err(ApiError::invalid(
            "input",
            format!(
                "{} inputs, more than the server's limit of {most} per request \
                 (--max-seqs-per-request)",
                inputs.len()
            ),
        ));
    }
    let base64_out = match f.string("encoding_format")?.as_deref() {
        None | Some("float") => false,
        Some("base64") => true,
        Some(o) => {
            return Err(ApiError::invalid(
                "encoding_format",
                format!("`encoding_format` must be `float` or `base64`, got {o:?}"),
            ))
        }
    };
    let dims = f
        .int("dimensions", 1, i64::from(u32::MAX))?
        .map(|d| d as usize);
    if let Some(u) = f.take("user") {
        if !u.is_string() {
            return Err(type_error("user", "a string", &u));
        }
    }
    let priority = params::priority(&mut f, state.config.priority_scheduling)?;
    f.finish()?;
    if !info.embeddings {
        return Err(ApiError::bad_request(
            "this server's backend does not compute embeddings (the CPU backend does)",
        ));
    }
    if let Some(d) = dims {
        let hidden = info.hidden_size;
        let allowed = match &state.config.matryoshka {
            Matryoshka::No => {
                return Err(ApiError::invalid(
                    "dimensions",
                    "this model does not support truncated embeddings (it declares no \
                     Matryoshka representation; `--matryoshka-dimensions` overrides)",
                ))
            }
            Matryoshka::Any => d <= hidden,
            Matryoshka::Dims(list) => list.contains(&d) && d <= hidden,
        };
        if !allowed {
            let sizes = match &state.config.matryoshka {
                Matryoshka::Dims(list) => format!("one of {list:?}"),
                _ => format!("at most {hidden}"),
            };
            return Err(ApiError::invalid(
                "dimensions",
                format!("`dimensions` must be {sizes}, got {d}"),
            ));
        }
    }
    let reqs: Vec<EngineRequest> = inputs
        .into_iter()
        .map(|prompt| EngineRequest {
            prompt,
            max_tokens: 1,
            priority,
            embed: Some(state.config.pooling),
            ..EngineRequest::default()
        })
        .collect();
    let prompt_tokens: usize = reqs.iter().map(|r| r.prompt.len()).sum();
    let n = reqs.len();
    let sub = submit_all(&state, reqs, "input")?;
    let mut tracker = Tracker::new(&state, t0);
    let acc = collect(sub, &mut tracker).await?;
    let mut data = Vec::with_capacity(n);
    for i in 0..n {
        let v = acc
            .get(&(i, 0))
            .and_then(|c| c.embedding.clone())
            .ok_or_else(|| ApiError::internal("the engine returned no embedding"))?;
        let v = finish_vector(v, dims);
        let embedding = if base64_out {
            let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
            json!(base64(&bytes))
        } else {
            json!(v)
        };
        data.push(json!({"object": "embedding", "index": i, "embedding": embedding}));
    }
    Ok(json_response(
        StatusCode::OK,
        &json!({
            "object": "list",
            "data": data,
            "model": state.model_name(),
            "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens},
        }),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc4648() {
        for (raw, enc) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(raw.as_bytes()), enc);
        }
        assert_eq!(base64(&[0xff, 0xfe, 0xfd]), "//79");
    }

    #[test]
    fn vectors_are_truncated_then_normalized() {
        let v = finish_vector(vec![3.0, 4.0, 12.0], None);
        assert!((v[0] - 3.0 / 13.0).abs() < 1e-6 && (v[2] - 12.0 / 13.0).abs() < 1e-6);
        assert_eq!(finish_vector(vec![3.0, 4.0, 12.0], Some(2)), [0.6, 0.8]);
        assert_eq!(finish_vector(vec![0.0, 0.0], None), [0.0, 0.0]);
    }
}
