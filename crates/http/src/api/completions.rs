//! `POST /v1/completions`.

use super::*;

/// A parsed completions request.
struct CompletionJob {
    reqs: Vec<EngineRequest>,
    prompt_texts: Vec<String>,
    echo: bool,
    /// `max_tokens: 0` with `echo`: only the prompt (and its logprobs) is returned.
    echo_only: bool,
    logprobs: Option<usize>,
    n: usize,
    stream: StreamOpts,
    /// The output constraint, compiled by the handler.
    constraint: Option<(&'static str, switchyard_runtime::constraint::ConstraintSpec)>,
}

fn parse_prompts(v: Value, tok: &Tokenizer, vocab: usize) -> Result<Vec<Vec<u32>>, ApiError> {
    let encode = |s: &str| {
        tok.encode(s, true)
            .map_err(|e| ApiError::invalid("prompt", format!("cannot tokenize the prompt: {e}")))
    };
    let bad = |v: &Value| {
        type_error(
            "prompt",
            "a string, an array of strings, an array of token ids or an array of arrays of token ids",
            v,
        )
    };
    match &v {
        Value::String(s) => Ok(vec![encode(s)?]),
        Value::Array(a) if a.is_empty() => Err(ApiError::invalid("prompt", "the prompt is empty")),
        Value::Array(a) => match &a[0] {
            Value::String(_) => a
                .iter()
                .map(|x| x.as_str().ok_or_else(|| bad(&v)).and_then(encode))
                .collect(),
            Value::Number(_) => Ok(vec![params::token_ids(&v, "prompt", vocab)?]),
            Value::Array(_) => a
                .iter()
                .map(|x| params::token_ids(x, "prompt", vocab))
                .collect(),
            _ => Err(bad(&v)),
        },
        _ => Err(bad(&v)),
    }
}

fn parse_completion(state: &AppState, f: Fields) -> Result<CompletionJob, ApiError> {
    parse_completion_with(f, &state.config.served_model_names, ParseCtx::of(state))
}

fn parse_completion_with(
    mut f: Fields,
    served: &[String],
    ctx: ParseCtx<'_>,
) -> Result<CompletionJob, ApiError> {
    let (tok, vocab) = (ctx.tok, ctx.vocab);
    check_model_names(served, &mut f)?;
    let prompt = f
        .take("prompt")
        .ok_or_else(|| ApiError::invalid("prompt", "`prompt` is required"))?;
    let prompts = parse_prompts(prompt, tok, vocab)?;
    if prompts.iter().any(Vec::is_empty) {
        return Err(ApiError::invalid("prompt", "the prompt is empty"));
    }
    let max_tokens = f.int("max_tokens", 0, i64::from(u32::MAX))?.unwrap_or(16) as usize;
    let echo = f.bool("echo")?.unwrap_or(false);
    let logprobs = params::completion_logprobs(&mut f)?;
    let stream = params::stream_opts(&mut f)?;
    let constraint = crate::structured::constraint(&mut f)?;
    let mut base = EngineRequest::default();
    params::sampling(&mut f, &mut base, vocab, ctx.defaults)?;
    base.priority = params::priority(&mut f, ctx.priority_scheduling)?;
    if let Some(b) = f.int("best_of", 1, i64::from(u32::MAX))? {
        if b as usize != base.n {
            return Err(ApiError::unsupported(
                "best_of",
                &format!(" unless it equals n ({}), got {b}", base.n),
            ));
        }
    }
    if let Some(s) = f.take("suffix") {
        if s.as_str().is_some_and(|s| !s.is_empty()) || !s.is_string() {
            return Err(ApiError::unsupported("suffix", " (no fill-in-the-middle)"));
        }
    }
    f.finish()?;
    if max_tokens == 0 && !echo {
        return Err(ApiError::invalid(
            "max_tokens",
            "`max_tokens` must be at least 1 (0 is only allowed with `echo`)",
        ));
    }
    let echo_only = max_tokens == 0;
    if echo_only && stream.stream {
        return Err(ApiError::invalid(
            "stream",
            "`max_tokens: 0` with `echo` is not supported when streaming",
        ));
    }
    let mut reqs = Vec::with_capacity(prompts.len());
    let mut prompt_texts = Vec::with_capacity(prompts.len());
    for p in prompts {
        if echo {
            prompt_texts.push(tok.decode(&p, base.skip_special_tokens).unwrap_or_default());
        }
        let mut r = base.clone();
        r.prompt = p;
        r.max_tokens = max_tokens.max(1);
        if echo_only {
            // Generate one token to get the prompt's logits; it is not returned.
            r.ignore_eos = true;
            r.min_tokens = 0;
            r.stop.clear();
            r.stop_token_ids.clear();
            r.n = 1;
        }
        r.logprobs = logprobs;
        if echo && logprobs.is_some() {
            r.prompt_logprobs = logprobs;
        }
        reqs.push(r);
    }
    Ok(CompletionJob {
        n: if echo_only { 1 } else { base.n },
        reqs,
        prompt_texts,
        echo,
        echo_only,
        logprobs,
        stream,
        constraint,
    })
}

/// OpenAI completions `logprobs` object for `entries` (token, logprob, top) starting at text
/// offset `offset`.
fn completion_logprobs_json(
    tok: &Tokenizer,
    entries: &[Option<&TokenLogprob>],
    ids: &[u32],
    mut offset: usize,
) -> Value {
    let mut tokens = Vec::new();
    let mut lps = Vec::new();
    let mut tops = Vec::new();
    let mut offsets = Vec::new();
    for (e, &id) in entries.iter().zip(ids) {
        let s = token_str(tok, id);
        offsets.push(offset);
        offset += s.chars().count();
        tokens.push(Value::String(s));
        match e {
            Some(e) => {
                lps.push(json!(e.logprob));
                let mut m = Map::new();
                for &(t, lp) in &e.top {
                    m.insert(token_str(tok, t), json!(lp));
                }
                tops.push(Value::Object(m));
            }
            None => {
                lps.push(Value::Null);
                tops.push(Value::Null);
            }
        }
    }
    json!({"tokens": tokens, "token_logprobs": lps, "top_logprobs": tops, "text_offset": offsets})
}

/// `POST /v1/completions`.
pub async fn completions(
    State(state): State<Arc<AppState>>,
    b: Result<Bytes, BytesRejection>,
) -> AppResult {
    let t0 = Instant::now();
    check_draining(&state)?;
    let mut job = parse_completion(&state, body(&state, b)?)?;
    if let Some((param, spec)) = job.constraint.take() {
        let c = compile_constraint(&state, spec, param).await?;
        for r in &mut job.reqs {
            r.constraint = Some(c.clone());
        }
    }
    let prompt_lens: Vec<usize> = job.reqs.iter().map(|r| r.prompt.len()).collect();
    let prompt_ids: Vec<Vec<u32>> = job.reqs.iter().map(|r| r.prompt.clone()).collect();
    let sub = submit_all(&state, job.reqs, "prompt")?;
    let id = format!("cmpl-{:032x}", rand::random::<u128>());
    let created = unix_now();
    let model = state.model_name().to_string();
    let tok = state.engine.tokenizer().clone();
    let mut tracker = Tracker::new(&state, t0);
    if job.stream.stream {
        let head = ChunkHead {
            id,
            object: "text_completion",
            created,
            model,
            include_usage: job.stream.include_usage,
        };
        let (n, echo, logprobs) = (job.n, job.echo, job.logprobs);
        let prompt_texts = job.prompt_texts;
        let mut echoed = std::collections::BTreeSet::new();
        let mut offsets: BTreeMap<usize, usize> = BTreeMap::new();
        let choices = move |p: usize, out: &EngineOutput| {
            let index = p * n + out.index;
            let mut text = String::new();
            let mut lp_entries: Vec<Option<&TokenLogprob>> = Vec::new();
            let mut lp_ids: Vec<u32> = Vec::new();
            if echo && echoed.insert(index) {
                text.push_str(&prompt_texts[p]);
                if let Some(pl) = &out.prompt_logprobs {
                    lp_entries.extend(pl.iter().map(Option::as_ref));
                    lp_ids.extend(&prompt_ids[p]);
                }
            }
            text.push_str(&out.text);
            if let Some(lp) = &out.logprobs {
                lp_entries.extend(lp.iter().map(Some));
                lp_ids.extend(&out.token_ids);
            }
            if text.is_empty() && out.finish.is_none() && lp_entries.is_empty() {
                return Vec::new();
            }
            let off = offsets.entry(index).or_insert(0);
            let lp_json = if logprobs.is_some() {
                completion_logprobs_json(&tok, &lp_entries, &lp_ids, *off)
            } else {
                Value::Null
            };
            *off += text.chars().count();
            vec![json!({
                "index": index, "text": text, "logprobs": lp_json,
                "finish_reason": out.finish.as_ref().map(openai_finish_reason),
            })]
        };
        let prompt_tokens = prompt_lens.iter().sum();
        return Ok(sse_response(head, prompt_tokens, sub, tracker, choices));
    }
    let acc = collect(sub, &mut tracker).await?;
    let mut choices = Vec::new();
    let (mut completion_tokens, mut cached) = (0, 0);
    for ((p, i), c) in &acc {
        let index = p * job.n + i;
        let mut text = String::new();
        let mut entries: Vec<Option<&TokenLogprob>> = Vec::new();
        let mut ids: Vec<u32> = Vec::new();
        if job.echo {
            text.push_str(&job.prompt_texts[*p]);
            if let Some(pl) = &c.prompt_logprobs {
                entries.extend(pl.iter().map(Option::as_ref));
                ids.extend(&prompt_ids[*p]);
            }
        }
        if *i == 0 {
            cached += c.cached_tokens;
        }
        if !job.echo_only {
            text.push_str(&c.text);
            entries.extend(c.logprobs.iter().map(Some));
            ids.extend(&c.token_ids[..c.logprobs.len().min(c.token_ids.len())]);
            completion_tokens += c.completion_tokens;
        }
        let finish = if job.echo_only {
            "length"
        } else {
            c.finish.as_ref().map_or("stop", openai_finish_reason)
        };
        choices.push(json!({
            "index": index,
            "text": text,
            "logprobs": if job.logprobs.is_some() {
                completion_logprobs_json(&tok, &entries, &ids, 0)
            } else {
                Value::Null
            },
            "finish_reason": finish,
        }));
    }
    Ok(json_response(
        StatusCode::OK,
        &json!({
            "id": id,
            "object": "text_completion",
            "created": created,
            "model": model,
            "choices": choices,
            "usage": usage_json(prompt_lens.iter().sum(), completion_tokens, cached),
        }),
    ))
}

/// A `POST /v1/completions` body as the handler reads it: the engine requests it becomes (one
/// per prompt), or the error the handler answers. `served` are the accepted `model` names,
/// `vocab` bounds token ids. Needs no engine.
pub fn validate_completion_body(
    body: &[u8],
    served: &[String],
    ctx: ParseCtx<'_>,
) -> Result<Vec<EngineRequest>, ApiError> {
    Ok(parse_completion_with(Fields::parse(body)?, served, ctx)?.reqs)
}
