//! [`Scheduler::check_invariants`]: the scheduler's bookkeeping checked from scratch (tests).

use super::*;

impl Scheduler {
    /// Checks every internal invariant (O(blocks + tokens); meant for tests and debug runs):
    /// the pool's own ones; waiting requests own no blocks; a running request has one table
    /// per KV group, each covering exactly its computed tokens, with [`BlockId::NULL`] only in
    /// a sliding group and only before the first block its next query reads (exactly its
    /// leading `num_skipped` entries); it holds no block twice (across all its tables) and
    /// has every block it may still write owned by it alone and uncached; each block's
    /// reference count equals the number of table entries holding it; every shared block is
    /// cached, in the group whose table holds it, with the hash the sequence expects at that
    /// index; running ≤ `max_num_seqs`.
    pub fn check_invariants(&self) -> Result<(), InvariantViolation> {
        self.pool.check_invariants()?;
        let fail = |m: String| Err(InvariantViolation(m));
        let bs = self.config.block_size;
        let groups = &self.config.kv_groups;
        let mut owners = vec![0u32; self.pool.num_blocks()];
        let mut num_running = 0;
        for (id, seq) in &self.seqs {
            if seq.id() != *id {
                return fail(format!("request {} stored under {}", seq.id().0, id.0));
            }
            if seq.tables.len() != groups.len() || seq.num_skipped.len() != groups.len() {
                return fail(format!(
                    "request {}: {} tables for {} KV groups",
                    id.0,
                    seq.tables.len(),
                    groups.len()
                ));
            }
            if !seq.running {
                if seq.tables.iter().any(|t| !t.is_empty())
                    || seq.num_skipped.iter().any(|&n| n != 0)
                    || seq.num_computed != 0
                    || seq.num_cached_blocks != 0
                    || !self.waiting.contains(&seq.key)
                {
                    return fail(format!(
                        "waiting request {} holds state or is not queued",
                        id.0
                    ));
                }
                continue;
            }
            num_running += 1;
            if self.waiting.contains(&seq.key) || !self.running.contains(id) {
                return fail(format!("running request {} is queued wrongly", id.0));
            }
            if seq.num_computed > seq.tokens.len() + seq.pending_draft.len()
                || seq.num_computed == 0
            {
                return fail(format!(
                    "request {}: {} computed of {}",
                    id.0,
                    seq.num_computed,
                    seq.tokens.len()
                ));
            }
            if seq.num_cached_blocks * bs > seq.num_computed {
                return fail(format!(
                    "request {}: cached blocks beyond computed tokens",
                    id.0
                ));
            }
            let mut seen = BTreeSet::new();
            for (g, (table, &kind)) in seq.tables.iter().zip(groups).enumerate() {
                if table.len() != seq.num_computed.div_ceil(bs) {
                    return fail(format!(
                        "request {} group {g}: {} blocks for {} computed tokens",
                        id.0,
                        table.len(),
                        seq.num_computed
                    ));
                }
                let skipped = seq.num_skipped[g];
                if skipped > first_needed_block(kind, seq.num_computed, bs)
                    || table
                        .iter()
                        .position(|b| !b.is_null())
                        .unwrap_or(table.len())
                        != skipped
                {
                    return fail(format!(
                        "request {} group {g} ({kind:?}): {skipped} skipped entries in {table:?} \
                         with {} computed tokens",
                        id.0, seq.num_computed
                    ));
                }
                for (i, &b) in table.iter().enumerate().skip(skipped) {
                    if b.is_null() || b.0 as usize >= owners.len() {
                        return fail(format!(
                            "request {} group {g}: entry {i} is {b:?} inside the window",
                            id.0
                        ));
                    }
                    owners[b.0 as usize] += 1;
                    if !seen.insert(b) {
                        return fail(format!("request {} holds block {} twice", id.0, b.0));
                    }
                    match self.pool.cached_hash(b) {
                        Some(h) => {
                            let expected = seq.hashes.get(i).copied();
                            if i >= seq.num_cached_blocks
                                || expected != Some(h)
                                || self.pool.cached_group(b) != Some(g)
                            {
                                return fail(format!(
                                    "request {} group {g}: block {} at index {i} is cached with \
                                     a foreign hash or group",
                                    id.0, b.0
                                ));
                            }
                        }
                        None if i >= seq.num_cached_blocks && self.pool.ref_count(b) != 1 => {
                            return fail(format!(
                                "request {}: writable block {} is shared",
                                id.0, b.0
                            ));
                        }
                        None => {}
                    }
                }
            }
        }
        for (i, &n) in owners.iter().enumerate() {
            let b = BlockId(i as u32);
            if self.pool.ref_count(b) != n {
                return fail(format!(
                    "block {i}: ref_count {} but {n} tables hold it",
                    self.pool.ref_count(b)
                ));
            }
            if n > 1 && self.pool.cached_hash(b).is_none() {
                return fail(format!("block {i} is shared by {n} tables but not cached"));
            }
        }
        if num_running != self.running.len() || self.running.len() > self.config.max_num_seqs {
            return fail(format!(
                "{} running entries for {num_running} running requests",
                self.running.len()
            ));
        }
        if self.waiting.len() + num_running != self.seqs.len() {
            return fail("waiting queue holds unknown requests".into());
        }
        Ok(())
    }
}
