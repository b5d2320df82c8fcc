//! Splitting a matmul's rows into chunks for the pass's team (or rayon).

/// Runs `run(r0, r1)` over the chunks of [`chunk_count`] that split `rows`, on the rayon pool
/// when there is more than one.
pub(super) fn for_chunks(rows: usize, cost_per_row: usize, run: impl Fn(usize, usize) + Sync) {
    map_chunks(rows, cost_per_row, run);
}

/// [`for_chunks`] collecting each chunk's result, in chunk (row) order.
pub(super) fn map_chunks<R: Send>(
    rows: usize,
    cost_per_row: usize,
    run: impl Fn(usize, usize) -> R + Sync,
) -> Vec<R> {
    let n_chunks = chunk_count(rows, cost_per_row);
    if n_chunks <= 1 {
        vec![run(0, rows)]
    } else {
        // One slot per chunk (its result), on the pass's team or on rayon (`team`).
        let slots: Vec<std::sync::Mutex<Option<R>>> =
            (0..n_chunks).map(|_| std::sync::Mutex::new(None)).collect();
        crate::team::for_each_index(n_chunks, |c| {
            let r = run(c * rows / n_chunks, (c + 1) * rows / n_chunks);
            *slots[c].lock().unwrap_or_else(|e| e.into_inner()) = Some(r);
        });
        slots
            .into_iter()
            .map(|s| {
                s.into_inner()
                    .unwrap_or_else(|e| e.into_inner())
                    .expect("every chunk ran")
            })
            .collect()
    }
}

/// How many chunks of rows to hand to rayon: about four per thread so that a slow thread does
/// not hold the others up, more for large work (a chunk covers at most ~512 KiB of weight bytes
/// times tokens: a prompt's matmuls split into many chunks, so that the thread finishing its
/// last chunk first waits a small part of the loop for the other; at most 64 per 1,024 rows),
/// never a chunk below 16 rows, and one (no rayon at all) for tiny matrices and inside a chunk
/// of a team's loop (a matmul per task of a parallel loop, as the experts of `moe.rs`).
pub(super) fn chunk_count(rows: usize, cost_per_row: usize) -> usize {
    const MIN_ROWS: usize = 16;
    const MIN_TOTAL: usize = 16 << 10;
    const MAX_CHUNK: usize = 512 << 10;
    let threads = rayon::current_num_threads();
    let total = rows.saturating_mul(cost_per_row);
    if threads <= 1 || total < MIN_TOTAL || crate::team::in_chunk() {
        return 1;
    }
    let want = (4 * threads).max(total / MAX_CHUNK);
    want.min(rows / MIN_ROWS).max(1)
}
