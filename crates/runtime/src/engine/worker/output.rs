//! One sequence's share of a step: prompt logprobs, sampling (row by row with a draft), stop
//! checks and detokenization, as the engine thread's parallel jobs run them.

use super::*;

/// Prompt logprobs for the rows of `prompt`, then (if the sequence samples) the next token
/// with its stop checks and text; with a `draft`, one sampling row per draft token and one
/// after: each row is sampled as a plain decode step would be, and the next row is used only
/// while the token sampled equals the draft's (the KV of later rows then holds exactly the
/// sequence's tokens). Runs under `catch_unwind`: a panic here fails only this request, as
/// does an error (the constraint's grammar engine failed).
pub(super) fn process_seq(
    seq: &mut Seq,
    tok: &Tokenizer,
    prompt: Range<usize>,
    draft: &[u32],
    choice: Choice<'_, '_>,
) -> Result<Option<Sampled>, String> {
    #[cfg(test)]
    if seq
        .sampler
        .params()
        .logit_bias
        .iter()
        .any(|&(id, b)| id == u32::MAX && b == 42.0)
    {
        panic!("injected test panic");
    }
    let rows = match choice {
        Choice::Tokens(ids) => {
            let mut out: Option<Sampled> = None;
            for (i, &token) in ids.iter().enumerate() {
                let x = emit(seq, tok, token, None);
                let go_on = x.output.finish.is_none() && draft.get(i) == Some(&token);
                join(&mut out, x);
                if !go_on {
                    break;
                }
            }
            return Ok(out);
        }
        Choice::Rows(rows) => rows,
    };
    let samples = rows.len() > prompt.len();
    if let Some(p) = seq.prompt_logprobs.as_mut() {
        for (row, pos) in rows.iter().zip(prompt.clone()) {
            let next = seq.spec.prompt[pos + 1];
            let (logprob, top) = logprobs(row, next, p.top);
            p.values[pos + 1] = Some(TokenLogprob {
                token: next,
                logprob,
                top,
            });
        }
        p.next = p.next.max(prompt.end);
    }
    if !samples {
        return Ok(None);
    }
    let mut out: Option<Sampled> = None;
    for (i, row) in rows[prompt.len()..].iter_mut().enumerate() {
        let x = sample_row(seq, tok, row)?;
        let go_on = x.output.finish.is_none() && draft.get(i) == Some(&x.tokens[0].token);
        join(&mut out, x);
        if !go_on {
            break;
        }
    }
    Ok(out)
}

/// Adds one token's result to a step's.
fn join(out: &mut Option<Sampled>, x: Sampled) {
    match out {
        Some(o) => o.join(x),
        None => *out = Some(x),
    }
}

/// Samples the next token from `row` (masks for `min_tokens`, the vocabulary's padding and
/// the constraint, then the sampler's processing) and accepts it.
fn sample_row(seq: &mut Seq, tok: &Tokenizer, row: &mut [f32]) -> Result<Sampled, String> {
    let spec = seq.spec.clone();
    if seq.generated < spec.min_tokens {
        let eos: &[u32] = if spec.ignore_eos { &[] } else { &tok.eos_ids };
        for &t in eos.iter().chain(&spec.stop_token_ids) {
            if let Some(v) = row.get_mut(t as usize) {
                *v = f32::NEG_INFINITY;
            }
        }
    }
    // Padding rows past the tokenizer's vocabulary can never be decoded: never pick them.
    if let Some(pad) = row.get_mut(tok.vocab_size..) {
        pad.fill(f32::NEG_INFINITY);
    }
    if let Some(c) = seq.constraint.as_mut() {
        c.apply(row)?;
    }
    seq.sampler.process(row);
    let token = seq.sampler.sample(row);
    let lp = spec.logprobs.map(|n| {
        let (logprob, top) = logprobs(row, token, n);
        TokenLogprob {
            token,
            logprob,
            top,
        }
    });
    Ok(emit(seq, tok, token, lp))
}

/// Accepts the chosen `token`: stop checks, text, the output.
fn emit(seq: &mut Seq, tok: &Tokenizer, token: u32, lp: Option<TokenLogprob>) -> Sampled {
    if Some(token) == injected_panic_token() {
        panic!("injected fault: sampled token {token} (SWITCHYARD_TEST_PANIC_ON_TOKEN)");
    }
    let spec = seq.spec.clone();
    seq.sampler.accept(token);
    if let Some(c) = seq.constraint.as_mut() {
        c.accept(token);
    }
    seq.generated += 1;
    let allow = seq.generated >= spec.min_tokens;
    let stop_token = if !spec.ignore_eos && tok.eos_ids.contains(&token) {
        Some(StopReason::Eos(token))
    } else if spec.stop_token_ids.contains(&token) {
        Some(StopReason::StopToken(token))
    } else {
        None
    };
    let decode = |r: Result<String, crate::tokenizer::TokenizerError>| {
        r.unwrap_or_else(|e| {
            tracing::warn!(error = %e, "engine: detokenization failed");
            String::new()
        })
    };
    let last = seq.generated >= spec.max_tokens;
    let (text, finish) = if let Some(reason) = stop_token {
        // The stop token's own text is not part of the output.
        let tail = decode(seq.decoder.flush(tok));
        resolve(
            seq.stop.finish(&tail, allow),
            Some(FinishReason::Stop(reason)),
            &spec,
        )
    } else {
        let delta = decode(seq.decoder.push(tok, token));
        match seq.stop.push(&delta, allow) {
            Matched::No { emit } if last => {
                let tail = decode(seq.decoder.flush(tok));
                let (more, finish) = resolve(
                    seq.stop.finish(&tail, allow),
                    Some(FinishReason::Length),
                    &spec,
                );
                (emit + &more, finish)
            }
            m => resolve(m, None, &spec),
        }
    };
    // The scheduler ends the sequence at the same token: for a stop, told why; at
    // `max_tokens` (`Length`), by its own count.
    let token_state = match &finish {
        Some(FinishReason::Stop(reason)) => SampledToken::stop(token, reason.clone()),
        _ => SampledToken::token(token),
    };
    Sampled {
        tokens: vec![token_state],
        output: EngineOutput {
            index: seq.index,
            token_ids: vec![token],
            text,
            logprobs: lp.map(|l| vec![l]),
            prompt_logprobs: seq.prompt_logprobs.take().map(|p| p.values),
            finish,
            usage: seq.usage(),
            embedding: None,
        },
    }
}

/// Turns a matcher result into (text, finish): a stop string found overrides `otherwise`.
fn resolve(
    m: Matched,
    otherwise: Option<FinishReason>,
    spec: &Spec,
) -> (String, Option<FinishReason>) {
    match m {
        Matched::No { emit } => (emit, otherwise),
        Matched::Stop { emit, index } => (
            emit,
            Some(FinishReason::Stop(StopReason::StopString(
                spec.stop[index].clone(),
            ))),
        ),
    }
}
