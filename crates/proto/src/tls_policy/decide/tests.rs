use super::*;
use crate::tls_policy::dane::Tlsa;

fn set(usage: u8) -> TlsaSet {
    TlsaSet::new(vec![Tlsa {
        usage,
        selector: 1,
        matching: 1,
        data: vec![7; 32],
    }])
}

fn req(tls: TlsPolicy) -> Request<'static> {
    Request {
        tls,
        tls_name: None,
        mx_host: Some("mx.example"),
        mx_ip: "192.0.2.1".parse().unwrap(),
    }
}

fn sts(mode: StsMode, mx_matches: bool) -> StsFinding {
    StsFinding::Policy {
        mode,
        mx_matches,
        policy_id: "20260101".into(),
    }
}

const ALL: [TlsPolicy; 4] = [
    TlsPolicy::None,
    TlsPolicy::Opportunistic,
    TlsPolicy::Required,
    TlsPolicy::Verify,
];

#[test]
fn without_policies_the_request_stands() {
    let s = Settings::default();
    for finding in [
        DaneFinding::NotLookedUp,
        DaneFinding::Insecure,
        DaneFinding::NoRecords,
    ] {
        for tls in ALL {
            let d = decide(req(tls), &finding, &StsFinding::NoPolicy, &s).unwrap();
            assert_eq!(d.setup, tls);
            assert_eq!(
                d.want,
                TlsWant::from_request(tls, Some("mx.example"), "192.0.2.1:25".parse().unwrap())
            );
            assert_eq!(d.policy, PolicyType::NoPolicyFound);
            assert!(d.observe.is_none());
        }
    }
    let d = decide(
        req(TlsPolicy::Verify),
        &DaneFinding::Insecure,
        &StsFinding::NotLookedUp,
        &s,
    )
    .unwrap();
    assert_eq!(d.applied, Applied::WebPki);
    assert_eq!(d.check, CertCheck::WebPki("mx.example".into()));
}

#[test]
fn secure_tlsa_raises_every_request_but_none_to_dane() {
    let s = Settings::default();
    let found = DaneFinding::Secure(set(3));
    for tls in [
        TlsPolicy::Opportunistic,
        TlsPolicy::Required,
        TlsPolicy::Verify,
    ] {
        let d = decide(req(tls), &found, &sts(StsMode::Enforce, true), &s).unwrap();
        assert_eq!(
            d.want,
            TlsWant::Dane {
                name: "mx.example".into(),
                tlsa: set(3).fingerprint()
            },
            "{tls:?}: DANE takes precedence over MTA-STS and tls=verify"
        );
        assert_eq!(d.setup, TlsPolicy::Required);
        assert_eq!(d.applied, Applied::DaneEe);
        assert_eq!(d.policy, PolicyType::Tlsa);
        assert!(d.enforced);
        assert!(matches!(d.check, CertCheck::Dane { .. }));
    }
    let r = decide(req(TlsPolicy::None), &found, &StsFinding::NoPolicy, &s).unwrap_err();
    assert_eq!(r.failure(), Failure::DaneRequired);
    let allow = Settings {
        allow_none_when_required: true,
        ..s
    };
    let d = decide(req(TlsPolicy::None), &found, &StsFinding::NoPolicy, &allow).unwrap();
    assert_eq!((d.want, d.applied), (TlsWant::Any, Applied::None));
}

#[test]
fn secure_tlsa_without_usable_records_makes_tls_mandatory_only() {
    let d = decide(
        req(TlsPolicy::Opportunistic),
        &DaneFinding::Secure(set(1)),
        &StsFinding::NoPolicy,
        &Settings::default(),
    )
    .unwrap();
    assert_eq!(d.want, TlsWant::Tls);
    assert_eq!(d.setup, TlsPolicy::Required);
    assert_eq!(d.check, CertCheck::AcceptAny);
}

#[test]
fn failed_tlsa_lookup_defers_and_names_the_mx() {
    let r = decide(
        req(TlsPolicy::Opportunistic),
        &DaneFinding::Failed("SERVFAIL".into()),
        &StsFinding::NoPolicy,
        &Settings::default(),
    )
    .unwrap_err();
    assert_eq!(r.failure(), Failure::TlsaLookupFailed);
    assert_eq!(
        r.report(),
        (PolicyType::Tlsa, Some(ResultType::DnssecInvalid))
    );
    assert!(r.worth_another_host());
    assert!(r.to_string().contains("mx.example"));
}

#[test]
fn testing_only_and_off_never_defer() {
    for dane in [Enforcement::TestingOnly, Enforcement::Off] {
        let s = Settings {
            dane,
            ..Settings::default()
        };
        for found in [DaneFinding::Failed("x".into()), DaneFinding::Secure(set(3))] {
            let d = decide(
                req(TlsPolicy::Opportunistic),
                &found,
                &StsFinding::NoPolicy,
                &s,
            )
            .unwrap();
            assert_eq!(d.want, TlsWant::Opportunistic);
            let observed = matches!(d.observe, Some(Observe::Dane { .. }));
            assert_eq!(
                observed,
                dane == Enforcement::TestingOnly && matches!(found, DaneFinding::Secure(_))
            );
        }
    }
}

#[test]
fn no_mx_name_no_dane() {
    let r = Request {
        mx_host: None,
        ..req(TlsPolicy::Opportunistic)
    };
    let d = decide(
        r,
        &DaneFinding::Secure(set(3)),
        &StsFinding::NoPolicy,
        &Settings::default(),
    )
    .unwrap();
    assert_eq!(d.want, TlsWant::Opportunistic);
}

#[test]
fn mta_sts_enforce() {
    let s = Settings::default();
    let none = DaneFinding::Insecure;
    for tls in [
        TlsPolicy::Opportunistic,
        TlsPolicy::Required,
        TlsPolicy::Verify,
    ] {
        let d = decide(req(tls), &none, &sts(StsMode::Enforce, true), &s).unwrap();
        assert_eq!(d.want, TlsWant::Verified("mx.example".into()));
        assert_eq!(d.setup, TlsPolicy::Verify);
        assert_eq!(d.applied, Applied::MtaSts);
        assert_eq!(d.policy, PolicyType::Sts);
    }
    let r = decide(
        req(TlsPolicy::Opportunistic),
        &none,
        &sts(StsMode::Enforce, false),
        &s,
    )
    .unwrap_err();
    assert_eq!(r.failure(), Failure::StsMxMismatch);
    let r = decide(
        req(TlsPolicy::None),
        &none,
        &sts(StsMode::Enforce, true),
        &s,
    )
    .unwrap_err();
    assert_eq!(r.failure(), Failure::StsRequired);
}

#[test]
fn mta_sts_testing_delivers_as_requested_and_observes() {
    let s = Settings::default();
    for (mode, setting) in [
        (StsMode::Testing, Enforcement::Enforce),
        (StsMode::Enforce, Enforcement::TestingOnly),
    ] {
        let s = Settings {
            mta_sts: setting,
            ..s
        };
        let d = decide(
            req(TlsPolicy::Opportunistic),
            &DaneFinding::Insecure,
            &sts(mode, false),
            &s,
        )
        .unwrap();
        assert_eq!(d.want, TlsWant::Opportunistic);
        assert!(!d.enforced);
        assert_eq!(
            d.observe,
            Some(Observe::Sts {
                policy_id: "20260101".into(),
                mx_matches: false
            })
        );
    }
    let d = decide(
        req(TlsPolicy::Opportunistic),
        &DaneFinding::Insecure,
        &sts(StsMode::None, false),
        &s,
    )
    .unwrap();
    assert!(d.observe.is_none());
}

#[test]
fn tls_none_is_not_observed() {
    let s = Settings {
        dane: Enforcement::TestingOnly,
        mta_sts: Enforcement::TestingOnly,
        ..Settings::default()
    };
    for sts in [sts(StsMode::Enforce, true), StsFinding::NoPolicy] {
        let d = decide(req(TlsPolicy::None), &DaneFinding::Secure(set(3)), &sts, &s).unwrap();
        assert_eq!(
            (d.want, d.observe, d.policy),
            (TlsWant::Any, None, PolicyType::NoPolicyFound)
        );
    }
}
