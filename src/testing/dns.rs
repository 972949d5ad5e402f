//! A loopback DNS server answering from a fixed zone, so tests and load scripts check SPF, DKIM and DMARC offline.
//!
//! [`Zone::parse`] reads a tiny zone format, one record a line:
//!
//! ```text
//! # comment lines start with '#'; blank lines are skipped
//! example.test            TXT   "v=spf1 ip4:127.0.0.1 -all"
//! sel._domainkey.example.test TXT "v=DKIM1; k=rsa; " "p=MIIBIjANBgkq..."
//! _dmarc.example.test     TXT   v=DMARC1; p=reject
//! example.test            MX    10 mx.example.test
//! mx.example.test         A     127.0.0.1
//! mx.example.test         AAAA  ::1
//! 1.2.0.192.in-addr.arpa  PTR   mx.example.test
//! www.example.test        CNAME mx.example.test
//! ```
//!
//! Names are absolute (there is no origin and no `@`), case-insensitive, and may end in
//! a dot. A TXT value is either one or more quoted strings, concatenated (`\"` and `\\`
//! escape inside quotes), or bare text to the end of the line (so `#` there is text, not
//! a comment). On the wire a TXT value is split into 255-byte character-strings, as
//! DKIM keys longer than that must be.
//!
//! [`serve`] answers from the zone over UDP and TCP on one port, authoritatively (AA):
//! the records of the asked type; a name's CNAME when it has nothing else; NOERROR with
//! no answer when the name exists (has records, or names below it do) but not with that
//! type; NXDOMAIN otherwise. There is no SOA, so resolvers do not cache the negatives.
//! UDP answers too big for the asker are sent truncated (TC) so it retries over TCP.
//!
//! Use names under `.test` (or other ordinary names): hickory's resolver, and so
//! mail-auth, answers `localhost.` and the names below it, `127.in-addr.arpa.`, the
//! `::1` reverse name, `.invalid` and `.onion` itself and never asks the server. A TXT or
//! MX record for `lnmp.localhost` here is never seen, and 127.0.0.1 always has the PTR
//! `localhost.`.

use hickory_proto::op::{Edns, Message, MessageType, Metadata, OpCode, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, CNAME, MX, PTR, TXT};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};
use std::collections::HashMap;
use std::fmt;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::task::{JoinHandle, JoinSet};

/// TTL of every answer, in seconds.
const TTL: u32 = 60;
/// The UDP payload size we advertise with EDNS.
const EDNS_PAYLOAD: u16 = 1232;
/// The most we send in one UDP answer, whatever the asker advertises.
const MAX_UDP_ANSWER: u16 = 4096;
/// A TCP connection idle this long is closed.
const TCP_IDLE: Duration = Duration::from_secs(30);
/// Tries at binding TCP on the port UDP got, when the caller asked for any port.
const BIND_ATTEMPTS: usize = 8;

/// The data of one record, as written in a zone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordData {
    /// The whole text; split into 255-byte character-strings on the wire.
    Txt(String),
    A(Ipv4Addr),
    Aaaa(Ipv6Addr),
    Mx {
        preference: u16,
        exchange: String,
    },
    Ptr(String),
    Cname(String),
}

/// A bad zone line, or a bad record given to [`Zone::add`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZoneError {
    /// The 1-based line of the zone text; `None` from [`Zone::add`].
    pub line: Option<usize>,
    pub reason: String,
}

impl fmt::Display for ZoneError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "zone line {line}: {}", self.reason),
            None => write!(f, "zone: {}", self.reason),
        }
    }
}

impl std::error::Error for ZoneError {}

impl ZoneError {
    fn new(reason: impl Into<String>) -> Self {
        ZoneError {
            line: None,
            reason: reason.into(),
        }
    }
}

/// The records the server answers from, by lowercased name without the final dot.
#[derive(Debug, Clone, Default)]
pub struct Zone {
    names: HashMap<String, Vec<RData>>,
}

impl Zone {
    /// An empty zone: every name is NXDOMAIN.
    pub fn new() -> Self {
        Zone::default()
    }

    /// Reads zone text in the format the module documentation describes.
    pub fn parse(text: &str) -> Result<Zone, ZoneError> {
        let mut zone = Zone::new();
        for (index, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let at_line = |mut e: ZoneError| {
                e.line = Some(index + 1);
                e
            };
            let (name, data) = parse_line(line).map_err(at_line)?;
            zone.add(name, data).map_err(at_line)?;
        }
        Ok(zone)
    }

    /// Adds one record. A name with a CNAME can have no other record (RFC 1034 §3.6.2);
    /// adding a record that is already there changes nothing.
    pub fn add(&mut self, name: &str, data: RecordData) -> Result<&mut Self, ZoneError> {
        let owner = parse_name(name)?;
        let rdata = match data {
            RecordData::Txt(text) => RData::TXT(txt(text.as_bytes())),
            RecordData::A(ip) => RData::A(A(ip)),
            RecordData::Aaaa(ip) => RData::AAAA(AAAA(ip)),
            RecordData::Mx {
                preference,
                exchange,
            } => RData::MX(MX::new(preference, parse_name(&exchange)?)),
            RecordData::Ptr(target) => RData::PTR(PTR(parse_name(&target)?)),
            RecordData::Cname(target) => RData::CNAME(CNAME(parse_name(&target)?)),
        };
        let records = self.names.entry(key(&owner)).or_default();
        if records.contains(&rdata) {
            return Ok(self);
        }
        let has_cname = records.iter().any(|r| r.record_type() == RecordType::CNAME);
        if has_cname || (rdata.record_type() == RecordType::CNAME && !records.is_empty()) {
            return Err(ZoneError::new(format!(
                "{name} has a CNAME, so it can have no other record"
            )));
        }
        records.push(rdata);
        Ok(self)
    }

    /// The answer to a question: a response code and the answer records' data.
    fn lookup(&self, name: &Name, rtype: RecordType) -> (ResponseCode, Vec<&RData>) {
        let key = key(name);
        let Some(records) = self.names.get(&key) else {
            // An empty non-terminal (a name with names below it) exists, with no records.
            let suffix = format!(".{key}");
            let exists = key.is_empty() || self.names.keys().any(|k| k.ends_with(&suffix));
            let code = if exists {
                ResponseCode::NoError
            } else {
                ResponseCode::NXDomain
            };
            return (code, Vec::new());
        };
        let matching: Vec<&RData> = records
            .iter()
            .filter(|r| rtype == RecordType::ANY || r.record_type() == rtype)
            .collect();
        if !matching.is_empty() {
            return (ResponseCode::NoError, matching);
        }
        // No chasing: a name with a CNAME has only that, so hand it back.
        let cname = records
            .iter()
            .filter(|r| r.record_type() == RecordType::CNAME)
            .collect();
        (ResponseCode::NoError, cname)
    }

    /// The encoded answer to an encoded query, or `None` when it is not worth one
    /// (undecodable, or not a query). `udp` limits the size to what the asker takes.
    fn respond(&self, packet: &[u8], udp: bool) -> Option<Vec<u8>> {
        let request = Message::from_vec(packet).ok()?;
        if request.message_type != MessageType::Query {
            return None;
        }
        let mut response = Message::new(request.id, MessageType::Response, request.op_code);
        response.metadata = Metadata::response_from_request(&request.metadata);
        response.add_queries(request.queries.iter().cloned());
        if request.edns.is_some() {
            let mut edns = Edns::new();
            edns.set_max_payload(EDNS_PAYLOAD);
            response.set_edns(edns);
        }
        self.answer(&request, &mut response);

        let limit = if udp {
            usize::from(request.max_payload().clamp(512, MAX_UDP_ANSWER))
        } else {
            usize::from(u16::MAX)
        };
        let fallback = match response.to_vec() {
            Ok(bytes) if bytes.len() <= limit => return Some(bytes),
            // Too big: the question alone, with TC set, so the asker tries TCP.
            Ok(_) => response.truncate(),
            Err(_) => {
                let mut failed = response.truncate();
                failed.metadata.truncation = false;
                failed.metadata.response_code = ResponseCode::ServFail;
                failed
            }
        };
        fallback.to_vec().ok()
    }

    fn answer(&self, request: &Message, response: &mut Message) {
        if request.op_code != OpCode::Query {
            response.metadata.response_code = ResponseCode::NotImp;
            return;
        }
        let [query] = request.queries.as_slice() else {
            response.metadata.response_code = ResponseCode::FormErr;
            return;
        };
        if !matches!(query.query_class(), DNSClass::IN | DNSClass::ANY) {
            response.metadata.response_code = ResponseCode::Refused;
            return;
        }
        response.metadata.authoritative = true;
        let (code, records) = self.lookup(query.name(), query.query_type());
        response.metadata.response_code = code;
        for rdata in records {
            response.add_answer(Record::from_rdata(query.name().clone(), TTL, rdata.clone()));
        }
    }
}

impl FromStr for Zone {
    type Err = ZoneError;

    fn from_str(text: &str) -> Result<Zone, ZoneError> {
        Zone::parse(text)
    }
}

/// Splits `<name> <TYPE> <value>`.
fn parse_line(line: &str) -> Result<(&str, RecordData), ZoneError> {
    let (name, rest) = line
        .split_once(char::is_whitespace)
        .ok_or_else(|| ZoneError::new("expected <name> <TYPE> <value>"))?;
    let rest = rest.trim_start();
    let (rtype, value) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
    let value = value.trim();
    if value.is_empty() {
        return Err(ZoneError::new(format!("{name} {rtype}: no value")));
    }
    let bad = |what: &str| ZoneError::new(format!("{name} {rtype}: {what}: {value}"));
    let data = match rtype.to_ascii_uppercase().as_str() {
        "TXT" => RecordData::Txt(parse_txt(value).map_err(|e| bad(&e))?),
        "A" => RecordData::A(value.parse().map_err(|_| bad("not an IPv4 address"))?),
        "AAAA" => RecordData::Aaaa(value.parse().map_err(|_| bad("not an IPv6 address"))?),
        "MX" => {
            let mut parts = value.split_whitespace();
            let (Some(preference), Some(exchange), None) =
                (parts.next(), parts.next(), parts.next())
            else {
                return Err(bad("expected <preference> <host>"));
            };
            RecordData::Mx {
                preference: preference
                    .parse()
                    .map_err(|_| bad("preference is not 0-65535"))?,
                exchange: exchange.to_owned(),
            }
        }
        "PTR" | "CNAME" => {
            if value.split_whitespace().nth(1).is_some() {
                return Err(bad("expected one host name"));
            }
            if rtype.eq_ignore_ascii_case("PTR") {
                RecordData::Ptr(value.to_owned())
            } else {
                RecordData::Cname(value.to_owned())
            }
        }
        _ => {
            return Err(ZoneError::new(format!(
                "{name}: unknown type {rtype} (TXT, A, AAAA, MX, PTR or CNAME)"
            )));
        }
    };
    Ok((name, data))
}

/// A TXT value: quoted strings, concatenated, or bare text as it stands.
fn parse_txt(value: &str) -> Result<String, String> {
    if !value.starts_with('"') {
        return Ok(value.to_owned());
    }
    let mut text = String::new();
    let mut chars = value.chars();
    loop {
        match chars.find(|c| !c.is_whitespace()) {
            None => return Ok(text),
            Some('"') => {}
            Some(c) => return Err(format!("{c:?} outside the quotes")),
        }
        loop {
            match chars.next() {
                Some('"') => break,
                Some('\\') => match chars.next() {
                    Some(c) => text.push(c),
                    None => return Err("unterminated quoted string".into()),
                },
                Some(c) => text.push(c),
                None => return Err("unterminated quoted string".into()),
            }
        }
    }
}

fn parse_name(name: &str) -> Result<Name, ZoneError> {
    let mut parsed = Name::from_str_relaxed(name)
        .map_err(|e| ZoneError::new(format!("bad name {name:?}: {e}")))?;
    parsed.set_fqdn(true);
    Ok(parsed)
}

/// The map key of a name: lowercase ASCII without the final dot.
fn key(name: &Name) -> String {
    let mut key = name.to_lowercase().to_ascii();
    if key.ends_with('.') {
        key.pop();
    }
    key
}

/// TXT data with the text cut into character-strings of at most 255 bytes.
fn txt(text: &[u8]) -> TXT {
    if text.is_empty() {
        return TXT::from_bytes(vec![b""]);
    }
    TXT::from_bytes(text.chunks(255).collect())
}

/// A running server. It stops when dropped.
#[derive(Debug)]
pub struct DnsServer {
    addr: SocketAddr,
    udp: JoinHandle<()>,
    tcp: JoinHandle<()>,
}

impl DnsServer {
    /// Where it listens, for UDP and TCP alike.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        self.udp.abort();
        self.tcp.abort();
    }
}

/// Serves `zone` on `addr`, UDP and TCP on the same port; port 0 picks a free one.
pub async fn serve(zone: Zone, addr: SocketAddr) -> io::Result<DnsServer> {
    let (udp, tcp) = bind(addr).await?;
    let addr = udp.local_addr()?;
    let zone = Arc::new(zone);
    Ok(DnsServer {
        addr,
        udp: tokio::spawn(run_udp(zone.clone(), udp)),
        tcp: tokio::spawn(run_tcp(zone, tcp)),
    })
}

/// Binds UDP, then TCP on the port UDP got. With port 0 that port may be taken for
/// TCP, so try again with another.
async fn bind(addr: SocketAddr) -> io::Result<(UdpSocket, TcpListener)> {
    let mut attempt = 1;
    loop {
        let udp = UdpSocket::bind(addr).await?;
        match TcpListener::bind(udp.local_addr()?).await {
            Ok(tcp) => return Ok((udp, tcp)),
            Err(e)
                if addr.port() == 0
                    && attempt < BIND_ATTEMPTS
                    && e.kind() == io::ErrorKind::AddrInUse =>
            {
                attempt += 1;
            }
            Err(e) => return Err(e),
        }
    }
}

async fn run_udp(zone: Arc<Zone>, socket: UdpSocket) {
    let mut buf = vec![0u8; 65535];
    loop {
        let (len, peer) = match socket.recv_from(&mut buf).await {
            Ok(received) => received,
            // Say an ICMP error surfacing from an earlier send: nothing to do about it.
            Err(_) => {
                tokio::task::yield_now().await;
                continue;
            }
        };
        if let Some(answer) = zone.respond(&buf[..len], true) {
            let _ = socket.send_to(&answer, peer).await;
        }
    }
}

async fn run_tcp(zone: Arc<Zone>, listener: TcpListener) {
    // Dropping the set, when this task is aborted, aborts the connections too.
    let mut connections = JoinSet::new();
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                connections.spawn(run_tcp_connection(zone.clone(), stream));
            }
            // Out of descriptors, say: wait a little for some to close.
            Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
        while connections.try_join_next().is_some() {}
    }
}

/// Answers length-prefixed queries until the peer closes, idles, or sends one that is
/// not worth an answer.
async fn run_tcp_connection(zone: Arc<Zone>, mut stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    loop {
        let mut prefix = [0u8; 2];
        let Ok(Ok(_)) = tokio::time::timeout(TCP_IDLE, stream.read_exact(&mut prefix)).await else {
            return;
        };
        let mut query = vec![0u8; usize::from(u16::from_be_bytes(prefix))];
        let Ok(Ok(_)) = tokio::time::timeout(TCP_IDLE, stream.read_exact(&mut query)).await else {
            return;
        };
        let Some(answer) = zone.respond(&query, false) else {
            return;
        };
        let Ok(len) = u16::try_from(answer.len()) else {
            return;
        };
        let mut framed = Vec::with_capacity(2 + answer.len());
        framed.extend_from_slice(&len.to_be_bytes());
        framed.extend_from_slice(&answer);
        if stream.write_all(&framed).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::op::Query;
    use mail_auth::hickory_resolver::TokioResolver;
    use mail_auth::hickory_resolver::config::{
        ConnectionConfig, NameServerConfig, ProtocolConfig, ResolveHosts, ResolverConfig,
        ResolverOpts,
    };
    use mail_auth::hickory_resolver::net::runtime::TokioRuntimeProvider;
    use mail_auth::{MessageAuthenticator, SpfResult, spf::verify::SpfParameters};

    const FIXTURE: &str = include_str!("../../fixtures/dns/test.zone");

    fn long_text(len: usize) -> String {
        (0..len)
            .map(|i| char::from(b'a' + (i % 26) as u8))
            .collect()
    }

    fn zone() -> Zone {
        let mut zone = Zone::parse(&format!(
            "# a comment, then a blank line\n\
             \n\
             example.test TXT \"v=spf1 ip4:127.0.0.1 -all\"\n\
             Big.Example.Test. TXT \"{}\"\n\
             example.test MX 10 mx.example.test\n\
             mx.example.test A 127.0.0.1\n\
             mx.example.test AAAA ::1\n\
             www.example.test CNAME mx.example.test\n\
             1.2.0.192.in-addr.arpa PTR mx.example.test\n\
             deep.below.example.test TXT bare text, # kept\n",
            long_text(400)
        ))
        .unwrap();
        zone.add("split.example.test", RecordData::Txt("one".into()))
            .unwrap()
            .add("split.example.test", RecordData::Txt("two".into()))
            .unwrap();
        zone
    }

    fn resolver(addr: SocketAddr, protocols: &[ProtocolConfig]) -> (ResolverConfig, ResolverOpts) {
        let connections = protocols
            .iter()
            .map(|protocol| {
                let mut connection = ConnectionConfig::new(protocol.clone());
                connection.port = addr.port();
                connection
            })
            .collect();
        let server = NameServerConfig::new(addr.ip(), true, connections);
        let config = ResolverConfig::from_parts(None, vec![], vec![server]);
        let mut opts = ResolverOpts::default();
        opts.timeout = Duration::from_secs(2);
        opts.attempts = 1;
        opts.use_hosts_file = ResolveHosts::Never;
        (config, opts)
    }

    fn tokio_resolver(addr: SocketAddr, protocols: &[ProtocolConfig]) -> TokioResolver {
        let (config, opts) = resolver(addr, protocols);
        TokioResolver::builder_with_config(config, TokioRuntimeProvider::default())
            .with_options(opts)
            .build()
            .unwrap()
    }

    fn authenticator(addr: SocketAddr) -> MessageAuthenticator {
        let (config, opts) = resolver(addr, &[ProtocolConfig::Udp, ProtocolConfig::Tcp]);
        MessageAuthenticator::new(config, opts).unwrap()
    }

    async fn start(zone: Zone) -> DnsServer {
        serve(zone, "127.0.0.1:0".parse().unwrap()).await.unwrap()
    }

    /// Each TXT answer as its character-strings.
    fn txt_strings(records: &[Record]) -> Vec<Vec<Vec<u8>>> {
        records
            .iter()
            .filter_map(|r| match &r.data {
                RData::TXT(txt) => Some(txt.txt_data.iter().map(|s| s.to_vec()).collect()),
                _ => None,
            })
            .collect()
    }

    fn joined(strings: &[Vec<u8>]) -> String {
        String::from_utf8(strings.concat()).unwrap()
    }

    async fn check_resolver(server: &DnsServer, protocols: &[ProtocolConfig]) {
        let resolver = tokio_resolver(server.addr(), protocols);

        let spf = resolver.txt_lookup("example.test.").await.unwrap();
        let spf = txt_strings(spf.answers());
        assert_eq!(spf.len(), 1);
        assert_eq!(joined(&spf[0]), "v=spf1 ip4:127.0.0.1 -all");

        // Case and the final dot do not matter; 400 bytes arrive as 255 + 145.
        let big = resolver.txt_lookup("BIG.example.TEST").await.unwrap();
        let big = txt_strings(big.answers());
        assert_eq!(big.len(), 1);
        let lengths: Vec<usize> = big[0].iter().map(Vec::len).collect();
        assert_eq!(lengths, [255, 145]);
        assert_eq!(joined(&big[0]), long_text(400));

        let mut split: Vec<String> = txt_strings(
            resolver
                .txt_lookup("split.example.test.")
                .await
                .unwrap()
                .answers(),
        )
        .iter()
        .map(|s| joined(s))
        .collect();
        split.sort();
        assert_eq!(split, ["one", "two"]);

        let bare = resolver
            .txt_lookup("deep.below.example.test.")
            .await
            .unwrap();
        assert_eq!(joined(&txt_strings(bare.answers())[0]), "bare text, # kept");

        let a = resolver.ipv4_lookup("mx.example.test.").await.unwrap();
        let a: Vec<_> = a.answers().iter().map(|r| r.data.clone()).collect();
        assert_eq!(a, [RData::A(A(Ipv4Addr::LOCALHOST))]);

        let aaaa = resolver.ipv6_lookup("mx.example.test.").await.unwrap();
        let aaaa: Vec<_> = aaaa.answers().iter().map(|r| r.data.clone()).collect();
        assert_eq!(aaaa, [RData::AAAA(AAAA(Ipv6Addr::LOCALHOST))]);

        let mx = resolver.mx_lookup("example.test.").await.unwrap();
        let mx: Vec<_> = mx
            .answers()
            .iter()
            .filter_map(|r| match &r.data {
                RData::MX(mx) => Some((mx.preference, key(&mx.exchange))),
                _ => None,
            })
            .collect();
        assert_eq!(mx, [(10, "mx.example.test".to_owned())]);

        let ptr = resolver
            .reverse_lookup("1.2.0.192.in-addr.arpa.")
            .await
            .unwrap();
        let ptr: Vec<_> = ptr.answers().iter().map(|r| r.data.clone()).collect();
        assert_eq!(
            ptr,
            [RData::PTR(PTR(parse_name("mx.example.test").unwrap()))]
        );

        let missing = resolver
            .txt_lookup("nothing.example.test.")
            .await
            .unwrap_err();
        assert!(missing.is_nx_domain(), "{missing}");

        // The name exists, with no TXT: no records, but not NXDOMAIN.
        let no_txt = resolver.txt_lookup("mx.example.test.").await.unwrap_err();
        assert!(
            no_txt.is_no_records_found() && !no_txt.is_nx_domain(),
            "{no_txt}"
        );
        // An empty non-terminal exists too.
        let between = resolver
            .txt_lookup("below.example.test.")
            .await
            .unwrap_err();
        assert!(
            between.is_no_records_found() && !between.is_nx_domain(),
            "{between}"
        );
    }

    #[tokio::test]
    async fn answers_over_udp() {
        let server = start(zone()).await;
        check_resolver(&server, &[ProtocolConfig::Udp]).await;
    }

    #[tokio::test]
    async fn answers_over_tcp() {
        let server = start(zone()).await;
        check_resolver(&server, &[ProtocolConfig::Tcp]).await;
    }

    /// One query over UDP by hand, to see the header.
    async fn raw_udp(addr: SocketAddr, name: &str, rtype: RecordType, edns: bool) -> Message {
        let mut query = Message::query();
        query.add_query(Query::query(Name::from_ascii(name).unwrap(), rtype));
        if edns {
            let mut opt = Edns::new();
            opt.set_max_payload(1232);
            query.set_edns(opt);
        }
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        socket.connect(addr).await.unwrap();
        socket.send(&query.to_vec().unwrap()).await.unwrap();
        let mut buf = vec![0u8; 65535];
        let len = tokio::time::timeout(Duration::from_secs(2), socket.recv(&mut buf))
            .await
            .expect("an answer")
            .unwrap();
        let answer = Message::from_vec(&buf[..len]).unwrap();
        assert_eq!(answer.id, query.id);
        assert_eq!(answer.message_type, MessageType::Response);
        assert_eq!(answer.queries, query.queries);
        answer
    }

    #[tokio::test]
    async fn header_codes_and_cname() {
        let server = start(zone()).await;
        let addr = server.addr();

        let spf = raw_udp(addr, "example.test.", RecordType::TXT, false).await;
        assert!(spf.authoritative);
        assert_eq!(spf.response_code, ResponseCode::NoError);
        assert_eq!(spf.answers.len(), 1);
        assert!(spf.edns.is_none());

        let missing = raw_udp(addr, "nope.test.", RecordType::A, true).await;
        assert!(missing.authoritative);
        assert_eq!(missing.response_code, ResponseCode::NXDomain);
        assert!(missing.answers.is_empty());
        assert_eq!(missing.edns.as_ref().unwrap().max_payload(), EDNS_PAYLOAD);

        let nodata = raw_udp(addr, "mx.example.test.", RecordType::MX, false).await;
        assert_eq!(nodata.response_code, ResponseCode::NoError);
        assert!(nodata.answers.is_empty());

        let cname = raw_udp(addr, "WWW.example.test.", RecordType::A, false).await;
        assert_eq!(cname.response_code, ResponseCode::NoError);
        assert_eq!(cname.answers.len(), 1);
        assert_eq!(cname.answers[0].name.to_ascii(), "WWW.example.test.");
        assert_eq!(
            cname.answers[0].data,
            RData::CNAME(CNAME(parse_name("mx.example.test").unwrap()))
        );

        let any = raw_udp(addr, "mx.example.test.", RecordType::ANY, false).await;
        assert_eq!(any.answers.len(), 2);
    }

    #[tokio::test]
    async fn truncates_big_udp_answers_and_resolvers_retry_over_tcp() {
        let mut zone = Zone::new();
        for i in 0..6 {
            zone.add(
                "many.test",
                RecordData::Txt(format!("{i}{}", long_text(299))),
            )
            .unwrap();
        }
        let server = start(zone).await;

        let truncated = raw_udp(server.addr(), "many.test.", RecordType::TXT, true).await;
        assert!(truncated.truncation);
        assert!(truncated.answers.is_empty());

        let resolver = tokio_resolver(server.addr(), &[ProtocolConfig::Udp, ProtocolConfig::Tcp]);
        let all = resolver.txt_lookup("many.test.").await.unwrap();
        assert_eq!(txt_strings(all.answers()).len(), 6);
    }

    #[tokio::test]
    async fn survives_garbage() {
        let server = start(zone()).await;
        let addr = server.addr();

        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        for junk in [
            &b""[..],
            b"\x00",
            b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff",
        ] {
            socket.send_to(junk, addr).await.unwrap();
        }
        let mut buf = [0u8; 512];
        let nothing =
            tokio::time::timeout(Duration::from_millis(200), socket.recv_from(&mut buf)).await;
        assert!(nothing.is_err(), "no answer to garbage");

        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream.write_all(b"\x00\x05hello").await.unwrap();
        let mut rest = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(2), stream.read_to_end(&mut rest))
            .await
            .expect("the server closes the connection");
        assert!(read.is_ok() && rest.is_empty(), "{read:?} {rest:?}");

        // Still answering.
        let spf = raw_udp(addr, "example.test.", RecordType::TXT, false).await;
        assert_eq!(spf.answers.len(), 1);
    }

    #[tokio::test]
    async fn tcp_keeps_the_connection_for_several_queries() {
        let server = start(zone()).await;
        let mut stream = TcpStream::connect(server.addr()).await.unwrap();
        for name in ["example.test.", "big.example.test.", "nope.test."] {
            let mut query = Message::query();
            query.add_query(Query::query(
                Name::from_ascii(name).unwrap(),
                RecordType::TXT,
            ));
            let bytes = query.to_vec().unwrap();
            stream
                .write_all(&u16::try_from(bytes.len()).unwrap().to_be_bytes())
                .await
                .unwrap();
            stream.write_all(&bytes).await.unwrap();
            let mut prefix = [0u8; 2];
            stream.read_exact(&mut prefix).await.unwrap();
            let mut answer = vec![0u8; usize::from(u16::from_be_bytes(prefix))];
            stream.read_exact(&mut answer).await.unwrap();
            let answer = Message::from_vec(&answer).unwrap();
            assert_eq!(answer.id, query.id);
        }
    }

    #[tokio::test]
    async fn stops_when_dropped() {
        let server = start(zone()).await;
        let addr = server.addr();
        drop(server);
        tokio::task::yield_now().await;
        // The port is free again for TCP, and UDP queries go unanswered.
        let mut freed = false;
        for _ in 0..50 {
            if TcpListener::bind(addr).await.is_ok() {
                freed = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(freed);
    }

    /// Not our server's doing, but worth pinning: hickory answers these names itself.
    #[tokio::test]
    async fn hickory_never_asks_about_localhost_names() {
        let mut zone = Zone::new();
        zone.add("lnmp.localhost", RecordData::Txt("v=spf1 -all".into()))
            .unwrap()
            .add(
                "1.0.0.127.in-addr.arpa",
                RecordData::Ptr("mx.example.test".into()),
            )
            .unwrap();
        let server = start(zone).await;
        // The server has them.
        let txt = raw_udp(server.addr(), "lnmp.localhost.", RecordType::TXT, false).await;
        assert_eq!(txt.answers.len(), 1);

        let resolver = tokio_resolver(server.addr(), &[ProtocolConfig::Udp]);
        let txt = resolver.txt_lookup("lnmp.localhost.").await.unwrap_err();
        assert!(txt.is_no_records_found() && !txt.is_nx_domain(), "{txt}");
        let ptr = resolver
            .reverse_lookup("1.0.0.127.in-addr.arpa.")
            .await
            .unwrap();
        let ptr: Vec<_> = ptr.answers().iter().map(|r| r.data.clone()).collect();
        assert_eq!(ptr, [RData::PTR(PTR(parse_name("localhost").unwrap()))]);
    }

    #[test]
    fn parses_zone_text() {
        let zone = Zone::parse(
            "a.test TXT \"one \" \"two\\\" \\\\ three\"\n\
             a.test. txt \"\"\n\
             \t  # indented comment\n\
             A.TEST Mx 5   mail.a.test\n",
        )
        .unwrap();
        let records = &zone.names["a.test"];
        assert_eq!(
            records[0],
            RData::TXT(TXT::new(vec!["one two\" \\ three".into()]))
        );
        assert_eq!(records[1], RData::TXT(TXT::from_bytes(vec![b""])));
        assert_eq!(
            records[2],
            RData::MX(MX::new(5, parse_name("mail.a.test").unwrap()))
        );
        assert_eq!(zone.names.len(), 1);

        // Exactly 255 bytes is one string; 256 is two.
        assert_eq!(txt(long_text(255).as_bytes()).txt_data.len(), 1);
        assert_eq!(txt(long_text(256).as_bytes()).txt_data.len(), 2);
    }

    #[test]
    fn rejects_bad_zone_text() {
        let cases = [
            ("a.test\n", 1),
            ("\n# ok\na.test TXT\n", 3),
            ("a.test TXT \"open\n", 1),
            ("a.test TXT \"a\" b\n", 1),
            ("a.test A 1.2.3\n", 1),
            ("a.test AAAA 127.0.0.1\n", 1),
            ("a.test MX mail.a.test\n", 1),
            ("a.test MX 70000 mail.a.test\n", 1),
            ("a.test MX 1 mail.a.test extra\n", 1),
            ("a.test SRV 1 2 3 x.test\n", 1),
            ("a.test CNAME b.test\na.test A 1.2.3.4\n", 2),
            ("a.test A 1.2.3.4\na.test CNAME b.test\n", 2),
            ("a..test A 1.2.3.4\n", 1),
        ];
        for (text, line) in cases {
            let error = Zone::parse(text).unwrap_err();
            assert_eq!(error.line, Some(line), "{text:?}: {error}");
        }
        assert_eq!(
            Zone::new()
                .add("x.test", RecordData::Cname("bad..name".into()))
                .unwrap_err()
                .line,
            None
        );
        // The same record twice is one record.
        let zone = Zone::parse("a.test A 1.2.3.4\nA.test. A 1.2.3.4\n").unwrap();
        assert_eq!(zone.names["a.test"].len(), 1);
    }

    #[tokio::test]
    async fn spf_through_mail_auth() {
        let mut zone = Zone::new();
        zone.add(
            "example.test",
            RecordData::Txt("v=spf1 ip4:127.0.0.1 -all".into()),
        )
        .unwrap();
        let server = start(zone).await;
        let authenticator = authenticator(server.addr());

        let pass = authenticator
            .verify_spf(SpfParameters::verify_mail_from(
                "127.0.0.1".parse().unwrap(),
                "mx.example.test",
                "lnmp.localhost",
                "bob@example.test",
            ))
            .await;
        assert_eq!(pass.result(), SpfResult::Pass);

        let fail = authenticator
            .verify_spf(SpfParameters::verify_mail_from(
                "10.0.0.1".parse().unwrap(),
                "mx.example.test",
                "lnmp.localhost",
                "bob@example.test",
            ))
            .await;
        assert_eq!(fail.result(), SpfResult::Fail);
    }

    #[tokio::test]
    async fn fixture_zone_spf_and_dmarc() {
        use mail_auth::dmarc::Policy;
        use mail_auth::dmarc::verify::DmarcParameters;
        use mail_auth::{AuthenticatedMessage, DmarcResult};

        let server = start(Zone::parse(FIXTURE).unwrap()).await;
        let authenticator = authenticator(server.addr());
        let cases = [
            ("example.test", SpfResult::Pass, Policy::Reject, true),
            ("example.net", SpfResult::Fail, Policy::Quarantine, false),
            ("example.org", SpfResult::None, Policy::None, false),
        ];
        for (domain, spf_expected, policy, passes) in cases {
            let sender = format!("bob@{domain}");
            let spf = authenticator
                .verify_spf(SpfParameters::verify_mail_from(
                    "127.0.0.1".parse().unwrap(),
                    "mx.example.test",
                    "lnmp.localhost",
                    &sender,
                ))
                .await;
            assert_eq!(spf.result(), spf_expected, "{domain}");

            let raw = format!(
                "From: Bob <{sender}>\r\nTo: alice@lnmp.localhost\r\nSubject: hi\r\n\r\nhello\r\n"
            );
            let message = AuthenticatedMessage::parse(raw.as_bytes()).unwrap();
            let dkim = authenticator.verify_dkim(&message).await;
            let dmarc = authenticator
                .verify_dmarc(DmarcParameters::new(&message, &dkim, domain, &spf))
                .await;
            assert_eq!(dmarc.policy(), policy, "{domain}");
            assert_eq!(dmarc.result() == DmarcResult::Pass, passes, "{domain}");
        }

        // The MX and the address behind it.
        let resolver = tokio_resolver(server.addr(), &[ProtocolConfig::Udp]);
        let mx = resolver.mx_lookup("example.test.").await.unwrap();
        assert_eq!(mx.answers().len(), 1);
        let a = resolver.ipv4_lookup("mx.example.test.").await.unwrap();
        assert_eq!(a.answers().len(), 1);
    }

    #[tokio::test]
    async fn dkim_with_a_2048_bit_key() {
        use base64::Engine as _;
        use mail_auth::common::crypto::{RsaKey, Sha256};
        use mail_auth::common::headers::HeaderWriter as _;
        use mail_auth::dkim::DkimSigner;
        use mail_auth::{AuthenticatedMessage, DkimResult};
        use rsa::pkcs8::{EncodePrivateKey, EncodePublicKey};
        use rustls_pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};

        let key = rsa::RsaPrivateKey::new(&mut rand_core::OsRng, 2048).unwrap();
        let public = key.to_public_key().to_public_key_der().unwrap();
        let record = format!(
            "v=DKIM1; k=rsa; p={}",
            base64::engine::general_purpose::STANDARD.encode(public.as_bytes())
        );
        assert!(record.len() > 255);
        let mut zone = Zone::parse(FIXTURE).unwrap();
        zone.add("sel._domainkey.example.test", RecordData::Txt(record))
            .unwrap();
        let server = start(zone).await;
        let authenticator = authenticator(server.addr());

        let private = key.to_pkcs8_der().unwrap();
        let signer = DkimSigner::from_key(
            RsaKey::<Sha256>::from_key_der(PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
                private.as_bytes(),
            )))
            .unwrap(),
        )
        .domain("example.test")
        .selector("sel")
        .headers(["From", "To", "Subject"]);
        let body =
            "From: bob@example.test\r\nTo: alice@lnmp.localhost\r\nSubject: hi\r\n\r\nhello\r\n";
        let signed = format!(
            "{}{body}",
            signer.sign(body.as_bytes()).unwrap().to_header()
        );
        let message = AuthenticatedMessage::parse(signed.as_bytes()).unwrap();
        let results = authenticator.verify_dkim(&message).await;
        assert_eq!(results.len(), 1);
        assert_eq!(results[0].result(), &DkimResult::Pass);
    }
}
