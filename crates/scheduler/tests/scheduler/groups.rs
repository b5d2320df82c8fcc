//! KV cache groups with sliding windows: blocks leave a sliding group's table once no future
//! query reads them, prefix hits need only the window's blocks in sliding groups, preemption
//! and capacity account for every group. Every step also goes through the driver's checks
//! (reads only through live blocks, outputs equal to an unbatched run, nothing leaks).

use switchyard_core::{BlockId, KvGroupKind, SeqId};
use switchyard_scheduler::{hash_full_blocks, AddRequestError, Request, SchedulerConfig};

use crate::harness::{table_of, Driver, FakeModel};

const MODEL: FakeModel = FakeModel {
    vocab: 1000,
    eos: None,
};

fn sliding(window: usize) -> KvGroupKind {
    KvGroupKind::Sliding { window }
}

fn cfg(num_blocks: usize, budget: usize, kv_groups: Vec<KvGroupKind>) -> SchedulerConfig {
    SchedulerConfig {
        block_size: 2,
        num_blocks,
        max_num_batched_tokens: budget,
        max_num_seqs: 4,
        enable_prefix_caching: true,
        kv_groups,
    }
}

fn held(t: &[BlockId]) -> usize {
    t.iter().filter(|b| !b.is_null()).count()
}

#[test]
fn sliding_group_gives_back_blocks_that_left_the_window() {
    // Blocks of 2 tokens, window 4, chunks of 4: a 30-token sequence keeps 15 blocks in the
    // full group but never more than ceil((4 - 1 + 4) / 2) + 1 = 5 in the sliding one.
    let mut d = Driver::new(cfg(40, 4, vec![KvGroupKind::Full, sliding(4)]), MODEL);
    let prompt: Vec<u32> = (100..120).collect();
    d.add(Request::new(SeqId(1), prompt, 11)).unwrap();
    let mut max_sliding = 0;
    let mut last = None;
    while d.sched.has_unfinished() {
        let rec = d.step();
        if let Some(s) = rec.plan.seqs.first() {
            let end = s.context_before + s.tokens.len();
            assert_eq!(
                held(table_of(s, 0)),
                end.div_ceil(2),
                "full group keeps all"
            );
            // Exactly the blocks from the one holding position context_before - 3 on.
            let first = (s.context_before + 1).saturating_sub(4) / 2;
            assert_eq!(held(table_of(s, 1)), end.div_ceil(2) - first);
            max_sliding = max_sliding.max(held(table_of(s, 1)));
            // Blocks in use: both tables (nothing else runs).
            assert_eq!(
                rec.free_after_plan,
                40 - held(table_of(s, 0)) - held(table_of(s, 1))
            );
            last = Some(s.clone());
        }
    }
    let last = last.unwrap();
    // The last decode: context 29, reads positions 26..=29 (blocks 13, 14) only.
    assert_eq!(last.context_before, 29);
    assert_eq!(
        table_of(&last, 1).iter().position(|b| !b.is_null()),
        Some(13)
    );
    assert!(max_sliding <= 5, "{max_sliding}");
    d.finish_all(0);
}

#[test]
fn prefix_hit_needs_the_window_blocks_of_every_sliding_group() {
    // Window 2: a hit of k blocks of 2 needs, in the sliding group, only block k - 1.
    let mut d = Driver::new(cfg(8, 2, vec![KvGroupKind::Full, sliding(2)]), MODEL);
    let a: Vec<u32> = (200..208).collect();
    d.add(Request::new(SeqId(1), a.clone(), 1)).unwrap();
    d.finish_all(100);
    // A computed 8 tokens in chunks of 2; its sliding blocks 0 and 1 went back to the pool
    // (cached, so evicted first among cached blocks) while it ran.
    let pool = d.sched.block_pool();
    let hashes = hash_full_blocks(&a, 2);
    assert_eq!(pool.find_cached_prefix(0, &a, &hashes).len(), 4);
    assert_eq!(pool.find_cached_prefix(1, &a, &hashes).len(), 4);
    // A request of unique tokens takes two free blocks: A's sliding blocks 0 and 1.
    d.add(Request::new(SeqId(2), vec![1, 2], 1)).unwrap();
    d.finish_all(100);
    let pool = d.sched.block_pool();
    assert!(pool.find_cached_block(1, 0, &a, &hashes).is_none());
    assert!(pool.find_cached_block(1, 1, &a, &hashes).is_none());
    assert_eq!(pool.find_cached_prefix(0, &a, &hashes).len(), 4);

    // All of A's prompt plus one token: the full group has blocks 0..4 and the sliding group
    // the last one, block 3: a hit of 8 tokens although sliding blocks 0, 1 are gone.
    let mut b = a.clone();
    b.push(7);
    d.add(Request::new(SeqId(3), b, 2)).unwrap();
    let rec = d.step();
    assert_eq!(rec.plan.seqs[0].num_cached_tokens, 8, "{:?}", rec.plan);
    assert_eq!(table_of(&rec.plan.seqs[0], 1)[..3], [BlockId::NULL; 3]);
    d.finish_all(100);

    // A's first 4 tokens, then others: the full group has a hit of 2 blocks, but the sliding
    // group lacks block 1 (for k = 2) and block 0 (for k = 1): no hit at all.
    let pool = d.sched.block_pool();
    assert_eq!(pool.find_cached_prefix(0, &a, &hashes).len(), 4);
    let mut e = a[..4].to_vec();
    e.extend([9, 9, 9]);
    let queries = d.sched.prefix_cache_hits();
    d.add(Request::new(SeqId(4), e, 2)).unwrap();
    let rec = d.step();
    assert_eq!(rec.plan.seqs[0].num_cached_tokens, 0, "{:?}", rec.plan);
    d.finish_all(100);
    assert_eq!(d.sched.prefix_cache_hits(), queries);
}

#[test]
fn preemption_with_sliding_groups_recomputes_to_the_same_output() {
    // Three sequences of 24 tokens in a pool that holds fewer: preemption frees every
    // group's blocks; recomputation rebuilds the tables (NULLs before the window again).
    let groups = vec![KvGroupKind::Full, sliding(3), sliding(5)];
    let mut d = Driver::new(cfg(30, 6, groups), MODEL);
    for i in 0..3u64 {
        let prompt: Vec<u32> = (0..12).map(|t| 300 + 20 * i as u32 + t).collect();
        d.add(Request::new(SeqId(i), prompt, 13).with_arrival(i))
            .unwrap();
    }
    d.finish_all(1000);
    assert!(d.sched.num_preemptions() > 0);
    assert_eq!(d.finished.len(), 3);
}

#[test]
fn capacity_counts_only_the_window_of_sliding_groups() {
    // Window 4, chunks of 4, blocks of 2: a sliding group holds at most 5 blocks, so 10
    // blocks hold a sequence of 5 blocks (10 tokens), not the 5 tokens of two full groups.
    let c = cfg(10, 4, vec![KvGroupKind::Full, sliding(4)]);
    assert_eq!(c.blocks_per_seq(10), 10);
    assert_eq!(c.blocks_per_seq(30), 15 + 5);
    assert_eq!(c.capacity_tokens(), 10);
    let two_full = cfg(10, 4, vec![KvGroupKind::Full; 2]);
    assert_eq!(two_full.capacity_tokens(), 10);
    assert_eq!(two_full.blocks_per_seq(10), 10);
    assert_eq!(cfg(10, 4, vec![KvGroupKind::Full]).capacity_tokens(), 20);
    let mut d = Driver::new(c, MODEL);
    d.add(Request::new(SeqId(1), vec![1; 8], 3)).unwrap();
    assert!(matches!(
        d.add(Request::new(SeqId(2), vec![1; 8], 4)),
        Err(AddRequestError::TooLong {
            capacity_tokens: 10,
            needed_tokens: 11,
            ..
        })
    ));
    d.finish_all(100);

    // Only sliding groups: any length fits once the windows do; a sequence far longer than
    // the pool runs to the end.
    let c = cfg(10, 4, vec![sliding(4)]);
    assert_eq!(c.capacity_tokens(), usize::MAX);
    let mut d = Driver::new(c, MODEL);
    d.add(Request::new(SeqId(1), (0..40).collect(), 30))
        .unwrap();
    d.finish_all(1000);
    assert_eq!(d.sched.num_preemptions(), 0);
}
