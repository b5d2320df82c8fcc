//! The fixed pool of paged KV blocks: reference counts, the free list in eviction (LRU) order,
//! and the prefix cache that maps a full block's chained hash, per KV cache group, to the block
//! holding it. Blocks are interchangeable between groups (each holds one group's layers for
//! `block_size` positions); a cached block belongs to the group that computed it.
//!
//! A block is in exactly one of three states:
//! - **owned**: reference count ≥ 1, held in the block tables of that many sequences. A block
//!   with more than one owner is always a cached (full, immutable) block.
//! - **free and cached**: reference count 0, still findable by its hash until it is evicted.
//! - **free**: reference count 0, no hash.
//!
//! Free blocks (cached or not) sit in one queue in eviction order: [`BlockPool::allocate`]
//! takes from the front and drops the hash of a cached block it takes. Released blocks with a
//! hash go to the back (most recently used); released blocks without one go to the front, as
//! they are worthless to keep.

use std::collections::{BTreeMap, HashMap};

use switchyard_core::BlockId;

use crate::error::InvariantViolation;
use crate::hash::BlockHash;

/// What a cached block holds: its hash, its parent's hash and its tokens (compared on lookup,
/// so a hash collision alone cannot hand out a wrong block).
#[derive(Debug, Clone)]
struct CachedContent {
    group: usize,
    hash: BlockHash,
    parent: Option<BlockHash>,
    tokens: Box<[u32]>,
}

#[derive(Debug, Clone, Default)]
struct BlockState {
    ref_count: u32,
    /// Key in the free queue while free.
    free_key: Option<i64>,
    cached: Option<CachedContent>,
}

/// A fixed number of KV blocks of `block_size` token slots each. See the module docs.
#[derive(Debug, Clone)]
pub struct BlockPool {
    block_size: usize,
    blocks: Vec<BlockState>,
    /// Free blocks in eviction order (smallest key first).
    free: BTreeMap<i64, BlockId>,
    next_front: i64,
    next_back: i64,
    cache: HashMap<(usize, BlockHash), BlockId>,
}

impl BlockPool {
    /// A pool of `num_blocks` free blocks, queued in id order.
    ///
    /// # Panics
    /// If `block_size` is 0 or `num_blocks` does not fit in a `u32`.
    pub fn new(num_blocks: usize, block_size: usize) -> Self {
        assert!(block_size > 0, "block_size must be at least 1");
        let n = u32::try_from(num_blocks).expect("num_blocks must fit in a u32");
        let mut pool = Self {
            block_size,
            blocks: vec![BlockState::default(); num_blocks],
            free: BTreeMap::new(),
            next_front: -1,
            next_back: 0,
            cache: HashMap::new(),
        };
        for b in 0..n {
            pool.push_back(BlockId(b));
        }
        pool
    }

    fn state(&self, block: BlockId) -> &BlockState {
        &self.blocks[block.0 as usize]
    }

    fn state_mut(&mut self, block: BlockId) -> &mut BlockState {
        &mut self.blocks[block.0 as usize]
    }

    fn push_back(&mut self, block: BlockId) {
        let key = self.next_back;
        self.next_back += 1;
        self.free.insert(key, block);
        self.state_mut(block).free_key = Some(key);
    }

    fn push_front(&mut self, block: BlockId) {
        let key = self.next_front;
        self.next_front -= 1;
        self.free.insert(key, block);
        self.state_mut(block).free_key = Some(key);
    }

    /// Tokens per block.
    pub fn block_size(&self) -> usize {
        self.block_size
    }

    /// Total number of blocks.
    pub fn num_blocks(&self) -> usize {
        self.blocks.len()
    }

    /// Blocks with no owner (cached or not): what [`allocate`](Self::allocate) can hand out.
    pub fn num_free_blocks(&self) -> usize {
        self.free.len()
    }

    /// Blocks with at least one owner.
    pub fn num_used_blocks(&self) -> usize {
        self.blocks.len() - self.free.len()
    }

    /// Blocks findable by hash (owned or free).
    pub fn num_cached_blocks(&self) -> usize {
        self.cache.len()
    }

    /// Fraction of blocks that are owned, in `0.0..=1.0` (0 for an empty pool).
    pub fn usage(&self) -> f32 {
        if self.blocks.is_empty() {
            return 0.0;
        }
        self.num_used_blocks() as f32 / self.blocks.len() as f32
    }

    /// Number of owners of `block`.
    ///
    /// # Panics
    /// If `block` is not in the pool.
    pub fn ref_count(&self, block: BlockId) -> u32 {
        self.state(block).ref_count
    }

    /// The hash under which `block` is findable, if any.
    ///
    /// # Panics
    /// If `block` is not in the pool.
    pub fn cached_hash(&self, block: BlockId) -> Option<BlockHash> {
        self.state(block).cached.as_ref().map(|c| c.hash)
    }

    /// The KV cache group whose prefix cache holds `block`, if any.
    ///
    /// # Panics
    /// If `block` is not in the pool.
    pub fn cached_group(&self, block: BlockId) -> Option<usize> {
        self.state(block).cached.as_ref().map(|c| c.group)
    }

    /// Free blocks, next to be evicted first.
    pub fn free_blocks(&self) -> impl Iterator<Item = BlockId> + '_ {
        self.free.values().copied()
    }

    /// Takes `n` blocks from the front of the free queue (evicting their cache entries) and
    /// gives each one owner. `None`, with nothing changed, if fewer than `n` are free.
    pub fn allocate(&mut self, n: usize) -> Option<Vec<BlockId>> {
        if n > self.free.len() {
            return None;
        }
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            let (_, block) = self.free.pop_first()?;
            let state = &mut self.blocks[block.0 as usize];
            state.free_key = None;
            state.ref_count = 1;
            if let Some(c) = state.cached.take() {
                if self.cache.get(&(c.group, c.hash)) == Some(&block) {
                    self.cache.remove(&(c.group, c.hash));
                }
            }
            out.push(block);
        }
        Some(out)
    }

    /// The longest run of cached blocks of KV group `group` matching the start of `tokens`.
    /// `hashes[i]` must be the chained hash of block `i` of `tokens` (see
    /// [`hash_full_blocks`](crate::hash_full_blocks)); at most `hashes.len()` blocks are
    /// returned. Nothing is acquired.
    pub fn find_cached_prefix(
        &self,
        group: usize,
        tokens: &[u32],
        hashes: &[BlockHash],
    ) -> Vec<BlockId> {
        let mut out = Vec::new();
        for i in 0..hashes.len() {
            match self.find_cached_block(group, i, tokens, hashes) {
                Some(b) => out.push(b),
                None => break,
            }
        }
        out
    }

    /// The cached block of KV group `group` holding block `i` of `tokens` (whose chained
    /// hashes are `hashes`, at least `i + 1` of them), if any. Nothing is acquired.
    pub fn find_cached_block(
        &self,
        group: usize,
        i: usize,
        tokens: &[u32],
        hashes: &[BlockHash],
    ) -> Option<BlockId> {
        let bs = self.block_size;
        let chunk = tokens.get(i * bs..(i + 1) * bs)?;
        let hash = hashes.get(i)?;
        let &block = self.cache.get(&(group, *hash))?;
        let c = self.state(block).cached.as_ref()?;
        let parent = i.checked_sub(1).map(|p| hashes[p]);
        (c.group == group && c.hash == *hash && c.parent == parent && *c.tokens == *chunk)
            .then_some(block)
    }

    /// Adds one owner to each block, taking free ones out of the free queue (a prefix-cache
    /// hit). Use with blocks from [`find_cached_prefix`](Self::find_cached_prefix).
    pub fn acquire(&mut self, blocks: &[BlockId]) {
        for &block in blocks {
            if let Some(key) = self.state_mut(block).free_key.take() {
                self.free.remove(&key);
            }
            self.state_mut(block).ref_count += 1;
        }
    }

    /// Drops one owner from each block. Blocks are visited last to first, so when a sequence
    /// frees its table its tail blocks are evicted before its prefix blocks.
    ///
    /// # Panics
    /// If a block has no owner.
    pub fn release(&mut self, blocks: &[BlockId]) {
        for &block in blocks.iter().rev() {
            let state = self.state_mut(block);
            assert!(state.ref_count > 0, "release of free block {}", block.0);
            state.ref_count -= 1;
            if state.ref_count == 0 {
                if state.cached.is_some() {
                    self.push_back(block);
                } else {
                    self.push_front(block);
                }
            }
        }
    }

    /// Makes an owned block whose `tokens` are computed (and full) findable under `hash` in
    /// KV group `group`'s prefix cache. Returns `false`, leaving it uncached, when the block is
    /// already cached or another block already holds `hash` in that group (two sequences
    /// computed the same prefix at once).
    ///
    /// # Panics
    /// If the block has no owner or `tokens` is not exactly one block long.
    pub fn cache_full_block(
        &mut self,
        block: BlockId,
        group: usize,
        parent: Option<BlockHash>,
        hash: BlockHash,
        tokens: &[u32],
    ) -> bool {
        assert_eq!(tokens.len(), self.block_size, "only full blocks are cached");
        let state = &self.blocks[block.0 as usize];
        assert!(
            state.ref_count > 0,
            "block {} is free; cache it while owned",
            block.0
        );
        if state.cached.is_some() || self.cache.contains_key(&(group, hash)) {
            return false;
        }
        self.cache.insert((group, hash), block);
        self.state_mut(block).cached = Some(CachedContent {
            group,
            hash,
            parent,
            tokens: tokens.into(),
        });
        true
    }

    /// Checks the pool's own consistency: the free queue holds exactly the blocks without
    /// owners, and the hash map and the blocks' cached contents agree. O(blocks).
    pub fn check_invariants(&self) -> Result<(), InvariantViolation> {
        let fail = |m: String| Err(InvariantViolation(m));
        for (&key, &block) in &self.free {
            let st = self.state(block);
            if st.free_key != Some(key) || st.ref_count != 0 {
                return fail(format!(
                    "free queue entry {key} -> block {} is inconsistent",
                    block.0
                ));
            }
        }
        let mut num_cached = 0;
        for (i, st) in self.blocks.iter().enumerate() {
            if (st.ref_count == 0) != st.free_key.is_some() {
                return fail(format!(
                    "block {i}: ref_count {} but queued {:?}",
                    st.ref_count, st.free_key
                ));
            }
            if let Some(c) = &st.cached {
                num_cached += 1;
                if self.cache.get(&(c.group, c.hash)).map(|b| b.0 as usize) != Some(i) {
                    return fail(format!("block {i} is cached but its hash maps elsewhere"));
                }
                if c.tokens.len() != self.block_size {
                    return fail(format!("cached block {i} holds {} tokens", c.tokens.len()));
                }
            }
        }
        if num_cached != self.cache.len() {
            return fail(format!(
                "{} hash entries for {num_cached} cached blocks",
                self.cache.len()
            ));
        }
        if self.free.len() + self.num_used_blocks() != self.blocks.len() {
            return fail("free + used != total".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hash::hash_full_blocks;

    fn ids(v: &[u32]) -> Vec<BlockId> {
        v.iter().map(|&b| BlockId(b)).collect()
    }

    #[test]
    fn allocate_release_and_exhaustion() {
        let mut pool = BlockPool::new(3, 2);
        let a = pool.allocate(2).unwrap();
        assert_eq!(a, ids(&[0, 1]));
        assert_eq!(pool.allocate(2), None, "only one block left");
        assert_eq!(pool.num_free_blocks(), 1);
        pool.release(&a);
        assert_eq!(pool.num_free_blocks(), 3);
        pool.check_invariants().unwrap();
    }

    #[test]
    fn cached_block_survives_release_and_is_evicted_lru() {
        let mut pool = BlockPool::new(4, 2);
        let toks = [7, 8, 9, 10];
        let hashes = hash_full_blocks(&toks, 2);
        let a = pool.allocate(2).unwrap();
        assert!(pool.cache_full_block(a[0], 0, None, hashes[0], &toks[..2]));
        assert!(pool.cache_full_block(a[1], 0, Some(hashes[0]), hashes[1], &toks[2..]));
        pool.release(&a);
        // Uncached blocks 2, 3 are evicted before the cached ones; tail block before prefix.
        assert_eq!(pool.free_blocks().collect::<Vec<_>>(), ids(&[2, 3, 1, 0]));
        assert_eq!(pool.find_cached_prefix(0, &toks, &hashes), a);
        // A different first block: no hit, even for an equal second block.
        let other = hash_full_blocks(&[1, 8, 9, 10], 2);
        assert!(pool
            .find_cached_prefix(0, &[1, 8, 9, 10], &other)
            .is_empty());
        // Taking three blocks evicts 2, 3 and then block 1 (LRU among cached).
        let b = pool.allocate(3).unwrap();
        assert_eq!(b, ids(&[2, 3, 1]));
        assert_eq!(pool.find_cached_prefix(0, &toks, &hashes), ids(&[0]));
        assert_eq!(pool.num_cached_blocks(), 1);
        pool.check_invariants().unwrap();
    }

    #[test]
    fn acquire_takes_a_cached_block_off_the_free_queue() {
        let mut pool = BlockPool::new(2, 1);
        let h = hash_full_blocks(&[5], 1);
        let a = pool.allocate(1).unwrap();
        pool.cache_full_block(a[0], 0, None, h[0], &[5]);
        pool.release(&a);
        assert_eq!(pool.num_free_blocks(), 2);
        pool.acquire(&a);
        pool.acquire(&a);
        assert_eq!(pool.ref_count(a[0]), 2);
        assert_eq!(pool.num_free_blocks(), 1);
        assert_eq!(
            pool.allocate(1).unwrap(),
            ids(&[1]),
            "the shared block is not handed out"
        );
        pool.check_invariants().unwrap();
    }

    #[test]
    fn duplicate_hash_stays_uncached() {
        let mut pool = BlockPool::new(2, 1);
        let h = hash_full_blocks(&[5], 1);
        let a = pool.allocate(2).unwrap();
        assert!(pool.cache_full_block(a[0], 0, None, h[0], &[5]));
        assert!(!pool.cache_full_block(a[1], 0, None, h[0], &[5]));
        assert_eq!(pool.cached_hash(a[1]), None);
        pool.check_invariants().unwrap();
    }

    #[test]
    fn prefix_caches_are_per_group() {
        let mut pool = BlockPool::new(3, 1);
        let h = hash_full_blocks(&[5], 1);
        let a = pool.allocate(2).unwrap();
        assert!(pool.cache_full_block(a[0], 0, None, h[0], &[5]));
        assert!(
            pool.cache_full_block(a[1], 1, None, h[0], &[5]),
            "same hash, other group"
        );
        assert_eq!(pool.find_cached_prefix(0, &[5], &h), ids(&[a[0].0]));
        assert_eq!(pool.find_cached_prefix(1, &[5], &h), ids(&[a[1].0]));
        assert!(pool.find_cached_prefix(2, &[5], &h).is_empty());
        assert_eq!(pool.cached_group(a[1]), Some(1));
        pool.release(&a[..1]);
        pool.release(&a[1..]);
        // Evicting group 0's copy leaves group 1's findable.
        let _b = pool.allocate(2).unwrap();
        assert!(pool.find_cached_prefix(0, &[5], &h).is_empty());
        assert_eq!(pool.find_cached_prefix(1, &[5], &h), ids(&[a[1].0]));
        pool.check_invariants().unwrap();
    }

    #[test]
    #[should_panic(expected = "release of free block")]
    fn double_release_panics() {
        let mut pool = BlockPool::new(1, 1);
        let a = pool.allocate(1).unwrap();
        pool.release(&a);
        pool.release(&a);
    }
}
