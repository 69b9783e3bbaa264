//! An incremental Merkle-Patricia trie over hashed (32-byte) keys, Ethereum's (docs/evm.md,
//! "Block headers"): alloy-trie's [`HashBuilder`] computes every root, fed with the leaves
//! of what changed and the cached hashes of the branch nodes that did not.
//!
//! What is kept: the leaves (key to RLP value, sorted) and the hash of every branch node
//! that is a direct child of another branch, by path. A branch node's hash depends only on
//! the leaves under its path (not on its depth: the path above it is in its parent), so it
//! stays valid until a key under its path changes. [`Trie::commit`] forgets the cached
//! hashes on the paths of the changed keys, then walks down those paths only: each branch
//! on them is rebuilt from its 16 children, an unchanged child given by its cached hash
//! (one item), a changed one walked in turn down to a subtree of at most [`DIRECT_LEAVES`]
//! leaves, fed leaf by leaf. Cost per commit: 16 map look-ups and one branch hash
//! per level for each changed key (about log16(leaves) levels), plus
//! the leaves of an unchanged subtree that has no cached hash (a branch under an extension
//! node; rare with keccak keys, small when it happens). A commit that changes more than an
//! eighth of the leaves rebuilds the whole trie instead (cheaper then).
//!
//! Proofs ([`Trie::proof`]) walk the same way with the proved key's path open: the nodes on
//! the path are rebuilt and retained, the rest are cached hashes.
//!
//! A past version of the trie ([`Trie::proof_over`]: `eth_getProof` at a past block) is the
//! committed trie with an [`Overlay`] of the leaves changed since laid over it: the paths
//! of the overlay's keys are opened as a commit opens changed keys, so its root and proofs
//! cost what changed since, never the trie.

use alloy_primitives::{Bytes, B256};
use alloy_trie::proof::ProofRetainer;
use alloy_trie::{HashBuilder, Nibbles, EMPTY_ROOT_HASH};
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// A changed subtree with at most this many leaves is fed leaf by leaf (cheaper than 16
/// look-ups of its children).
const DIRECT_LEAVES: usize = 16;

/// Leaves laid over a committed trie (key to value, `None`: absent), for a version of it
/// that differs in those keys only.
pub type Overlay = BTreeMap<B256, Option<Vec<u8>>>;

/// The leaves of a trie with an overlay laid over them, from `low` to `high`, in key order.
struct Merged<'a> {
    leaves: std::iter::Peekable<std::collections::btree_map::Range<'a, B256, Vec<u8>>>,
    overlay: std::iter::Peekable<std::collections::btree_map::Range<'a, B256, Option<Vec<u8>>>>,
}

impl<'a> Iterator for Merged<'a> {
    type Item = (&'a B256, &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let leaf = self.leaves.peek().map(|(k, _)| **k);
            let over = self.overlay.peek().map(|(k, _)| **k);
            let order = match (leaf, over) {
                (None, None) => return None,
                (Some(_), None) => std::cmp::Ordering::Less,
                (None, Some(_)) => std::cmp::Ordering::Greater,
                (Some(leaf), Some(over)) => leaf.cmp(&over),
            };
            if order == std::cmp::Ordering::Less {
                return self.leaves.next().map(|(k, v)| (k, v.as_slice()));
            }
            if order == std::cmp::Ordering::Equal {
                self.leaves.next();
            }
            if let Some((key, Some(value))) = self.overlay.next() {
                return Some((key, value.as_slice()));
            }
        }
    }
}

/// An incremental Merkle-Patricia trie (see the module doc).
#[derive(Clone, Debug)]
pub struct Trie {
    /// Hashed key to the leaf's value (RLP).
    leaves: BTreeMap<B256, Vec<u8>>,
    /// Hash of each branch node that is a direct child of a branch, by path, as of the last
    /// commit. Looked up, inserted and removed only, never iterated: its order (a hash
    /// seed's) never shows.
    branches: HashMap<Nibbles, B256>,
    /// The longest path in `branches` (at most this many prefixes of a key are cached).
    depth: usize,
    /// Keys changed since the last commit.
    dirty: BTreeSet<B256>,
    /// The root as of the last commit.
    root: B256,
}

impl Default for Trie {
    fn default() -> Trie {
        Trie {
            leaves: BTreeMap::new(),
            branches: HashMap::new(),
            depth: 0,
            dirty: BTreeSet::new(),
            root: EMPTY_ROOT_HASH,
        }
    }
}

/// The first and last 32-byte keys under a path.
fn bounds(path: &Nibbles) -> (B256, B256) {
    let mut low = [0u8; 32];
    let mut high = [0xffu8; 32];
    for i in 0..path.len() {
        let nibble = path.get_unchecked(i);
        let shift = if i % 2 == 0 { 4 } else { 0 };
        low[i / 2] |= nibble << shift;
        high[i / 2] &= !((0x0f & !nibble) << shift);
    }
    (B256::from(low), B256::from(high))
}

impl Trie {
    /// An empty trie.
    pub fn new() -> Trie {
        Trie::default()
    }

    /// Sets a leaf (committed at the next [`Trie::commit`]).
    pub fn insert(&mut self, key: B256, value: Vec<u8>) {
        if self.leaves.get(&key) != Some(&value) {
            self.leaves.insert(key, value);
            self.dirty.insert(key);
        }
    }

    /// Removes a leaf (committed at the next [`Trie::commit`]).
    pub fn remove(&mut self, key: &B256) {
        if self.leaves.remove(key).is_some() {
            self.dirty.insert(*key);
        }
    }

    /// A leaf's value.
    pub fn get(&self, key: &B256) -> Option<&[u8]> {
        self.leaves.get(key).map(Vec::as_slice)
    }

    /// Leaves.
    pub fn len(&self) -> usize {
        self.leaves.len()
    }

    /// Whether it has no leaf.
    pub fn is_empty(&self) -> bool {
        self.leaves.is_empty()
    }

    /// Branch hashes cached (a measure of its memory).
    pub fn cached_branches(&self) -> usize {
        self.branches.len()
    }

    /// The root as of the last [`Trie::commit`].
    pub fn root(&self) -> B256 {
        self.root
    }

    /// Recomputes the root over the changes since the last commit (see the module doc for
    /// the cost) and returns it.
    pub fn commit(&mut self) -> B256 {
        if self.dirty.is_empty() {
            return self.root;
        }
        let full = self.dirty.len() * 8 >= self.leaves.len();
        if full {
            self.branches.clear();
            self.depth = 0;
        } else {
            self.forget_dirty_paths();
        }
        let open = if full {
            BTreeSet::new()
        } else {
            std::mem::take(&mut self.dirty)
        };
        let mut builder = HashBuilder::default()
            .with_updates(true)
            .with_all_branch_nodes(true);
        self.feed(&mut builder, Nibbles::default(), &open, &Overlay::new());
        self.root = builder.root();
        self.remember(builder);
        self.dirty.clear();
        self.root
    }

    /// Forgets the cached hash of every branch on the path of a changed key.
    fn forget_dirty_paths(&mut self) {
        for key in &self.dirty {
            let path = Nibbles::unpack(key);
            for len in 1..=self.depth {
                self.branches.remove(&path.slice(..len));
            }
        }
    }

    /// Caches the hash of each branch child of each branch the builder built.
    fn remember(&mut self, builder: HashBuilder) {
        let (_, updates) = builder.split();
        for (path, node) in updates {
            for nibble in 0..16u8 {
                if node.hash_mask.is_bit_set(nibble) {
                    let mut child = path;
                    child.push(nibble);
                    self.depth = self.depth.max(child.len());
                    self.branches.insert(child, node.hash_for_nibble(nibble));
                }
            }
        }
    }

    /// Feeds the builder everything under `path`, in key order, with `overlay` laid over
    /// the leaves (its keys are in `open`): a cached branch hash for an unchanged subtree,
    /// its leaves if it has none, and for a subtree with an `open` key (changed, or proved)
    /// its leaves if few ([`DIRECT_LEAVES`]), else its 16 children.
    fn feed(
        &self,
        builder: &mut HashBuilder,
        path: Nibbles,
        open: &BTreeSet<B256>,
        overlay: &Overlay,
    ) {
        let (low, high) = bounds(&path);
        if open.range(low..=high).next().is_none() {
            match self.branches.get(&path) {
                Some(hash) => builder.add_branch(path, *hash, false),
                None => self.feed_leaves(builder, low, high, overlay),
            }
            return;
        }
        if self.merged(low, high, overlay).nth(DIRECT_LEAVES).is_none() {
            return self.feed_leaves(builder, low, high, overlay);
        }
        for nibble in 0..16u8 {
            let mut child = path;
            child.push(nibble);
            self.feed(builder, child, open, overlay);
        }
    }

    /// The leaves from `low` to `high` with `overlay` laid over them.
    fn merged<'a>(&'a self, low: B256, high: B256, overlay: &'a Overlay) -> Merged<'a> {
        Merged {
            leaves: self.leaves.range(low..=high).peekable(),
            overlay: overlay.range(low..=high).peekable(),
        }
    }

    /// Feeds the builder every leaf from `low` to `high` (`overlay` laid over them).
    fn feed_leaves(&self, builder: &mut HashBuilder, low: B256, high: B256, overlay: &Overlay) {
        for (key, value) in self.merged(low, high, overlay) {
            builder.add_leaf(Nibbles::unpack(key), value);
        }
    }

    /// The proof of `key` (present or absent) against [`Trie::root`] after a commit: the
    /// RLP of each node on its path from the root, as EIP-1186's `accountProof`. Cost: the
    /// path's branches rebuilt from cached hashes (as one changed key's commit).
    pub fn proof(&self, key: &B256) -> Vec<Bytes> {
        self.proof_over(key, &Overlay::new()).1
    }

    /// The root and the proof of `key` of this committed trie with `overlay` laid over its
    /// leaves (a past version: see the module doc). Cost: the paths of the overlay's keys
    /// and of `key` rebuilt from cached hashes.
    pub fn proof_over(&self, key: &B256, overlay: &Overlay) -> (B256, Vec<Bytes>) {
        debug_assert!(self.dirty.is_empty(), "proofs are of committed tries");
        let target = Nibbles::unpack(key);
        let mut builder =
            HashBuilder::default().with_proof_retainer(ProofRetainer::new(vec![target]));
        let mut open: BTreeSet<B256> = overlay.keys().copied().collect();
        open.insert(*key);
        self.feed(&mut builder, Nibbles::default(), &open, overlay);
        let root = builder.root();
        let nodes = builder.take_proof_nodes().matching_nodes_sorted(&target);
        (root, nodes.into_iter().map(|(_, node)| node).collect())
    }

    /// The root of this committed trie with `overlay` laid over its leaves.
    pub fn root_over(&self, overlay: &Overlay) -> B256 {
        if overlay.is_empty() {
            return self.root;
        }
        let mut builder = HashBuilder::default();
        let open = overlay.keys().copied().collect();
        self.feed(&mut builder, Nibbles::default(), &open, overlay);
        builder.root()
    }
}

/// The root of `leaves` built from scratch with one [`HashBuilder`] (no cache: O(leaves);
/// tests and checks).
pub fn root_from_scratch<'a>(leaves: impl IntoIterator<Item = (&'a B256, &'a [u8])>) -> B256 {
    let sorted: BTreeMap<_, _> = leaves.into_iter().collect();
    let mut builder = HashBuilder::default();
    for (key, value) in sorted {
        builder.add_leaf(Nibbles::unpack(key), value);
    }
    builder.root()
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloy_primitives::keccak256;
    use alloy_trie::proof::verify_proof;
    use proptest::prelude::*;

    #[test]
    fn bounds_cover_a_prefix() {
        let path = Nibbles::from_nibbles([0xa, 0x5, 0x3]);
        let (low, high) = bounds(&path);
        assert_eq!(low[..2], [0xa5, 0x30]);
        assert_eq!(high[..2], [0xa5, 0x3f]);
        assert!(high[2..].iter().all(|&b| b == 0xff) && low[2..].iter().all(|&b| b == 0));
    }

    #[test]
    fn an_empty_trie_has_the_empty_root() {
        let mut trie = Trie::new();
        assert_eq!(trie.commit(), EMPTY_ROOT_HASH);
        trie.insert(B256::repeat_byte(1), vec![0x01]);
        trie.commit();
        trie.remove(&B256::repeat_byte(1));
        assert_eq!(trie.commit(), EMPTY_ROOT_HASH);
    }

    /// Keys from a small space (so that writes hit existing keys and deletes happen) hashed
    /// to spread over the trie; values of varied lengths.
    fn key(k: u16) -> B256 {
        keccak256(k.to_be_bytes())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        /// After every batch of random inserts and removes, the incremental root equals a
        /// from-scratch build over the model, and proofs of present and absent keys verify.
        #[test]
        fn incremental_root_matches_a_fresh_build(
            batches in prop::collection::vec(
                prop::collection::vec((0u16..3000, prop::option::of(1usize..40)), 1..60),
                1..12,
            ),
        ) {
            let mut trie = Trie::new();
            let mut model: BTreeMap<B256, Vec<u8>> = BTreeMap::new();
            for batch in batches {
                for (k, value) in batch {
                    match value {
                        Some(len) => {
                            let v = vec![0x42; len];
                            trie.insert(key(k), v.clone());
                            model.insert(key(k), v);
                        }
                        None => {
                            trie.remove(&key(k));
                            model.remove(&key(k));
                        }
                    }
                }
                let root = trie.commit();
                let fresh = root_from_scratch(model.iter().map(|(k, v)| (k, v.as_slice())));
                prop_assert_eq!(root, fresh);
                for k in [0u16, 7, 2999] {
                    let proof = trie.proof(&key(k));
                    let expected = model.get(&key(k)).cloned();
                    prop_assert!(verify_proof(root, Nibbles::unpack(key(k)), expected, &proof).is_ok());
                }
            }
        }
    }

    /// A large trie, then small batches: the incremental path (not the full rebuild) is the
    /// one taken, and still matches.
    #[test]
    fn small_changes_to_a_large_trie_match_a_fresh_build() {
        let mut trie = Trie::new();
        let mut model = BTreeMap::new();
        for k in 0..5000u16 {
            trie.insert(key(k), vec![k as u8 | 1; 40]);
            model.insert(key(k), vec![k as u8 | 1; 40]);
        }
        trie.commit();
        for round in 0..20u16 {
            for j in 0..30u16 {
                let k = (round * 211 + j * 97) % 6000;
                if j % 4 == 0 {
                    trie.remove(&key(k));
                    model.remove(&key(k));
                } else {
                    trie.insert(key(k), vec![round as u8; 1 + j as usize]);
                    model.insert(key(k), vec![round as u8; 1 + j as usize]);
                }
            }
            let fresh = root_from_scratch(model.iter().map(|(k, v)| (k, v.as_slice())));
            assert_eq!(trie.commit(), fresh, "round {round}");
        }
        assert!(trie.cached_branches() > 0);
    }
}
