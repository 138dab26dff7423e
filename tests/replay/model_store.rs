//! Model test of the store: random sequences of change sets (valid and invalid), force syncs,
//! close/reopen and journal segment rotation, checked step by step against a reference model
//! that applies the same change sets with the semantics of `journal-format.md` §5.1 and the
//! schema checks of `src/apply.rs`:
//!
//! * after every step the cache equals the model;
//! * a change set the model refuses is refused by `Store::apply` with `CacheError::ChangeRefused` and
//!   leaves no trace (not in the cache, not in the journal: the head does not move), even when
//!   valid mutations precede the invalid one;
//! * an accepted change set gets the next LSN;
//! * after every sync (and at the end) the target equals the model and nothing is pending;
//! * a change set journaled while the cache missed it (a crash between the journal write and
//!   the cache commit, simulated by appending to the journal directly) is applied to the
//!   cache on the next open.
//!
//! The number of cases is fixed (64, or `PROPTEST_CASES`); the seed is printed on failure and
//! can be replayed with `PROPTEST_RNG_SEED=<seed>`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use syncjournal::error::CacheError;

use crate::support::journal::SEG_BYTES;
use crate::support::process::model_config;
use crate::support::store::{Paths, dump_cache, dump_target, open, store_opts};
use proptest::prelude::*;
use proptest::test_runner::{TestCaseError, TestRunner};
use syncjournal::event::{KIND_CHANGESET, encode_event};
use syncjournal::{
    ChangeSet, Error, Journal, JournalOptions, Mutation, RejectPolicy, Store, Value,
};

// ---------------------------------------------------------------------------------------------
// The reference model.
// ---------------------------------------------------------------------------------------------

/// Declared type of a column, as far as the documented type rule goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ty {
    Int,
    Real,
    Text,
    /// Untyped or BLOB: takes any value as is.
    Any,
}

impl Ty {
    /// The documented rule (`src/apply.rs`): numeric columns take numbers, text columns take
    /// text, untyped/BLOB columns take anything; NULL goes anywhere (constraints aside).
    fn accepts(self, v: &Value) -> bool {
        matches!(
            (self, v),
            (_, Value::Null)
                | (Ty::Any, _)
                | (Ty::Int | Ty::Real, Value::Integer(_) | Value::Real(_))
                | (Ty::Text, Value::Text(_))
        )
    }
}

#[derive(Debug)]
struct Col {
    name: &'static str,
    ty: Ty,
    /// NOT NULL without a default.
    required: bool,
}

const fn col(name: &'static str, ty: Ty, required: bool) -> Col {
    Col { name, ty, required }
}

#[derive(Debug)]
struct TableDef {
    name: &'static str,
    /// Primary-key columns, in declaration order (they come first in the table).
    key: &'static [Col],
    /// The other columns, in declaration order.
    cols: &'static [Col],
}

/// The model's view of `support::store::SCHEMA`.
static TABLES: [TableDef; 3] = [
    TableDef {
        name: "items",
        key: &[col("id", Ty::Int, true)],
        cols: &[
            col("name", Ty::Text, false),
            col("qty", Ty::Int, false),
            col("price", Ty::Real, false),
            col("data", Ty::Any, false),
        ],
    },
    TableDef {
        name: "pairs",
        key: &[col("a", Ty::Text, true), col("b", Ty::Int, true)],
        cols: &[col("v", Ty::Any, false), col("note", Ty::Text, false)],
    },
    TableDef {
        name: "tags",
        key: &[col("tag", Ty::Text, true)],
        cols: &[col("weight", Ty::Real, true), col("raw", Ty::Any, false)],
    },
];

/// A primary-key component (key columns are INTEGER or TEXT in the schema).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum KeyPart {
    I(i64),
    T(String),
}

impl KeyPart {
    fn value(&self) -> Value {
        match self {
            KeyPart::I(i) => Value::Integer(*i),
            KeyPart::T(t) => Value::Text(t.clone()),
        }
    }
}

/// Rows of one table: key → the non-key columns in declaration order.
type Rows = BTreeMap<Vec<KeyPart>, Vec<Value>>;

#[derive(Debug, Clone, Default)]
struct Model {
    tables: [Rows; 3],
}

impl Model {
    /// Applies a change set all or nothing: the new model, or why it is refused.
    fn apply(&self, cs: &ChangeSet) -> Result<Model, String> {
        let mut next = self.clone();
        for (i, m) in cs.mutations.iter().enumerate() {
            next.apply_mutation(m)
                .map_err(|why| format!("mutation {i} ({m}): {why}"))?;
        }
        Ok(next)
    }

    fn apply_mutation(&mut self, m: &Mutation) -> Result<(), String> {
        let Some(t) = TABLES.iter().position(|t| t.name == m.table()) else {
            return Err("no such table".into());
        };
        let def = &TABLES[t];
        // Resolve the key: names exist, no duplicates, types fit, exactly the key columns,
        // no NULL.
        let mut key: Vec<Option<KeyPart>> = vec![None; def.key.len()];
        for (name, v) in m.key() {
            let Some(k) = def.key.iter().position(|c| c.name == name) else {
                return Err(format!("{name} is not a key column (or does not exist)"));
            };
            if key[k].is_some() {
                return Err(format!("key column {name} given twice"));
            }
            if !def.key[k].ty.accepts(v) {
                return Err(format!("type mismatch on key column {name}"));
            }
            key[k] = Some(match v {
                Value::Integer(i) => KeyPart::I(*i),
                Value::Text(s) => KeyPart::T(s.clone()),
                Value::Null => return Err(format!("key column {name} is NULL")),
                // Numeric columns take reals too, but the generator never puts a real in a
                // key (SQLite would convert an integral one).
                other => return Err(format!("unexpected key value {other:?}")),
            });
        }
        let Some(key): Option<Vec<KeyPart>> = key.into_iter().collect() else {
            return Err("the key does not name every primary-key column".into());
        };
        // Resolve the values.
        let mut set: Vec<Option<Value>> = vec![None; def.cols.len()];
        for (name, v) in m.values() {
            if def.key.iter().any(|c| c.name == name) {
                return Err(format!("key column {name} among the values"));
            }
            let Some(c) = def.cols.iter().position(|c| c.name == name) else {
                return Err(format!("no column {name}"));
            };
            if set[c].is_some() {
                return Err(format!("column {name} given twice"));
            }
            if !def.cols[c].ty.accepts(v) {
                return Err(format!("type mismatch on column {name}"));
            }
            set[c] = Some(v.clone());
        }
        let rows = &mut self.tables[t];
        let write = |row: &mut Vec<Value>| -> Result<(), String> {
            for (c, v) in set.iter().enumerate() {
                if let Some(v) = v {
                    row[c] = v.clone();
                }
            }
            match def
                .cols
                .iter()
                .zip(row.iter())
                .find(|(c, v)| c.required && matches!(v, Value::Null))
            {
                Some((c, _)) => Err(format!("NOT NULL column {} would be NULL", c.name)),
                None => Ok(()),
            }
        };
        let insert = |rows: &mut Rows| -> Result<(), String> {
            let mut row = vec![Value::Null; def.cols.len()];
            write(&mut row)?;
            rows.insert(key.clone(), row);
            Ok(())
        };
        match m {
            Mutation::Insert { .. } => {
                if rows.contains_key(&key) {
                    return Err("insert of an existing key".into());
                }
                insert(rows)
            }
            Mutation::Update { .. } => {
                if m.values().is_empty() {
                    return Err("update sets no column".into());
                }
                match rows.get_mut(&key) {
                    Some(row) => write(row),
                    None => Err("update of a missing row".into()),
                }
            }
            Mutation::Upsert { .. } => match rows.get_mut(&key) {
                Some(row) => write(row),
                None => insert(rows),
            },
            Mutation::Delete { .. } => {
                rows.remove(&key);
                Ok(())
            }
        }
    }

    /// The model's tables as `support::store::dump_all` returns a database's: rows ordered by
    /// key, key columns then the others.
    fn dump(&self) -> Vec<Vec<Vec<Value>>> {
        self.tables
            .iter()
            .map(|rows| {
                rows.iter()
                    .map(|(k, cols)| {
                        k.iter()
                            .map(KeyPart::value)
                            .chain(cols.iter().cloned())
                            .collect()
                    })
                    .collect()
            })
            .collect()
    }
}

// ---------------------------------------------------------------------------------------------
// Generators.
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
enum Op {
    /// `Store::apply` of a change set (valid or not).
    Apply(ChangeSet),
    /// Upsert of a large blob into `items` (rotates the small journal segments).
    Big { id: i64, len: usize, byte: u8 },
    /// `Store::sync_now`.
    Sync,
    /// Close the store and open it again.
    Reopen,
    /// A crash between the journal write and the cache commit: with the store closed, the
    /// change set (if valid) is appended to the journal directly; the next open applies it
    /// to the cache.
    Crash(ChangeSet),
}

fn big_change_set(id: i64, len: usize, byte: u8) -> ChangeSet {
    let data: Vec<u8> = (0..len).map(|i| byte.wrapping_add(i as u8)).collect();
    ChangeSet::new().upsert("items", [("id", id)], [("data", Value::Blob(data))])
}

fn real() -> BoxedStrategy<f64> {
    prop_oneof![
        3 => (-1000i32..1000).prop_map(|x| f64::from(x) / 4.0),
        1 => prop::num::f64::NORMAL | prop::num::f64::SUBNORMAL | prop::num::f64::ZERO,
    ]
    .boxed()
}

fn int() -> BoxedStrategy<i64> {
    prop_oneof![3 => -5i64..100, 1 => any::<i64>()].boxed()
}

fn text() -> BoxedStrategy<String> {
    prop_oneof![3 => "[a-z]{0,6}", 1 => "\\PC{0,5}"].boxed()
}

fn blob() -> BoxedStrategy<Vec<u8>> {
    prop::collection::vec(any::<u8>(), 0..12).boxed()
}

/// A value for a column of type `ty`: mostly of the right type, sometimes NULL, sometimes of
/// a type the column refuses.
fn value(ty: Ty) -> BoxedStrategy<Value> {
    let good = match ty {
        Ty::Int => int().prop_map(Value::Integer).boxed(),
        Ty::Real => real().prop_map(Value::Real).boxed(),
        Ty::Text => text().prop_map(Value::Text).boxed(),
        Ty::Any => prop_oneof![
            int().prop_map(Value::Integer),
            real().prop_map(Value::Real),
            text().prop_map(Value::Text),
            blob().prop_map(Value::Blob),
        ]
        .boxed(),
    };
    let wrong = match ty {
        Ty::Int | Ty::Real => {
            prop_oneof![text().prop_map(Value::Text), blob().prop_map(Value::Blob)].boxed()
        }
        Ty::Text => {
            prop_oneof![int().prop_map(Value::Integer), blob().prop_map(Value::Blob)].boxed()
        }
        Ty::Any => Just(Value::Null).boxed(),
    };
    prop_oneof![20 => good, 2 => Just(Value::Null), 1 => wrong].boxed()
}

/// A key of table `t`, from a small domain so that mutations collide. For the composite key,
/// the columns come in either order.
fn key(t: usize) -> BoxedStrategy<Vec<(String, Value)>> {
    match t {
        0 => (-1i64..6)
            .prop_map(|id| vec![("id".to_string(), Value::Integer(id))])
            .boxed(),
        1 => (
            prop::sample::select(vec!["x", "y", "é"]),
            0i64..3,
            any::<bool>(),
        )
            .prop_map(|(a, b, swap)| {
                let a = ("a".to_string(), Value::from(a));
                let b = ("b".to_string(), Value::Integer(b));
                if swap { vec![b, a] } else { vec![a, b] }
            })
            .boxed(),
        _ => prop::sample::select(vec!["red", "green", "blue", "we\"ird"])
            .prop_map(|tag| vec![("tag".to_string(), Value::from(tag))])
            .boxed(),
    }
}

/// A subset of the non-key columns of table `t` with values.
fn values(t: usize) -> BoxedStrategy<Vec<(String, Value)>> {
    let cols: Vec<BoxedStrategy<Option<(String, Value)>>> = TABLES[t]
        .cols
        .iter()
        .map(|c| prop::option::of(value(c.ty).prop_map(move |v| (c.name.to_string(), v))).boxed())
        .collect();
    (cols, any::<bool>())
        .prop_map(|(cols, rev)| {
            let mut v: Vec<_> = cols.into_iter().flatten().collect();
            if rev {
                v.reverse();
            }
            v
        })
        .boxed()
}

fn make(op: u8, table: &str, key: Vec<(String, Value)>, values: Vec<(String, Value)>) -> Mutation {
    let table = table.to_string();
    match op {
        0 => Mutation::Insert { table, key, values },
        1 => Mutation::Update { table, key, values },
        2 => Mutation::Upsert { table, key, values },
        _ => Mutation::Delete { table, key },
    }
}

/// A mutation that respects the schema's names (it may still be refused: existing or missing
/// row, NULL in a NOT NULL column, wrong type).
fn named_mutation() -> BoxedStrategy<Mutation> {
    (0usize..3)
        .prop_flat_map(|t| (Just(t), 0u8..4, key(t), values(t)))
        .prop_map(|(t, op, k, v)| make(op, TABLES[t].name, k, v))
        .boxed()
}

/// Mutations refused whatever the state: unknown table or column, incomplete or NULL key,
/// key column among the values, update of nothing, a column given twice.
fn bad_mutation() -> BoxedStrategy<Mutation> {
    prop_oneof![
        key(0).prop_map(|k| make(2, "nope", k, vec![("name".into(), "x".into())])),
        key(0).prop_map(|k| make(2, "items", k, vec![("bogus".into(), 1.into())])),
        (0u8..4).prop_map(|op| make(
            op,
            "pairs",
            vec![("a".into(), "x".into())],
            vec![("v".into(), 1.into())]
        )),
        (0u8..4).prop_map(|op| make(
            op,
            "items",
            vec![("id".into(), Value::Null)],
            vec![("qty".into(), 1.into())]
        )),
        key(0).prop_map(|k| make(2, "items", k, vec![("id".into(), 9.into())])),
        key(2).prop_map(|k| make(1, "tags", k, vec![])),
        key(0).prop_map(|k| make(
            2,
            "items",
            k,
            vec![("qty".into(), 1.into()), ("qty".into(), 2.into())]
        )),
    ]
    .boxed()
}

fn mutation() -> BoxedStrategy<Mutation> {
    prop_oneof![12 => named_mutation(), 1 => bad_mutation()].boxed()
}

fn change_set() -> BoxedStrategy<ChangeSet> {
    prop::collection::vec(mutation(), 0..4)
        .prop_map(|mutations| ChangeSet { mutations })
        .boxed()
}

/// A change set whose valid-looking prefix is followed by a mutation that fails whatever the
/// state: the same insert twice, or an update of the row just deleted.
fn doomed_change_set() -> BoxedStrategy<ChangeSet> {
    (
        prop::collection::vec(named_mutation(), 0..3),
        (0usize..3).prop_flat_map(|t| (Just(t), key(t), values(t), any::<bool>())),
        prop::collection::vec(mutation(), 0..2),
    )
        .prop_map(|(mut mutations, (t, k, v, insert_twice), tail)| {
            let name = TABLES[t].name;
            if insert_twice {
                mutations.push(make(0, name, k.clone(), v.clone()));
                mutations.push(make(0, name, k, v));
            } else {
                let v = if v.is_empty() {
                    vec![(TABLES[t].cols[1].name.to_string(), Value::Null)]
                } else {
                    v
                };
                mutations.push(make(3, name, k.clone(), vec![]));
                mutations.push(make(1, name, k, v));
            }
            mutations.extend(tail);
            ChangeSet { mutations }
        })
        .boxed()
}

fn op() -> BoxedStrategy<Op> {
    prop_oneof![
        12 => change_set().prop_map(Op::Apply),
        2 => doomed_change_set().prop_map(Op::Apply),
        4 => (-1i64..6, 10_000usize..20_000, any::<u8>())
            .prop_map(|(id, len, byte)| Op::Big { id, len, byte }),
        3 => Just(Op::Sync),
        1 => Just(Op::Reopen),
        1 => change_set().prop_map(Op::Crash),
    ]
    .boxed()
}

// ---------------------------------------------------------------------------------------------
// The test.
// ---------------------------------------------------------------------------------------------

/// What the cases exercised, to check that the generators reach the interesting paths.
#[derive(Default)]
struct Coverage {
    accepted: AtomicU64,
    rejected: AtomicU64,
    /// Refused change sets whose first mutation alone would have been accepted.
    rejected_after_valid_prefix: AtomicU64,
    syncs: AtomicU64,
    reopens: AtomicU64,
    /// Change sets that reached the cache only through the catch-up on open.
    crashes: AtomicU64,
    /// Cases in which the journal rotated to a new segment.
    rotated_cases: AtomicU64,
    /// Cases in which acknowledged segments were retired.
    retired_cases: AtomicU64,
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

fn check_target(
    store: &Store,
    paths: &Paths,
    model: &Model,
    head: u64,
) -> Result<(), TestCaseError> {
    let report = store.sync_now();
    prop_assert!(report.error.is_none(), "sync failed: {report}");
    prop_assert_eq!(report.pending, 0, "sync left entries pending: {}", report);
    prop_assert!(
        dump_target(&paths.target) == model.dump(),
        "target differs from the model after a full sync\n target: {:?}\n model:  {:?}",
        dump_target(&paths.target),
        model.dump()
    );
    let st = store.status().expect("status");
    prop_assert_eq!(st.head_lsn, head);
    prop_assert_eq!(st.acked_lsn, head);
    prop_assert_eq!(st.pending_entries, 0);
    prop_assert_eq!(st.pending_bytes, 0);
    prop_assert!(st.last_error.is_none(), "{:?}", st.last_error);
    prop_assert_eq!(st.quarantined, 0);
    Ok(())
}

fn run_case(ops: &[Op], cov: &Coverage) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().expect("tempdir");
    let paths = Paths::in_dir(dir.path());
    let opts = || store_opts(&paths.target, RejectPolicy::Stop);
    let mut store = Some(open(&paths, opts()));
    let mut model = Model::default();
    let mut head = 0u64;
    let (mut rotated, mut retired) = (false, false);
    for (step, op) in ops.iter().enumerate() {
        let s = store.as_ref().expect("store is open");
        match op {
            Op::Apply(_) | Op::Big { .. } => {
                let cs = match op {
                    Op::Apply(cs) => cs.clone(),
                    Op::Big { id, len, byte } => big_change_set(*id, *len, *byte),
                    _ => unreachable!(),
                };
                let expected = model.apply(&cs);
                match (expected, s.apply(&cs)) {
                    (Ok(next), Ok(lsn)) => {
                        prop_assert_eq!(lsn, head + 1, "step {}: LSNs are contiguous", step);
                        head = lsn;
                        model = next;
                        bump(&cov.accepted);
                    }
                    (Err(_), Err(Error::Cache(CacheError::ChangeRefused { .. }))) => {
                        bump(&cov.rejected);
                        if let Some(first) = cs.mutations.first()
                            && model.apply(&ChangeSet::new().push(first.clone())).is_ok()
                        {
                            bump(&cov.rejected_after_valid_prefix);
                        }
                    }
                    (Ok(_), Err(e)) => {
                        return Err(TestCaseError::fail(format!(
                            "step {step}: the store refused a valid change set {cs:?}: {e}"
                        )));
                    }
                    (Err(why), Ok(lsn)) => {
                        return Err(TestCaseError::fail(format!(
                            "step {step}: the store accepted (LSN {lsn}) an invalid change set {cs:?} ({why})"
                        )));
                    }
                    (Err(why), Err(e)) => {
                        return Err(TestCaseError::fail(format!(
                            "step {step}: an invalid change set ({why}) must fail with Error::Cache(CacheError::ChangeRefused), got {e:?}"
                        )));
                    }
                }
                let js = s.journal_state();
                prop_assert_eq!(js.durable_lsn, head, "step {}: journal head", step);
                prop_assert_eq!(
                    js.next_lsn,
                    head + 1,
                    "step {}: a refused change set consumed an LSN",
                    step
                );
            }
            Op::Sync => {
                check_target(s, &paths, &model, head)?;
                bump(&cov.syncs);
            }
            Op::Reopen => {
                store.take().expect("open").close().expect("close");
                store = Some(open(&paths, opts()));
                bump(&cov.reopens);
            }
            Op::Crash(cs) => {
                // Only a change set the cache would have accepted can be in the journal.
                if let Ok(next) = model.apply(cs) {
                    store.take().expect("open").close().expect("close");
                    let journal = Journal::open(
                        &paths.journal,
                        JournalOptions::new()
                            .segment_bytes_max(SEG_BYTES)
                            .retain_acked_ms(0),
                    )
                    .expect("open journal");
                    let payload = encode_event(0, cs).expect("encode");
                    let lsn = journal
                        .append_kind(KIND_CHANGESET, &payload)
                        .expect("append");
                    journal.close().expect("close journal");
                    prop_assert_eq!(lsn, head + 1);
                    head = lsn;
                    model = next;
                    store = Some(open(&paths, opts()));
                    bump(&cov.crashes);
                }
            }
        }
        let s = store.as_ref().expect("store is open");
        let js = s.journal_state();
        prop_assert_eq!(
            js.durable_lsn,
            head,
            "step {}: journal head after {:?}",
            step,
            op
        );
        rotated |= js.segments > 1 || js.first_lsn > 1;
        retired |= js.first_lsn > 1;
        let st = s.status().expect("status");
        prop_assert_eq!(
            st.cache_applied_lsn,
            Some(head),
            "step {}: cache applied LSN",
            step
        );
        let cache = dump_cache(s);
        prop_assert!(
            cache == model.dump(),
            "step {}: cache differs from the model after {:?}\n cache: {:?}\n model: {:?}",
            step,
            op,
            cache,
            model.dump()
        );
    }
    let s = store.take().expect("open");
    check_target(&s, &paths, &model, head)?;
    // And once more after a restart: nothing reset, nothing re-applied.
    s.close().expect("close");
    let s = open(&paths, opts());
    check_target(&s, &paths, &model, head)?;
    prop_assert!(
        dump_cache(&s) == model.dump(),
        "cache after the final restart"
    );
    if rotated {
        bump(&cov.rotated_cases);
    }
    if retired {
        bump(&cov.retired_cases);
    }
    Ok(())
}

#[test]
fn store_matches_the_model() {
    let config = model_config(64, 256);
    let seed = config.rng_seed;
    let cases = config.cases;
    let cov = Coverage::default();
    let mut runner = TestRunner::new(config);
    let strategy = prop::collection::vec(op(), 1..40);
    if let Err(e) = runner.run(&strategy, |ops| run_case(&ops, &cov)) {
        panic!("{e}\nrerun with PROPTEST_RNG_SEED={seed}");
    }
    let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
    eprintln!(
        "seed {seed}: {cases} cases; {} accepted, {} rejected ({} after a valid prefix), {} syncs, {} reopens, {} caught up, {} cases rotated, {} retired segments",
        get(&cov.accepted),
        get(&cov.rejected),
        get(&cov.rejected_after_valid_prefix),
        get(&cov.syncs),
        get(&cov.reopens),
        get(&cov.crashes),
        get(&cov.rotated_cases),
        get(&cov.retired_cases),
    );
    // The generators must reach every path this test is about (counts include shrinking runs,
    // which only happen after a failure).
    if cases >= 32 {
        assert!(get(&cov.accepted) > 0 && get(&cov.rejected) > 0);
        assert!(get(&cov.rejected_after_valid_prefix) > 0);
        assert!(get(&cov.syncs) > 0 && get(&cov.reopens) > 0 && get(&cov.crashes) > 0);
        assert!(get(&cov.rotated_cases) > 0, "no case rotated the journal");
        assert!(get(&cov.retired_cases) > 0, "no case retired a segment");
    }
}

#[test]
fn the_model_agrees_with_the_documented_examples() {
    // Sanity of the model itself on hand-picked cases, so that a wrong model cannot hide
    // behind a store with the same mistake.
    let m = Model::default();
    let ok = |m: &Model, cs: ChangeSet| m.apply(&cs).expect("valid");
    let m = ok(
        &m,
        ChangeSet::new()
            .insert("items", [("id", 1)], [("name", "a")])
            .upsert("tags", [("tag", "t")], [("weight", 1.5)])
            .upsert(
                "pairs",
                [("b", Value::Integer(2)), ("a", Value::from("x"))],
                [("v", vec![1u8])],
            ),
    );
    assert!(
        m.apply(&ChangeSet::new().insert("items", [("id", 1)], [("name", "b")]))
            .is_err()
    );
    assert!(
        m.apply(&ChangeSet::new().update("items", [("id", 2)], [("name", "b")]))
            .is_err()
    );
    assert!(
        m.apply(&ChangeSet::new().upsert("tags", [("tag", "u")], [("raw", 1)]))
            .is_err()
    );
    assert!(
        m.apply(&ChangeSet::new().update("tags", [("tag", "t")], [("weight", Value::Null)]))
            .is_err()
    );
    assert!(
        m.apply(&ChangeSet::new().upsert("items", [("id", 1)], [("qty", "3")]))
            .is_err()
    );
    let m2 = ok(
        &m,
        ChangeSet::new().upsert("tags", [("tag", "t")], [("raw", 7)]),
    );
    assert_eq!(
        m2.dump()[2],
        vec![vec![Value::from("t"), Value::Real(1.5), Value::Integer(7)]]
    );
    let m3 = ok(
        &m2,
        ChangeSet::new()
            .delete("items", [("id", 1)])
            .delete("items", [("id", 1)]),
    );
    assert!(m3.dump()[0].is_empty());
    assert_eq!(
        m.dump()[0],
        vec![vec![
            Value::Integer(1),
            Value::from("a"),
            Value::Null,
            Value::Null,
            Value::Null
        ]]
    );
}
