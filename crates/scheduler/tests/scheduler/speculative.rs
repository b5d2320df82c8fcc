//! Draft tokens (speculative decoding): planned after a decode's token, rolled back on
//! rejection, bounded by the budget, `max_tokens` and free blocks, and checked in `update`.

use switchyard_core::{SeqId, StopReason};
use switchyard_scheduler::{SampledToken, Scheduler, SchedulerConfig, StepPlan, UpdateError};

fn sched(num_blocks: usize, budget: usize) -> Scheduler {
    Scheduler::new(SchedulerConfig {
        block_size: 4,
        num_blocks,
        max_num_batched_tokens: budget,
        max_num_seqs: 4,
        enable_prefix_caching: true,
        ..Default::default()
    })
    .unwrap()
}

/// Admits a 6-token prompt and runs its prefill, sampling token 100.
fn started(s: &mut Scheduler, id: SeqId, max_tokens: usize) {
    s.add_request(switchyard_scheduler::Request::new(
        id,
        (0..6).collect(),
        max_tokens,
    ))
    .unwrap();
    let p = s.schedule();
    assert_eq!(p.seqs[0].tokens.len(), 6);
    s.update(&p, &[(id, SampledToken::token(100))]).unwrap();
    s.check_invariants().unwrap();
}

fn only(p: &StepPlan) -> &switchyard_scheduler::ScheduledSeq {
    assert_eq!(p.seqs.len(), 1, "{p:?}");
    &p.seqs[0]
}

#[test]
fn a_draft_runs_after_the_decode_token_and_rejected_tokens_roll_back() {
    let mut s = sched(8, 64);
    let id = SeqId(1);
    started(&mut s, id, 20);
    let free_before = s.num_free_blocks();
    s.set_draft(id, vec![7, 8, 9, 10]);
    let p = s.schedule();
    let q = only(&p);
    assert_eq!(q.tokens, [100, 7, 8, 9, 10]);
    assert_eq!((q.context_before, q.num_draft, q.samples), (6, 4, true));
    // Positions 6..11: blocks 0..3 (11 positions / 4).
    assert_eq!(q.block_table.len(), 3);
    let b = p.to_forward_batch();
    assert_eq!(b.logits_indices, [0, 1, 2, 3, 4]);
    s.check_invariants().unwrap();
    // Two draft tokens accepted, then 55 sampled instead of 9.
    s.update(
        &p,
        &[
            (id, SampledToken::token(7)),
            (id, SampledToken::token(8)),
            (id, SampledToken::token(55)),
        ],
    )
    .unwrap();
    s.check_invariants().unwrap();
    assert_eq!(s.output_tokens(id).unwrap(), [100, 7, 8, 55]);
    // Positions 0..9 stay computed (prompt, 100, 7, 8); 55 is next, at position 9.
    let p = s.schedule();
    let q = only(&p);
    assert_eq!(
        (q.tokens.as_slice(), q.context_before, q.num_draft),
        (&[55][..], 9, 0)
    );
    assert_eq!(q.block_table.len(), 3);
    assert!(s.num_free_blocks() <= free_before);
    s.update(&p, &[(id, SampledToken::stop(56, StopReason::Eos(56)))])
        .unwrap();
    s.check_invariants().unwrap();
    assert!(!s.contains(id));
    assert_eq!(s.num_free_blocks(), 8);
}

#[test]
fn a_rejected_draft_gives_its_blocks_back() {
    let mut s = sched(8, 64);
    let id = SeqId(1);
    started(&mut s, id, 20);
    // 6 computed + 1 token + 9 draft = 16 positions = 4 blocks; only 2 are needed after.
    s.set_draft(id, (200..209).collect());
    let p = s.schedule();
    assert_eq!(only(&p).block_table.len(), 4);
    let used = 8 - s.num_free_blocks();
    s.update(&p, &[(id, SampledToken::token(1))]).unwrap();
    s.check_invariants().unwrap();
    assert_eq!(8 - s.num_free_blocks(), used - 2);
}

#[test]
fn drafts_are_bounded_by_max_tokens_budget_and_free_blocks() {
    // max_tokens 4: one token generated, so at most 4 - 1 - 1 = 2 draft tokens.
    let mut s = sched(8, 64);
    let id = SeqId(1);
    started(&mut s, id, 4);
    s.set_draft(id, vec![1, 2, 3, 4, 5]);
    let p = s.schedule();
    assert_eq!(only(&p).num_draft, 2);
    s.update(
        &p,
        &[
            (id, SampledToken::token(1)),
            (id, SampledToken::token(2)),
            (id, SampledToken::token(3)),
        ],
    )
    .unwrap();
    assert!(!s.contains(id), "finished at max_tokens");

    // A budget of 3 tokens: the decode token and 2 draft tokens.
    let mut s = sched(8, 3);
    started_chunked(&mut s, SeqId(2));
    s.set_draft(SeqId(2), vec![1, 2, 3, 4, 5]);
    let p = s.schedule();
    assert_eq!(only(&p).num_draft, 2);

    // Blocks: 2 blocks in all; the prompt and token fill 7 of 8 slots, so a draft of 3 does
    // not fit and the step runs without it (nothing is preempted for a draft).
    let mut s = sched(2, 64);
    let id = SeqId(3);
    started(&mut s, id, 2);
    s.set_draft(id, vec![1, 2, 3]);
    let p = s.schedule();
    let q = only(&p);
    assert_eq!((q.num_draft, q.tokens.len()), (0, 1));
    assert!(p.preempted.is_empty());
}

/// Like `started`, for a budget smaller than the prompt (prefill in chunks).
fn started_chunked(s: &mut Scheduler, id: SeqId) {
    s.add_request(switchyard_scheduler::Request::new(id, (0..6).collect(), 20))
        .unwrap();
    loop {
        let p = s.schedule();
        let q = only(&p);
        if q.samples {
            s.update(&p, &[(id, SampledToken::token(100))]).unwrap();
            return;
        }
        s.update(&p, &[]).unwrap();
    }
}

#[test]
fn update_checks_drafted_outputs() {
    let mut s = sched(8, 64);
    let id = SeqId(1);
    started(&mut s, id, 20);
    s.set_draft(id, vec![7, 8]);
    let p = s.schedule();
    // More outputs than the draft allows; an output before the last that is not the draft's;
    // a stop before the last.
    for bad in [vec![7, 8, 9, 10], vec![7, 9, 1]] {
        let outs: Vec<_> = bad.iter().map(|&t| (id, SampledToken::token(t))).collect();
        assert_eq!(
            s.update(&p, &outs),
            Err(UpdateError::DuplicateOutput { id })
        );
    }
    assert_eq!(
        s.update(
            &p,
            &[
                (id, SampledToken::stop(7, StopReason::StopToken(7))),
                (id, SampledToken::token(8))
            ]
        ),
        Err(UpdateError::DuplicateOutput { id })
    );
    s.check_invariants().unwrap();
    // All accepted, plus the token after them.
    s.update(
        &p,
        &[
            (id, SampledToken::token(7)),
            (id, SampledToken::token(8)),
            (id, SampledToken::token(9)),
        ],
    )
    .unwrap();
    s.check_invariants().unwrap();
    assert_eq!(s.output_tokens(id).unwrap(), [100, 7, 8, 9]);
    let p = s.schedule();
    assert_eq!(
        (only(&p).context_before, only(&p).tokens.as_slice()),
        (9, &[9][..])
    );
}

#[test]
fn a_draft_for_a_prefill_or_a_waiting_request_is_dropped() {
    let mut s = sched(8, 4);
    let id = SeqId(1);
    s.add_request(switchyard_scheduler::Request::new(id, (0..6).collect(), 20))
        .unwrap();
    s.set_draft(id, vec![1, 2]); // waiting: ignored
    let p = s.schedule();
    assert_eq!((only(&p).num_draft, only(&p).tokens.len()), (0, 4));
    s.set_draft(id, vec![1, 2]); // running, but its next step is the prompt's rest
    s.update(&p, &[]).unwrap();
    let p = s.schedule();
    assert_eq!((only(&p).num_draft, only(&p).tokens.len()), (0, 2));
    s.update(&p, &[(id, SampledToken::token(100))]).unwrap();
    let p = s.schedule();
    assert_eq!(only(&p).num_draft, 0, "the draft was for an earlier step");
}

#[test]
fn is_decoding_only_between_decode_steps_of_a_running_sequence() {
    // A budget of 4 tokens: the 6-token prompt takes two chunks.
    let mut s = sched(8, 4);
    let id = SeqId(1);
    assert!(!s.is_decoding(id), "unknown");
    s.add_request(switchyard_scheduler::Request::new(id, (0..6).collect(), 20))
        .unwrap();
    assert!(!s.is_decoding(id), "waiting");
    let p = s.schedule();
    assert_eq!(only(&p).tokens.len(), 4);
    s.update(&p, &[]).unwrap();
    assert!(!s.is_decoding(id), "halfway through its prompt");
    let p = s.schedule();
    s.update(&p, &[(id, SampledToken::token(100))]).unwrap();
    assert!(s.is_decoding(id));
    s.set_draft(id, vec![7, 8]);
    let p = s.schedule();
    assert_eq!(only(&p).num_draft, 2);
    assert!(!s.is_decoding(id), "a planned step not yet updated");
    s.update(
        &p,
        &[(id, SampledToken::token(7)), (id, SampledToken::token(9))],
    )
    .unwrap();
    assert!(s.is_decoding(id), "after a partly accepted draft");
    s.abort(id);
    assert!(!s.is_decoding(id), "aborted");
}
