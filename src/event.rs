//! Journal events: the [`JournalEvent`] trait (the store's change sets, or an application's own
//! domain events), and the payload encoding of a store record (bincode 2, see
//! `journal-format.md` §5.1).
//!
//! # Size: one limit, on encoded bytes
//!
//! A payload is limited by its encoded length only: the journal's record limit
//! ([`JournalOptions::payload_bytes_limit`](crate::JournalOptions::payload_bytes_limit):
//! `record_bytes_max`, at most what one segment holds), which
//! [`Store::apply`](crate::Store::apply) checks right after encoding
//! ([`encode_event_within`]), before anything is written. Decoding has no size limit of its
//! own, so whatever was accepted decodes. It is bounded by the payload instead: every length a
//! payload announces is checked against the bytes left in it before anything is allocated, so
//! decoding `N` bytes takes `O(N)` time and memory and never allocates by a claim read from
//! disk (the decoder is in `event/payload.rs`). bincode's own guard, `with_limit`, counts
//! in-memory sizes — 8 bytes for a one-byte integer — and refused change sets of about
//! 200 000 mutations (6.5 MB) that the journal had accepted.

use crate::error::CacheError;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::apply::{ApplyContext, ApplyError};
use crate::error::Error;
use crate::mutation::{ChangeSet, Columns};

mod payload;

pub use payload::DEPTH_MAX;
pub(crate) use payload::decode_prefix;

/// Record kind of a row [`ChangeSet`] (schema version 1; see `journal-format.md` §5.1).
pub const KIND_CHANGESET: u8 = 0x10;

/// An event type the store can journal and apply: to SQLite (the cache, an SQLite target) and,
/// with feature `postgres`, to a PostgreSQL target. Only [`KIND`](JournalEvent::KIND) and
/// [`describe`](JournalEvent::describe) are required; each backend's apply has a default that
/// says the event has none.
///
/// [`ChangeSet`] implements it; an application that thinks in domain events implements it for
/// its own serde type and applies each event with its own SQL. `apply` runs inside a
/// transaction (a savepoint per event): return an error and the event's effects are rolled
/// back.
///
/// ```
/// use serde::{Deserialize, Serialize};
/// use syncjournal::{ApplyContext, ApplyError, JournalEvent};
///
/// #[derive(Serialize, Deserialize)]
/// struct CertificateRenewed { id: i64, not_after: String }
///
/// impl JournalEvent for CertificateRenewed {
///     const KIND: u8 = 0x40;
///     fn apply(&self, db: &mut ApplyContext<'_>) -> Result<(), ApplyError> {
///         let n = db.conn().execute(
///             "UPDATE certificates SET not_after = ?1 WHERE id = ?2",
///             (&self.not_after, self.id),
///         )?;
///         if n == 0 {
///             return Err(ApplyError::permanent(format!("no certificate {}", self.id)));
///         }
///         Ok(())
///     }
///     fn describe(&self) -> String {
///         format!("renew certificate {} until {}", self.id, self.not_after)
///     }
/// }
/// ```
pub trait JournalEvent: Serialize + DeserializeOwned + Send + Sync + 'static {
    /// The record kind that identifies this event type in the journal: an application kind
    /// (`0x02..=0xEF`), unique per type and schema version. `0x10` is [`ChangeSet`]'s.
    const KIND: u8;

    /// Applies the event to an SQLite database: the cache (always), and an SQLite target during
    /// replay. Default: [`ApplyError::Unsupported`] — an event type must give this apply to be
    /// stored at all, since the cache is SQLite.
    fn apply(&self, db: &mut ApplyContext<'_>) -> Result<(), ApplyError> {
        let _ = db;
        Err(ApplyError::Unsupported { backend: "SQLite" })
    }

    /// Applies the event to a PostgreSQL target during replay. Default:
    /// [`ApplyError::Unsupported`], which stops replay to a PostgreSQL target before the first
    /// such entry with an error saying so (the entry is not quarantined: it is not at fault).
    #[cfg(feature = "postgres")]
    fn apply_postgres(&self, db: &mut crate::target::PgApplyContext<'_>) -> Result<(), ApplyError> {
        let _ = db;
        Err(ApplyError::Unsupported {
            backend: "PostgreSQL",
        })
    }

    /// A one-line human description, for status, logs and quarantine listings.
    fn describe(&self) -> String;

    /// The rows this event writes, as (table, primary key): what the target's change log
    /// records once the event is applied there (each row as it is after the batch), so that
    /// other machines' caches pull the change; and what holds other machines' changes to
    /// these rows back from this cache until the event has reached the target. Default: none.
    /// An event that writes rows with its own SQL should list them here, or other machines
    /// never see its changes (`sync-protocol.md` §2).
    fn touched_rows(&self) -> Vec<(&str, &Columns)> {
        Vec::new()
    }

    /// The event as a change set, if it is one: conflict resolution settles a change set's
    /// changes row by row (`sync-protocol.md` §4.3). Default: `None` (an application event is
    /// applied whole or not at all).
    fn as_change_set(&self) -> Option<&ChangeSet> {
        None
    }

    /// An event of this type holding `cs` (a change set rewritten by conflict resolution).
    /// Default: `None`.
    fn from_change_set(cs: ChangeSet) -> Option<Self> {
        let _ = cs;
        None
    }
}

impl JournalEvent for ChangeSet {
    const KIND: u8 = KIND_CHANGESET;

    fn apply(&self, db: &mut ApplyContext<'_>) -> Result<(), ApplyError> {
        for m in &self.mutations {
            db.apply_mutation(m)?;
        }
        Ok(())
    }

    #[cfg(feature = "postgres")]
    fn apply_postgres(&self, db: &mut crate::target::PgApplyContext<'_>) -> Result<(), ApplyError> {
        db.apply_changes(&self.mutations)
    }

    fn as_change_set(&self) -> Option<&ChangeSet> {
        Some(self)
    }

    fn from_change_set(cs: ChangeSet) -> Option<Self> {
        Some(cs)
    }

    fn touched_rows(&self) -> Vec<(&str, &Columns)> {
        self.mutations
            .iter()
            .map(|m| (m.table(), m.key()))
            .collect()
    }

    fn describe(&self) -> String {
        match self.mutations.as_slice() {
            [] => "empty change set".into(),
            [m] => m.to_string(),
            [m, rest @ ..] => format!("{m} and {} more", rest.len()),
        }
    }
}

/// Encodes a store record payload: `(created_at_ms: u64, event: E)` with bincode 2's standard
/// configuration (`journal-format.md` §5.1). No size limit: see [`encode_event_within`], which
/// the store uses.
pub fn encode_event<E: JournalEvent>(created_at_ms: u64, event: &E) -> Result<Vec<u8>, String> {
    bincode::serde::encode_to_vec((created_at_ms, event), bincode::config::standard())
        .map_err(|e| e.to_string())
}

/// Encodes a store record payload as [`encode_event`] does, ending it with `stamp` if given
/// (`journal-format.md` §5.2), refusing an encoding longer than
/// `payload_bytes_max` (the journal's record limit,
/// [`JournalOptions::payload_bytes_limit`](crate::JournalOptions::payload_bytes_limit)) and one
/// that [`decode_event`] would not read back (see [`DEPTH_MAX`]): what this accepts, the
/// store's decoders read.
///
/// # Errors
///
/// [`CacheError::EventTooLarge`]; [`CacheError::EventUnencodable`] if serde or the decoder refuses it.
pub fn encode_event_within<E: JournalEvent>(
    created_at_ms: u64,
    event: &E,
    stamp: Option<Stamp>,
    payload_bytes_max: usize,
) -> Result<Vec<u8>, Error> {
    let unencodable = |reason| {
        Error::Cache(CacheError::EventUnencodable {
            kind: E::KIND,
            reason,
        })
    };
    let mut payload = encode_event(created_at_ms, event).map_err(unencodable)?;
    if let Some(s) = stamp {
        payload.extend_from_slice(&s.to_bytes());
    }
    if payload.len() > payload_bytes_max {
        return Err(Error::Cache(CacheError::EventTooLarge {
            kind: E::KIND,
            len: payload.len(),
            max: payload_bytes_max,
        }));
    }
    decode_event::<E>(&payload)
        .map_err(|e| unencodable(format!("it would not decode again: {e}")))?;
    Ok(payload)
}

/// Decodes a store record payload of any length, with or without its [`Stamp`] (which it
/// drops: see [`decode_stamped_event`]). Never panics; bytes after the event other than a stamp
/// are an error; every announced length is checked against the bytes left before anything is
/// allocated, so decoding `N` bytes allocates `O(N)` (see the module documentation).
pub fn decode_event<E: JournalEvent>(payload: &[u8]) -> Result<(u64, E), String> {
    decode_stamped_event(payload).map(|(at, e, _)| (at, e))
}

/// Decodes a store record payload as [`decode_event`] does, and its [`Stamp`] if it has one
/// (`journal-format.md` §5.2).
pub fn decode_stamped_event<E: JournalEvent>(
    payload: &[u8],
) -> Result<(u64, E, Option<Stamp>), String> {
    let ((at, e), used): ((u64, E), usize) =
        payload::decode_prefix(payload).map_err(|e| e.to_string())?;
    let stamp = Stamp::read(&payload[used..])?;
    Ok((at, e, stamp))
}

/// What a store knew when it made an event (`journal-format.md` §5.2): the version of the data
/// the event was made against, and when, in the store's hybrid logical clock. The replayer
/// compares them with the target's change log to detect conflicts (`sync-protocol.md` §4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    /// The cache's pull cursor when the event was made: every change-log record up to this
    /// sequence number was in the cache, none after it from another journal.
    pub base_seq: u64,
    /// The store's hybrid-logical-clock value for the event (`ms << 16 | counter`): above every
    /// value the store gave before and every one it pulled.
    pub hlc: u64,
}

/// The byte that opens a payload's [`Stamp`].
pub const STAMP_TAG: u8 = 0x01;

/// The length of a payload's [`Stamp`]: the tag, then `base_seq` and `hlc`, each 8 bytes
/// little-endian.
pub const STAMP_BYTES: usize = 17;

impl Stamp {
    /// The stamp's bytes, as they end a payload.
    pub fn to_bytes(self) -> [u8; STAMP_BYTES] {
        let mut b = [0u8; STAMP_BYTES];
        b[0] = STAMP_TAG;
        b[1..9].copy_from_slice(&self.base_seq.to_le_bytes());
        b[9..].copy_from_slice(&self.hlc.to_le_bytes());
        b
    }

    /// Reads what follows a payload's event: nothing, or exactly one stamp.
    fn read(rest: &[u8]) -> Result<Option<Stamp>, String> {
        match rest {
            [] => Ok(None),
            [STAMP_TAG, tail @ ..] if tail.len() == STAMP_BYTES - 1 => {
                let u = |b: &[u8]| u64::from_le_bytes(b.try_into().expect("8 bytes"));
                Ok(Some(Stamp {
                    base_seq: u(&tail[..8]),
                    hlc: u(&tail[8..]),
                }))
            }
            _ => Err(format!(
                "{} trailing bytes after the event (a stamp is {STAMP_BYTES} bytes opening with {STAMP_TAG:#04x})",
                rest.len()
            )),
        }
    }

    /// Overwrites the stamp that ends `payload` (one [`encode_event_within`] made with a stamp).
    pub(crate) fn overwrite(self, payload: &mut [u8]) {
        let at = payload.len() - STAMP_BYTES;
        payload[at..].copy_from_slice(&self.to_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mutation::Value;

    #[test]
    fn round_trip_every_mutation_and_value() {
        let cs = ChangeSet::new()
            .insert("t", [("id", 1)], [("a", Value::Null), ("b", 2.5.into())])
            .update("t", [("id", 1)], [("c", "x")])
            .upsert("t", [("id", 2)], [("d", vec![1u8, 2, 3])])
            .delete("t", [("id", 3)]);
        let bytes = encode_event(1234, &cs).unwrap();
        let (at, back): (u64, ChangeSet) = decode_event(&bytes).unwrap();
        assert_eq!(at, 1234);
        assert_eq!(back, cs);
    }

    #[test]
    fn decoding_garbage_is_an_error_not_a_panic() {
        for n in 0..64u8 {
            let junk: Vec<u8> = (0..n).map(|i| i.wrapping_mul(37)).collect();
            let _ = decode_event::<ChangeSet>(&junk);
        }
        // a huge announced length is refused by the limit instead of allocating
        let mut huge = vec![0u8];
        huge.push(1);
        huge.extend_from_slice(&[253, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f]);
        assert!(decode_event::<ChangeSet>(&huge).is_err());
    }

    #[test]
    fn a_stamp_ends_the_payload_and_nothing_else_may() {
        let cs = ChangeSet::new().delete("t", [("id", 1)]);
        let plain = encode_event(9, &cs).unwrap();
        let stamp = Stamp {
            base_seq: 0x0102,
            hlc: u64::MAX,
        };
        let mut stamped = encode_event_within(9, &cs, Some(stamp), 1 << 20).unwrap();
        assert_eq!(stamped.len(), plain.len() + STAMP_BYTES);
        assert_eq!(&stamped[..plain.len()], &plain[..]);
        assert_eq!(
            &stamped[plain.len()..],
            &[
                1, 2, 1, 0, 0, 0, 0, 0, 0, 255, 255, 255, 255, 255, 255, 255, 255
            ]
        );
        let (at, back, got) = decode_stamped_event::<ChangeSet>(&stamped).unwrap();
        assert_eq!((at, &back, got), (9, &cs, Some(stamp)));
        assert_eq!(decode_stamped_event::<ChangeSet>(&plain).unwrap().2, None);
        let later = Stamp {
            base_seq: 7,
            hlc: 8,
        };
        later.overwrite(&mut stamped);
        assert_eq!(
            decode_stamped_event::<ChangeSet>(&stamped).unwrap().2,
            Some(later)
        );
        // A wrong tag, a short or a long stamp: errors.
        let mut wrong = stamped.clone();
        wrong[plain.len()] = 2;
        assert!(decode_event::<ChangeSet>(&wrong).is_err());
        assert!(decode_event::<ChangeSet>(&stamped[..stamped.len() - 1]).is_err());
        stamped.push(0);
        assert!(decode_event::<ChangeSet>(&stamped).is_err());
    }

    #[test]
    fn trailing_bytes_are_refused() {
        let mut bytes = encode_event(1, &ChangeSet::new().delete("t", [("id", 1)])).unwrap();
        bytes.push(0);
        assert!(decode_event::<ChangeSet>(&bytes).is_err());
    }

    #[test]
    fn describe_is_one_line() {
        let cs = ChangeSet::new()
            .delete("hosts", [("id", 3)])
            .delete("hosts", [("id", 4)]);
        assert_eq!(cs.describe(), "delete hosts [id=3] and 1 more");
    }
}
