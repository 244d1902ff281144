//! Garbage collection of older generations' objects: which indexes, layers and claims of a
//! segment the newest attachment may delete (RFC 0009 §5, issue #18).
//!
//! Each attachment deletes its own superseded layers as it checkpoints ([`crate::checkpoint`]);
//! what an attachment that ended (a restart, a move, a crash) left behind — its last index, the
//! layers only that index named, its claim — is deleted here, by the **newest** attachment, in a
//! pass after one of its checkpoints. This module only plans ([`plan`], pure and unit-tested);
//! the checkpointer lists the segment's objects, calls it, and deletes.
//!
//! ## The rule
//!
//! Attachment `G` (its claim the newest, its own index durable at checkpoint LSN `C`) deletes,
//! among objects of generations **older than `G`** only:
//!
//! 1. every index whose checkpoint LSN is at or below `C` (a restore takes the highest checkpoint
//!    LSN, ties to the newest generation, so it never picks one of them while `G`'s exists; an
//!    index above `C`, or one that cannot be read, is kept);
//! 2. every layer that no index still present names (`G`'s own chain may name older
//!    generations' layers: those stay as long as it does);
//! 3. every claim whose generation has no index left.
//!
//! ## Why an older attachment cannot lose what it names
//!
//! An older attachment `g` may still be running (stale: it has not noticed `G`'s claim). Its
//! danger is an index it uploads *after* the pass, naming a layer the pass deleted. Two things
//! close that:
//!
//! - **an attachment checks that its claim is still the newest before every index upload** and
//!   uploads nothing more once it is not ([`crate::checkpoint`]). So every index `g` uploads
//!   after `G`'s claim was *started* before it: its PUT was in flight at the claim;
//! - **the pass runs only once `G`'s claim is older than `--gc-delay`** (default 10 minutes),
//!   far longer than a PUT can be in flight (the object store client's timeouts are seconds). By
//!   then every index `g` will ever write is visible to the pass's listing, and the layers it
//!   names are kept (rule 2). `g` writes none after.
//!
//! A newer attachment `g'` that claims during a pass makes `G` stale; `G` checked its claim after
//! uploading the index it passes on, so `g'`, which reads the newest index after claiming, reads
//! that index or a newer one — whose layers rule 2 keeps. Deletions go indexes, then layers, then
//! claims, each idempotent: a pass cut short is finished by the next. `G`'s own claim and index
//! are never deleted here, so `max + 1` (the next claim) only grows.

use borealis_core::Lsn;
use borealis_objstore::keys::Generation;
use std::collections::BTreeSet;

/// An index as the pass sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IndexSeen {
    pub generation: Generation,
    /// `None`: it could not be read or checked (kept, and everything it might name with it).
    pub checkpoint_lsn: Option<Lsn>,
    /// The layers it names, as `(name, generation)`.
    pub layers: Vec<(String, Generation)>,
}

/// A segment's objects, listed.
#[derive(Clone, Debug, Default)]
pub struct Listing {
    pub claims: Vec<Generation>,
    pub indexes: Vec<IndexSeen>,
    pub layers: Vec<(String, Generation)>,
}

/// What the pass deletes, in this order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    pub indexes: Vec<Generation>,
    pub layers: Vec<(String, Generation)>,
    pub claims: Vec<Generation>,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.indexes.is_empty() && self.layers.is_empty() && self.claims.is_empty()
    }
}

/// The pass of attachment `own`, whose index is durable at `own_checkpoint` (see the module
/// docs for the rule and why it is safe).
pub fn plan(listing: &Listing, own: Generation, own_checkpoint: Lsn) -> Plan {
    let older = |g: Generation| g < own;
    let indexes: Vec<Generation> = listing
        .indexes
        .iter()
        .filter(|i| older(i.generation) && i.checkpoint_lsn.is_some_and(|l| l <= own_checkpoint))
        .map(|i| i.generation)
        .collect();
    let kept: Vec<&IndexSeen> = listing
        .indexes
        .iter()
        .filter(|i| !indexes.contains(&i.generation))
        .collect();
    // An unreadable older index might name anything of its generation or older: keep those.
    let unreadable_floor = kept
        .iter()
        .filter(|i| i.checkpoint_lsn.is_none())
        .map(|i| i.generation)
        .max();
    let named: BTreeSet<(&str, Generation)> = kept
        .iter()
        .flat_map(|i| i.layers.iter().map(|(n, g)| (n.as_str(), *g)))
        .collect();
    let layers: Vec<(String, Generation)> = listing
        .layers
        .iter()
        .filter(|(name, g)| {
            older(*g)
                && !named.contains(&(name.as_str(), *g))
                && unreadable_floor.is_none_or(|floor| *g > floor)
        })
        .cloned()
        .collect();
    let indexed: BTreeSet<Generation> = kept.iter().map(|i| i.generation).collect();
    let claims: Vec<Generation> = listing
        .claims
        .iter()
        .copied()
        .filter(|g| older(*g) && !indexed.contains(g))
        .collect();
    Plan {
        indexes,
        layers,
        claims,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn g(n: u32) -> Generation {
        Generation(n)
    }

    fn index(generation: u32, lsn: Option<u64>, layers: &[(&str, u32)]) -> IndexSeen {
        IndexSeen {
            generation: g(generation),
            checkpoint_lsn: lsn.map(Lsn),
            layers: layers.iter().map(|(n, x)| (n.to_string(), g(*x))).collect(),
        }
    }

    fn layers(ls: &[(&str, u32)]) -> Vec<(String, Generation)> {
        ls.iter().map(|(n, x)| (n.to_string(), g(*x))).collect()
    }

    #[test]
    fn older_generations_superseded_by_the_own_index_go_with_what_only_they_name() {
        // Generation 1 ended at lsn 100 with an image and a changes layer; generation 2 ended at
        // 150 with a changes layer on 1's chain; generation 3 (own) restored from 2 and wrote an
        // image at 300, and a changes layer on it.
        let listing = Listing {
            claims: vec![g(1), g(2), g(3)],
            indexes: vec![
                index(1, Some(100), &[("img-50", 1), ("ch-100", 1)]),
                index(2, Some(150), &[("img-50", 1), ("ch-100", 1), ("ch-150", 2)]),
                index(3, Some(320), &[("img-300", 3), ("ch-320", 3)]),
            ],
            layers: layers(&[
                ("img-50", 1),
                ("ch-100", 1),
                ("ch-90", 1),
                ("ch-150", 2),
                ("img-300", 3),
                ("ch-320", 3),
                ("ch-999", 3),
            ]),
        };
        let p = plan(&listing, g(3), Lsn(320));
        assert_eq!(p.indexes, vec![g(1), g(2)]);
        // The own generation's layers are never touched here (its checkpointer deletes them).
        assert_eq!(
            p.layers,
            layers(&[("img-50", 1), ("ch-100", 1), ("ch-90", 1), ("ch-150", 2)])
        );
        assert_eq!(p.claims, vec![g(1), g(2)]);
    }

    #[test]
    fn what_the_own_chain_names_stays_and_so_does_every_index_above_the_own_checkpoint() {
        let listing = Listing {
            claims: vec![g(1), g(2), g(3)],
            indexes: vec![
                // A stale attachment ahead of the own checkpoint: kept, with its layers.
                index(1, Some(500), &[("img-10", 1), ("ch-500", 1)]),
                index(2, Some(150), &[("img-10", 1), ("ch-150", 2)]),
                // The own chain still names generation 2's changes layer.
                index(3, Some(200), &[("img-10", 1), ("ch-150", 2), ("ch-200", 3)]),
            ],
            layers: layers(&[("img-10", 1), ("ch-500", 1), ("ch-150", 2), ("ch-140", 2)]),
        };
        let p = plan(&listing, g(3), Lsn(200));
        assert_eq!(p.indexes, vec![g(2)]);
        assert_eq!(p.layers, layers(&[("ch-140", 2)]));
        assert_eq!(p.claims, vec![g(2)]);
    }

    #[test]
    fn an_unreadable_index_keeps_everything_it_might_name() {
        let listing = Listing {
            claims: vec![g(1), g(2), g(3), g(4)],
            indexes: vec![
                index(1, Some(10), &[("img-10", 1)]),
                index(2, None, &[]),
                index(4, Some(90), &[("img-90", 4)]),
            ],
            layers: layers(&[("img-10", 1), ("x", 2), ("y", 3), ("img-90", 4)]),
        };
        let p = plan(&listing, g(4), Lsn(90));
        assert_eq!(p.indexes, vec![g(1)]);
        // Generations 1 and 2 are at or below the unreadable one: kept; 3 had no index at all.
        assert_eq!(p.layers, layers(&[("y", 3)]));
        assert_eq!(p.claims, vec![g(1), g(3)]);
    }

    #[test]
    fn newer_generations_are_never_touched() {
        let listing = Listing {
            claims: vec![g(2), g(3)],
            indexes: vec![index(3, Some(10), &[("a", 3)]), index(2, Some(20), &[])],
            layers: layers(&[("a", 3), ("b", 3)]),
        };
        // Generation 2 (stale, behind 3) plans nothing of 3's.
        let p = plan(&listing, g(2), Lsn(20));
        assert!(p.is_empty(), "{p:?}");
    }
}
