use super::*;

#[test]
fn result_type_strings_are_distinct() {
    let mut names: Vec<&str> = ResultType::ALL.iter().map(|r| r.as_str()).collect();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), ResultType::ALL.len());
    assert_eq!(ResultType::TlsaInvalid.as_str(), "tlsa-invalid");
    assert_eq!(PolicyType::NoPolicyFound.as_str(), "no-policy-found");
}

#[test]
fn days() {
    assert_eq!(Day::of(0).iso(), "1970-01-01");
    assert_eq!(Day::of(951_782_400).iso(), "2000-02-29");
    assert_eq!(Day::of(1_796_687_999).iso(), "2026-12-07");
    assert_eq!(Day::of(1_796_688_000).iso(), "2026-12-08");
    assert_eq!(Day::of(1_796_688_000).start(), 1_796_688_000);
}

fn sts() -> PolicyRef {
    PolicyRef {
        policy_type: PolicyType::Sts,
        strings: vec!["version: STSv1".into(), "mode: testing".into()],
        mx_hosts: vec!["*.example.com".into()],
    }
}

#[test]
fn ledger_counts_and_reports_in_rfc_8460_names() {
    let mut l = Ledger::default();
    let day = Day(20_000);
    let fail = FailureKey {
        result: ResultType::StsWebpkiInvalid,
        sending_ip: Some("192.0.2.1".parse().unwrap()),
        receiving_mx: Some("mx.example.com".into()),
        receiving_ip: None,
    };
    l.record(day, "Example.COM.", &sts(), None);
    l.record(day, "example.com", &sts(), None);
    l.record(day, "example.com", &sts(), Some(fail.clone()));
    l.record(day, "example.com", &sts(), Some(fail));
    l.record(Day(20_001), "example.org", &sts(), None);
    let (domain, dd) = l.day(day).next().unwrap();
    assert_eq!(domain, "example.com");
    assert_eq!(dd.totals(), (2, 2));
    let json =
        serde_json::to_value(dd.report(day, domain, "org.example", "tls@org.example")).unwrap();
    assert_eq!(json["organization-name"], "org.example");
    assert_eq!(json["date-range"]["start-datetime"], "2024-10-04T00:00:00Z");
    assert_eq!(json["date-range"]["end-datetime"], "2024-10-04T23:59:59Z");
    assert_eq!(json["contact-info"], "tls@org.example");
    assert!(json["report-id"].as_str().unwrap().contains("example.com"));
    let p = &json["policies"][0];
    assert_eq!(p["policy"]["policy-type"], "sts");
    assert_eq!(p["policy"]["policy-string"][1], "mode: testing");
    assert_eq!(p["policy"]["policy-domain"], "example.com");
    assert_eq!(p["policy"]["mx-host"][0], "*.example.com");
    assert_eq!(p["summary"]["total-successful-session-count"], 2);
    assert_eq!(p["summary"]["total-failure-session-count"], 2);
    let f = &p["failure-details"][0];
    assert_eq!(f["result-type"], "sts-webpki-invalid");
    assert_eq!(f["sending-mta-ip"], "192.0.2.1");
    assert_eq!(f["receiving-mx-hostname"], "mx.example.com");
    assert!(f.get("receiving-ip").is_none());
    assert_eq!(f["failed-session-count"], 2);
    // Closing: the earlier day comes out, the later one stays.
    let closed = l.take_before(Day(20_001));
    assert_eq!(closed.len(), 1);
    assert_eq!(closed[0].0, day);
    assert_eq!(l.day(Day(20_001)).count(), 1);
    assert_eq!(l.day(day).count(), 0);
}

#[test]
fn ledger_is_bounded() {
    let mut l = Ledger::default();
    for i in 0..MAX_DOMAINS_PER_DAY + 5 {
        l.record(Day(1), &format!("d{i}.example"), &sts(), None);
    }
    assert_eq!(l.day(Day(1)).count(), MAX_DOMAINS_PER_DAY);
    assert_eq!(l.dropped(), 5);
    for i in 0..MAX_FAILURE_ROWS + 3 {
        let key = FailureKey {
            result: ResultType::ValidationFailure,
            sending_ip: None,
            receiving_mx: Some(format!("mx{i}.example")),
            receiving_ip: None,
        };
        l.record(Day(1), "d0.example", &sts(), Some(key));
    }
    let dd = l.day(Day(1)).find(|(d, _)| *d == "d0.example").unwrap().1;
    assert_eq!(dd.totals(), (1, MAX_FAILURE_ROWS as u64 + 3));
    assert_eq!(dd.policies[&sts()].details.len(), MAX_FAILURE_ROWS);
}

#[test]
fn rua_records() {
    assert_eq!(
        parse_rua(&["v=TLSRPTv1; rua=mailto:tls@example.com,https://r.example.com/x"]),
        Some(vec![
            "mailto:tls@example.com".to_string(),
            "https://r.example.com/x".to_string()
        ])
    );
    assert_eq!(
        parse_rua(&["v=TLSRPTv1;rua=mailto:a@b"]),
        Some(vec!["mailto:a@b".to_string()])
    );
    assert_eq!(parse_rua(&["v=spf1"]), None);
    assert_eq!(
        parse_rua(&["v=TLSRPTv1; rua=mailto:a@b", "v=TLSRPTv1; rua=mailto:c@d"]),
        None
    );
    assert_eq!(parse_rua(&["v=TLSRPTv1; rua=ftp://x"]), None);
}
