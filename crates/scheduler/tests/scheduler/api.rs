//! API contract tests: configuration and request validation, and `update` misuse.

use switchyard_core::{FinishReason, SeqId, StopReason};
use switchyard_scheduler::{
    AddRequestError, ConfigError, Request, SampledToken, Scheduler, SchedulerConfig, UpdateError,
};

fn small() -> Scheduler {
    Scheduler::new(SchedulerConfig {
        block_size: 4,
        num_blocks: 4,
        max_num_batched_tokens: 64,
        max_num_seqs: 4,
        enable_prefix_caching: true,
        ..Default::default()
    })
    .unwrap()
}

#[test]
fn config_rejects_zero_sizes() {
    for field in [
        "block_size",
        "num_blocks",
        "max_num_batched_tokens",
        "max_num_seqs",
    ] {
        let mut c = SchedulerConfig::default();
        match field {
            "block_size" => c.block_size = 0,
            "num_blocks" => c.num_blocks = 0,
            "max_num_batched_tokens" => c.max_num_batched_tokens = 0,
            _ => c.max_num_seqs = 0,
        }
        assert_eq!(Scheduler::new(c).unwrap_err(), ConfigError::Zero { field });
    }
}

#[test]
fn add_request_rejects_with_typed_errors_and_keeps_state() {
    let mut s = small();
    let id = SeqId(1);
    assert_eq!(
        s.add_request(Request::new(id, vec![], 1)),
        Err(AddRequestError::EmptyPrompt { id })
    );
    assert_eq!(
        s.add_request(Request::new(id, vec![1], 0)),
        Err(AddRequestError::ZeroMaxTokens { id })
    );
    // 16 slots: 10 + 7 - 1 = 16 fits exactly, 10 + 8 - 1 does not.
    let err = s.add_request(Request::new(id, vec![0; 10], 8)).unwrap_err();
    assert_eq!(
        err,
        AddRequestError::TooLong {
            id,
            prompt_len: 10,
            max_tokens: 8,
            needed_tokens: 17,
            capacity_tokens: 16
        }
    );
    assert!(err.to_string().contains("17"), "{err}");
    assert_eq!(s.num_waiting(), 0);
    s.add_request(Request::new(id, vec![0; 10], 7)).unwrap();
    assert_eq!(
        s.add_request(Request::new(id, vec![1], 1)),
        Err(AddRequestError::DuplicateId { id })
    );
    assert_eq!(s.num_waiting(), 1);
    s.check_invariants().unwrap();
}

#[test]
fn update_rejects_mismatched_outputs_without_changing_anything() {
    let mut s = Scheduler::new(SchedulerConfig {
        max_num_batched_tokens: 3,
        ..small().config().clone()
    })
    .unwrap();
    let (a, b) = (SeqId(1), SeqId(2));
    s.add_request(Request::new(a, vec![1, 2], 3)).unwrap();
    s.add_request(Request::new(b, vec![3, 4, 5, 6, 7], 3))
        .unwrap();
    let plan = s.schedule(); // a's whole prompt (samples), b's first token (does not)
    assert_eq!(plan.sampling_ids().collect::<Vec<_>>(), [a]);
    let t = SampledToken::token;
    assert_eq!(
        s.update(&plan, &[]),
        Err(UpdateError::MissingOutput { id: a })
    );
    assert_eq!(
        s.update(&plan, &[(a, t(9)), (b, t(9))]),
        Err(UpdateError::UnexpectedOutput { id: b })
    );
    assert_eq!(
        s.update(&plan, &[(a, t(9)), (a, t(9))]),
        Err(UpdateError::DuplicateOutput { id: a })
    );
    assert_eq!(s.output_tokens(a), Some(&[][..]), "nothing applied");
    let done = s
        .update(&plan, &[(a, SampledToken::stop(9, StopReason::Eos(9)))])
        .unwrap();
    assert_eq!(done[0].reason, FinishReason::Stop(StopReason::Eos(9)));

    let plan = s.schedule();
    assert_eq!(plan.finished, [a], "finished ids reach the next plan");
    assert_eq!(plan.sampling_ids().count(), 0);
    s.update(&plan, &[]).unwrap();
    let plan = s.schedule();
    assert!(plan.finished.is_empty());
    assert_eq!(plan.sampling_ids().collect::<Vec<_>>(), [b]);
    // An output for a request aborted after planning is ignored.
    assert!(s.abort(b));
    assert!(!s.abort(b));
    assert!(s.update(&plan, &[(b, t(1))]).unwrap().is_empty());
    assert_eq!(s.num_free_blocks(), 4);
    assert_eq!(s.schedule().aborted, [b]);
    s.check_invariants().unwrap();
}

#[test]
fn scheduler_finishes_at_max_tokens_and_engine_at_stop() {
    let mut s = small();
    let (a, b) = (SeqId(1), SeqId(2));
    s.add_request(Request::new(a, vec![1], 1)).unwrap();
    s.add_request(Request::new(b, vec![2], 5)).unwrap();
    let plan = s.schedule();
    let done = s
        .update(
            &plan,
            &[
                (a, SampledToken::token(7)),
                (b, SampledToken::stop(8, StopReason::StopString("x".into()))),
            ],
        )
        .unwrap();
    let reasons: Vec<_> = done
        .iter()
        .map(|f| (f.id, f.reason.clone(), f.output.clone()))
        .collect();
    assert_eq!(
        reasons,
        [
            (a, FinishReason::Length, vec![7]),
            (
                b,
                FinishReason::Stop(StopReason::StopString("x".into())),
                vec![8]
            )
        ]
    );
    assert!(!s.has_unfinished());
}
