//! `gaproxy status` without `--json`: the status view as readable tables.

use super::Status;
use std::fmt::Write as _;

fn secs(s: f64) -> String {
    format!("{s:.1}s")
}

/// Left-aligned columns, two spaces apart.
fn columns(out: &mut String, rows: &[Vec<String>]) {
    let width = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..width)
        .map(|i| {
            rows.iter()
                .filter_map(|r| r.get(i))
                .map(|c| c.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    for r in rows {
        let mut line = String::new();
        for (i, c) in r.iter().enumerate() {
            let w = widths.get(i).copied().unwrap_or(0);
            let _ = write!(line, "{c:<w$}  ");
        }
        let _ = writeln!(out, "  {}", line.trim_end());
    }
}

/// The status as text.
pub fn render(st: &Status) -> String {
    let mut out = String::new();
    let _ = write!(out, "greenarrow_proxy {}", st.proxy_version);
    if let (Some(up), Some(since)) = (st.uptime_seconds, &st.started_at) {
        let up = std::time::Duration::from_secs(up as u64);
        let _ = write!(
            out,
            ", up {} (since {since})",
            humantime::format_duration(up)
        );
    }
    let _ = writeln!(out);
    if let Some(c) = &st.config {
        let _ = write!(out, "Configuration loaded {}", c.loaded_at);
        match &c.last_reload {
            None => {}
            Some(r) if r.ok => {
                let _ = write!(out, "; last reload {} worked", r.at);
            }
            Some(r) => {
                let _ = write!(
                    out,
                    "; last reload {} FAILED, the previous configuration still runs: {}",
                    r.at,
                    r.error.as_deref().unwrap_or("no reason given")
                );
            }
        }
        let _ = writeln!(out);
    }
    if let Some(s) = &st.sessions {
        let _ = writeln!(
            out,
            "Sessions: {} in use of max_sessions {} ({}%), {} queued",
            s.active,
            s.max_sessions,
            (s.active * 100).checked_div(s.max_sessions).unwrap_or(0),
            s.queued
        );
    }
    let _ = writeln!(out, "\nConnections by pool key (source / EHLO name / MX):");
    if st.pools.is_empty() {
        let _ = writeln!(out, "  none");
    } else {
        let mut rows = vec![vec![
            "SOURCE".into(),
            "EHLO".into(),
            "MX".into(),
            "IN USE".into(),
            "IDLE".into(),
        ]];
        for p in &st.pools {
            rows.push(vec![
                p.source.to_string(),
                p.ehlo.clone(),
                p.mx.to_string(),
                p.in_use.to_string(),
                p.idle.len().to_string(),
            ]);
        }
        columns(&mut out, &rows);
    }
    let idle: Vec<_> = st
        .pools
        .iter()
        .flat_map(|p| p.idle.iter().map(move |c| (p, c)))
        .collect();
    if !idle.is_empty() {
        let _ = writeln!(out, "\nIdle pooled connections:");
        let mut rows = vec![vec![
            "SOURCE".into(),
            "EHLO".into(),
            "MX".into(),
            "AGE".into(),
            "IDLE".into(),
            "USES".into(),
            "MSGS".into(),
            "TLS".into(),
            "LAST MTA".into(),
        ]];
        for (p, c) in idle {
            rows.push(vec![
                p.source.to_string(),
                p.ehlo.clone(),
                p.mx.to_string(),
                secs(c.age.as_secs_f64()),
                secs(c.idle.as_secs_f64()),
                c.uses.to_string(),
                c.messages.to_string(),
                match (&c.tls_version, &c.tls_cipher) {
                    (Some(v), Some(ci)) => format!("{v} {ci}"),
                    (Some(v), None) => v.clone(),
                    _ => "none".into(),
                },
                c.last_mta.map_or("-".into(), |a| a.to_string()),
            ]);
        }
        columns(&mut out, &rows);
    }
    let _ = writeln!(out, "\nCaps by source and destination:");
    if st.caps.is_empty() {
        let _ = writeln!(out, "  none");
    } else {
        let mut rows = vec![vec![
            "SOURCE".into(),
            "DESTINATION".into(),
            "IN USE".into(),
            "IDLE".into(),
            "MAX".into(),
            "WAITING".into(),
            "OLDEST WAIT".into(),
        ]];
        for c in &st.caps {
            rows.push(vec![
                c.source.to_string(),
                c.destination.clone(),
                c.in_use.to_string(),
                c.idle.to_string(),
                c.max_connections.map_or("-".into(), |m| m.to_string()),
                c.waiting.to_string(),
                c.oldest_wait.map_or("-".into(), |d| secs(d.as_secs_f64())),
            ]);
        }
        columns(&mut out, &rows);
    }
    if let Some(sh) = &st.shared {
        let _ = writeln!(
            out,
            "\nShared caps (host {}, {}, {} live hosts):",
            sh.host, sh.state, sh.live_hosts
        );
        let mut rows = vec![vec![
            "GROUP".into(),
            "MAX".into(),
            "RATE".into(),
            "HELD HERE".into(),
            "SHARE".into(),
            "WAITING".into(),
            "HOLDERS".into(),
        ]];
        for g in &sh.groups {
            let holders: Vec<String> = g
                .holders
                .iter()
                .map(|h| format!("{}={}", h.host, h.leases))
                .collect();
            rows.push(vec![
                g.group.clone(),
                g.max_connections.map_or("-".into(), |m| m.to_string()),
                g.max_new_connections.map_or("-".into(), |m| m.to_string()),
                g.held.to_string(),
                g.share.map_or("-".into(), |m| m.to_string()),
                g.waiting.to_string(),
                if holders.is_empty() {
                    "-".into()
                } else {
                    holders.join(" ")
                },
            ]);
        }
        columns(&mut out, &rows);
    }
    let w = &st.waits;
    let _ = writeln!(
        out,
        "\nWaits: {} waited, {} timed out, {} in all",
        w.waited,
        w.timed_out,
        secs(w.sum_seconds)
    );
    let _ = writeln!(out, "\nCounters:");
    let rows: Vec<Vec<String>> = st
        .counters
        .0
        .iter()
        .map(|(k, v)| vec![k.clone(), format!("{v}")])
        .collect();
    columns(&mut out, &rows);
    let failed: Vec<String> = st
        .failures
        .iter()
        .filter(|f| f.count > 0)
        .map(|f| format!("{} {}: {}", f.code, f.tag, f.count))
        .collect();
    if !failed.is_empty() {
        let _ = writeln!(out, "\nFailed connects: {}", failed.join(", "));
    }
    let d = &st.drains;
    let _ = writeln!(out, "\nDrains:");
    if d.sources.is_empty() && d.mx.is_empty() {
        let _ = writeln!(out, "  none");
    }
    for s in &d.sources {
        let _ = writeln!(out, "  source {s}");
    }
    for m in &d.mx {
        let _ = writeln!(out, "  mx {m}");
    }
    if let Some(t) = st.tls_rpt.as_ref().filter(|t| !t.domains.is_empty()) {
        let _ = writeln!(out, "\nTLS reporting, {} (UTC):", t.day);
        let mut rows = vec![vec![
            "DOMAIN".to_string(),
            "OK".to_string(),
            "FAILED".to_string(),
            "RUA".to_string(),
        ]];
        for dom in &t.domains {
            rows.push(vec![
                dom.domain.clone(),
                dom.successes.to_string(),
                dom.failures.to_string(),
                if dom.rua.is_empty() {
                    "-".to_string()
                } else {
                    dom.rua.join(",")
                },
            ]);
        }
        columns(&mut out, &rows);
    }
    out
}
