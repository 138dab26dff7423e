//! Conflicts at replay: the policies (per table), what a resolver sees and returns, and how a
//! detected conflict settles an entry's change to one row (`sync-protocol.md` §4). Finding
//! conflicts and recording them is the target's; deciding them is this module's.

use std::fmt;
use std::sync::Arc;

use serde::Serialize;
use uuid::Uuid;

use crate::mutation::{ChangeSet, Columns, Mutation};
use crate::target::changes::row_identity;

/// An application's conflict resolver: sees the conflict, returns how to settle it. It runs on
/// the replayer's thread inside the target's transaction: it must not block for long. A
/// resolver that panics refuses the change (the entry is quarantined for a human).
pub type Resolver = Arc<dyn Fn(&Conflict<'_>) -> Resolution + Send + Sync>;

/// How a conflict on one table is settled (`sync-protocol.md` §4.3).
#[derive(Clone, Default)]
pub enum ConflictPolicy {
    /// The change with the larger HLC value wins; equal values are broken by the larger
    /// journal id. A row another machine deleted stays deleted (an update made without knowing
    /// of the deletion does not bring it back). The default.
    #[default]
    LastWriterWins,
    /// The target's row stays: the local change to it is dropped and recorded as overridden.
    TargetWins,
    /// The entry is quarantined with the conflict pending a human decision
    /// ([`Store::retry_quarantined`](crate::Store::retry_quarantined) applies it as it is,
    /// [`discard_quarantined`](crate::Store::discard_quarantined) drops it).
    Reject,
    /// The application decides.
    Resolve(Resolver),
}

impl fmt::Debug for ConflictPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ConflictPolicy::LastWriterWins => "LastWriterWins",
            ConflictPolicy::TargetWins => "TargetWins",
            ConflictPolicy::Reject => "Reject",
            ConflictPolicy::Resolve(_) => "Resolve(..)",
        })
    }
}

/// Conflict detection and the policy of each table. Every setter documents its default.
#[derive(Debug, Clone)]
pub struct ConflictPolicies {
    detect: bool,
    default: ConflictPolicy,
    tables: Vec<(String, ConflictPolicy)>,
}

impl Default for ConflictPolicies {
    fn default() -> Self {
        ConflictPolicies {
            detect: true,
            default: ConflictPolicy::LastWriterWins,
            tables: Vec::new(),
        }
    }
}

impl ConflictPolicies {
    /// Defaults: detection on, every table [`ConflictPolicy::LastWriterWins`].
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether entries are checked for conflicts at all (off: every entry applies as it is,
    /// as before conflicts existed). Default: true.
    pub fn detect(mut self, on: bool) -> Self {
        self.detect = on;
        self
    }

    /// The policy of every table not named by [`table`](Self::table). Default:
    /// [`ConflictPolicy::LastWriterWins`].
    pub fn default_policy(mut self, p: ConflictPolicy) -> Self {
        self.default = p;
        self
    }

    /// The policy of `table` (its name compared without case). Default: the default policy.
    pub fn table(mut self, table: impl Into<String>, p: ConflictPolicy) -> Self {
        let table = table.into();
        self.tables.retain(|(t, _)| !t.eq_ignore_ascii_case(&table));
        self.tables.push((table, p));
        self
    }

    /// True if detection is on.
    pub fn detects(&self) -> bool {
        self.detect
    }

    /// The policy that settles conflicts on `table`.
    pub fn policy_for(&self, table: &str) -> &ConflictPolicy {
        self.tables
            .iter()
            .find(|(t, _)| t.eq_ignore_ascii_case(table))
            .map_or(&self.default, |(_, p)| p)
    }
}

/// What met what, the local change first (`sync-protocol.md` §4.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum ConflictKind {
    /// The local change updates (or upserts) a row another machine changed.
    UpdateUpdate,
    /// The local change updates (or upserts) a row another machine deleted.
    UpdateDelete,
    /// The local change deletes a row another machine changed.
    DeleteUpdate,
    /// The local change inserts a row another machine inserted (or changed) meanwhile.
    InsertInsert,
    /// An application event writes a row another machine changed.
    EventUpdate,
    /// An application event writes a row another machine deleted.
    EventDelete,
}

impl ConflictKind {
    /// Its name as the conflict table stores it (`update/update`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            ConflictKind::UpdateUpdate => "update/update",
            ConflictKind::UpdateDelete => "update/delete",
            ConflictKind::DeleteUpdate => "delete/update",
            ConflictKind::InsertInsert => "insert/insert",
            ConflictKind::EventUpdate => "event/update",
            ConflictKind::EventDelete => "event/delete",
        }
    }

    /// The kind of a local change (`None`: an application event) meeting a row that is
    /// (`present`) or is not on the target; `None` if the two do not conflict (a delete of
    /// a deleted row; an insert of a key another machine deleted again).
    pub(crate) fn of(local: Option<&Mutation>, present: bool) -> Option<ConflictKind> {
        Some(match (local, present) {
            (None, true) => ConflictKind::EventUpdate,
            (None, false) => ConflictKind::EventDelete,
            (Some(Mutation::Insert { .. }), true) => ConflictKind::InsertInsert,
            (Some(Mutation::Insert { .. }), false) => return None,
            (Some(Mutation::Update { .. } | Mutation::Upsert { .. }), true) => {
                ConflictKind::UpdateUpdate
            }
            (Some(Mutation::Update { .. } | Mutation::Upsert { .. }), false) => {
                ConflictKind::UpdateDelete
            }
            (Some(Mutation::Delete { .. }), true) => ConflictKind::DeleteUpdate,
            (Some(Mutation::Delete { .. }), false) => return None,
        })
    }
}

impl fmt::Display for ConflictKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A conflict as a resolver sees it: an entry changed a row that another journal changed
/// after the entry's base (what its cache had pulled when it was made).
#[derive(Debug, Clone)]
pub struct Conflict<'a> {
    /// The table, as the entry names it.
    pub table: &'a str,
    /// The row's primary key, as the entry names it.
    pub key: &'a Columns,
    /// What met what.
    pub kind: ConflictKind,
    /// The row as the local cache knew it: the change log's latest record of it at or below
    /// the base (`Some(None)`: absent then). `None`: the log holds no such record (pruned, or
    /// the row is older than the log).
    pub base: Option<Option<&'a Columns>>,
    /// The entry's first change to the row (`None`: an application event).
    pub local: Option<&'a Mutation>,
    /// The target's row now, other columns (`None`: no row has the key).
    pub current: Option<&'a Columns>,
    /// The local change's HLC value (its store's clock when it was made).
    pub local_hlc: u64,
    /// The local journal.
    pub local_journal: Uuid,
    /// The HLC value of the other journal's latest change to the row.
    pub remote_hlc: u64,
    /// The other journal.
    pub remote_journal: Uuid,
    /// That change's sequence number in the change log.
    pub remote_seq: u64,
}

impl Conflict<'_> {
    /// True if the local change is the later one: the larger HLC value, equal values broken
    /// by the larger journal id.
    pub fn local_is_newer(&self) -> bool {
        (self.local_hlc, self.local_journal.as_bytes())
            > (self.remote_hlc, self.remote_journal.as_bytes())
    }
}

/// How to settle a conflict (a resolver's answer).
#[derive(Debug, Clone, PartialEq)]
pub enum Resolution {
    /// Apply the local change as it is (a local insert over an existing row writes its columns
    /// over it).
    KeepLocal,
    /// Keep the target's row; the local change to it is dropped (recorded as overridden).
    KeepTarget,
    /// Write this row (its other columns; unnamed columns keep what the target has), in place
    /// of the entry's changes to it.
    Write(Columns),
    /// Delete the row, in place of the entry's changes to it.
    Delete,
    /// Refuse: the entry is quarantined with the conflict pending a human decision.
    Refuse(String),
}

/// How an entry's changes to one row end up, once its conflict is decided.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Settle {
    /// As they are.
    Keep,
    /// As they are, inserts turned into upserts (the row exists).
    InsertsAsUpserts,
    /// Dropped.
    Drop,
    /// Replaced by an upsert of these columns.
    Write(Columns),
    /// Replaced by a delete.
    Delete,
}

impl Settle {
    /// The conflict table's `resolution` for it.
    pub(crate) fn resolution(&self) -> &'static str {
        match self {
            Settle::Keep | Settle::InsertsAsUpserts => "local",
            Settle::Drop => "target",
            Settle::Write(_) => "written",
            Settle::Delete => "deleted",
        }
    }
}

/// Decides `c` by `policy`: how the entry's changes to the row end up, or why the entry is
/// refused.
pub(crate) fn decide(policy: &ConflictPolicy, c: &Conflict<'_>) -> Result<Settle, String> {
    let resolution = match policy {
        ConflictPolicy::LastWriterWins => match c.kind {
            ConflictKind::UpdateDelete | ConflictKind::EventDelete => Resolution::KeepTarget,
            _ if c.local_is_newer() => Resolution::KeepLocal,
            _ => Resolution::KeepTarget,
        },
        ConflictPolicy::TargetWins => Resolution::KeepTarget,
        ConflictPolicy::Reject => Resolution::Refuse(format!(
            "{} conflict on {} with journal {}'s change (seq {}): the table's policy is to reject",
            c.kind, c.table, c.remote_journal, c.remote_seq
        )),
        ConflictPolicy::Resolve(f) => {
            match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(c))) {
                Ok(r) => r,
                Err(_) => Resolution::Refuse(format!(
                    "{} conflict on {}: the resolver panicked",
                    c.kind, c.table
                )),
            }
        }
    };
    Ok(match resolution {
        Resolution::KeepLocal => match c.local {
            Some(Mutation::Insert { .. }) if c.current.is_some() => Settle::InsertsAsUpserts,
            _ => Settle::Keep,
        },
        Resolution::KeepTarget => Settle::Drop,
        Resolution::Write(cols) => Settle::Write(cols),
        Resolution::Delete => Settle::Delete,
        Resolution::Refuse(why) => return Err(why),
    })
}

/// `cs` with each row's changes settled as `settled` says (rows by identity; a row not named
/// keeps its changes).
pub(crate) fn rewrite(cs: &ChangeSet, settled: &[(Vec<u8>, Settle)]) -> ChangeSet {
    let mut out = Vec::with_capacity(cs.mutations.len());
    let mut replaced: Vec<&[u8]> = Vec::new();
    for m in &cs.mutations {
        let id = row_identity(m.table(), m.key());
        let Some((id, s)) = settled.iter().find(|(i, _)| *i == id) else {
            out.push(m.clone());
            continue;
        };
        match s {
            Settle::Keep => out.push(m.clone()),
            Settle::InsertsAsUpserts => out.push(match m {
                Mutation::Insert { table, key, values } => Mutation::Upsert {
                    table: table.clone(),
                    key: key.clone(),
                    values: values.clone(),
                },
                other => other.clone(),
            }),
            Settle::Drop => {}
            Settle::Write(_) | Settle::Delete if replaced.contains(&id.as_slice()) => {}
            Settle::Write(values) => {
                replaced.push(id);
                out.push(Mutation::Upsert {
                    table: m.table().to_owned(),
                    key: m.key().clone(),
                    values: values.clone(),
                });
            }
            Settle::Delete => {
                replaced.push(id);
                out.push(Mutation::Delete {
                    table: m.table().to_owned(),
                    key: m.key().clone(),
                });
            }
        }
    }
    ChangeSet { mutations: out }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mutation::Value;

    fn key(i: i64) -> Columns {
        vec![("id".into(), Value::Integer(i))]
    }

    fn conflict<'a>(
        kind: ConflictKind,
        local: Option<&'a Mutation>,
        current: Option<&'a Columns>,
        hlcs: (u64, u64),
    ) -> Conflict<'a> {
        static KEY: std::sync::OnceLock<Columns> = std::sync::OnceLock::new();
        Conflict {
            table: "hosts",
            key: KEY.get_or_init(|| key(1)),
            kind,
            base: None,
            local,
            current,
            local_hlc: hlcs.0,
            local_journal: Uuid::from_u128(1),
            remote_hlc: hlcs.1,
            remote_journal: Uuid::from_u128(2),
            remote_seq: 9,
        }
    }

    #[test]
    fn last_writer_wins_by_hlc_then_journal_id_and_deletions_stand() {
        let lww = ConflictPolicy::LastWriterWins;
        let upd = Mutation::Update {
            table: "hosts".into(),
            key: key(1),
            values: vec![("a".into(), 1.into())],
        };
        let row = vec![("a".to_string(), Value::Integer(2))];
        let uu = |h| conflict(ConflictKind::UpdateUpdate, Some(&upd), Some(&row), h);
        assert_eq!(decide(&lww, &uu((5, 4))), Ok(Settle::Keep));
        assert_eq!(decide(&lww, &uu((4, 5))), Ok(Settle::Drop));
        // A tie: journal 1 < journal 2, so the remote one wins.
        assert_eq!(decide(&lww, &uu((5, 5))), Ok(Settle::Drop));
        let ud = conflict(ConflictKind::UpdateDelete, Some(&upd), None, (9, 1));
        assert_eq!(decide(&lww, &ud), Ok(Settle::Drop));
        let ins = Mutation::Insert {
            table: "hosts".into(),
            key: key(1),
            values: vec![],
        };
        let ii = conflict(ConflictKind::InsertInsert, Some(&ins), Some(&row), (9, 1));
        assert_eq!(decide(&lww, &ii), Ok(Settle::InsertsAsUpserts));
        assert_eq!(decide(&ConflictPolicy::TargetWins, &ii), Ok(Settle::Drop));
        assert!(
            decide(&ConflictPolicy::Reject, &ii)
                .unwrap_err()
                .contains("reject")
        );
        let panics: Resolver = Arc::new(|_| panic!("resolver bug"));
        assert!(
            decide(&ConflictPolicy::Resolve(panics), &ii)
                .unwrap_err()
                .contains("panicked")
        );
    }

    #[test]
    fn kinds_follow_the_local_change_and_the_targets_row() {
        let m = |i| match i {
            0 => Mutation::Insert {
                table: "t".into(),
                key: key(1),
                values: vec![],
            },
            1 => Mutation::Update {
                table: "t".into(),
                key: key(1),
                values: vec![],
            },
            _ => Mutation::Delete {
                table: "t".into(),
                key: key(1),
            },
        };
        let of = |i, p| ConflictKind::of(Some(&m(i)), p);
        assert_eq!(of(0, true), Some(ConflictKind::InsertInsert));
        assert_eq!(of(0, false), None);
        assert_eq!(of(1, true), Some(ConflictKind::UpdateUpdate));
        assert_eq!(of(1, false), Some(ConflictKind::UpdateDelete));
        assert_eq!(of(2, true), Some(ConflictKind::DeleteUpdate));
        assert_eq!(of(2, false), None);
        assert_eq!(
            ConflictKind::of(None, false),
            Some(ConflictKind::EventDelete)
        );
    }

    #[test]
    fn a_rewrite_settles_only_the_named_rows() {
        let cs = ChangeSet::new()
            .insert("t", [("id", 1)], [("a", 1)])
            .update("t", [("id", 1)], [("a", 2)])
            .update("t", [("id", 2)], [("a", 3)])
            .delete("t", [("id", 3)]);
        let id = |i: i64| row_identity("t", &key(i));
        let out = rewrite(
            &cs,
            &[
                (id(1), Settle::Write(vec![("a".into(), Value::Integer(9))])),
                (id(3), Settle::Drop),
            ],
        );
        assert_eq!(
            out,
            ChangeSet::new()
                .upsert("t", [("id", 1)], [("a", 9)])
                .update("t", [("id", 2)], [("a", 3)])
        );
        let up = rewrite(&cs, &[(id(1), Settle::InsertsAsUpserts)]);
        assert!(matches!(up.mutations[0], Mutation::Upsert { .. }));
        assert_eq!(up.mutations.len(), 4);
    }
}
