//! `doctor` end to end: a loopback DNS server fed the records quickstart asks for (or
//! wrong ones), the in-process daemon running (or stopped), and what doctor says.

mod common;

use lnmp_bridge::config::Config;
use lnmp_bridge::doctor::{self, Listeners, Report, Status};
use lnmp_bridge::quickstart::expected_records;
use lnmp_bridge::testing::dns::{self, DnsServer, RecordData, Zone};

use common::{DOMAIN, HOST};

/// The zone quickstart asks for, with `tweak` applied to the (name, type, value) rows.
fn zone(config: &Config, tweak: impl Fn(&str, &str, String) -> Option<String>) -> Zone {
    let keys = doctor::dkim_keys(&config.dkim_dir()).unwrap();
    let mut zone = Zone::new();
    for r in expected_records(DOMAIN, HOST, &format!("alice@{DOMAIN}"), &keys) {
        let name = r.name.trim_end_matches('.');
        let data = match r.kind {
            "A" => RecordData::A("127.0.0.1".parse().unwrap()),
            "MX" => RecordData::Mx {
                preference: 10,
                exchange: HOST.into(),
            },
            "TXT" => RecordData::Txt(r.value.clone()),
            "CNAME" => RecordData::Cname(HOST.into()),
            // The test server has no AAAA for us to give and no SRV type.
            _ => continue,
        };
        let value = match &data {
            RecordData::Txt(t) => t.clone(),
            _ => String::new(),
        };
        let Some(value) = tweak(name, r.kind, value) else {
            continue;
        };
        let data = match data {
            RecordData::Txt(_) => RecordData::Txt(value),
            d => d,
        };
        zone.add(name, data).unwrap();
    }
    zone
}

async fn serve(zone: Zone) -> DnsServer {
    dns::serve(zone, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap()
}

fn status_of(report: &Report, part: &str) -> Status {
    report
        .find(part)
        .unwrap_or_else(|| panic!("no check {part:?} in\n{report}"))
        .status
}

#[tokio::test]
async fn right_records_and_a_running_daemon_pass_and_wrong_ones_say_what_to_fix() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = common::loopback_config(dir.path());
    config.smtp.verify = false;
    lnmp_bridge::dkim::generate(&config.dkim_dir(), "lnmp1").unwrap();
    let good = serve(zone(&config, |_, _, v| Some(v))).await;
    config.dns.nameservers = vec![good.addr().to_string()];
    config.dns.timeout_seconds = 2;
    let running = common::start_with_users(&config).await;
    let listeners = Listeners::from_running(&running, &config);

    let report = doctor::run(&config, &listeners).await;
    println!("{report}");
    assert_eq!(report.failures(), 0, "{report}");
    for part in [
        &format!("dns A/AAAA {HOST}"),
        &format!("dns MX {DOMAIN}"),
        &format!("dns SPF {DOMAIN}"),
        &format!("dns DMARC _dmarc.{DOMAIN}"),
        &format!("dns DKIM lnmp1r._domainkey.{DOMAIN}"),
        &format!("dns DKIM lnmp1e._domainkey.{DOMAIN}"),
        &format!("dns autoconfig autoconfig.{DOMAIN}"),
        "names",
        "expiry",
        "listener SMTP MX",
        "listener SMTP submission ",
        "listener SMTP submissions (TLS)",
        "listener IMAP ",
        "listener IMAP (TLS)",
        "listener HTTPS",
        "listener relay",
        "database",
        "master key",
    ] {
        assert_eq!(status_of(&report, part), Status::Ok, "{part}:\n{report}");
    }
    // Self-signed: served, but a warning with what to do.
    let trust = report.find("trust").unwrap();
    assert_eq!(trust.status, Status::Warn);
    assert!(trust.fix.as_ref().unwrap().contains("ACME"));
    // The dev wallet answers, and no money moves.
    let ln = report.find("lightning dev").unwrap();
    assert_eq!(ln.status, Status::Warn, "{report}");
    assert!(ln.detail.contains("no real money"));
    // SRV records: the test server has none; only a warning.
    assert_eq!(
        status_of(&report, &format!("dns SRV _imaps._tcp.{DOMAIN}")),
        Status::Warn
    );

    // A DKIM record with another key, and no MX.
    let other = tempfile::tempdir().unwrap();
    let other_keys = lnmp_bridge::dkim::generate(other.path(), "lnmp1").unwrap();
    let wrong_txt = other_keys[0].txt();
    let bad = serve(zone(&config, |name, kind, v| match kind {
        "MX" => None,
        "TXT" if name.starts_with("lnmp1r.") => Some(wrong_txt.clone()),
        _ => Some(v),
    }))
    .await;
    let mut bad_config = config.clone();
    bad_config.dns.nameservers = vec![bad.addr().to_string()];
    let report = doctor::run(&bad_config, &listeners).await;
    println!("{report}");
    assert_eq!(report.failures(), 2, "{report}");
    let mx = report.find(&format!("dns MX {DOMAIN}")).unwrap();
    assert_eq!(mx.status, Status::Fail);
    assert_eq!(
        mx.fix.as_deref(),
        Some(format!("publish this MX record at {DOMAIN}: 10 {HOST}.").as_str())
    );
    let keys = doctor::dkim_keys(&config.dkim_dir()).unwrap();
    let rsa = keys.iter().find(|k| k.selector == "lnmp1r").unwrap();
    let dkim = report
        .find(&format!("dns DKIM lnmp1r._domainkey.{DOMAIN}"))
        .unwrap();
    assert_eq!(dkim.status, Status::Fail);
    assert!(dkim.detail.contains("another key"), "{}", dkim.detail);
    assert_eq!(
        dkim.fix.as_deref(),
        Some(
            format!(
                "replace the TXT record at lnmp1r._domainkey.{DOMAIN} with: {}",
                rsa.txt()
            )
            .as_str()
        )
    );
    assert_eq!(
        status_of(&report, &format!("dns DKIM lnmp1e._domainkey.{DOMAIN}")),
        Status::Ok
    );
    let text = report.to_string();
    assert!(text.contains("FAIL  dns MX"), "{text}");
    assert!(text.contains("      fix: publish this MX record"), "{text}");

    // A missing DKIM record says what to publish.
    let none = serve(zone(&config, |name, _, v| {
        (!name.starts_with("lnmp1e.")).then_some(v)
    }))
    .await;
    let mut none_config = config.clone();
    none_config.dns.nameservers = vec![none.addr().to_string()];
    let report = doctor::check_dns(&none_config, &format!("alice@{DOMAIN}")).await;
    let ed = keys.iter().find(|k| k.selector == "lnmp1e").unwrap();
    let missing = report
        .iter()
        .find(|c| c.name.contains("lnmp1e._domainkey"))
        .unwrap();
    assert_eq!(missing.status, Status::Fail);
    assert_eq!(
        missing.fix.as_deref(),
        Some(
            format!(
                "publish this TXT record at lnmp1e._domainkey.{DOMAIN}: {}",
                ed.txt()
            )
            .as_str()
        )
    );

    // Stopped: every listener fails, and doctor says the daemon is not running.
    running.stop().await;
    let report = doctor::run(&config, &listeners).await;
    println!("{report}");
    for (part, _) in [
        ("listener SMTP MX", ()),
        ("listener IMAP ", ()),
        ("listener HTTPS", ()),
        ("listener relay", ()),
    ] {
        assert_eq!(status_of(&report, part), Status::Fail, "{part}:\n{report}");
    }
    let daemon = report.find("daemon").unwrap();
    assert_eq!(daemon.status, Status::Fail);
    assert!(daemon.detail.contains("not running"));
    assert!(daemon.fix.as_ref().unwrap().contains("lnmp-bridge serve"));
    // The certificate is then read from its file.
    assert_eq!(status_of(&report, "names"), Status::Ok, "{report}");
    // The database is still fine.
    assert_eq!(status_of(&report, "database"), Status::Ok);
    // The command fails (non-zero exit) when a check fails.
    let err = doctor::doctor_command(&config).await.unwrap_err();
    assert!(err.to_string().contains("failed"), "{err}");
}

#[tokio::test]
async fn no_database_and_a_wrong_master_key_are_failures() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = common::loopback_config(dir.path());
    let dns = serve(Zone::new()).await;
    config.dns.nameservers = vec![dns.addr().to_string()];
    let (checks, _) = doctor::check_database(&config).await;
    assert_eq!(checks[0].status, Status::Fail);
    assert!(checks[0].fix.as_ref().unwrap().contains("quickstart"));
    assert!(!config.server.data_dir.join("lnmp-bridge.db").exists());

    let running = common::start_with_users(&config).await;
    running.stop().await;
    let (checks, postmaster) = doctor::check_database(&config).await;
    assert!(
        checks.iter().all(|c| c.status != Status::Fail),
        "{checks:?}"
    );
    assert_eq!(postmaster, format!("alice@{DOMAIN}"));

    let other = dir.path().join("other.key");
    lnmp_bridge::custody::master_key::MasterKey::generate()
        .create_file(&other)
        .unwrap();
    config.secrets.master_key_file = other;
    let (checks, _) = doctor::check_database(&config).await;
    let key = checks.iter().find(|c| c.name == "master key").unwrap();
    assert_eq!(key.status, Status::Fail, "{checks:?}");

    // An empty zone: the needed records fail, each with its fix.
    let dns_checks = doctor::check_dns(&config, "alice@bridge.test").await;
    let mx = dns_checks
        .iter()
        .find(|c| c.name.starts_with("dns MX"))
        .unwrap();
    assert_eq!(mx.status, Status::Fail);
    let spf = dns_checks
        .iter()
        .find(|c| c.name.starts_with("dns SPF"))
        .unwrap();
    assert_eq!(
        spf.fix.as_deref(),
        Some(format!("publish this TXT record at {DOMAIN}: v=spf1 mx -all").as_str())
    );
}

#[tokio::test]
async fn the_database_check_on_postgresql() {
    let Some(base) = common::test_database_url() else {
        return;
    };
    let schema = format!("doctor_{}", std::process::id());
    let dir = tempfile::tempdir().unwrap();
    let mut config = common::loopback_config(dir.path());
    config.database.url = common::fresh_pg_schema(&base, &schema).await;
    let running = common::start_with_users(&config).await;
    let (checks, postmaster) = doctor::check_database(&config).await;
    running.stop().await;
    common::drop_pg_schema(&base, &schema).await;
    assert!(
        checks.iter().all(|c| c.status != Status::Fail),
        "{checks:?}"
    );
    assert_eq!(checks[0].name, "database");
    assert!(checks[0].detail.contains("migrations applied"));
    assert_eq!(postmaster, format!("alice@{DOMAIN}"));
}
