//! SEARCH: whether one message satisfies a search program (RFC 3501 §6.4.4, plus the
//! MODSEQ key of CONDSTORE, RFC 7162 §3.1.5). The program comes parsed by imap-codec;
//! this module owns its meaning, message by message. Which messages to try, and the
//! response, are the session's.
//!
//! Semantics, chosen to match Dovecot where RFC 3501 leaves room:
//!
//! - String keys match a case-insensitive substring of decoded text: RFC 2047 words
//!   in header fields, transfer encoding and charset in bodies. An empty string
//!   matches every message that has the field (or a body).
//! - FROM, TO, CC, BCC and SUBJECT are HEADER searches of that field; BODY searches
//!   the text parts (HTML both as written and as text, nested messages included);
//!   TEXT searches the header fields and the body.
//! - BEFORE, ON and SINCE compare the day of the internal date in UTC; SENTBEFORE,
//!   SENTON and SENTSINCE the date written in the Date field, its time and zone
//!   ignored, or the internal date's day when there is no readable Date.
//! - `*` in a sequence or UID set is the largest number in use ([`Context`]); in an
//!   empty mailbox it names nothing.
//! - A program nested deeper than [`MAX_DEPTH`] matches nothing.
//!
//! Nothing here panics on any message or program: mail-parser runs under
//! `catch_unwind` (as in `crate::convert::parse_mail`), and recursion is bounded.

use imap_codec::imap_types::datetime::NaiveDate;
use imap_codec::imap_types::search::SearchKey;
use imap_codec::imap_types::sequence::{SeqOrUid, Sequence, SequenceSet};
use mail_parser::{HeaderName, HeaderValue, MessageParser, PartType};
use std::cell::{Cell, OnceCell};

/// Deepest nesting of AND, OR and NOT evaluated. imap-codec's parser bounds nesting
/// already; this bound keeps the evaluator safe without relying on it.
pub const MAX_DEPTH: usize = 64;

/// Deepest nesting of message/rfc822 parts whose text BODY and TEXT search.
const MAX_MESSAGE_DEPTH: usize = 8;

const SECONDS_PER_DAY: i64 = 86_400;

/// One message as SEARCH sees it.
pub struct Candidate<'a> {
    /// Message sequence number.
    pub seq: u32,
    pub uid: u32,
    /// System flags with their backslash (`\Seen`, `\Answered`, `\Flagged`,
    /// `\Deleted`, `\Draft`) and keywords as they are (`$Paid`).
    pub flags: &'a [String],
    pub recent: bool,
    /// INTERNALDATE, unix seconds.
    pub internal_date: i64,
    /// RFC822.SIZE.
    pub size: u64,
    pub modseq: u64,
    /// The message bytes: `Some` whenever [`needs_message`] is true for the program.
    pub raw: Option<&'a [u8]>,
}

/// What `*` means in sequence sets: the largest sequence number and UID in use, 0 for
/// an empty mailbox.
pub struct Context {
    pub max_seq: u32,
    pub max_uid: u32,
}

/// Whether any key of the program reads the message itself (header fields, body, the
/// Date field), so the caller must open it. True also for a program too deep to
/// look into, so a caller never withholds bytes a key would need.
pub fn needs_message(key: &SearchKey<'_>) -> bool {
    needs(key, 0)
}

fn needs(key: &SearchKey<'_>, depth: usize) -> bool {
    if depth > MAX_DEPTH {
        return true;
    }
    match key {
        SearchKey::And(keys) => keys.as_ref().iter().any(|k| needs(k, depth + 1)),
        SearchKey::Or(a, b) => needs(a, depth + 1) || needs(b, depth + 1),
        SearchKey::Not(k) => needs(k, depth + 1),
        SearchKey::Bcc(_)
        | SearchKey::Body(_)
        | SearchKey::Cc(_)
        | SearchKey::From(_)
        | SearchKey::Header(..)
        | SearchKey::SentBefore(_)
        | SearchKey::SentOn(_)
        | SearchKey::SentSince(_)
        | SearchKey::Subject(_)
        | SearchKey::Text(_)
        | SearchKey::To(_) => true,
        _ => false,
    }
}

/// Whether the message `c` satisfies the program `key`.
pub fn matches(key: &SearchKey<'_>, c: &Candidate<'_>, ctx: &Context) -> bool {
    let eval = Eval {
        c,
        ctx,
        too_deep: Cell::new(false),
        message: OnceCell::new(),
        fields: OnceCell::new(),
        bodies: OnceCell::new(),
    };
    let matched = eval.key(key, 0);
    // A program past the depth bound matches nothing, whatever NOT made of the cut.
    matched && !eval.too_deep.get()
}

/// One evaluation: the candidate and what has been read of it so far. Each piece is
/// parsed at most once however many keys look at it.
struct Eval<'a, 'c> {
    c: &'c Candidate<'a>,
    ctx: &'c Context,
    too_deep: Cell<bool>,
    message: OnceCell<Option<mail_parser::Message<'a>>>,
    /// (lowercased field name, folded decoded value) of the top-level header.
    fields: OnceCell<Vec<(String, String)>>,
    /// Folded text of each body part.
    bodies: OnceCell<Vec<String>>,
}

impl<'a> Eval<'a, '_> {
    fn key(&self, key: &SearchKey<'_>, depth: usize) -> bool {
        if depth > MAX_DEPTH {
            self.too_deep.set(true);
            return false;
        }
        let c = self.c;
        match key {
            SearchKey::And(keys) => keys.as_ref().iter().all(|k| self.key(k, depth + 1)),
            SearchKey::Or(a, b) => self.key(a, depth + 1) || self.key(b, depth + 1),
            SearchKey::Not(k) => !self.key(k, depth + 1),
            SearchKey::All => true,

            SearchKey::SequenceSet(set) => in_set(set, c.seq, self.ctx.max_seq),
            SearchKey::Uid(set) => in_set(set, c.uid, self.ctx.max_uid),

            SearchKey::Answered => self.flag("\\Answered"),
            SearchKey::Deleted => self.flag("\\Deleted"),
            SearchKey::Draft => self.flag("\\Draft"),
            SearchKey::Flagged => self.flag("\\Flagged"),
            SearchKey::Seen => self.flag("\\Seen"),
            SearchKey::Unanswered => !self.flag("\\Answered"),
            SearchKey::Undeleted => !self.flag("\\Deleted"),
            SearchKey::Undraft => !self.flag("\\Draft"),
            SearchKey::Unflagged => !self.flag("\\Flagged"),
            SearchKey::Unseen => !self.flag("\\Seen"),
            SearchKey::Keyword(k) => self.flag(k.as_ref()),
            SearchKey::Unkeyword(k) => !self.flag(k.as_ref()),
            SearchKey::Recent => c.recent,
            SearchKey::New => c.recent && !self.flag("\\Seen"),
            SearchKey::Old => !c.recent,

            SearchKey::Before(d) => search_day(d).is_some_and(|d| internal_day(c) < d),
            SearchKey::On(d) => search_day(d).is_some_and(|d| internal_day(c) == d),
            SearchKey::Since(d) => search_day(d).is_some_and(|d| internal_day(c) >= d),
            SearchKey::SentBefore(d) => search_day(d).is_some_and(|d| self.sent_day() < d),
            SearchKey::SentOn(d) => search_day(d).is_some_and(|d| self.sent_day() == d),
            SearchKey::SentSince(d) => search_day(d).is_some_and(|d| self.sent_day() >= d),

            SearchKey::Larger(n) => c.size > u64::from(*n),
            SearchKey::Smaller(n) => c.size < u64::from(*n),

            SearchKey::Bcc(s) => self.field("Bcc", s.as_ref()),
            SearchKey::Cc(s) => self.field("Cc", s.as_ref()),
            SearchKey::From(s) => self.field("From", s.as_ref()),
            SearchKey::To(s) => self.field("To", s.as_ref()),
            SearchKey::Subject(s) => self.field("Subject", s.as_ref()),
            SearchKey::Header(name, s) => {
                self.field(&String::from_utf8_lossy(name.as_ref()), s.as_ref())
            }
            SearchKey::Body(s) => self.body(&needle(s.as_ref())),
            SearchKey::Text(s) => {
                let n = needle(s.as_ref());
                self.fields()
                    .iter()
                    .any(|(name, value)| name.contains(&n) || value.contains(&n))
                    || self.body(&n)
            }

            // CONDSTORE keeps one mod-sequence per message, so a key naming a flag's
            // entry compares the message's, as RFC 7162 §3.1.5 allows.
            SearchKey::ModSequence { modseq, .. } => c.modseq >= *modseq,

            // Keys of extensions not announced (WITHIN, when imap-types is built with
            // it for someone else) match nothing.
            #[allow(unreachable_patterns)]
            _ => false,
        }
    }

    /// Whether the candidate has the flag or keyword; both compare case-insensitively
    /// (RFC 3501 §2.3.2).
    fn flag(&self, name: &str) -> bool {
        self.c.flags.iter().any(|f| f.eq_ignore_ascii_case(name))
    }

    fn message(&self) -> Option<&mail_parser::Message<'a>> {
        self.message
            .get_or_init(|| {
                let raw = self.c.raw?;
                // Every field is read as unstructured text (RFC 2047 decoded), so
                // address fields search as written ("Name <addr>"); Date keeps its date
                // parser for the SENT* keys and the MIME fields theirs for the body.
                std::panic::catch_unwind(|| {
                    MessageParser::new()
                        .with_mime_headers()
                        .header_date(HeaderName::Date)
                        .default_header_text()
                        .parse(raw)
                })
                .ok()
                .flatten()
            })
            .as_ref()
    }

    fn fields(&self) -> &[(String, String)] {
        self.fields.get_or_init(|| match self.message() {
            Some(m) => fields_of(m),
            None => Vec::new(),
        })
    }

    /// HEADER: a field named `name` (any case) whose decoded value holds the string.
    fn field(&self, name: &str, s: &[u8]) -> bool {
        let n = needle(s);
        self.fields()
            .iter()
            .any(|(f, value)| f.eq_ignore_ascii_case(name) && value.contains(&n))
    }

    fn body(&self, n: &str) -> bool {
        self.bodies
            .get_or_init(|| {
                let mut out = Vec::new();
                if let Some(m) = self.message() {
                    bodies_of(m, 0, &mut out);
                }
                out
            })
            .iter()
            .any(|b| b.contains(n))
    }

    /// The day of the first Date field, as written; the internal date's day when the
    /// message has no readable Date (as Dovecot does).
    fn sent_day(&self) -> i64 {
        self.message()
            .and_then(|m| {
                m.headers().iter().find_map(|h| match &h.value {
                    HeaderValue::DateTime(d) if h.name == HeaderName::Date && d.is_valid() => Some(
                        days_from_civil(i64::from(d.year), i64::from(d.month), i64::from(d.day)),
                    ),
                    _ => None,
                })
            })
            .unwrap_or_else(|| internal_day(self.c))
    }
}

/// The search string as matched: folded text (the session has checked the CHARSET;
/// anything else is read as UTF-8, lossily).
fn needle(s: &[u8]) -> String {
    fold(&String::from_utf8_lossy(s))
}

/// Text as strings are compared: lowercase, and every kind of space (a no-break space
/// from `&nbsp;`, a tab) a plain space.
fn fold(s: &str) -> String {
    s.chars()
        .flat_map(char::to_lowercase)
        .map(|c| if c.is_whitespace() { ' ' } else { c })
        .collect()
}

/// (lowercased name, folded decoded value) of each top-level header field.
fn fields_of(m: &mail_parser::Message<'_>) -> Vec<(String, String)> {
    let raw = m.raw_message();
    m.headers()
        .iter()
        .map(|h| {
            let value = match &h.value {
                HeaderValue::Text(t) => t.to_string(),
                HeaderValue::TextList(l) => l.join(", "),
                // Fields kept structured (Date, the MIME fields) search as written.
                _ => unfold(
                    raw.get(h.offset_start as usize..h.offset_end as usize)
                        .unwrap_or_default(),
                ),
            };
            (h.name.as_str().to_lowercase(), fold(&value))
        })
        .collect()
}

/// A raw field value on one line: folding removed, surrounding space trimmed.
fn unfold(value: &[u8]) -> String {
    let text = String::from_utf8_lossy(value);
    text.split(['\r', '\n'])
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("")
        .trim()
        .to_owned()
}

/// The folded text of every text part: plain as decoded, HTML both as written and
/// as text (a search for a link or for the words finds it), and the header fields and
/// text of nested messages, which are part of this message's body.
fn bodies_of(m: &mail_parser::Message<'_>, depth: usize, out: &mut Vec<String>) {
    for part in &m.parts {
        match &part.body {
            PartType::Text(t) => out.push(fold(t)),
            PartType::Html(h) => {
                out.push(fold(h));
                out.push(fold(&mail_parser::decoders::html::html_to_text(h)));
            }
            PartType::Message(nested) if depth < MAX_MESSAGE_DEPTH => {
                out.extend(
                    fields_of(nested)
                        .into_iter()
                        .map(|(name, value)| format!("{name}: {value}")),
                );
                bodies_of(nested, depth + 1, out);
            }
            _ => {}
        }
    }
}

/// Whether `value` is in the set, `*` being `max` (and nothing when `max` is 0).
fn in_set(set: &SequenceSet, value: u32, max: u32) -> bool {
    let resolve = |x: &SeqOrUid| match x {
        SeqOrUid::Value(n) => Some(n.get()),
        SeqOrUid::Asterisk => (max > 0).then_some(max),
    };
    set.0.as_ref().iter().any(|s| match s {
        Sequence::Single(a) => resolve(a) == Some(value),
        // A range holds both ends in either order (RFC 3501 §9, seq-range).
        Sequence::Range(a, b) => match (resolve(a), resolve(b)) {
            (Some(a), Some(b)) => (a.min(b)..=a.max(b)).contains(&value),
            _ => false,
        },
    })
}

fn internal_day(c: &Candidate<'_>) -> i64 {
    c.internal_date.div_euclid(SECONDS_PER_DAY)
}

/// Days since 1970-01-01 of a search date. imap-types keeps a chrono date this crate
/// does not otherwise depend on; its Debug form is ISO 8601 (`2024-02-29`), read back
/// here. None (the key matches nothing) for anything else.
fn search_day(d: &NaiveDate) -> Option<i64> {
    let text = format!("{d:?}");
    let mut parts = text.splitn(3, '-');
    let year: i64 = parts.next()?.parse().ok()?;
    let month: i64 = parts.next()?.parse().ok()?;
    let day: i64 = parts.next()?.parse().ok()?;
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) {
        return None;
    }
    Some(days_from_civil(year, month, day))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm). Days
/// past a month's end roll into the next month, as a lenient Date reader would.
pub(crate) fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;
    use imap_codec::CommandCodec;
    use imap_codec::decode::Decoder;
    use imap_codec::imap_types::command::CommandBody;
    use imap_codec::imap_types::core::Vec1;

    /// The program of `UID SEARCH <criteria>`, parsed by imap-codec as the session
    /// will parse it.
    fn program(criteria: &str) -> SearchKey<'static> {
        let line = format!("a UID SEARCH {criteria}\r\n");
        let (_, cmd) = CommandCodec::new()
            .decode_static(line.as_bytes())
            .unwrap_or_else(|e| panic!("{criteria}: {e:?}"));
        let CommandBody::Search { criteria, .. } = cmd.body else {
            panic!("not a SEARCH");
        };
        let mut keys = criteria.into_inner();
        if keys.len() == 1 {
            keys.remove(0)
        } else {
            SearchKey::And(Vec1::try_from(keys).unwrap())
        }
    }

    const PLAIN: &[u8] = b"From: =?utf-8?q?J=C3=B6rg_M=C3=BCller?= <joerg@example.org>\r\n\
To: Alice <alice@bridge.test>, bob@example.net\r\n\
Cc: carol@example.com\r\n\
Bcc: dave@example.com\r\n\
Subject: =?iso-8859-1?q?Gr=FC=DFe?= from\r\n the lake\r\n\
Date: Sat, 01 Jun 2024 23:30:00 -0700\r\n\
X-Mailer: Quill 2.0\r\n\
X-Empty:\r\n\
Message-ID: <m1@example.org>\r\n\
\r\n\
Hello Alice,\r\nthe boat is ready.\r\n";

    const MULTIPART: &[u8] = b"From: erin@example.org\r\n\
Subject: invoice\r\n\
MIME-Version: 1.0\r\n\
Content-Type: multipart/mixed; boundary=\"b1\"\r\n\
\r\n\
--b1\r\n\
Content-Type: multipart/alternative; boundary=\"b2\"\r\n\
\r\n\
--b2\r\n\
Content-Type: text/plain; charset=iso-8859-1\r\n\
Content-Transfer-Encoding: quoted-printable\r\n\
\r\n\
Sch=F6ne Gr=FC=DFe\r\n\
--b2\r\n\
Content-Type: text/html; charset=utf-8\r\n\
Content-Transfer-Encoding: base64\r\n\
\r\n\
PHA+PGEgaHJlZj0iaHR0cHM6Ly9wYXkuZXhhbXBsZS9pbnYvNDIiPlBheSZuYnNwO25vdzwvYT48L3A+\r\n\
--b2--\r\n\
--b1\r\n\
Content-Type: message/rfc822\r\n\
\r\n\
From: frank@example.org\r\n\
Subject: forwarded note\r\n\
\r\n\
inner secret words\r\n\
--b1\r\n\
Content-Type: application/octet-stream\r\n\
Content-Transfer-Encoding: base64\r\n\
\r\n\
bmVlZGxlIGluIGJpbmFyeQ==\r\n\
--b1--\r\n";

    /// 2024-06-02T06:30:00Z, the UTC instant of PLAIN's Date.
    const JUNE_2_UTC: i64 = 1_717_309_800;

    fn flags(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    fn candidate<'a>(raw: &'a [u8], flags: &'a [String]) -> Candidate<'a> {
        Candidate {
            seq: 3,
            uid: 30,
            flags,
            recent: false,
            internal_date: JUNE_2_UTC,
            size: raw.len() as u64,
            modseq: 7,
            raw: Some(raw),
        }
    }

    const CTX: Context = Context {
        max_seq: 5,
        max_uid: 50,
    };

    fn check(c: &Candidate<'_>, ctx: &Context, criteria: &str) -> bool {
        matches(&program(criteria), c, ctx)
    }

    #[track_caller]
    fn yes(c: &Candidate<'_>, criteria: &str) {
        assert!(check(c, &CTX, criteria), "{criteria} should match");
    }

    #[track_caller]
    fn no(c: &Candidate<'_>, criteria: &str) {
        assert!(!check(c, &CTX, criteria), "{criteria} should not match");
    }

    #[test]
    fn all_and_nesting() {
        let f = flags(&["\\Seen"]);
        let c = candidate(PLAIN, &f);
        yes(&c, "ALL");
        no(&c, "NOT ALL");
        yes(&c, "SEEN ALL");
        no(&c, "SEEN UNSEEN");
        yes(&c, "OR UNSEEN SEEN");
        no(&c, "OR UNSEEN DRAFT");
        yes(&c, "(SEEN (NOT DRAFT))");
        yes(&c, "NOT (OR DRAFT (UNSEEN))");
        yes(&c, "OR (DRAFT FLAGGED) (SEEN NOT DELETED)");
    }

    #[test]
    fn flags_and_keywords() {
        let f = flags(&["\\Answered", "\\flagged", "\\Deleted", "\\Draft", "$Paid"]);
        let c = candidate(PLAIN, &f);
        for k in ["ANSWERED", "FLAGGED", "DELETED", "DRAFT", "UNSEEN"] {
            yes(&c, k);
        }
        for k in ["UNANSWERED", "UNFLAGGED", "UNDELETED", "UNDRAFT", "SEEN"] {
            no(&c, k);
        }
        yes(&c, "KEYWORD $Paid");
        yes(&c, "KEYWORD $paid");
        no(&c, "KEYWORD $Junk");
        yes(&c, "UNKEYWORD $Junk");
        no(&c, "UNKEYWORD $PAID");
        // A keyword is not a system flag with its backslash dropped.
        no(&c, "KEYWORD Answered");

        let none: Vec<String> = vec![];
        let c = candidate(PLAIN, &none);
        yes(&c, "UNANSWERED UNFLAGGED UNDELETED UNDRAFT UNSEEN");
    }

    #[test]
    fn recent_new_old() {
        let unseen: Vec<String> = vec![];
        let seen = flags(&["\\Seen"]);
        let mut c = candidate(PLAIN, &unseen);
        c.recent = true;
        yes(&c, "RECENT");
        yes(&c, "NEW");
        no(&c, "OLD");
        c.flags = &seen;
        no(&c, "NEW");
        c.recent = false;
        no(&c, "RECENT");
        no(&c, "NEW");
        yes(&c, "OLD");
    }

    #[test]
    fn sequence_and_uid_sets() {
        let f = vec![];
        let c = candidate(PLAIN, &f); // seq 3 of 5, uid 30 of 50
        yes(&c, "3");
        yes(&c, "1,3");
        yes(&c, "2:4");
        yes(&c, "4:2");
        no(&c, "4:*");
        yes(&c, "1:*");
        no(&c, "*");
        no(&c, "1,2,4:5");
        yes(&c, "UID 30");
        yes(&c, "UID 10:30");
        yes(&c, "UID 40:20");
        no(&c, "UID 31:*");
        no(&c, "UID 3");
        // `*` is the largest number in use: 60:* is 50:60, which holds the last UID.
        let mut last = candidate(PLAIN, &f);
        last.seq = 5;
        last.uid = 50;
        yes(&last, "*");
        yes(&last, "UID *");
        yes(&last, "UID 60:*");
        no(&last, "UID 60");
        // An empty mailbox's `*` names nothing.
        let empty = Context {
            max_seq: 0,
            max_uid: 0,
        };
        assert!(!check(&c, &empty, "*"));
        assert!(!check(&c, &empty, "UID 1:*"));
        assert!(check(&c, &empty, "UID 30"));
    }

    #[test]
    fn internal_date_keys_use_the_utc_day() {
        let f = vec![];
        let c = candidate(PLAIN, &f); // internal date 2024-06-02 06:30 UTC
        yes(&c, "ON 2-Jun-2024");
        no(&c, "ON 1-Jun-2024");
        yes(&c, "SINCE 2-Jun-2024");
        yes(&c, "SINCE 1-Jun-2024");
        no(&c, "SINCE 3-Jun-2024");
        yes(&c, "BEFORE 3-Jun-2024");
        no(&c, "BEFORE 2-Jun-2024");
        // The last second of a day is still that day.
        let mut late = candidate(PLAIN, &f);
        late.internal_date = 1_717_372_799; // 2024-06-02T23:59:59Z
        yes(&late, "ON 2-Jun-2024");
        late.internal_date += 1;
        yes(&late, "ON 3-Jun-2024");
        // Before the epoch too.
        late.internal_date = -1;
        yes(&late, "ON 31-Dec-1969");
    }

    #[test]
    fn sent_keys_use_the_written_date() {
        let f = vec![];
        // Date: Sat, 01 Jun 2024 23:30:00 -0700: June 1 as written, June 2 in UTC.
        let c = candidate(PLAIN, &f);
        yes(&c, "SENTON 1-Jun-2024");
        no(&c, "SENTON 2-Jun-2024");
        yes(&c, "SENTBEFORE 2-Jun-2024");
        no(&c, "SENTBEFORE 1-Jun-2024");
        yes(&c, "SENTSINCE 1-Jun-2024");
        no(&c, "SENTSINCE 2-Jun-2024");
        // Without a readable Date, the internal date stands in.
        let undated = b"Subject: x\r\nDate: sometime soon\r\n\r\nbody\r\n";
        let c = candidate(undated, &f);
        yes(&c, "SENTON 2-Jun-2024");
        let c = candidate(b"Subject: x\r\n\r\nbody\r\n", &f);
        yes(&c, "SENTSINCE 2-Jun-2024 SENTBEFORE 3-Jun-2024");
    }

    #[test]
    fn size_keys() {
        let f = vec![];
        let mut c = candidate(PLAIN, &f);
        c.size = 1000;
        yes(&c, "LARGER 999");
        no(&c, "LARGER 1000");
        yes(&c, "SMALLER 1001");
        no(&c, "SMALLER 1000");
        c.size = u64::from(u32::MAX) + 1;
        yes(&c, "LARGER 4294967295");
    }

    #[test]
    fn modseq() {
        let f = vec![];
        let c = candidate(PLAIN, &f); // modseq 7
        yes(&c, "MODSEQ 7");
        yes(&c, "MODSEQ 1");
        no(&c, "MODSEQ 8");
        yes(&c, "MODSEQ \"/flags/\\\\draft\" all 7");
        no(&c, "NOT MODSEQ 3");
    }

    #[test]
    fn address_and_subject_keys_read_decoded_fields() {
        let f = vec![];
        let c = candidate(PLAIN, &f);
        yes(&c, "FROM \"Jörg Müller\"");
        yes(&c, "FROM \"jörg\"");
        yes(&c, "FROM JOERG@EXAMPLE");
        no(&c, "FROM alice");
        yes(&c, "TO \"Alice <alice@\"");
        yes(&c, "TO bob@example.net");
        no(&c, "TO carol");
        yes(&c, "CC carol");
        no(&c, "CC dave");
        yes(&c, "BCC dave");
        // Encoded words decode from their charset; folding is undone.
        yes(&c, "SUBJECT \"grüße from the lake\"");
        yes(&c, "SUBJECT \"GRÜßE\"");
        no(&c, "SUBJECT boat");
        // An empty string matches any message with the field.
        yes(&c, "CC \"\"");
        let bare = candidate(b"From: a@example.org\r\n\r\nx\r\n", &f);
        no(&bare, "CC \"\"");
        no(&bare, "SUBJECT \"\"");
    }

    #[test]
    fn header_key() {
        let f = vec![];
        let c = candidate(PLAIN, &f);
        yes(&c, "HEADER X-Mailer quill");
        yes(&c, "HEADER x-mailer \"Quill 2\"");
        no(&c, "HEADER X-Mailer Outlook");
        yes(&c, "HEADER X-Mailer \"\"");
        yes(&c, "HEADER X-Empty \"\"");
        no(&c, "HEADER X-Absent \"\"");
        yes(&c, "HEADER Message-ID m1@example");
        yes(&c, "HEADER Date \"01 Jun 2024\"");
        yes(&c, "HEADER Subject \"grüße\"");
        // A key never matches the body.
        no(&c, "HEADER Subject boat");
    }

    #[test]
    fn body_and_text_keys_decode_parts() {
        let f = vec![];
        let c = candidate(PLAIN, &f);
        yes(&c, "BODY \"the boat\"");
        yes(&c, "BODY BOAT");
        no(&c, "BODY lake");
        yes(&c, "TEXT lake");
        yes(&c, "TEXT boat");
        yes(&c, "TEXT quill");
        yes(&c, "TEXT x-mailer");
        no(&c, "TEXT submarine");

        let c = candidate(MULTIPART, &f);
        // Quoted-printable Latin-1, base64 HTML as written and as text.
        yes(&c, "BODY \"schöne grüße\"");
        yes(&c, "BODY pay.example/inv/42");
        yes(&c, "BODY \"pay now\"");
        // A forwarded message is part of the body.
        yes(&c, "BODY \"inner secret\"");
        yes(&c, "BODY \"forwarded note\"");
        no(&c, "SUBJECT forwarded");
        // Binary attachments are not text.
        no(&c, "BODY needle");
        no(&c, "BODY invoice");
        yes(&c, "TEXT invoice");
    }

    #[test]
    fn needs_message_sees_through_nesting() {
        assert!(!needs_message(&program(
            "SEEN UID 1:* LARGER 5 NOT ON 1-Jan-2024"
        )));
        assert!(!needs_message(&program("MODSEQ 5")));
        for k in [
            "FROM a",
            "TO a",
            "CC a",
            "BCC a",
            "SUBJECT a",
            "BODY a",
            "TEXT a",
            "HEADER X a",
            "SENTON 1-Jan-2024",
            "SENTBEFORE 1-Jan-2024",
            "SENTSINCE 1-Jan-2024",
        ] {
            assert!(needs_message(&program(k)), "{k}");
            assert!(
                needs_message(&program(&format!("SEEN OR DRAFT NOT ({k})"))),
                "{k} nested"
            );
        }
    }

    #[test]
    fn unreadable_or_missing_messages_match_no_text_key() {
        let f = vec![];
        for raw in [&b""[..], b"\xff\xfe\x00", b"no header at all"] {
            let c = candidate(raw, &f);
            no(&c, "FROM a");
            no(&c, "BODY zzz");
            yes(&c, "NOT HEADER X-Nothing \"\"");
        }
        let mut c = candidate(PLAIN, &f);
        c.raw = None;
        no(&c, "SUBJECT \"grüße\"");
        yes(&c, "ALL");
    }

    #[test]
    fn programs_past_the_depth_bound_match_nothing() {
        let f = vec![];
        let c = candidate(PLAIN, &f);
        let mut key = SearchKey::All;
        for _ in 0..MAX_DEPTH + 5 {
            key = SearchKey::Not(Box::new(SearchKey::Not(Box::new(key))));
        }
        assert!(!matches(&key, &c, &CTX));
        assert!(needs_message(&key));
        let mut shallow = SearchKey::All;
        for _ in 0..MAX_DEPTH / 4 {
            shallow = SearchKey::Not(Box::new(SearchKey::Not(Box::new(shallow))));
        }
        assert!(matches(&shallow, &c, &CTX));
        assert!(!needs_message(&shallow));
    }

    #[test]
    fn dates_count_days_from_the_epoch() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(
            days_from_civil(2024, 6, 2),
            JUNE_2_UTC.div_euclid(SECONDS_PER_DAY)
        );
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(days_from_civil(1969, 12, 31), -1);
        let SearchKey::On(d) = program("ON 29-Feb-2024") else {
            panic!()
        };
        assert_eq!(search_day(&d), Some(days_from_civil(2024, 2, 29)));
    }

    #[test]
    fn arbitrary_messages_never_panic() {
        let f = flags(&["\\Seen"]);
        let keys = program(
            "OR TEXT zz (BODY zz SUBJECT zz) OR HEADER \"\" \"\" OR SENTON 1-Jan-2000 FROM zz",
        );
        let mut raw = MULTIPART.to_vec();
        // Every prefix, and bytes flipped throughout, as a truncated or mangled store
        // might hand over.
        for end in (0..raw.len()).step_by(7) {
            let c = candidate(&raw[..end], &f);
            let _ = matches(&keys, &c, &CTX);
        }
        for i in (0..raw.len()).step_by(5) {
            raw[i] ^= 0xa5;
            let c = candidate(&raw, &f);
            let _ = matches(&keys, &c, &CTX);
        }
    }
}
