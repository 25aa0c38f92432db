use super::*;

#[test]
fn txt_records() {
    assert_eq!(
        parse_txt(&["v=STSv1; id=20160831085700Z;"]),
        Ok(Some("20160831085700Z".into()))
    );
    assert_eq!(parse_txt(&["v=STSv1;id=abc"]), Ok(Some("abc".into())));
    assert_eq!(
        parse_txt(&["v=STSv1;  id=abc ;ext=v-1 ;"]),
        Ok(Some("abc".into()))
    );
    // Other TXT records are ignored; none starting with v=STSv1 means no policy.
    assert_eq!(
        parse_txt(&["v=spf1 -all", "v=STSv1; id=x1"]),
        Ok(Some("x1".into()))
    );
    assert_eq!(parse_txt::<&str>(&[]), Ok(None));
    assert_eq!(parse_txt(&["v=spf1 -all"]), Ok(None));
    assert_eq!(parse_txt(&["v=STSv10; id=x"]), Ok(None));
    // Several: none is valid.
    assert_eq!(
        parse_txt(&["v=STSv1; id=a", "v=STSv1; id=b"]),
        Err(TxtError::Several)
    );
    assert_eq!(
        parse_txt(&["v=STSv1;"]).unwrap_err(),
        TxtError::Syntax("no fields after v=STSv1".into())
    );
    assert_eq!(parse_txt(&["v=STSv1; ext=1"]), Err(TxtError::NoId));
    assert!(matches!(
        parse_txt(&["v=STSv1; id="]),
        Err(TxtError::Syntax(_))
    ));
    assert!(matches!(
        parse_txt(&["v=STSv1; id=a-b"]),
        Err(TxtError::Syntax(_))
    ));
    assert!(matches!(
        parse_txt(&[format!("v=STSv1; id={}", "a".repeat(33))]),
        Err(TxtError::Syntax(_))
    ));
    assert!(matches!(
        parse_txt(&["v=STSv1 id=a"]),
        Err(TxtError::Syntax(_))
    ));
    assert!(matches!(
        parse_txt(&["v=STSv1; id=a; id=b"]),
        Err(TxtError::Syntax(_))
    ));
}

const ENFORCE: &str = "version: STSv1\r\nmode: enforce\r\nmx: mail.example.com\r\nmx: *.example.net\r\nmax_age: 604800\r\n";

#[test]
fn policy_file() {
    let p = Policy::parse(ENFORCE.as_bytes()).unwrap();
    assert_eq!(p.mode, StsMode::Enforce);
    assert_eq!(p.mx, vec!["mail.example.com", "*.example.net"]);
    assert_eq!(p.max_age, 604800);
    assert_eq!(p.lines[0], "version: STSv1");
    assert_eq!(p.lines.len(), 5);
    // LF lines, unknown keys ignored, no final newline.
    let p = Policy::parse(
        b"version: STSv1\nmode: testing\nfoo: bar\nmx: MX.Example.COM.\nmax_age: 86400",
    )
    .unwrap();
    assert_eq!(p.mode, StsMode::Testing);
    assert_eq!(p.mx, vec!["mx.example.com"]);
    // mode none needs no mx.
    assert_eq!(
        Policy::parse(b"version: STSv1\nmode: none\nmax_age: 1\n")
            .unwrap()
            .mode,
        StsMode::None
    );
}

#[test]
fn bad_policy_files() {
    let bad = |s: &str| Policy::parse(s.as_bytes()).unwrap_err();
    assert_eq!(
        bad("mode: enforce\nmx: a.b\nmax_age: 1\n"),
        PolicyError::Version
    );
    assert_eq!(
        bad("version: STSv2\nmode: enforce\nmx: a.b\nmax_age: 1\n"),
        PolicyError::Version
    );
    assert_eq!(
        bad("version: STSv1\nmode: strict\nmx: a.b\nmax_age: 1\n"),
        PolicyError::Mode
    );
    assert_eq!(
        bad("version: STSv1\nmx: a.b\nmax_age: 1\n"),
        PolicyError::Mode
    );
    assert_eq!(
        bad("version: STSv1\nmode: enforce\nmx: a.b\nmax_age: 31557601\n"),
        PolicyError::MaxAge
    );
    assert_eq!(
        bad("version: STSv1\nmode: enforce\nmx: a.b\nmax_age: -1\n"),
        PolicyError::MaxAge
    );
    assert_eq!(
        bad("version: STSv1\nmode: enforce\nmx: a.b\n"),
        PolicyError::MaxAge
    );
    assert!(matches!(
        bad("version: STSv1\nmode: enforce\nmax_age: 1\n"),
        PolicyError::Mx(_)
    ));
    assert!(matches!(
        bad("version: STSv1\nmode: enforce\nmx: a b\nmax_age: 1\n"),
        PolicyError::Mx(_)
    ));
    assert!(matches!(
        bad("version: STSv1\nmode: enforce\nmx: *.*.b\nmax_age: 1\n"),
        PolicyError::Mx(_)
    ));
    assert!(matches!(bad("<html>\n"), PolicyError::BadLine(_)));
    assert!(matches!(
        bad("version: STSv1\nmode: enforce\nmode: testing\n"),
        PolicyError::Repeated(_)
    ));
    assert_eq!(
        Policy::parse(&[0xff, 0xfe]).unwrap_err(),
        PolicyError::NotText
    );
    assert_eq!(
        Policy::parse(b"version: STSv1\nmode: enforce\nmx: a.b\nmax_age: 31557600\n")
            .unwrap()
            .max_age,
        MAX_AGE_LIMIT
    );
}

#[test]
fn mx_patterns() {
    assert!(mx_matches("mail.example.com", "MAIL.example.com."));
    assert!(mx_matches("mail.example.com.", "mail.example.com"));
    assert!(!mx_matches("mail.example.com", "mail2.example.com"));
    assert!(mx_matches("*.example.com", "mx1.example.com"));
    assert!(mx_matches("*.Example.com", "MX1.example.COM"));
    assert!(!mx_matches("*.example.com", "a.b.example.com"));
    assert!(!mx_matches("*.example.com", "example.com"));
    assert!(!mx_matches("*.example.com", "mx1.example.com.evil"));
    assert!(!mx_matches("*.example.com", ".example.com"));
    let p = Policy::parse(ENFORCE.as_bytes()).unwrap();
    assert!(p.mx_matches("mx.example.net"));
    assert!(p.mx_matches("mail.example.com"));
    assert!(!p.mx_matches("mx.example.com"));
}

fn cached(id: &str, fetched_at: u64, max_age: u64) -> Cached {
    let mut policy = Policy::parse(ENFORCE.as_bytes()).unwrap();
    policy.max_age = max_age;
    Cached {
        id: id.into(),
        policy,
        fetched_at,
    }
}

#[test]
fn cache_rules() {
    let c = cached("a", 1000, 100);
    assert!(c.is_fresh(1099));
    assert!(!c.is_fresh(1100));
    // No cache: a TXT id makes a fetch; no TXT, no policy.
    assert_eq!(plan(None, TxtSeen::Id("a"), None, 0), Plan::Fetch);
    assert_eq!(plan(None, TxtSeen::Absent, None, 0), Plan::NoPolicy);
    assert_eq!(plan(None, TxtSeen::Unusable, None, 0), Plan::NoPolicy);
    // Fresh and the same id: used as cached.
    assert_eq!(
        plan(Some(&c), TxtSeen::Id("a"), None, 1050),
        Plan::UseCached
    );
    // The id changed: refreshed.
    assert_eq!(plan(Some(&c), TxtSeen::Id("b"), None, 1050), Plan::Fetch);
    // Expired: fetched again even with the same id.
    assert_eq!(plan(Some(&c), TxtSeen::Id("a"), None, 1100), Plan::Fetch);
    // The TXT record went away or the look-up failed: the fresh policy is kept until it expires.
    assert_eq!(plan(Some(&c), TxtSeen::Absent, None, 1099), Plan::UseCached);
    assert_eq!(
        plan(Some(&c), TxtSeen::Unusable, None, 1099),
        Plan::UseCached
    );
    assert_eq!(plan(Some(&c), TxtSeen::Absent, None, 1100), Plan::NoPolicy);
    // A fetch failed a moment ago: no new fetch before FETCH_RETRY_SECS.
    assert_eq!(
        plan(Some(&c), TxtSeen::Id("b"), Some(1040), 1050),
        Plan::UseCached
    );
    assert_eq!(
        plan(None, TxtSeen::Id("b"), Some(1040), 1050),
        Plan::NoPolicy
    );
    assert_eq!(
        plan(None, TxtSeen::Id("b"), Some(1040), 1040 + FETCH_RETRY_SECS),
        Plan::Fetch
    );
    // On a failed refresh the cached policy is kept until it expires.
    assert_eq!(after_fetch_failure(Some(&c), 1099), Some(&c));
    assert_eq!(after_fetch_failure(Some(&c), 1100), None);
}

#[test]
fn names() {
    assert_eq!(policy_host("example.com"), "mta-sts.example.com");
}
