//! The Backend contract on a real model: one forward call over several sequences of different
//! lengths (prefill chunks and decodes mixed, scattered KV blocks) gives each sequence the same
//! logits as running it alone.

mod common;

use switchyard_core::{Backend, BlockId, ForwardBatch, KvCacheConfig, SeqInBatch};
use switchyard_runtime::sampling::argmax;

const BS: usize = 16;

/// Greedy-decodes `steps` tokens for each prompt, all sequences in one batch per step, with
/// block tables interleaved across sequences. Returns per-sequence (tokens, last-step logits).
fn run_batched(
    be: &mut dyn Backend,
    prompts: &[Vec<u32>],
    steps: usize,
    base_block: u32,
) -> Vec<(Vec<u32>, Vec<f32>)> {
    let n = prompts.len();
    let max_len = prompts.iter().map(Vec::len).max().unwrap() + steps;
    let per = max_len.div_ceil(BS) as u32;
    // Interleave: sequence s gets blocks base + s, base + s + n, ...
    let tables: Vec<Vec<BlockId>> = (0..n as u32)
        .map(|s| {
            (0..per)
                .map(|k| BlockId(base_block + s + k * n as u32))
                .collect()
        })
        .collect();
    let mut ctx = vec![0usize; n];
    let mut pending: Vec<Vec<u32>> = prompts.to_vec();
    let mut out: Vec<(Vec<u32>, Vec<f32>)> = vec![(Vec::new(), Vec::new()); n];
    for _ in 0..steps {
        let mut b = ForwardBatch::default();
        for s in 0..n {
            let start = b.token_ids.len();
            b.token_ids.extend(&pending[s]);
            b.positions
                .extend((ctx[s]..ctx[s] + pending[s].len()).map(|p| p as u32));
            b.seqs.push(SeqInBatch {
                start,
                len: pending[s].len(),
                context_before: ctx[s],
                block_table: tables[s].clone(),
                group_tables: Vec::new(),
            });
            b.logits_indices.push(start + pending[s].len() - 1);
        }
        let logits = be.forward(&b).unwrap();
        for s in 0..n {
            ctx[s] += pending[s].len();
            let row = logits.row(s);
            let t = argmax(row);
            out[s].0.push(t);
            out[s].1 = row.to_vec();
            pending[s] = vec![t];
        }
    }
    out
}

#[test]
fn batch_equals_alone_gemma() {
    let m = common::model("gemma-3-270m");
    let mut be = common::backend(&m);
    be.init_kv_cache(KvCacheConfig {
        block_size: BS,
        num_blocks: 256,
    })
    .unwrap();
    let texts = [
        "The quick brown fox",
        "fn main() {\n    let x = vec![1, 2, 3];",
        "Bonjour",
        "1, 2, 3, 5, 8, 13, 21, 34, 55, 89, 144, 233, 377,",
    ];
    let prompts: Vec<Vec<u32>> = texts
        .iter()
        .map(|t| m.tokenizer.encode(t, true).unwrap())
        .collect();
    let steps = 12;
    let together = run_batched(be.as_mut(), &prompts, steps, 0);
    for (s, p) in prompts.iter().enumerate() {
        let alone = run_batched(be.as_mut(), std::slice::from_ref(p), steps, 100);
        assert_eq!(
            alone[0].0, together[s].0,
            "sequence {s}: greedy tokens differ alone vs batched"
        );
        let max_diff = alone[0]
            .1
            .iter()
            .zip(&together[s].1)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        // Greedy tokens must be identical (the engine's batch-invariance contract). Logits may
        // differ slightly: the SIMD matmul groups up to 8 tokens per weight row, which changes
        // the f32 summation order of the per-block products, and Gemma 3 amplifies such rounding
        // (llama.cpp differs from itself by 0.21 mean / 2.1 max between its attention paths).
        // Known gap: making grouped and single-token sums bit-identical is tracked for the
        // engine's batch-invariance work.
        assert!(max_diff < 2.0, "sequence {s}: logits differ by {max_diff}");
        eprintln!("sequence {s}: greedy identical, max |dlogit| alone vs batched {max_diff:.4}");
    }
}

/// Gemma's KV groups (1 full, 5 sliding of window 512, 3 layers each) over one pool, with the
/// sliding groups' blocks before the window replaced by `BlockId::NULL` as the scheduler
/// does: the same logits, bit for bit, as the plain cache of all layers; a NULL the window
/// still needs is refused, not read.
#[test]
fn kv_groups_with_released_blocks_match_one_group_gemma() {
    use switchyard_core::{KvGroupKind, Logits};
    let m = common::model("gemma-3-270m");
    let mut plain = common::backend(&m);
    let mut grouped = common::backend(&m);
    let per = 48;
    plain
        .init_kv_cache(KvCacheConfig {
            block_size: BS,
            num_blocks: per,
        })
        .unwrap();
    let groups = grouped.kv_groups().unwrap();
    assert_eq!(groups.len(), 6);
    let info = grouped
        .init_kv_cache_groups(
            KvCacheConfig {
                block_size: BS,
                num_blocks: 6 * per,
            },
            &groups,
        )
        .unwrap();
    assert_eq!(info.bytes_per_block * 6, plain.kv_bytes_per_block(BS));
    let text = m
        .tokenizer
        .encode(&"The railway station. ".repeat(200), true)
        .unwrap();
    let mut pending: Vec<u32> = text[..600].to_vec();
    let mut ctx = 0;
    // Group g's block i is block g * per + (per - 1 - i): scattered, disjoint per group.
    let table = |g: usize, ctx: usize, upto: usize| -> Vec<BlockId> {
        let first = groups[g].kind.first_read(ctx) / BS;
        (0..upto.div_ceil(BS))
            .map(|i| {
                if i < first {
                    BlockId::NULL
                } else {
                    BlockId((g * per + per - 1 - i) as u32)
                }
            })
            .collect()
    };
    let batch = |ctx: usize, toks: &[u32], tables: Option<Vec<Vec<BlockId>>>| {
        let end = ctx + toks.len();
        let (block_table, group_tables) = match tables {
            Some(mut t) => {
                let first = t.remove(0);
                (first, t)
            }
            None => (
                (0..end.div_ceil(BS) as u32).map(BlockId).collect(),
                Vec::new(),
            ),
        };
        ForwardBatch {
            token_ids: toks.to_vec(),
            positions: (ctx..end).map(|p| p as u32).collect(),
            seqs: vec![SeqInBatch {
                start: 0,
                len: toks.len(),
                context_before: ctx,
                block_table,
                group_tables,
            }],
            logits_indices: vec![toks.len() - 1],
        }
    };
    let mut nulls = 0;
    for step in 0..8 {
        // Three prefill chunks of 200 tokens, then decodes.
        let toks: Vec<u32> = if step < 3 {
            pending[step * 200..(step + 1) * 200].to_vec()
        } else {
            pending.clone()
        };
        let end = ctx + toks.len();
        let tables: Vec<Vec<BlockId>> = (0..6).map(|g| table(g, ctx, end)).collect();
        nulls += tables[1].iter().filter(|b| b.is_null()).count();
        let a: Logits = plain.forward(&batch(ctx, &toks, None)).unwrap();
        if step == 4 {
            // Releasing one block more than the window allows is refused.
            let mut bad = tables.clone();
            let first = KvGroupKind::Sliding { window: 512 }.first_read(ctx) / BS;
            bad[1][first] = BlockId::NULL;
            assert!(grouped.forward(&batch(ctx, &toks, Some(bad))).is_err());
        }
        let b = grouped.forward(&batch(ctx, &toks, Some(tables))).unwrap();
        assert_eq!(a.data, b.data, "step {step}: logits differ");
        let t = argmax(a.row(0));
        ctx = end;
        if step >= 2 {
            pending = vec![t];
        }
    }
    assert!(nulls > 0, "the window was never left");
}

/// `forward_greedy`, where the backend has it (the CPU: the argmax taken inside the AVX2
/// lm_head kernel; CUDA: on the device), picks for every logits row of a mixed batch (four
/// prompts of different lengths, every row of the first asked for, then a decode step of all
/// four) what the engine's host choice picks from `forward`'s logits, for the tokenizer's
/// vocabulary and for a smaller limit.
fn forward_greedy_matches_the_host(alias: &str) {
    use switchyard_backend_cpu::kernels::{simd_level, SimdLevel};
    let m = common::model(alias);
    let mut be = common::backend(&m);
    be.init_kv_cache(KvCacheConfig {
        block_size: BS,
        num_blocks: 64,
    })
    .unwrap();
    let texts = [
        "The history of the railway begins with wagonways in the sixteenth century, when",
        "def add(a, b):",
        "Hi",
        "Once upon a time, in a village by the sea,",
    ];
    let prompts: Vec<Vec<u32>> = texts
        .iter()
        .map(|t| m.tokenizer.encode(t, true).unwrap())
        .collect();
    let vocab = m.tokenizer.vocab_size.min(m.config.vocab_size);
    // The CPU answers only with the packed output projection at the AVX2 level.
    let expected = common::on_gpu()
        || (simd_level() == SimdLevel::Avx2
            && !std::env::var("SWITCHYARD_PACK_OUTPUT").is_ok_and(|v| v.trim() == "0"));
    let mut ctx = vec![0usize; prompts.len()];
    let mut pending = prompts.clone();
    let mut checked = 0;
    for step in 0..2 {
        let mut b = ForwardBatch::default();
        for (s, toks) in pending.iter().enumerate() {
            let start = b.token_ids.len();
            b.token_ids.extend(toks);
            b.positions
                .extend((ctx[s]..ctx[s] + toks.len()).map(|p| p as u32));
            b.seqs.push(SeqInBatch {
                start,
                len: toks.len(),
                context_before: ctx[s],
                block_table: (0..8).map(|k| BlockId((s * 8 + k) as u32)).collect(),
                group_tables: Vec::new(),
            });
            if step == 0 && s == 0 {
                b.logits_indices.extend(start..start + toks.len());
            } else {
                b.logits_indices.push(start + toks.len() - 1);
            }
        }
        let logits = be.forward(&b).unwrap();
        for limit in [vocab, 1000] {
            let Some(ids) = be.forward_greedy(&b, limit) else {
                assert!(
                    !expected,
                    "{alias}: no forward_greedy path where one is expected"
                );
                eprintln!("{alias}: this backend and level have no forward_greedy path");
                return;
            };
            let ids = ids.unwrap();
            let want: Vec<u32> = (0..b.logits_indices.len())
                .map(|r| argmax(&logits.row(r)[..limit]))
                .collect();
            assert_eq!(ids, want, "{alias}: step {step}, limit {limit}");
            checked += ids.len();
        }
        for (s, toks) in pending.iter_mut().enumerate() {
            ctx[s] += toks.len();
            *toks = vec![argmax(&logits.row(b.logits_indices.len() - 4 + s)[..vocab])];
        }
    }
    eprintln!("{alias}: {checked} greedy rows equal to the host's choice");
}

#[test]
fn forward_greedy_matches_the_host_gemma() {
    forward_greedy_matches_the_host("gemma-3-270m");
}

#[test]
fn forward_greedy_matches_the_host_qwen() {
    forward_greedy_matches_the_host("qwen2.5-coder-0.5b-instruct");
}
