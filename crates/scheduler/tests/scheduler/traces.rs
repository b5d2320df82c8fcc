//! Scheduler traces as data: requests arrive (or are aborted) before given steps, and each
//! step's plan is rendered as one line and compared with the expected trace.
//!
//! Line format: `#step: r{id}[{context_before}+{tokens}{*}]{(hit N)}` for each scheduled
//! sequence (`*`: it samples; `hit N`: N prompt tokens reused from the prefix cache), then
//! `| preempt ..` (preempted while planning), `| aborted ..` (since the previous plan),
//! `| done ..` (finished by this step's update) and `| free N` (free blocks after planning).
//! The last line sums up the run. Every step also goes through all the driver's checks.

use std::fmt::Write;

use switchyard_core::SeqId;
use switchyard_scheduler::{Request, SchedulerConfig};

use crate::harness::{Driver, FakeModel};

enum Ev {
    Add(Request),
    Abort(u64),
}

impl Ev {
    fn prio(self, priority: i32) -> Self {
        match self {
            Ev::Add(r) => Ev::Add(r.with_priority(priority)),
            other => other,
        }
    }
}

/// Request `id` with a prompt of `prompt_len` tokens unique to it.
fn add(id: u64, prompt_len: usize, max_tokens: usize) -> Ev {
    let prompt = (0..prompt_len as u32)
        .map(|i| 1000 * id as u32 + i)
        .collect();
    add_prompt(id, prompt, max_tokens)
}

fn add_prompt(id: u64, prompt: Vec<u32>, max_tokens: usize) -> Ev {
    Ev::Add(Request::new(SeqId(id), prompt, max_tokens))
}

fn abort(id: u64) -> Ev {
    Ev::Abort(id)
}

fn cfg(block_size: usize, num_blocks: usize, budget: usize, max_seqs: usize) -> SchedulerConfig {
    SchedulerConfig {
        block_size,
        num_blocks,
        max_num_batched_tokens: budget,
        max_num_seqs: max_seqs,
        enable_prefix_caching: true,
        ..Default::default()
    }
}

fn ids(list: impl IntoIterator<Item = SeqId>) -> String {
    list.into_iter().map(|id| format!(" r{}", id.0)).collect()
}

/// Runs `events` (each applied before the step it names; arrival order = list order) until
/// nothing is left and compares the rendered trace with `expected`.
fn check(config: SchedulerConfig, events: &[(usize, Ev)], expected: &str) {
    let model = FakeModel {
        vocab: 1000,
        eos: None,
    };
    let mut d = Driver::new(config, model);
    let mut actual = String::new();
    let mut next = 0;
    for step in 0.. {
        while next < events.len() && events[next].0 <= step {
            match &events[next].1 {
                Ev::Add(r) => d
                    .add(r.clone().with_arrival(next as u64))
                    .expect("accepted"),
                Ev::Abort(id) => d.abort(SeqId(*id)),
            }
            next += 1;
        }
        if next == events.len() && !d.sched.has_unfinished() {
            break;
        }
        assert!(step < 1000, "trace does not end");
        let rec = d.step();
        let mut line = format!("#{step}:");
        if rec.plan.is_empty() {
            line.push_str(" idle");
        }
        for s in &rec.plan.seqs {
            let star = if s.samples { "*" } else { "" };
            write!(
                line,
                " r{}[{}+{}{star}]",
                s.id.0,
                s.context_before,
                s.tokens.len()
            )
            .unwrap();
            if s.num_cached_tokens > 0 {
                write!(line, "(hit {})", s.num_cached_tokens).unwrap();
            }
        }
        for (label, list) in [
            ("preempt", ids(rec.plan.preempted.iter().copied())),
            ("aborted", ids(rec.plan.aborted.iter().copied())),
            ("done", ids(rec.finished.iter().map(|f| f.id))),
        ] {
            if !list.is_empty() {
                write!(line, " | {label}{list}").unwrap();
            }
        }
        writeln!(actual, "{line} | free {}", rec.free_after_plan).unwrap();
    }
    d.finish_all(0);
    let pool = d.sched.block_pool();
    writeln!(
        actual,
        "end: free {}/{}, cached {}, hits {}/{} tokens, preemptions {}",
        pool.num_free_blocks(),
        pool.num_blocks(),
        pool.num_cached_blocks(),
        d.sched.prefix_cache_hits(),
        d.sched.prefix_cache_queries(),
        d.sched.num_preemptions(),
    )
    .unwrap();
    let expected: Vec<&str> = expected
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let got: Vec<&str> = actual.lines().collect();
    assert!(
        expected == got,
        "trace differs.\nexpected:\n{}\nactual:\n{actual}",
        expected.join("\n")
    );
}

#[test]
fn long_prompt_is_chunked_and_never_stalls_a_running_decode() {
    check(
        cfg(4, 32, 8, 4),
        &[(0, add(1, 3, 6)), (2, add(2, 20, 2))],
        "
        #0: r1[0+3*] | free 31
        #1: r1[3+1*] | free 31
        #2: r1[4+1*] r2[0+7] | free 28
        #3: r1[5+1*] r2[7+7] | free 26
        #4: r1[6+1*] r2[14+6*] | free 25
        #5: r1[7+1*] r2[20+1*] | done r1 r2 | free 24
        end: free 32/32, cached 7, hits 0/23 tokens, preemptions 0
        ",
    );
}

#[test]
fn token_budget_and_sequence_cap() {
    // Budget 6 splits r2's prompt; the cap of 2 keeps r3 out although budget is left in #1.
    check(
        cfg(4, 32, 6, 2),
        &[(0, add(1, 4, 2)), (0, add(2, 4, 2)), (0, add(3, 4, 2))],
        "
        #0: r1[0+4*] r2[0+2] | free 30
        #1: r1[4+1*] r2[2+2*] | done r1 | free 29
        #2: r2[4+1*] r3[0+4*] | done r2 | free 29
        #3: r3[4+1*] | done r3 | free 30
        end: free 32/32, cached 3, hits 0/12 tokens, preemptions 0
        ",
    );
}

#[test]
fn waiting_queue_is_fcfs_within_priority() {
    check(
        cfg(4, 32, 16, 1),
        &[
            (0, add(1, 2, 1)),
            (0, add(2, 2, 1).prio(1)),
            (0, add(3, 2, 1)),
            (1, add(4, 2, 1).prio(-1)),
        ],
        "
        #0: r1[0+2*] | done r1 | free 31
        #1: r4[0+2*] | done r4 | free 31
        #2: r3[0+2*] | done r3 | free 31
        #3: r2[0+2*] | done r2 | free 31
        end: free 32/32, cached 0, hits 0/8 tokens, preemptions 0
        ",
    );
}

#[test]
fn prefix_cache_hit_reuses_two_full_blocks() {
    let shared: Vec<u32> = (1..=8).collect();
    let with = |tail: &[u32]| [shared.as_slice(), tail].concat();
    // r2 and r3 reuse r1's two full blocks (and share them with each other); r4's prompt is
    // exactly the two blocks, so only one is reused: the last prompt token is always computed.
    check(
        cfg(4, 16, 32, 4),
        &[
            (0, add_prompt(1, with(&[50, 51]), 2)),
            (2, add_prompt(2, with(&[60, 61, 62]), 2)),
            (2, add_prompt(3, with(&[70]), 1)),
            (4, add_prompt(4, shared.clone(), 1)),
        ],
        "
        #0: r1[0+10*] | free 13
        #1: r1[10+1*] | done r1 | free 13
        #2: r2[8+3*](hit 8) r3[8+1*](hit 8) | done r3 | free 12
        #3: r2[11+1*] | done r2 | free 13
        #4: r4[4+4*](hit 4) | done r4 | free 14
        end: free 16/16, cached 3, hits 20/38 tokens, preemptions 0
        ",
    );
}

#[test]
fn evicts_least_recently_used_cached_blocks_first() {
    // Each 5-token prompt leaves 2 cached blocks; the pool holds 6 blocks. r3 evicts A's second
    // block (A is least recently used), so B is still whole for r4 and A only half for r5.
    let a = vec![1, 2, 3, 4, 5];
    let b = vec![11, 12, 13, 14, 15];
    let c = vec![21, 22, 23, 24, 25];
    check(
        cfg(2, 6, 32, 4),
        &[
            (0, add_prompt(1, a.clone(), 1)),
            (1, add_prompt(2, b.clone(), 1)),
            (2, add_prompt(3, c, 1)),
            (3, add_prompt(4, b, 1)),
            (4, add_prompt(5, a, 1)),
        ],
        "
        #0: r1[0+5*] | done r1 | free 3
        #1: r2[0+5*] | done r2 | free 3
        #2: r3[0+5*] | done r3 | free 3
        #3: r4[4+1*](hit 4) | done r4 | free 3
        #4: r5[2+3*](hit 2) | done r5 | free 3
        end: free 6/6, cached 5, hits 6/25 tokens, preemptions 0
        ",
    );
}

#[test]
fn preemption_frees_blocks_and_resumes_by_recomputing_every_token() {
    // 6 blocks of 2; each request grows to 8 tokens (4 blocks). In #3 r1 needs a 4th block:
    // r2 (latest arrival) is preempted, then recomputed whole (4 prompt + 3 generated tokens).
    check(
        SchedulerConfig {
            enable_prefix_caching: false,
            ..cfg(2, 6, 32, 4)
        },
        &[(0, add(1, 4, 5)), (0, add(2, 4, 5))],
        "
        #0: r1[0+4*] r2[0+4*] | free 2
        #1: r1[4+1*] r2[4+1*] | free 0
        #2: r1[5+1*] r2[5+1*] | free 0
        #3: r1[6+1*] | preempt r2 | free 2
        #4: r1[7+1*] | done r1 | free 2
        #5: r2[0+7*] | free 2
        #6: r2[7+1*] | done r2 | free 2
        end: free 6/6, cached 0, hits 0/0 tokens, preemptions 1
        ",
    );
}

#[test]
fn preemption_picks_the_lowest_priority_even_the_request_itself() {
    // r1 (priority 1) was admitted first; in #3 it needs a block and is itself the lowest
    // priority running request, so it yields; r2 continues and r1 resumes when r2 is done.
    check(
        SchedulerConfig {
            enable_prefix_caching: false,
            ..cfg(2, 6, 32, 4)
        },
        &[(0, add(1, 4, 5).prio(1)), (1, add(2, 4, 5))],
        "
        #0: r1[0+4*] | free 4
        #1: r1[4+1*] r2[0+4*] | free 1
        #2: r1[5+1*] r2[4+1*] | free 0
        #3: r2[5+1*] | preempt r1 | free 3
        #4: r2[6+1*] | free 2
        #5: r2[7+1*] | done r2 | free 2
        #6: r1[0+7*] | free 2
        #7: r1[7+1*] | done r1 | free 2
        end: free 6/6, cached 0, hits 0/0 tokens, preemptions 1
        ",
    );
}

#[test]
fn higher_priority_arrival_preempts_and_the_victim_resumes_from_cache() {
    // r2 (priority 0) needs 2 blocks; none are free after r1's decode allocation, so r1
    // (priority 1) is preempted (its planned decode undone). Resuming, r1 finds 2 of its 3 prompt
    // blocks still cached (r2 evicted the third).
    check(
        cfg(2, 4, 16, 4),
        &[(0, add(1, 6, 3).prio(1)), (1, add(2, 3, 1))],
        "
        #0: r1[0+6*] | free 1
        #1: r2[0+3*] | preempt r1 | done r2 | free 2
        #2: r1[4+3*](hit 4) | free 0
        #3: r1[7+1*] | done r1 | free 0
        end: free 4/4, cached 4, hits 4/16 tokens, preemptions 1
        ",
    );
}

#[test]
fn abort_frees_every_block_of_running_and_waiting_requests() {
    check(
        cfg(4, 8, 8, 4),
        &[
            (0, add(1, 12, 4)),
            (0, add(2, 3, 10)),
            (0, add(3, 4, 2)),
            (2, abort(1)),
            (2, abort(3)),
            (3, add(4, 8, 1)),
            (3, abort(4)),
            (3, abort(2)),
            (4, add(5, 4, 1)),
        ],
        "
        #0: r1[0+8] | free 6
        #1: r1[8+4*] r2[0+3*] r3[0+1] | free 3
        #2: r2[3+1*] | aborted r1 r3 | free 7
        #3: idle | aborted r4 r2 | free 8
        #4: r5[0+4*] | done r5 | free 7
        end: free 8/8, cached 5, hits 0/23 tokens, preemptions 0
        ",
    );
}
