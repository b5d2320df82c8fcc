//! Property and randomized tests: random arrivals, prompt lengths, max_tokens, priorities and
//! aborts over tiny vocabularies (to force prefix sharing) and tiny pools (to force eviction
//! and preemption). The driver checks every invariant after every call; at the end nothing may
//! leak and every request that was not aborted must have the output of an unbatched run.

use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::Index;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use switchyard_core::{KvGroupKind, SeqId};
use switchyard_scheduler::{Request, SchedulerConfig, SchedulerStats};

use crate::harness::{Coverage, Driver, FakeModel};

#[derive(Debug, Clone)]
enum Op {
    Add {
        prompt: Vec<u32>,
        max_tokens: usize,
        priority: i32,
    },
    Abort(Index),
    Step(usize),
}

/// KV cache groups: one full group (the plain cache), or full and sliding-window groups
/// (windows 1..=8, shorter than many sequences), or sliding groups only.
fn arb_groups() -> impl Strategy<Value = Vec<KvGroupKind>> {
    use KvGroupKind::{Full, Sliding};
    prop_oneof![
        2 => Just(vec![Full]),
        1 => (1usize..=8).prop_map(|w| vec![Full, Sliding { window: w }]),
        1 => (1usize..=8, 1usize..=8).prop_map(|(a, b)| vec![
            Full,
            Sliding { window: a },
            Sliding { window: b },
            Sliding { window: a },
        ]),
        1 => (1usize..=8).prop_map(|w| vec![Sliding { window: w }; 2]),
    ]
}

fn arb_config() -> impl Strategy<Value = SchedulerConfig> {
    (
        1usize..=4,
        2usize..=20,
        1usize..=16,
        1usize..=4,
        any::<bool>(),
        arb_groups(),
    )
        .prop_map(
            |(block_size, num_blocks, budget, max_seqs, caching, kv_groups)| SchedulerConfig {
                block_size,
                // Tiny pools still, in blocks per group.
                num_blocks: num_blocks * kv_groups.len(),
                max_num_batched_tokens: budget,
                max_num_seqs: max_seqs,
                enable_prefix_caching: caching,
                kv_groups,
            },
        )
}

fn arb_model() -> impl Strategy<Value = FakeModel> {
    (2u32..=4, proptest::option::weighted(0.25, 0u32..2))
        .prop_map(|(vocab, eos)| FakeModel { vocab, eos })
}

fn arb_op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (vec(0u32..3, 1..16), 1usize..10, 0i32..3)
            .prop_map(|(prompt, max_tokens, priority)| Op::Add { prompt, max_tokens, priority }),
        1 => any::<Index>().prop_map(Op::Abort),
        4 => (1usize..4).prop_map(Op::Step),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn random_workloads_keep_every_invariant(config in arb_config(), model in arb_model(), ops in vec(arb_op(), 1..80)) {
        let mut d = Driver::new(config, model);
        let mut next_id = 0u64;
        for op in ops {
            match op {
                Op::Add { prompt, max_tokens, priority } => {
                    let r = Request::new(SeqId(next_id), prompt, max_tokens).with_priority(priority).with_arrival(next_id);
                    let _ = d.add(r);
                    next_id += 1;
                }
                Op::Abort(ix) if next_id > 0 => d.abort(SeqId(ix.index(next_id as usize) as u64)),
                Op::Abort(_) => {}
                Op::Step(n) => {
                    for _ in 0..n {
                        d.step();
                    }
                }
            }
        }
        d.finish_all(10_000);
    }
}

/// One seeded run of `rounds` random actions over a random tiny configuration.
fn random_run(seed: u64, rounds: usize) -> (Coverage, SchedulerStats, u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    let kv_groups = match seed % 4 {
        0 | 1 => vec![KvGroupKind::Full],
        2 => vec![
            KvGroupKind::Full,
            KvGroupKind::Sliding {
                window: rng.gen_range(1..=8),
            },
        ],
        _ => {
            let w = rng.gen_range(1..=8);
            vec![
                KvGroupKind::Sliding { window: w },
                KvGroupKind::Full,
                KvGroupKind::Sliding { window: w },
            ]
        }
    };
    let config = SchedulerConfig {
        block_size: rng.gen_range(1..=4),
        num_blocks: rng.gen_range(6..=32) * kv_groups.len(),
        max_num_batched_tokens: rng.gen_range(1..=24),
        max_num_seqs: rng.gen_range(1..=6),
        enable_prefix_caching: rng.gen_bool(0.8),
        kv_groups,
    };
    let vocab = rng.gen_range(2..=4);
    let eos = rng.gen_bool(0.3).then_some(0);
    let mut d = Driver::new(config, FakeModel { vocab, eos });
    let mut digest = 0u64;
    let mut next_id = 0u64;
    for _ in 0..rounds {
        match rng.gen_range(0..100) {
            0..=11 => {
                let len = rng.gen_range(1..=16);
                let prompt = (0..len).map(|_| rng.gen_range(0..vocab)).collect();
                let r = Request::new(SeqId(next_id), prompt, rng.gen_range(1..=12))
                    .with_priority(rng.gen_range(0..3))
                    .with_arrival(next_id);
                let _ = d.add(r);
                next_id += 1;
            }
            12..=13 => {
                // Mostly a live request (running or waiting), sometimes any id ever used.
                let live = d.live_ids();
                if !live.is_empty() && rng.gen_bool(0.8) {
                    d.abort(live[rng.gen_range(0..live.len())]);
                } else if next_id > 0 {
                    d.abort(SeqId(rng.gen_range(0..next_id)));
                }
            }
            _ => {
                let rec = d.step();
                digest = crate::harness::mix(digest, format!("{:?}", rec.plan).len() as u32)
                    ^ rec.plan.seqs.iter().fold(0, |h, s| {
                        crate::harness::mix(
                            h,
                            s.tokens.len() as u32 + s.block_table.iter().map(|b| b.0).sum::<u32>(),
                        )
                    });
            }
        }
    }
    d.finish_all(100_000);
    (d.coverage, d.sched.stats(), digest)
}

#[test]
fn two_hundred_thousand_seeded_rounds() {
    let mut total = Coverage::default();
    let mut stats = SchedulerStats::default();
    // 40 random tiny configurations × 5,000 rounds (add / abort / step) each.
    for seed in 0..40 {
        let (c, s, _) = random_run(seed, 5_000);
        total.accepted += c.accepted;
        total.rejected += c.rejected;
        total.aborted_running += c.aborted_running;
        total.aborted_waiting += c.aborted_waiting;
        total.finished_stop += c.finished_stop;
        total.finished_length += c.finished_length;
        total.steps += c.steps;
        total.window_releases += c.window_releases;
        total.window_hits += c.window_hits;
        stats.num_preemptions += s.num_preemptions;
        stats.prefix_cache_hits += s.prefix_cache_hits;
        stats.prefix_cache_queries += s.prefix_cache_queries;
    }
    // The run must actually exercise what it claims to check.
    assert!(total.steps >= 150_000, "{total:?}");
    assert!(total.accepted > 1000 && total.rejected > 0, "{total:?}");
    assert!(
        total.aborted_running > 100 && total.aborted_waiting > 100,
        "{total:?}"
    );
    assert!(
        total.finished_stop > 0 && total.finished_length > 0,
        "{total:?}"
    );
    assert!(stats.num_preemptions > 100, "{stats:?}");
    assert!(
        total.window_releases > 1000 && total.window_hits > 100,
        "{total:?}"
    );
    assert!(stats.prefix_cache_hits > 1000, "{stats:?}");
}

#[test]
fn same_calls_give_same_plans() {
    assert_eq!(random_run(42, 3000).2, random_run(42, 3000).2);
    assert_ne!(
        random_run(42, 3000).2,
        random_run(43, 3000).2,
        "digest must depend on the plans"
    );
}
