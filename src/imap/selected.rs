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
    /// The keywords the client has been told of in FLAGS.
    pub keywords: Vec<String>,
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
            crate::store::mailboxes::peek_recent(store, mailbox.id).await?
        } else {
            crate::store::mailboxes::claim_recent(store, mailbox.id).await?
        };
        let rows = mail::in_mailbox(store, mailbox.id).await?;
        let recent = rows
            .iter()
            .filter(|r| r.uid >= recent.0 && r.uid < recent.1)
            .map(|r| r.uid)
            .collect();
        let mut sel = Selected {
            mailbox,
            read_only,
            rows,
            recent,
            known_modseq,
            keywords: Vec::new(),
        };
        let rows = std::mem::take(&mut sel.rows);
        sel.learn_keywords(&rows);
        sel.rows = rows;
        Ok(sel)
    }

    /// Adds the keywords of `rows` not yet announced; true if there were any.
    pub fn learn_keywords(&mut self, rows: &[MailRow]) -> bool {
        let before = self.keywords.len();
        for f in rows.iter().flat_map(|r| r.flags.split_whitespace()) {
            if !f.starts_with('\\') && wire::is_flag(f) && !self.keywords.iter().any(|k| k == f) {
                self.keywords.push(f.to_owned());
            }
        }
        self.keywords.sort_unstable();
        self.keywords.len() != before
    }

    /// Writes the FLAGS and PERMANENTFLAGS responses: the system flags and every
    /// keyword in use (RFC 3501 7.2.6), so clients offer them.
    pub fn write_flag_lists(&self, out: &mut Vec<u8>) {
        let mut flags = String::from("\\Answered \\Flagged \\Deleted \\Seen \\Draft");
        for k in &self.keywords {
            flags.push(' ');
            flags.push_str(k);
        }
        out.extend_from_slice(format!("* FLAGS ({flags})\r\n").as_bytes());
        if self.read_only {
            out.extend_from_slice(b"* OK [PERMANENTFLAGS ()] Read-only mailbox\r\n");
        } else {
            out.extend_from_slice(
                format!("* OK [PERMANENTFLAGS ({flags} \\*)] Flags permitted\r\n").as_bytes(),
            );
        }
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
            // Rows are in UID order: each range is found by binary search, so a client
            // fetching one message at a time from a large mailbox costs log n each.
            let mut out = Vec::new();
            for (lo, hi) in ranges {
                let start = self.rows.partition_point(|r| r.uid < lo);
                let end = self.rows.partition_point(|r| r.uid <= hi);
                out.extend(start..end.max(start));
            }
            Ok(out)
        } else {
            let n = self.rows.len() as i64;
            if ranges.iter().any(|&(_, hi)| hi > n || hi < 1) {
                return Err("Invalid message sequence number");
            }
            // Ranges are merged and within 1..=n: positions straight from them.
            Ok(ranges
                .into_iter()
                .flat_map(|(lo, hi)| (lo.max(1) - 1) as usize..hi as usize)
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
        let mut out = Vec::new();
        write_set(&mut out, &[4, 1, 2, 3, 9]);
        assert_eq!(out, b"1:4,9");
    }
}
