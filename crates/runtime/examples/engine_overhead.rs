//! The engine's own cost per step, with a backend that computes nothing: how many steps a second
//! the scheduler, batch building, sampling, detokenization and stop checks allow at a given
//! number of concurrent sequences. A GPU step of Gemma 3 270M takes 1.7-5 ms (H100,
//! `benches/README.md`), so the engine must stay well under that to keep the GPU busy.
//!
//! ```sh
//! cargo run --release -p switchyard-runtime --example engine_overhead -- [MODEL] [CONCURRENCY,...]
//! ```
//! MODEL (default `gemma-3-270m`, from the cache) gives the tokenizer and the model shape. Each
//! point runs `2 x concurrency` greedy requests of 128 prompt and 128 output tokens (EOS ignored),
//! once with the backend choosing greedy tokens itself (`forward_greedy`, as the CUDA backend
//! does) and once handing back vocabulary-sized logits rows for the host to choose from.

use std::sync::Arc;
use std::time::Instant;

use switchyard_core::{
    Backend, BackendCapabilities, BackendError, BlockId, ForwardBatch, KvCacheConfig, KvCacheInfo,
    Logits,
};
use switchyard_runtime::engine::{EngineConfig, EngineHandle, EngineRequest};
use switchyard_runtime::Model;

/// Computes nothing: greedy tokens are a function of the position, logits rows are a one-hot of
/// that token. Keeps no KV cache.
struct Null {
    vocab: usize,
    device_greedy: bool,
    spare: Vec<f32>,
}

impl Null {
    fn token(&self, b: &ForwardBatch, row: usize) -> u32 {
        // Ordinary ids of the vocabulary's middle, varying with the position.
        (1000 + b.positions[row] as usize % 5000) as u32 % self.vocab as u32
    }
}

impl Backend for Null {
    fn capabilities(&self) -> BackendCapabilities {
        BackendCapabilities {
            kind: "null",
            device_name: "nothing".into(),
            total_memory: None,
            free_memory: None,
            kv_dtypes: Vec::new(),
            weight_dtypes: Vec::new(),
            shape_buckets: None,
        }
    }

    fn kv_bytes_per_block(&self, block_size: usize) -> usize {
        block_size
    }

    fn init_kv_cache(&mut self, c: KvCacheConfig) -> Result<KvCacheInfo, BackendError> {
        Ok(KvCacheInfo {
            block_size: c.block_size,
            num_blocks: c.num_blocks,
            bytes_per_block: c.block_size,
        })
    }

    fn forward(&mut self, b: &ForwardBatch) -> Result<Logits, BackendError> {
        let m = b.logits_indices.len();
        let mut data = std::mem::take(&mut self.spare);
        data.clear();
        data.resize(m * self.vocab, -10.0);
        for (r, &i) in b.logits_indices.iter().enumerate() {
            let t = self.token(b, i) as usize;
            data[r * self.vocab + t] = 10.0;
        }
        Ok(Logits {
            vocab: self.vocab,
            data,
        })
    }

    fn recycle_logits(&mut self, logits: Logits) {
        self.spare = logits.data;
    }

    fn forward_greedy(
        &mut self,
        b: &ForwardBatch,
        _vocab_limit: usize,
    ) -> Option<Result<Vec<u32>, BackendError>> {
        self.device_greedy
            .then(|| Ok(b.logits_indices.iter().map(|&i| self.token(b, i)).collect()))
    }

    fn copy_blocks(&mut self, _: &[(BlockId, BlockId)]) -> Result<(), BackendError> {
        Ok(())
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let model = args.first().map_or("gemma-3-270m", String::as_str);
    let sweep: Vec<usize> = args.get(1).map_or(vec![1, 16, 64, 256], |s| {
        s.split(',')
            .map(|x| x.trim().parse().expect("concurrency"))
            .collect()
    });
    let m = Model::load(model, false).unwrap_or_else(|e| panic!("{model}: {e}"));
    let tok = Arc::new(m.tokenizer);
    let (input, output) = (128usize, 128usize);
    println!(
        "model {model} (vocab {}), {input} prompt + {output} output tokens per request, greedy",
        m.config.vocab_size
    );
    println!("| concurrency | backend chooses | steps | steps/s | engine ms/step | out tok/s |");
    println!("|---:|---|---:|---:|---:|---:|");
    for &c in &sweep {
        for device_greedy in [true, false] {
            let backend = Null {
                vocab: m.config.vocab_size,
                device_greedy,
                spare: Vec::new(),
            };
            let config = EngineConfig {
                max_num_seqs: c,
                max_num_batched_tokens: 512.max(c),
                ..EngineConfig::default()
            };
            let e = EngineHandle::start(Box::new(backend), tok.clone(), &m.config, config)
                .expect("engine");
            let n = 2 * c;
            let reqs: Vec<EngineRequest> = (0..n)
                .map(|i| {
                    let prompt = (0..input)
                        .map(|j| (2000 + (i * 7919 + j * 104_729) % 100_000) as u32)
                        .collect();
                    EngineRequest {
                        ignore_eos: true,
                        ..EngineRequest::new(prompt, output)
                    }
                })
                .collect();
            let t0 = Instant::now();
            let streams: Vec<_> = reqs.into_iter().map(|r| e.submit(r).unwrap()).collect();
            let mut tokens = 0;
            for s in streams {
                for c in s.collect_blocking().expect("request") {
                    tokens += c.token_ids.len();
                }
            }
            let secs = t0.elapsed().as_secs_f64();
            let steps = e.stats_blocking().expect("stats").num_steps;
            println!(
                "| {c} | {} | {steps} | {:.0} | {:.3} | {:.0} |",
                if device_greedy { "yes" } else { "no (logits)" },
                steps as f64 / secs,
                1e3 * secs / steps as f64,
                tokens as f64 / secs
            );
        }
    }
}
