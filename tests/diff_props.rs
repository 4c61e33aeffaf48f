//! Properties of the diff: it is a valid patch (old + changes = new), it is
//! minimal where the product promises so, and values survive DynamoDB JSON.

use std::collections::BTreeMap;

use ddb_audit::diff::{apply_changes, diff_images, format_path, parse_path, PathSegment};
use ddb_audit::entry::Change;
use ddb_audit::value::{same_value, AttrValue, Item};
use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;

/// Few names, so that keys of old and new collide; some need escaping.
fn name() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => prop::sample::select(vec!["a", "b", "c"]),
        1 => prop::sample::select(vec!["a.b", "x[1]", "]", "\\", "", "é"]),
    ]
    .prop_map(str::to_owned)
}

/// Distinct numbers, each written in one of several equal spellings, so that
/// value equality and spelling differ.
const NUMBERS: [[&str; 3]; 4] = [
    ["0", "-0", "0.00"],
    ["1", "1.0", "1e0"],
    ["2", "2.000", "0.2e1"],
    ["100", "1e2", "1E+2"],
];

fn number() -> impl Strategy<Value = String> {
    (0..NUMBERS.len(), 0..3usize).prop_map(|(n, s)| NUMBERS[n][s].to_owned())
}

fn number_set() -> impl Strategy<Value = Vec<String>> {
    prop::collection::btree_map(0..NUMBERS.len(), 0..3usize, 0..4)
        .prop_map(|m| {
            m.into_iter()
                .map(|(n, s)| NUMBERS[n][s].to_owned())
                .collect::<Vec<_>>()
        })
        .prop_shuffle()
}

fn small_string() -> impl Strategy<Value = String> {
    prop::sample::select(vec!["", "x", "y", "z"]).prop_map(str::to_owned)
}

fn bytes() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(0u8..3, 0..3)
}

fn leaf() -> impl Strategy<Value = AttrValue> {
    prop_oneof![
        small_string().prop_map(AttrValue::S),
        number().prop_map(AttrValue::N),
        bytes().prop_map(AttrValue::B),
        any::<bool>().prop_map(AttrValue::Bool),
        Just(AttrValue::Null),
        prop::collection::btree_set(small_string(), 0..4)
            .prop_map(|s| s.into_iter().collect::<Vec<_>>())
            .prop_shuffle()
            .prop_map(AttrValue::Ss),
        number_set().prop_map(AttrValue::Ns),
        prop::collection::btree_set(bytes(), 0..4)
            .prop_map(|s| s.into_iter().collect::<Vec<_>>())
            .prop_shuffle()
            .prop_map(AttrValue::Bs),
    ]
}

/// Values nested up to 4 levels of maps and lists.
fn value() -> impl Strategy<Value = AttrValue> {
    leaf().prop_recursive(4, 48, 5, |inner| {
        prop_oneof![
            prop::collection::btree_map(name(), inner.clone(), 0..4).prop_map(AttrValue::M),
            prop::collection::vec(inner, 0..6).prop_map(AttrValue::L),
        ]
    })
}

fn item() -> impl Strategy<Value = Item> {
    prop::collection::btree_map(name(), value(), 0..5)
}

/// A stream of edit decisions, and fresh values to put in.
struct Edits {
    choices: Vec<u8>,
    pool: Vec<AttrValue>,
    at: usize,
}

impl Edits {
    fn roll(&mut self, sides: u8) -> u8 {
        let c = self.choices[self.at % self.choices.len()];
        self.at += 1;
        c % sides
    }

    fn fresh(&mut self) -> AttrValue {
        let i = self.roll(u8::MAX) as usize;
        self.pool[i % self.pool.len()].clone()
    }
}

const NAMES: [&str; 5] = ["a", "b", "d", "a.b", "x[1]"];

fn mutate_map(m: &BTreeMap<String, AttrValue>, e: &mut Edits) -> BTreeMap<String, AttrValue> {
    let mut out = BTreeMap::new();
    for (k, v) in m {
        match e.roll(8) {
            0 => {}
            1 => {
                out.insert(k.clone(), e.fresh());
            }
            _ => {
                out.insert(k.clone(), mutate(v, e));
            }
        }
    }
    if e.roll(4) == 0 {
        let k = NAMES[e.roll(NAMES.len() as u8) as usize].to_owned();
        let v = e.fresh();
        out.insert(k, v);
    }
    out
}

/// A variant of `v`: mostly kept, with some entries and elements dropped,
/// replaced or inserted at every depth, so that diffs run deep.
fn mutate(v: &AttrValue, e: &mut Edits) -> AttrValue {
    match v {
        AttrValue::M(m) => AttrValue::M(mutate_map(m, e)),
        AttrValue::L(l) => {
            let mut out = Vec::new();
            for x in l {
                match e.roll(8) {
                    0 => {}
                    1 => out.push(e.fresh()),
                    2 => {
                        out.push(e.fresh());
                        out.push(mutate(x, e));
                    }
                    _ => out.push(mutate(x, e)),
                }
            }
            if e.roll(4) == 0 {
                out.push(e.fresh());
            }
            AttrValue::L(out)
        }
        _ if e.roll(6) == 0 => e.fresh(),
        leaf => leaf.clone(),
    }
}

/// An item and an edited copy of it.
fn item_pair() -> impl Strategy<Value = (Item, Item)> {
    (
        item(),
        prop::collection::vec(any::<u8>(), 1..64),
        prop::collection::vec(value(), 1..4),
    )
        .prop_map(|(old, choices, pool)| {
            let new = mutate_map(
                &old,
                &mut Edits {
                    choices,
                    pool,
                    at: 0,
                },
            );
            (old, new)
        })
}

fn same_item(a: &Item, b: &Item) -> bool {
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .all(|((ka, va), (kb, vb))| ka == kb && same_value(va, vb))
}

fn assert_well_formed(changes: &[Change]) {
    for c in changes {
        assert!(c.old.is_some() || c.new.is_some(), "{c:?}");
        let segments = parse_path(&c.path).unwrap();
        assert_eq!(format_path(&segments), c.path);
    }
}

proptest! {
    // Regressions go beside this file (proptest cannot find a lib.rs from tests/).
    #![proptest_config(ProptestConfig {
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource("regressions"))),
        ..ProptestConfig::default()
    })]

    #[test]
    fn modify_patch_rebuilds_new(old in item(), new in item()) {
        let changes = diff_images(Some(&old), Some(&new));
        assert_well_formed(&changes);
        let rebuilt = apply_changes(Some(&old), &changes).unwrap();
        prop_assert!(same_item(&rebuilt, &new), "changes {changes:?}\nrebuilt {rebuilt:?}\nnew {new:?}");
    }

    #[test]
    fn modify_patch_rebuilds_related_new((old, new) in item_pair()) {
        let changes = diff_images(Some(&old), Some(&new));
        assert_well_formed(&changes);
        let rebuilt = apply_changes(Some(&old), &changes).unwrap();
        prop_assert!(same_item(&rebuilt, &new), "changes {changes:?}\nrebuilt {rebuilt:?}\nnew {new:?}");
    }

    #[test]
    fn no_change_between_equal_items(old in item()) {
        prop_assert!(diff_images(Some(&old), Some(&old)).is_empty());
    }

    #[test]
    fn insert_is_one_add_per_attribute(new in item()) {
        let changes = diff_images(None, Some(&new));
        prop_assert_eq!(changes.len(), new.len());
        prop_assert!(changes.iter().all(|c| c.old.is_none() && c.new.is_some()));
        prop_assert_eq!(apply_changes(None, &changes).unwrap(), new);
    }

    #[test]
    fn remove_is_one_remove_per_attribute(old in item()) {
        let changes = diff_images(Some(&old), None);
        prop_assert_eq!(changes.len(), old.len());
        prop_assert!(changes.iter().all(|c| c.old.is_some() && c.new.is_none()));
        prop_assert!(apply_changes(Some(&old), &changes).unwrap().is_empty());
    }

    #[test]
    fn list_insert_or_delete_is_one_change(
        list in prop::collection::vec(value(), 0..12),
        at in any::<prop::sample::Index>(),
        extra in value(),
    ) {
        let at = at.index(list.len() + 1);
        let mut longer = list.clone();
        longer.insert(at, extra);
        let short = Item::from([("l".to_owned(), AttrValue::L(list))]);
        let long = Item::from([("l".to_owned(), AttrValue::L(longer))]);

        let grow = diff_images(Some(&short), Some(&long));
        prop_assert_eq!(grow.len(), 1, "{:?}", grow);
        prop_assert!(grow[0].old.is_none());
        prop_assert!(same_item(&apply_changes(Some(&short), &grow).unwrap(), &long));

        let shrink = diff_images(Some(&long), Some(&short));
        prop_assert_eq!(shrink.len(), 1, "{:?}", shrink);
        prop_assert!(shrink[0].new.is_none());
        prop_assert!(same_item(&apply_changes(Some(&long), &shrink).unwrap(), &short));
    }

    #[test]
    fn json_round_trip(v in value()) {
        let json = serde_json::to_string(&v).unwrap();
        prop_assert_eq!(serde_json::from_str::<AttrValue>(&json).unwrap(), v);
    }

    #[test]
    fn changes_json_round_trip((old, new) in item_pair()) {
        let changes = diff_images(Some(&old), Some(&new));
        let json = serde_json::to_string(&changes).unwrap();
        prop_assert_eq!(serde_json::from_str::<Vec<Change>>(&json).unwrap(), changes);
    }

    #[test]
    fn paths_round_trip(
        first in name(),
        rest in prop::collection::vec(
            prop_oneof![name().prop_map(PathSegment::Key), (0usize..200).prop_map(PathSegment::Index)],
            0..5,
        ),
    ) {
        let mut segments = vec![PathSegment::Key(first)];
        segments.extend(rest);
        prop_assert_eq!(parse_path(&format_path(&segments)).unwrap(), segments);
    }
}

#[test]
fn related_pairs_do_produce_nested_changes() {
    // Guards the generator: if it stopped producing deep diffs, the patch
    // properties above would only be testing top-level replaces.
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let mut runner = TestRunner::deterministic();
    let mut nested = 0;
    for _ in 0..200 {
        let (old, new) = item_pair().new_tree(&mut runner).unwrap().current();
        nested += diff_images(Some(&old), Some(&new))
            .iter()
            .filter(|c| parse_path(&c.path).map_or(0, |p| p.len()) > 2)
            .count();
    }
    eprintln!("changes below depth 2: {nested}");
    assert!(nested > 100, "only {nested} changes below depth 2");
}
