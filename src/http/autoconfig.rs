//! Mail client autoconfig: Thunderbird's `config-v1.1.xml`, served at
//! `/.well-known/autoconfig/mail/config-v1.1.xml` (asked of `https://<domain>`) and at
//! `/mail/config-v1.1.xml` (asked of `https://autoconfig.<domain>`, the CNAME quickstart
//! prints). It names IMAP with implicit TLS (993) first and STARTTLS (143) as the
//! alternative, SMTP submission with implicit TLS (465) first and STARTTLS (587) as the
//! alternative, all with `password-cleartext` and the full email address as user name.
//!
//! The ports are the listeners' own: the config quickstart writes listens on the standard
//! ports, which are then served, and the SRV records quickstart prints agree with them. A
//! config whose listeners are elsewhere (the embedded defaults use 2993, 2143, 2465 and
//! 2587) is served as configured, so a client on loopback reaches the daemon with what it
//! is told. A listener that is turned off is left out; one on port 0 (any free port,
//! tests) is announced on its standard port. Behind port forwarding that changes port
//! numbers, listen on the standard ports (as deploy/Dockerfile does) so that what is
//! served is what clients can reach.

use crate::config::Config;
use axum::Extension;
use axum::extract::Query;
use axum::extract::rejection::QueryRejection;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Arc;

/// The two paths Thunderbird asks, in the order it asks them.
pub const PATHS: [&str; 2] = [
    "/mail/config-v1.1.xml",
    "/.well-known/autoconfig/mail/config-v1.1.xml",
];

/// How a client secures a connection, in config-v1.1's words.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Socket {
    /// Implicit TLS from the first byte.
    Ssl,
    StartTls,
}

impl Socket {
    pub fn as_str(self) -> &'static str {
        match self {
            Socket::Ssl => "SSL",
            Socket::StartTls => "STARTTLS",
        }
    }
}

/// One server entry: its port and how it is secured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Endpoint {
    pub port: u16,
    pub socket: Socket,
}

/// What the autoconfig document says, taken from the config once at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Autoconfig {
    pub domain: String,
    pub hostname: String,
    /// IMAP servers, preferred first.
    pub imap: Vec<Endpoint>,
    /// SMTP submission servers, preferred first.
    pub smtp: Vec<Endpoint>,
}

/// The port a listener is announced on: None when it is turned off, the standard port
/// when it takes any free port (0), else its own.
fn public_port(listen: &str, standard: u16) -> Option<u16> {
    if listen.is_empty() {
        return None;
    }
    let port = listen
        .rsplit_once(':')
        .and_then(|(_, p)| p.parse::<u16>().ok())
        .unwrap_or(standard);
    Some(if port == 0 { standard } else { port })
}

impl Autoconfig {
    pub fn from_config(c: &Config) -> Autoconfig {
        let endpoints = |list: [(&str, u16, Socket); 2]| {
            list.into_iter()
                .filter_map(|(listen, standard, socket)| {
                    public_port(listen, standard).map(|port| Endpoint { port, socket })
                })
                .collect()
        };
        Autoconfig {
            domain: c.server.domain.clone(),
            hostname: c.server.hostname.clone(),
            imap: endpoints([
                (&c.imap.tls_listen, 993, Socket::Ssl),
                (&c.imap.listen, 143, Socket::StartTls),
            ]),
            smtp: endpoints([
                (&c.smtp.submissions_listen, 465, Socket::Ssl),
                (&c.smtp.submission_listen, 587, Socket::StartTls),
            ]),
        }
    }

    /// The config-v1.1.xml document.
    pub fn xml(&self) -> String {
        let d = escape(&self.domain);
        let h = escape(&self.hostname);
        let mut out = String::new();
        out.push_str("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
        out.push_str("<clientConfig version=\"1.1\">\n");
        let _ = writeln!(out, "  <emailProvider id=\"{d}\">");
        let _ = writeln!(out, "    <domain>{d}</domain>");
        let _ = writeln!(out, "    <displayName>{d} (lnmp-bridge)</displayName>");
        let _ = writeln!(out, "    <displayShortName>{d}</displayShortName>");
        let server = |out: &mut String, tag: &str, kind: &str, e: &Endpoint| {
            let _ = writeln!(out, "    <{tag} type=\"{kind}\">");
            let _ = writeln!(out, "      <hostname>{h}</hostname>");
            let _ = writeln!(out, "      <port>{}</port>", e.port);
            let _ = writeln!(out, "      <socketType>{}</socketType>", e.socket.as_str());
            out.push_str("      <authentication>password-cleartext</authentication>\n");
            out.push_str("      <username>%EMAILADDRESS%</username>\n");
            let _ = writeln!(out, "    </{tag}>");
        };
        for e in &self.imap {
            server(&mut out, "incomingServer", "imap", e);
        }
        for e in &self.smtp {
            server(&mut out, "outgoingServer", "smtp", e);
        }
        out.push_str("  </emailProvider>\n</clientConfig>\n");
        out
    }
}

/// Text and attribute values for XML.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

/// `GET /mail/config-v1.1.xml` and `/.well-known/autoconfig/mail/config-v1.1.xml`.
///
/// Thunderbird adds `?emailaddress=<what the user typed>`. The document is the same for
/// every address of the domain (`%EMAILADDRESS%` is filled in by the client), so the
/// parameter is accepted and never echoed; an address of another domain, or a query
/// that does not parse, still gets the document rather than an error.
pub(super) async fn config_v11(
    settings: Option<Extension<Arc<Autoconfig>>>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Response {
    let Some(Extension(settings)) = settings else {
        return (StatusCode::NOT_FOUND, "autoconfig is not set up\n").into_response();
    };
    if let Ok(Query(q)) = &query
        && let Some(address) = q.get("emailaddress")
        && !address
            .rsplit_once('@')
            .is_some_and(|(_, d)| d.eq_ignore_ascii_case(&settings.domain))
    {
        tracing::debug!(
            length = address.len(),
            "autoconfig asked for an address of another domain"
        );
    }
    let mut r = (StatusCode::OK, settings.xml()).into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/xml; charset=utf-8"),
    );
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=3600"),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::Router;
    use axum::body::Body;
    use axum::http::Request;
    use axum::routing::get;
    use std::path::Path;
    use tower::ServiceExt;

    /// An element of a small XML tree: enough of XML for the documents served here
    /// (declaration, comments, attributes, entities, nesting).
    #[derive(Debug, Default)]
    struct El {
        name: String,
        attrs: HashMap<String, String>,
        children: Vec<El>,
        text: String,
    }

    impl El {
        fn all<'a>(&'a self, name: &str) -> impl Iterator<Item = &'a El> {
            let name = name.to_owned();
            self.children.iter().filter(move |c| c.name == name)
        }
        fn one(&self, name: &str) -> &El {
            let v: Vec<&El> = self.all(name).collect();
            assert_eq!(v.len(), 1, "one <{name}> in <{}>", self.name);
            v[0]
        }
        fn text_of(&self, name: &str) -> &str {
            self.one(name).text.trim()
        }
    }

    fn unescape(s: &str) -> String {
        s.replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&quot;", "\"")
            .replace("&apos;", "'")
            .replace("&amp;", "&")
    }

    fn parse_xml(doc: &str) -> El {
        let mut rest = doc.trim_start();
        if let Some(r) = rest.strip_prefix("<?xml") {
            rest = &r[r.find("?>").expect("end of the declaration") + 2..];
        }
        let mut stack = vec![El::default()];
        while !rest.is_empty() {
            if let Some(r) = rest.strip_prefix("<!--") {
                rest = &r[r.find("-->").expect("end of comment") + 3..];
            } else if let Some(r) = rest.strip_prefix("</") {
                let end = r.find('>').expect("end of closing tag");
                let el = stack.pop().expect("open element");
                assert_eq!(el.name, r[..end].trim(), "closing tag matches");
                stack.last_mut().expect("parent").children.push(el);
                rest = &r[end + 1..];
            } else if let Some(r) = rest.strip_prefix('<') {
                let end = r.find('>').expect("end of tag");
                let (tag, empty) = match r[..end].strip_suffix('/') {
                    Some(t) => (t, true),
                    None => (&r[..end], false),
                };
                let (name, mut attrs_text) = tag.split_once(' ').unwrap_or((tag, ""));
                let mut el = El {
                    name: name.to_owned(),
                    ..El::default()
                };
                while let Some((k, v)) = attrs_text.split_once("=\"") {
                    let close = v.find('"').expect("end of attribute");
                    el.attrs.insert(k.trim().to_owned(), unescape(&v[..close]));
                    attrs_text = &v[close + 1..];
                }
                assert!(attrs_text.trim().is_empty(), "attributes: {tag}");
                if empty {
                    stack.last_mut().expect("parent").children.push(el);
                } else {
                    stack.push(el);
                }
                rest = &r[end + 1..];
            } else {
                let end = rest.find('<').unwrap_or(rest.len());
                assert!(!rest[..end].contains('&') || rest[..end].contains(';'));
                stack.last_mut().expect("element").text += &unescape(&rest[..end]);
                rest = &rest[end..];
            }
        }
        let mut top = stack.pop().expect("document");
        assert!(stack.is_empty(), "every element closed");
        assert_eq!(top.children.len(), 1, "one root element");
        top.children.pop().expect("root")
    }

    /// (type, hostname, port, socketType) of each server, after checking the fields
    /// every one of them must have.
    fn servers(doc: &str, tag: &str) -> Vec<(String, String, u16, String)> {
        let root = parse_xml(doc);
        assert_eq!(root.name, "clientConfig");
        assert_eq!(root.attrs["version"], "1.1");
        let provider = root.one("emailProvider");
        provider
            .all(tag)
            .map(|s| {
                assert_eq!(s.text_of("authentication"), "password-cleartext");
                assert_eq!(s.text_of("username"), "%EMAILADDRESS%");
                (
                    s.attrs["type"].clone(),
                    s.text_of("hostname").to_owned(),
                    s.text_of("port").parse().expect("port"),
                    s.text_of("socketType").to_owned(),
                )
            })
            .collect()
    }

    fn config(toml: &str) -> Config {
        Config::from_toml(toml, "test.toml", Path::new("."), Vec::new()).expect("config")
    }

    fn row(kind: &str, host: &str, port: u16, socket: &str) -> (String, String, u16, String) {
        (kind.into(), host.into(), port, socket.into())
    }

    #[test]
    fn standard_ports_are_served_as_thunderbird_expects() {
        let c = config(
            "[server]\ndomain = \"example.com\"\nhostname = \"mail.example.com\"\n\
             [smtp]\nmx_listen = \"0.0.0.0:25\"\nsubmission_listen = \"0.0.0.0:587\"\n\
             submissions_listen = \"0.0.0.0:465\"\n\
             [imap]\nlisten = \"0.0.0.0:143\"\ntls_listen = \"[::]:993\"\n",
        );
        let doc = Autoconfig::from_config(&c).xml();
        let root = parse_xml(&doc);
        let provider = root.one("emailProvider");
        assert_eq!(provider.attrs["id"], "example.com");
        assert_eq!(provider.text_of("domain"), "example.com");
        assert!(!provider.text_of("displayName").is_empty());
        assert_eq!(provider.text_of("displayShortName"), "example.com");
        let h = "mail.example.com";
        assert_eq!(
            servers(&doc, "incomingServer"),
            [row("imap", h, 993, "SSL"), row("imap", h, 143, "STARTTLS")]
        );
        assert_eq!(
            servers(&doc, "outgoingServer"),
            [row("smtp", h, 465, "SSL"), row("smtp", h, 587, "STARTTLS")]
        );
    }

    #[test]
    fn other_ports_are_served_as_configured() {
        // The embedded defaults: unprivileged ports on loopback.
        let doc = Autoconfig::from_config(&config("")).xml();
        let h = "lnmp.localhost";
        assert_eq!(
            servers(&doc, "incomingServer"),
            [
                row("imap", h, 2993, "SSL"),
                row("imap", h, 2143, "STARTTLS")
            ]
        );
        assert_eq!(
            servers(&doc, "outgoingServer"),
            [
                row("smtp", h, 2465, "SSL"),
                row("smtp", h, 2587, "STARTTLS")
            ]
        );
    }

    #[test]
    fn listeners_turned_off_are_left_out_and_port_0_is_announced_as_standard() {
        let c = config(
            "[smtp]\nsubmissions_listen = \"\"\nsubmission_listen = \"127.0.0.1:0\"\n\
             [imap]\nlisten = \"\"\n",
        );
        let doc = Autoconfig::from_config(&c).xml();
        let h = "lnmp.localhost";
        assert_eq!(
            servers(&doc, "incomingServer"),
            [row("imap", h, 2993, "SSL")]
        );
        assert_eq!(
            servers(&doc, "outgoingServer"),
            [row("smtp", h, 587, "STARTTLS")]
        );
    }

    #[test]
    fn values_are_escaped() {
        assert_eq!(escape(r#"a&b<c>"d'"#), "a&amp;b&lt;c&gt;&quot;d&apos;");
        // The config validates host names, so build one that would break the document.
        let a = Autoconfig {
            domain: "x\"&<y>".into(),
            hostname: "h<&>".into(),
            imap: vec![Endpoint {
                port: 993,
                socket: Socket::Ssl,
            }],
            smtp: Vec::new(),
        };
        let doc = a.xml();
        let root = parse_xml(&doc);
        let p = root.one("emailProvider");
        assert_eq!(p.attrs["id"], "x\"&<y>");
        assert_eq!(p.text_of("domain"), "x\"&<y>");
        assert_eq!(servers(&doc, "incomingServer")[0].1, "h<&>");
    }

    async fn get_path(app: &Router, uri: &str) -> (StatusCode, Option<String>, String) {
        let r = app
            .clone()
            .oneshot(Request::get(uri).body(Body::empty()).expect("request"))
            .await
            .expect("response");
        let status = r.status();
        let ct = r
            .headers()
            .get(header::CONTENT_TYPE)
            .map(|v| v.to_str().expect("ascii").to_owned());
        let body = axum::body::to_bytes(r.into_body(), 1 << 20)
            .await
            .expect("body");
        (status, ct, String::from_utf8(body.to_vec()).expect("utf-8"))
    }

    #[tokio::test]
    async fn both_paths_answer_xml_and_take_any_emailaddress() {
        let settings = Arc::new(Autoconfig::from_config(&config("")));
        let mut app = Router::new();
        for p in PATHS {
            app = app.route(p, get(config_v11));
        }
        let app = app.layer(Extension(settings.clone()));
        for uri in [
            "/mail/config-v1.1.xml",
            "/.well-known/autoconfig/mail/config-v1.1.xml",
            "/mail/config-v1.1.xml?emailaddress=alice%40lnmp.localhost",
            "/mail/config-v1.1.xml?emailaddress=%3Cb%3E%26%40other.example",
            "/mail/config-v1.1.xml?emailaddress=%ZZ&emailaddress",
        ] {
            let (status, ct, body) = get_path(&app, uri).await;
            assert_eq!(status, StatusCode::OK, "{uri}");
            assert_eq!(ct.as_deref(), Some("application/xml; charset=utf-8"));
            assert_eq!(body, settings.xml(), "{uri}");
            assert!(!body.contains("<b>") && !body.contains("other.example"));
        }
        // Without settings (a router built without them) the paths are not served.
        let bare = Router::new().route(PATHS[0], get(config_v11));
        assert_eq!(get_path(&bare, PATHS[0]).await.0, StatusCode::NOT_FOUND);
    }

    /// quickstart's printed records and the served document, from the one config
    /// quickstart writes: the SRV records name the served host and ports, and the
    /// autoconfig CNAME points at the served host.
    #[tokio::test]
    async fn quickstart_records_agree_with_what_is_served() {
        let dir = tempfile::tempdir().expect("temp dir");
        let out = crate::quickstart::run(crate::quickstart::Options {
            dir: dir.path().join("site"),
            domain: "example.com".into(),
            admin: "alice".into(),
            hostname: None,
            database_url: None,
        })
        .await
        .expect("quickstart");
        let text =
            std::fs::read_to_string(dir.path().join("site").join(crate::quickstart::CONFIG_FILE))
                .expect("config written");
        let c = Config::from_toml(&text, "quickstart", &dir.path().join("site"), Vec::new())
            .expect("quickstart's config");
        let served = Autoconfig::from_config(&c);
        let doc = served.xml();
        let host = format!("{}.", served.hostname);

        // "<name>  IN <TYPE>  <value>" rows.
        let records: Vec<(String, String, String)> = out
            .lines()
            .filter_map(|l| {
                let (name, rest) = l.split_once("  IN ")?;
                let (kind, value) = rest.trim().split_once(char::is_whitespace)?;
                Some((name.trim().into(), kind.into(), value.trim().into()))
            })
            .collect();
        let find = |name: &str, kind: &str| -> Vec<String> {
            records
                .iter()
                .filter(|r| r.0 == name && r.1 == kind)
                .map(|r| r.2.clone())
                .collect()
        };
        assert_eq!(find("autoconfig.example.com.", "CNAME"), vec![host.clone()]);
        assert_eq!(find("example.com.", "MX"), [format!("10 {host}")]);
        // RFC 6186: _imaps and _submissions are implicit TLS, _imap and _submission STARTTLS.
        let srv = |service: &str| -> (String, u16) {
            let v = find(&format!("_{service}._tcp.example.com."), "SRV");
            assert_eq!(v.len(), 1, "one SRV record for {service}: {out}");
            let f: Vec<&str> = v[0].split_whitespace().collect();
            assert_eq!(f.len(), 4, "priority weight port target: {}", v[0]);
            (f[3].into(), f[2].parse().expect("port"))
        };
        let mut from_srv = Vec::new();
        for (service, kind, socket) in [
            ("imaps", "imap", "SSL"),
            ("imap", "imap", "STARTTLS"),
            ("submissions", "smtp", "SSL"),
            ("submission", "smtp", "STARTTLS"),
        ] {
            let (target, port) = srv(service);
            from_srv.push(row(kind, target.trim_end_matches('.'), port, socket));
        }
        let mut from_xml = servers(&doc, "incomingServer");
        from_xml.extend(servers(&doc, "outgoingServer"));
        assert_eq!(from_srv, from_xml);
        let root = parse_xml(&doc);
        assert_eq!(root.one("emailProvider").text_of("domain"), "example.com");
        // The standard ports, in Thunderbird's order.
        let ports: Vec<u16> = from_xml.iter().map(|s| s.2).collect();
        assert_eq!(ports, [993, 143, 465, 587]);
    }
}
