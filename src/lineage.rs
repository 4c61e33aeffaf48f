//! Pure shard-lineage bookkeeping for one stream: which shards exist, which
//! are drained, and which may be read now. A shard may be read once its parent
//! is drained — or is gone from the stream (trimmed), so that children never
//! wait forever on a parent nobody can read.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::stream::Shard;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NodeState {
    Waiting,
    Running,
    Drained,
}

#[derive(Clone, Debug)]
struct Node {
    shard: Shard,
    state: NodeState,
}

#[derive(Clone, Debug, Default)]
pub struct Lineage {
    // BTreeMap: deterministic order of starts, which keeps tests reproducible.
    nodes: BTreeMap<String, Node>,
    children: HashMap<String, Vec<String>>,
    // Kept up to date as shards come and change state, so that the queries
    // the supervisor makes after every drained shard cost what is ready or
    // running, not every shard of the stream (thousands, on a busy day).
    /// Waiting, with a drained or absent parent.
    ready: BTreeSet<String>,
    running: BTreeSet<String>,
    drained: usize,
}

impl Lineage {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a shard, or refreshes what we know of it (it may have closed).
    /// Returns true when the shard was not known before.
    pub fn insert(&mut self, shard: Shard, drained: bool) -> bool {
        if let Some(node) = self.nodes.get_mut(&shard.shard_id) {
            if shard.ending_sequence_number.is_some() {
                node.shard.ending_sequence_number = shard.ending_sequence_number;
            }
            return false;
        }
        if let Some(parent) = &shard.parent_shard_id {
            self.children
                .entry(parent.clone())
                .or_default()
                .push(shard.shard_id.clone());
        }
        let state = if drained {
            self.drained += 1;
            NodeState::Drained
        } else {
            NodeState::Waiting
        };
        let id = shard.shard_id.clone();
        self.nodes.insert(id.clone(), Node { shard, state });
        self.refresh_ready(&id);
        // Children listed before their parent must now wait for it.
        self.refresh_children(&id);
        true
    }

    pub fn contains(&self, shard_id: &str) -> bool {
        self.nodes.contains_key(shard_id)
    }

    pub fn state(&self, shard_id: &str) -> Option<NodeState> {
        self.nodes.get(shard_id).map(|n| n.state)
    }

    pub fn shard(&self, shard_id: &str) -> Option<&Shard> {
        self.nodes.get(shard_id).map(|n| &n.shard)
    }

    pub fn set_state(&mut self, shard_id: &str, state: NodeState) {
        let Some(node) = self.nodes.get_mut(shard_id) else {
            return;
        };
        let old = std::mem::replace(&mut node.state, state);
        if old == NodeState::Running {
            self.running.remove(shard_id);
        }
        if state == NodeState::Running {
            self.running.insert(shard_id.to_string());
        }
        if old == NodeState::Drained {
            self.drained -= 1;
        }
        if state == NodeState::Drained {
            self.drained += 1;
        }
        self.refresh_ready(shard_id);
        if (old == NodeState::Drained) != (state == NodeState::Drained) {
            self.refresh_children(shard_id);
        }
    }

    pub fn children_of(&self, shard_id: &str) -> &[String] {
        self.children
            .get(shard_id)
            .map(Vec::as_slice)
            .unwrap_or(&[])
    }

    /// Shards that may be read now: waiting, with a drained or absent parent.
    /// Closed shards come first: they are older, and each one ends.
    pub fn ready(&self) -> Vec<Shard> {
        let mut ready: Vec<&Shard> = self
            .ready
            .iter()
            .filter_map(|id| self.nodes.get(id))
            .map(|n| &n.shard)
            .collect();
        ready.sort_by_key(|s| !self.is_closed(&s.shard_id));
        ready.into_iter().cloned().collect()
    }

    pub fn running(&self) -> usize {
        self.running.len()
    }

    /// Closed, or listed open while its children exist (a listing can lag
    /// behind a shard closing): either way it ends.
    pub fn is_closed(&self, shard_id: &str) -> bool {
        self.nodes
            .get(shard_id)
            .is_some_and(|n| n.shard.is_closed())
            || self.children.contains_key(shard_id)
    }

    /// Running shards that are closed (being drained).
    pub fn running_closed(&self) -> usize {
        self.running.iter().filter(|id| self.is_closed(id)).count()
    }

    pub fn all_drained(&self) -> bool {
        self.drained == self.nodes.len()
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Forgets a shard (a drained one whose children have started): what is
    /// kept stays proportional to what is being read, not to uptime.
    pub fn remove(&mut self, shard_id: &str) {
        let Some(node) = self.nodes.remove(shard_id) else {
            return;
        };
        if node.state == NodeState::Drained {
            self.drained -= 1;
        }
        self.ready.remove(shard_id);
        self.running.remove(shard_id);
        self.children.remove(shard_id);
        if let Some(parent) = &node.shard.parent_shard_id {
            if let Some(siblings) = self.children.get_mut(parent) {
                siblings.retain(|c| c != shard_id);
            }
        }
    }

    /// Drained shards that have children, none of them still waiting: the
    /// lineage no longer needs them.
    pub fn finished_parents(&self) -> Vec<String> {
        self.children
            .iter()
            .filter(|(parent, kids)| {
                !kids.is_empty()
                    && self.state(parent) == Some(NodeState::Drained)
                    && kids
                        .iter()
                        .all(|k| self.state(k).is_some_and(|s| s != NodeState::Waiting))
            })
            .map(|(parent, _)| parent.clone())
            .collect()
    }

    pub fn parent_of(&self, shard_id: &str) -> Option<&str> {
        self.nodes
            .get(shard_id)
            .and_then(|n| n.shard.parent_shard_id.as_deref())
    }

    fn refresh_ready(&mut self, shard_id: &str) {
        let ready = self.nodes.get(shard_id).is_some_and(|n| {
            n.state == NodeState::Waiting
                && n.shard.parent_shard_id.as_ref().is_none_or(|parent| {
                    self.nodes
                        .get(parent)
                        .is_none_or(|p| p.state == NodeState::Drained)
                })
        });
        if ready {
            self.ready.insert(shard_id.to_string());
        } else {
            self.ready.remove(shard_id);
        }
    }

    fn refresh_children(&mut self, shard_id: &str) {
        for child in self.children.get(shard_id).cloned().unwrap_or_default() {
            self.refresh_ready(&child);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shard(id: &str, parent: Option<&str>, closed: bool) -> Shard {
        Shard {
            shard_id: id.into(),
            parent_shard_id: parent.map(Into::into),
            starting_sequence_number: Some("1".into()),
            ending_sequence_number: closed.then(|| "9".into()),
        }
    }

    fn ids(shards: Vec<Shard>) -> Vec<String> {
        shards.into_iter().map(|s| s.shard_id).collect()
    }

    #[test]
    fn children_wait_for_their_parent_to_drain() {
        let mut l = Lineage::new();
        l.insert(shard("a", None, true), false);
        l.insert(shard("b", Some("a"), false), false);
        l.insert(shard("c", Some("a"), false), false);
        assert_eq!(ids(l.ready()), vec!["a"]);
        l.set_state("a", NodeState::Running);
        assert!(l.ready().is_empty());
        l.set_state("a", NodeState::Drained);
        assert_eq!(ids(l.ready()), vec!["b", "c"]);
        assert_eq!(l.children_of("a"), ["b", "c"]);
    }

    #[test]
    fn a_child_whose_parent_is_gone_may_start() {
        let mut l = Lineage::new();
        l.insert(shard("child", Some("trimmed-parent"), false), false);
        assert_eq!(ids(l.ready()), vec!["child"]);
    }

    #[test]
    fn a_parent_listed_after_its_child_makes_it_wait() {
        let mut l = Lineage::new();
        l.insert(shard("child", Some("parent"), false), false);
        l.insert(shard("parent", None, true), false);
        assert_eq!(ids(l.ready()), vec!["parent"]);
        l.set_state("parent", NodeState::Running);
        l.set_state("parent", NodeState::Drained);
        assert_eq!(ids(l.ready()), vec!["child"]);
        l.insert(shard("late", Some("drained"), true), false);
        l.insert(shard("drained", None, true), true);
        assert_eq!(ids(l.ready()), vec!["late", "child"]);
        l.set_state("child", NodeState::Running);
        l.set_state("late", NodeState::Running);
        assert_eq!(
            (l.running(), l.running_closed(), l.all_drained()),
            (2, 1, false)
        );
        l.set_state("child", NodeState::Waiting);
        assert_eq!(ids(l.ready()), vec!["child"]);
        l.set_state("child", NodeState::Drained);
        l.set_state("late", NodeState::Drained);
        assert!(l.all_drained() && l.ready().is_empty() && l.running() == 0);
    }

    #[test]
    fn a_chain_of_rotations_is_read_one_link_at_a_time() {
        let mut l = Lineage::new();
        l.insert(shard("s3", Some("s2"), false), false);
        l.insert(shard("s2", Some("s1"), true), false);
        l.insert(shard("s1", None, true), true);
        assert_eq!(ids(l.ready()), vec!["s2"]);
        l.set_state("s2", NodeState::Drained);
        assert_eq!(ids(l.ready()), vec!["s3"]);
        l.set_state("s3", NodeState::Drained);
        assert!(l.all_drained());
    }

    #[test]
    fn a_parent_listed_open_with_children_counts_as_closed() {
        let mut l = Lineage::new();
        l.insert(shard("stale", None, false), false);
        l.insert(shard("open", None, false), false);
        assert!(!l.is_closed("stale"));
        l.insert(shard("child", Some("stale"), false), false);
        assert!(l.is_closed("stale") && !l.is_closed("child"));
        assert_eq!(ids(l.ready()), vec!["stale", "open"]);
        l.set_state("stale", NodeState::Running);
        l.set_state("open", NodeState::Running);
        assert_eq!((l.running(), l.running_closed()), (2, 1));
    }

    #[test]
    fn closed_shards_start_before_open_ones_and_refresh_keeps_state() {
        let mut l = Lineage::new();
        l.insert(shard("open", None, false), false);
        l.insert(shard("closed", None, true), false);
        assert_eq!(ids(l.ready()), vec!["closed", "open"]);
        l.set_state("open", NodeState::Running);
        assert!(!l.insert(shard("open", None, true), false));
        assert_eq!(l.state("open"), Some(NodeState::Running));
        assert!(l.shard("open").is_some_and(Shard::is_closed));
    }
}
