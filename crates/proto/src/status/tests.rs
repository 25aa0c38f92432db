use super::*;
use crate::protocol::Failure;
use std::time::{Duration, UNIX_EPOCH};

fn key(source: &str) -> PoolKey {
    PoolKey::new(
        source.parse().unwrap(),
        "MTA.test",
        "127.0.0.1:25".parse().unwrap(),
    )
}

fn snapshot() -> Snapshot {
    let figure = |name, value: u64| Figure {
        name,
        metric: name,
        kind: Kind::Gauge,
        help: "",
        value: value as f64,
    };
    Snapshot {
        figures: vec![
            figure("pooled", 1),
            figure("keys", 1),
            figure("connects", 9),
            figure("sessions_active", 3),
            figure("max_sessions", 50),
            Figure {
                value: 1.5,
                ..figure("cpu_seconds", 0)
            },
        ],
        pooled: vec![PooledInfo {
            key: key("127.0.0.2"),
            conn: IdleConnection {
                age: Duration::from_millis(2500),
                idle: Duration::from_millis(500),
                uses: 3,
                messages: 4,
                tls_version: Some("TLSv1.3".into()),
                tls_cipher: Some("TLS13_AES_256_GCM_SHA384".into()),
                last_mta: Some("127.0.0.1:40000".parse().unwrap()),
            },
        }],
        in_use: vec![(key("127.0.0.2"), 2), (key("127.0.0.3"), 1)],
        rows: Vec::new(),
        shared: None,
        waits: WaitSnapshot {
            waited: 2,
            timed_out: 0,
            buckets: vec![(0.25, 1), (f64::INFINITY, 2)],
            sum_seconds: 0.5,
        },
        failures: vec![(Failure::Drained, 1)],
        drains: DrainList::default(),
        tls_rpt: TlsRptSnapshot::default(),
        config: ConfigState {
            started: UNIX_EPOCH + Duration::from_secs(1_765_000_000),
            loaded: UNIX_EPOCH + Duration::from_secs(1_765_003_600),
            last_reload: Some(LastReload {
                at: UNIX_EPOCH + Duration::from_secs(1_765_007_200),
                error: Some("line 3: unknown key \"lisen\"".into()),
            }),
        },
        now: UNIX_EPOCH + Duration::from_secs(1_765_010_000),
    }
}

#[test]
fn keys_in_use_and_idle_merge_and_the_json_keeps_the_counters_order() {
    let st = Status::from_snapshot(&snapshot());
    assert_eq!(st.pools.len(), 2);
    let p = &st.pools[0];
    assert_eq!(
        (p.source.to_string(), p.ehlo.as_str()),
        ("127.0.0.2".into(), "mta.test")
    );
    assert_eq!((p.in_use, p.idle.len()), (2, 1));
    assert_eq!(p.idle[0].tls_version.as_deref(), Some("TLSv1.3"));
    assert_eq!((st.pools[1].in_use, st.pools[1].idle.len()), (1, 0));
    assert_eq!(st.waits.buckets, vec![(0.25, 1), (f64::INFINITY, 2)]);
    let text = serde_json::to_string(&st).unwrap();
    assert!(
        text.contains(
            r#""counters":{"pooled":1,"keys":1,"connects":9,"sessions_active":3,"max_sessions":50,"cpu_seconds":1.5}"#
        ),
        "{text}"
    );
    assert!(
        text.contains(r#"{"tag":"drained","code":453,"count":1}"#),
        "{text}"
    );
    let back: Status = serde_json::from_str(&text).unwrap();
    assert_eq!(back, st);
    assert_eq!(back.counters.get("connects"), Some(9.0));
    assert_eq!(st.started_at.as_deref(), Some("2025-12-06T05:46:40Z"));
    assert_eq!(st.uptime_seconds, Some(10_000.0));
    let config = st.config.as_ref().unwrap();
    assert_eq!(config.loaded_at, "2025-12-06T06:46:40Z");
    let last = config.last_reload.as_ref().unwrap();
    assert!(!last.ok && last.error.as_deref().unwrap().contains("lisen"));
    assert_eq!(
        st.sessions,
        Some(Sessions {
            active: 3,
            queued: 0,
            max_sessions: 50
        })
    );
    // A proxy older than these fields: its status still reads.
    let old = text
        .replace(r#""started_at":"2025-12-06T05:46:40Z","#, "")
        .replace(r#""uptime_seconds":10000.0,"#, "");
    let old: Status = serde_json::from_str(&old).unwrap();
    assert_eq!(old.started_at, None);
}

/// The JSON of `gaproxy status --json` and of the control socket, in full: the status types
/// are the domain snapshots' own serialisation, and this is what they must keep writing.
#[test]
fn the_status_json_is_exactly_the_documented_shape() {
    let mut snap = snapshot();
    snap.rows = vec![CapRow {
        source: "127.0.0.3".parse().unwrap(),
        destination: "mx.group".into(),
        in_use: 2,
        idle: 1,
        max_connections: Some(3),
        waiting: 4,
        oldest_wait: Some(Duration::from_millis(1500)),
    }];
    let mut plain = snap.pooled[0].clone();
    plain.conn.tls_version = None;
    plain.conn.tls_cipher = None;
    plain.conn.last_mta = None;
    snap.pooled.push(plain);
    snap.tls_rpt = TlsRptSnapshot {
        failures: Vec::new(),
        successes: Vec::new(),
        domains: vec![TlsRptDomain {
            domain: "sts.example".into(),
            successes: 5,
            failures: 1,
            rua: vec!["mailto:tlsrpt@sts.example".into()],
        }],
        sts_cached: 1,
    };
    let st = Status::from_snapshot(&snap);
    let text = serde_json::to_string(&st).unwrap();
    let want = GOLDEN_JSON.replace("@VERSION@", env!("CARGO_PKG_VERSION"));
    assert_eq!(text, want);
    let back: Status = serde_json::from_str(&text).unwrap();
    assert_eq!(back, st);
    let table = table::render(&st);
    assert!(
        table.contains("TLS reporting, 2025-12-06 (UTC):"),
        "{table}"
    );
    assert!(
        table
            .lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>()
                == ["sts.example", "5", "1", "mailto:tlsrpt@sts.example"]),
        "{table}"
    );
}

const GOLDEN_JSON: &str = concat!(
    r#"{"version":1,"proxy_version":"@VERSION@","started_at":"2025-12-06T05:46:40Z","#,
    r#""uptime_seconds":10000.0,"config":{"loaded_at":"2025-12-06T06:46:40Z","#,
    r#""last_reload":{"at":"2025-12-06T07:46:40Z","ok":false,"#,
    r#""error":"line 3: unknown key \"lisen\""}},"sessions":{"active":3,"queued":0,"#,
    r#""max_sessions":50},"pools":[{"source":"127.0.0.2","ehlo":"mta.test","#,
    r#""mx":"127.0.0.1:25","in_use":2,"idle":[{"age_seconds":2.5,"idle_seconds":0.5,"#,
    r#""uses":3,"messages":4,"tls_version":"TLSv1.3","#,
    r#""tls_cipher":"TLS13_AES_256_GCM_SHA384","#,
    r#""last_mta":"127.0.0.1:40000"},{"age_seconds":2.5,"idle_seconds":0.5,"uses":3,"#,
    r#""messages":4,"tls_version":null,"tls_cipher":null,"#,
    r#""last_mta":null}]},{"source":"127.0.0.3","ehlo":"mta.test","mx":"127.0.0.1:25","#,
    r#""in_use":1,"idle":[]}],"caps":[{"source":"127.0.0.3","destination":"mx.group","#,
    r#""in_use":2,"idle":1,"max_connections":3,"waiting":4,"oldest_wait_seconds":1.5}],"#,
    r#""waits":{"waited":2,"timed_out":0,"sum_seconds":0.5,"buckets":[{"le":0.25,"#,
    r#""count":1},{"le":null,"count":2}]},"counters":{"pooled":1,"keys":1,"connects":9,"#,
    r#""sessions_active":3,"max_sessions":50,"cpu_seconds":1.5},"#,
    r#""failures":[{"tag":"drained","code":453,"count":1}],"drains":{"sources":[],"#,
    r#""mx":[]},"tls_rpt":{"day":"2025-12-06","domains":[{"domain":"sts.example","#,
    r#""successes":5,"failures":1,"rua":["mailto:tlsrpt@sts.example"]}],"sts_cached":1}}"#,
);

fn shared_status() -> SharedStatus {
    SharedStatus {
        host: "proxy-a".into(),
        state: "fallback".into(),
        live_hosts: 3,
        groups: vec![SharedGroup {
            group: "bigmail".into(),
            max_connections: Some(40),
            max_new_connections: None,
            held: 12,
            share: Some(13),
            waiting: 2,
            holders: vec![
                SharedHolder {
                    host: "proxy-a".into(),
                    leases: 12,
                },
                SharedHolder {
                    host: "proxy-b".into(),
                    leases: 20,
                },
            ],
        }],
    }
}

#[test]
fn the_shared_caps_show_in_the_json_the_table_and_the_metrics() {
    let mut snap = snapshot();
    snap.shared = Some(shared_status());
    let st = Status::from_snapshot(&snap);
    let text = serde_json::to_string(&st).unwrap();
    assert!(
        text.contains(concat!(
            r#""shared":{"host":"proxy-a","state":"fallback","live_hosts":3,"#,
            r#""groups":[{"group":"bigmail","max_connections":40,"#,
            r#""max_new_connections":null,"held":12,"share":13,"waiting":2,"#,
            r#""holders":[{"host":"proxy-a","leases":12},{"host":"proxy-b","leases":20}]}]}"#
        )),
        "{text}"
    );
    let back: Status = serde_json::from_str(&text).unwrap();
    assert_eq!(back, st);
    let table = table::render(&st);
    assert!(
        table.contains("Shared caps (host proxy-a, fallback, 3 live hosts):"),
        "{table}"
    );
    assert!(
        table.contains("  bigmail  40   -     12         13     2        proxy-a=12 proxy-b=20"),
        "{table}"
    );
    let metrics = exposition::render(&snap);
    for line in [
        "greenarrow_proxy_shared_caps_fallback 1",
        "greenarrow_proxy_shared_caps_live_hosts 3",
        "greenarrow_proxy_shared_caps_leases{group=\"bigmail\"} 12",
    ] {
        assert!(metrics.contains(line), "{line}\n{metrics}");
    }
    // Off: absent from all three.
    let off = serde_json::to_string(&Status::from_snapshot(&snapshot())).unwrap();
    assert!(!off.contains("shared"), "{off}");
    assert!(!exposition::render(&snapshot()).contains("shared_caps"));
}

#[test]
fn the_table_shows_keys_idle_connections_counters_and_failures() {
    let text = table::render(&Status::from_snapshot(&snapshot()));
    for want in [
        "  127.0.0.2  mta.test  127.0.0.1:25  2       1",
        "  127.0.0.2  mta.test  127.0.0.1:25  2.5s  0.5s  3     4     TLSv1.3 TLS13_AES_256_GCM_SHA384  127.0.0.1:40000",
        concat!(
            "greenarrow_proxy ",
            env!("CARGO_PKG_VERSION"),
            ", up 2h 46m 40s (since 2025-12-06T05:46:40Z)"
        ),
        "Configuration loaded 2025-12-06T06:46:40Z; last reload 2025-12-06T07:46:40Z FAILED, the previous configuration still runs: line 3: unknown key \"lisen\"",
        "Sessions: 3 in use of max_sessions 50 (6%), 0 queued",
        "  connects         9",
        "  cpu_seconds      1.5",
        "Failed connects: 453 drained: 1",
        "Waits: 2 waited, 0 timed out, 0.5s in all",
    ] {
        assert!(text.lines().any(|l| l == want), "no {want:?} in\n{text}");
    }
}
