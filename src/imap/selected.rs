//! The selected mailbox as one session sees it: message sequence numbers over UIDs,
//! each message's flags and MODSEQ, and how far the session has caught up with the
//! store (`known_modseq`). Catching up turns the store's changes into the untagged
//! EXISTS, EXPUNGE and FETCH responses RFC 3501 §7 asks for.

use super::wire;
use crate::store::Store;
use crate::store::mail::{self, MailRow};
use crate::store::mailboxes::MailboxRow;
use imap_codec::imap_types::sequence::{SeqOrUid, Sequence, SequenceSet};

pub struct Selected {
    pub mailbox: MailboxRow,
    pub read_only: bool,
    /// The messages in sequence order (ascending UID).
    pub rows: Vec<MailRow>,
    /// UIDs that are \Recent to this session.
    pub recent: Vec<i64>,
    /// Every change up to this MODSEQ is reflected in `rows`.
    pub known_modseq: i64,
}

/// What catching up found, to be written as untagged responses.
#[derive(Default)]
pub struct Catchup {
    /// Sequence numbers, in the order they must be announced.
    pub expunged: Vec<u32>,
    /// Messages whose flags changed: (sequence number, row).
    pub flag_changes: Vec<(u32, MailRow)>,
    pub new_messages: bool,
}

impl Selected {
    /// Opens `mailbox`: reads its messages and takes the ones no session has seen as
    /// \Recent to this one (unless read-only).
    pub async fn open(
        store: &Store,
        mailbox: MailboxRow,
        read_only: bool,
    ) -> crate::store::Result<Selected> {
        // What is known is what the mailbox's HIGHESTMODSEQ said before the rows were
        // read: a change that lands in between is read again at the next catch-up.
        let known_modseq = crate::store::mailboxes::by_id(store, mailbox.id)
            .await?
            .map_or(mailbox.highestmodseq, |m| m.highestmodseq);
        let recent = if read_only {
            (i64::MAX, i64::MAX)
        } else {
            crate::store::mailboxes::claim_recent(store, mailbox.id).await?
        };
        let rows = mail::in_mailbox(store, mailbox.id).await?;
        let recent = rows
            .iter()
            .filter(|r| r.uid >= recent.0 && r.uid < recent.1)
            .map(|r| r.uid)
            .collect();
        Ok(Selected {
            mailbox,
            read_only,
            rows,
            recent,
            known_modseq,
        })
    }

    pub fn exists(&self) -> u32 {
        self.rows.len() as u32
    }

    pub fn uid_next(&self) -> i64 {
        self.rows.last().map_or(self.mailbox.uidnext, |r| {
            (r.uid + 1).max(self.mailbox.uidnext)
        })
    }

    pub fn is_recent(&self, uid: i64) -> bool {
        self.recent.binary_search(&uid).is_ok()
    }

    pub fn seq_of(&self, uid: i64) -> Option<u32> {
        self.rows
            .binary_search_by_key(&uid, |r| r.uid)
            .ok()
            .map(|i| i as u32 + 1)
    }

    /// Reads the store's changes since `known_modseq`. With `allow_expunge` false
    /// (during FETCH, STORE and SEARCH by sequence number, RFC 3501 §7.4.1) expunges
    /// wait for a later command and nothing of them is applied yet.
    pub async fn catch_up(
        &mut self,
        store: &Store,
        allow_expunge: bool,
    ) -> crate::store::Result<Catchup> {
        let mut out = Catchup::default();
        let Some(changes) = mail::changes_since(store, self.mailbox.id, self.known_modseq).await?
        else {
            // The mailbox was deleted under this session: its messages are gone.
            if allow_expunge && !self.rows.is_empty() {
                out.expunged = (1..=self.rows.len() as u32).rev().collect();
                self.rows.clear();
                self.recent.clear();
            }
            return Ok(out);
        };
        if !allow_expunge && !changes.expunged.is_empty() {
            // Apply nothing: the next command that may announce expunges sees all of
            // it, in order, from the same MODSEQ.
            return Ok(out);
        }
        // Expunges: each sequence number as it is at its turn (later ones shift down),
        // then one pass to drop the rows.
        let gone: std::collections::HashSet<i64> =
            changes.expunged.iter().map(|(uid, _)| *uid).collect();
        if !gone.is_empty() {
            let mut removed = 0u32;
            for (i, row) in self.rows.iter().enumerate() {
                if gone.contains(&row.uid) {
                    out.expunged.push(i as u32 + 1 - removed);
                    removed += 1;
                }
            }
            self.rows.retain(|r| !gone.contains(&r.uid));
            self.recent.retain(|u| !gone.contains(u));
        }
        let last_uid = self.rows.last().map_or(0, |r| r.uid);
        let mut arrived = false;
        for row in changes.changed {
            match self.rows.binary_search_by_key(&row.uid, |r| r.uid) {
                Ok(i) => {
                    let flags_differ = self.rows[i].flags != row.flags;
                    self.rows[i] = row.clone();
                    if flags_differ {
                        out.flag_changes.push((i as u32 + 1, row));
                    }
                }
                Err(_) if row.uid > last_uid => {
                    self.rows.push(row);
                    arrived = true;
                }
                // A row below our last UID we never saw cannot be new; it was
                // expunged in a change we have applied. Skip it.
                Err(_) => {}
            }
        }
        if arrived {
            out.new_messages = true;
            if !self.read_only {
                let (from, to) =
                    crate::store::mailboxes::claim_recent(store, self.mailbox.id).await?;
                for r in self.rows.iter().filter(|r| r.uid > last_uid) {
                    if r.uid >= from && r.uid < to {
                        self.recent.push(r.uid);
                    }
                }
            }
        }
        self.known_modseq = changes.upto;
        Ok(out)
    }

    /// The sequence positions (0-based) a set names, in ascending order. `uid` says
    /// whether the set holds UIDs; `*` is the last message (or UID).
    pub fn resolve(&self, set: &SequenceSet, uid: bool) -> Result<Vec<usize>, &'static str> {
        let ranges = ranges(set, |s| match s {
            SeqOrUid::Value(v) => i64::from(v.get()),
            SeqOrUid::Asterisk => {
                if uid {
                    self.rows.last().map_or(0, |r| r.uid)
                } else {
                    self.rows.len() as i64
                }
            }
        });
        if uid {
            Ok(self
                .rows
                .iter()
                .enumerate()
                .filter(|(_, r)| in_ranges(&ranges, r.uid))
                .map(|(i, _)| i)
                .collect())
        } else {
            let n = self.rows.len() as i64;
            if ranges.iter().any(|&(_, hi)| hi > n || hi < 1) {
                return Err("Invalid message sequence number");
            }
            Ok((0..self.rows.len())
                .filter(|&i| in_ranges(&ranges, i as i64 + 1))
                .collect())
        }
    }
}

/// A sequence set as sorted, merged inclusive ranges.
pub fn ranges(set: &SequenceSet, value: impl Fn(SeqOrUid) -> i64) -> Vec<(i64, i64)> {
    let mut out: Vec<(i64, i64)> = set
        .0
        .as_ref()
        .iter()
        .map(|s| match s {
            Sequence::Single(v) => (value(*v), value(*v)),
            Sequence::Range(a, b) => {
                let (a, b) = (value(*a), value(*b));
                (a.min(b), a.max(b))
            }
        })
        .collect();
    out.sort_unstable();
    let mut merged: Vec<(i64, i64)> = Vec::with_capacity(out.len());
    for (lo, hi) in out {
        match merged.last_mut() {
            Some(last) if lo <= last.1 + 1 => last.1 = last.1.max(hi),
            _ => merged.push((lo, hi)),
        }
    }
    merged
}

pub fn in_ranges(ranges: &[(i64, i64)], n: i64) -> bool {
    let i = ranges.partition_point(|&(lo, _)| lo <= n);
    i > 0 && ranges[i - 1].1 >= n
}

/// Writes a list of numbers in the compact `1:3,7` form (UIDPLUS's uid-set).
pub fn write_set(out: &mut Vec<u8>, numbers: &[i64]) {
    let mut sorted = numbers.to_vec();
    sorted.sort_unstable();
    let mut first = true;
    let mut i = 0;
    while i < sorted.len() {
        let start = sorted[i];
        let mut end = start;
        while i + 1 < sorted.len() && sorted[i + 1] == end + 1 {
            i += 1;
            end = sorted[i];
        }
        if !first {
            out.push(b',');
        }
        first = false;
        out.extend_from_slice(start.to_string().as_bytes());
        if end != start {
            out.push(b':');
            out.extend_from_slice(end.to_string().as_bytes());
        }
        i += 1;
    }
}

/// Writes a message's flags as a parenthesized list, with \Recent when it applies.
pub fn write_flags(out: &mut Vec<u8>, flags: &str, recent: bool) {
    out.push(b'(');
    let mut first = true;
    for f in flags.split_whitespace().filter(|f| wire::is_flag(f)) {
        if !first {
            out.push(b' ');
        }
        first = false;
        out.extend_from_slice(f.as_bytes());
    }
    if recent {
        if !first {
            out.push(b' ');
        }
        out.extend_from_slice(b"\\Recent");
    }
    out.push(b')');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sets_become_merged_ranges() {
        let set = SequenceSet::try_from("5,1:3,2,9:7,*").unwrap();
        let r = ranges(&set, |s| match s {
            SeqOrUid::Value(v) => i64::from(v.get()),
            SeqOrUid::Asterisk => 20,
        });
        assert_eq!(r, vec![(1, 3), (5, 5), (7, 9), (20, 20)]);
        assert!(in_ranges(&r, 8) && in_ranges(&r, 1) && !in_ranges(&r, 4) && !in_ranges(&r, 21));
        let mut out = Vec::new();
        write_set(&mut out, &[4, 1, 2, 3, 9]);
        assert_eq!(out, b"1:4,9");
    }
}
