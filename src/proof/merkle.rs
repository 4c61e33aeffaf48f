//! RFC 6962 / RFC 9162 Merkle trees over SHA-256: leaf hashes
//! `H(0x00 ‖ data)` and node hashes `H(0x01 ‖ left ‖ right)`, so no leaf can
//! pass for a node; inclusion and consistency proofs, and the compact
//! "frontier" a writer keeps to extend a tree one leaf at a time in
//! O(log n) space.
//!
//! Every function here takes *leaf hashes*: an entry's hash already is its
//! leaf hash (see `chain`).

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

pub type Hash = [u8; 32];

/// `H(0x00 ‖ data)`.
pub fn leaf_hash(data: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update([0u8]);
    h.update(data);
    h.finalize().into()
}

/// `H(0x01 ‖ left ‖ right)`.
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update([1u8]);
    h.update(left);
    h.update(right);
    h.finalize().into()
}

/// The root of the empty tree: SHA-256 of nothing (RFC 6962 §2.1).
pub fn empty_root() -> Hash {
    Sha256::digest([]).into()
}

/// The largest power of two strictly below `n` (n ≥ 2).
fn split(n: usize) -> usize {
    let mut k = 1;
    while k << 1 < n {
        k <<= 1;
    }
    k
}

/// MTH(D[n]) over leaf hashes.
pub fn root(leaves: &[Hash]) -> Hash {
    match leaves.len() {
        0 => empty_root(),
        1 => leaves[0],
        n => {
            let k = split(n);
            node_hash(&root(&leaves[..k]), &root(&leaves[k..]))
        }
    }
}

/// The audit path of leaf `index` in the tree of `leaves` (RFC 6962 §2.1.1).
pub fn inclusion_proof(leaves: &[Hash], index: usize) -> Option<Vec<Hash>> {
    if index >= leaves.len() {
        return None;
    }
    let mut path = Vec::new();
    inclusion_path(leaves, index, &mut path);
    Some(path)
}

fn inclusion_path(leaves: &[Hash], m: usize, path: &mut Vec<Hash>) {
    let n = leaves.len();
    if n <= 1 {
        return;
    }
    let k = split(n);
    if m < k {
        inclusion_path(&leaves[..k], m, path);
        path.push(root(&leaves[k..]));
    } else {
        inclusion_path(&leaves[k..], m - k, path);
        path.push(root(&leaves[..k]));
    }
}

/// RFC 9162 §2.1.3.2: does `path` prove `leaf` at `index` in the tree of
/// `size` leaves whose root is `root`?
pub fn verify_inclusion(leaf: &Hash, index: u64, size: u64, path: &[Hash], root: &Hash) -> bool {
    if index >= size {
        return false;
    }
    let mut r = *leaf;
    let walked = walk_path(index, size - 1, path, |p, left| {
        r = if left {
            node_hash(p, &r)
        } else {
            node_hash(&r, p)
        };
    });
    walked && r == *root
}

/// The walk RFC 9162's inclusion and consistency checks share (§2.1.3.2,
/// §2.1.4.2), from node `fnode` of a tree whose last node is `snode`: each
/// proof hash is a left sibling (`on(hash, true)`: the node is a right child
/// or the last of its level) or a right one. True when the path ends at the
/// root, no shorter and no longer.
fn walk_path(
    mut fnode: u64,
    mut snode: u64,
    path: &[Hash],
    mut on: impl FnMut(&Hash, bool),
) -> bool {
    for p in path {
        if snode == 0 {
            return false;
        }
        let left = fnode & 1 == 1 || fnode == snode;
        on(p, left);
        if left {
            // A last node with no right sibling rises until it is a right child.
            while fnode & 1 == 0 && fnode != 0 {
                fnode >>= 1;
                snode >>= 1;
            }
        }
        fnode >>= 1;
        snode >>= 1;
    }
    snode == 0
}

/// The consistency proof from the tree of the first `old_size` leaves to the
/// tree of all `leaves` (RFC 6962 §2.1.2).
pub fn consistency_proof(leaves: &[Hash], old_size: usize) -> Option<Vec<Hash>> {
    if old_size > leaves.len() {
        return None;
    }
    let mut path = Vec::new();
    if old_size > 0 && old_size < leaves.len() {
        subproof(old_size, leaves, true, &mut path);
    }
    Some(path)
}

fn subproof(m: usize, leaves: &[Hash], whole: bool, path: &mut Vec<Hash>) {
    let n = leaves.len();
    if m == n {
        if !whole {
            path.push(root(leaves));
        }
        return;
    }
    let k = split(n);
    if m <= k {
        subproof(m, &leaves[..k], whole, path);
        path.push(root(&leaves[k..]));
    } else {
        subproof(m - k, &leaves[k..], false, path);
        path.push(root(&leaves[..k]));
    }
}

/// RFC 9162 §2.1.4.2: does `path` prove that the tree (`old_size`,
/// `old_root`) is a prefix of the tree (`new_size`, `new_root`)?
pub fn verify_consistency(
    old_size: u64,
    new_size: u64,
    old_root: &Hash,
    new_root: &Hash,
    path: &[Hash],
) -> bool {
    if old_size > new_size {
        return false;
    }
    if old_size == new_size {
        return path.is_empty() && old_root == new_root;
    }
    if old_size == 0 {
        return path.is_empty();
    }
    let mut path: Vec<Hash> = path.to_vec();
    if old_size.is_power_of_two() {
        path.insert(0, *old_root);
    }
    let Some((first, rest)) = path.split_first() else {
        return false;
    };
    let (mut fnode, mut snode) = (old_size - 1, new_size - 1);
    while fnode & 1 == 1 {
        fnode >>= 1;
        snode >>= 1;
    }
    let (mut fr, mut sr) = (*first, *first);
    let walked = walk_path(fnode, snode, rest, |c, left| {
        if left {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
        } else {
            sr = node_hash(&sr, c);
        }
    });
    walked && fr == *old_root && sr == *new_root
}

/// A tree kept as the roots of its perfect subtrees, largest first (one per
/// set bit of `size`): appending a leaf and reading the root are O(log n),
/// and the whole state fits in a checkpoint row.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Frontier {
    pub size: u64,
    pub nodes: Vec<Hash>,
}

impl Frontier {
    pub fn push(&mut self, leaf: Hash) {
        let mut node = leaf;
        let mut size = self.size;
        while size & 1 == 1 {
            // A set low bit means a perfect subtree of that size waits on the
            // left: merge with it.
            let Some(left) = self.nodes.pop() else { break };
            node = node_hash(&left, &node);
            size >>= 1;
        }
        self.nodes.push(node);
        self.size += 1;
    }

    pub fn root(&self) -> Hash {
        let mut nodes = self.nodes.iter().rev();
        let Some(last) = nodes.next() else {
            return empty_root();
        };
        nodes.fold(*last, |acc, left| node_hash(left, &acc))
    }

    /// Whether the node count agrees with the size (a stored frontier that
    /// does not cannot be trusted to extend).
    pub fn is_well_formed(&self) -> bool {
        self.nodes.len() == self.size.count_ones() as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn leaves(n: usize) -> Vec<Hash> {
        (0..n)
            .map(|i| leaf_hash(&(i as u64).to_be_bytes()))
            .collect()
    }

    #[test]
    fn known_roots() {
        // RFC 6962 conventions: the empty tree hashes as SHA-256(""), one
        // leaf is its own root, two leaves make one node.
        assert_eq!(
            hex::encode(empty_root()),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        let l = leaves(3);
        assert_eq!(root(&l[..1]), l[0]);
        assert_eq!(root(&l), node_hash(&node_hash(&l[0], &l[1]), &l[2]));
        // The leaf hash of the empty string (the certificate-transparency
        // test vector): 6e340b9c...
        assert_eq!(
            hex::encode(leaf_hash(b"")),
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"
        );
    }

    #[test]
    fn a_tampered_proof_fails() {
        let l = leaves(11);
        let r = root(&l);
        let mut p = inclusion_proof(&l, 6).unwrap();
        assert!(verify_inclusion(&l[6], 6, 11, &p, &r));
        assert!(!verify_inclusion(&l[5], 6, 11, &p, &r));
        assert!(!verify_inclusion(&l[6], 5, 11, &p, &r));
        assert!(!verify_inclusion(&l[6], 6, 7, &p, &r));
        p[0][0] ^= 1;
        assert!(!verify_inclusion(&l[6], 6, 11, &p, &r));
        let c = consistency_proof(&l, 5).unwrap();
        assert!(verify_consistency(5, 11, &root(&l[..5]), &r, &c));
        assert!(!verify_consistency(5, 11, &root(&l[..4]), &r, &c));
        let mut other = l.clone();
        other[2] = leaf_hash(b"forged");
        assert!(!verify_consistency(
            5,
            11,
            &root(&other[..5]),
            &root(&other),
            &c
        ));
    }

    proptest! {
        #[test]
        fn every_leaf_proves_in_every_tree(n in 1usize..70, seed in any::<u64>()) {
            let l = leaves(n);
            let r = root(&l);
            let i = (seed as usize) % n;
            let p = inclusion_proof(&l, i).unwrap();
            prop_assert!(verify_inclusion(&l[i], i as u64, n as u64, &p, &r));
            prop_assert!(!verify_inclusion(&leaf_hash(b"x"), i as u64, n as u64, &p, &r));
        }

        #[test]
        fn every_prefix_is_consistent(n in 1usize..70, seed in any::<u64>()) {
            let l = leaves(n);
            let m = (seed as usize) % (n + 1);
            let p = consistency_proof(&l, m).unwrap();
            prop_assert!(verify_consistency(m as u64, n as u64, &root(&l[..m]), &root(&l), &p));
            if m > 0 && m < n {
                let mut forked = l.clone();
                forked[m - 1] = leaf_hash(b"fork");
                prop_assert!(!verify_consistency(m as u64, n as u64, &root(&forked[..m]), &root(&l), &p));
            }
        }

        #[test]
        fn the_frontier_gives_the_full_root(n in 0usize..200) {
            let l = leaves(n);
            let mut f = Frontier::default();
            for (i, h) in l.iter().enumerate() {
                prop_assert_eq!(f.root(), root(&l[..i]));
                f.push(*h);
                prop_assert!(f.is_well_formed());
            }
            prop_assert_eq!(f.root(), root(&l));
        }
    }
}
