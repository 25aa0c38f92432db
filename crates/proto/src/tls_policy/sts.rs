//! MTA-STS (RFC 8461) as data: the `_mta-sts.<domain>` TXT record (`v=STSv1; id=…`), the policy
//! file (`version`, `mode`, `mx`, `max_age`), MX pattern matching, and the cache rules as a
//! pure function of the time given (seconds since the Unix epoch). Fetching and caching are
//! the daemon's (`tlspolicy::sts`).

pub use super::decide::StsMode;
use std::fmt;

/// The longest `max_age` a policy may give (RFC 8461 section 3.2: one year).
pub const MAX_AGE_LIMIT: u64 = 31_557_600;

/// After a failed fetch, how long before the same domain's policy is fetched again (the
/// sessions in between use the cached policy, or none): a dead policy host is not hammered.
pub const FETCH_RETRY_SECS: u64 = 60;

/// The well-known path of the policy file.
pub const POLICY_PATH: &str = "/.well-known/mta-sts.txt";

/// The label the TXT record is under: `_mta-sts.<domain>`.
pub const TXT_PREFIX: &str = "_mta-sts";

/// The policy host for a policy domain.
pub fn policy_host(domain: &str) -> String {
    format!("mta-sts.{}", normalise(domain))
}

/// A domain name lower-cased, without its trailing dot.
pub fn normalise(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

/// What is wrong with a `_mta-sts` TXT record set.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum TxtError {
    /// More than one record starts with `v=STSv1` (RFC 8461 3.1: none is then valid).
    Several,
    /// The record starting with `v=STSv1` does not follow the grammar.
    Syntax(String),
    /// The record has no `id=` field.
    NoId,
}

impl fmt::Display for TxtError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TxtError::Several => f.write_str("several v=STSv1 TXT records"),
            TxtError::Syntax(why) => write!(f, "bad v=STSv1 TXT record: {why}"),
            TxtError::NoId => f.write_str("v=STSv1 TXT record without id="),
        }
    }
}

impl std::error::Error for TxtError {}

/// The STS TXT record of a domain: `Ok(None)` when no record starts with `v=STSv1` (no
/// policy), `Ok(Some(id))` for exactly one valid record. Each record is the concatenation of
/// its character strings.
pub fn parse_txt<S: AsRef<[u8]>>(records: &[S]) -> Result<Option<String>, TxtError> {
    let sts: Vec<&[u8]> = records
        .iter()
        .map(AsRef::as_ref)
        .filter(|r| {
            r.starts_with(b"v=STSv1") && matches!(r.get(7), None | Some(b';' | b' ' | b'\t'))
        })
        .collect();
    match sts.as_slice() {
        [] => Ok(None),
        [one] => parse_one_txt(one).map(Some),
        _ => Err(TxtError::Several),
    }
}

fn is_wsp(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

/// `sts-text-record = sts-version 1*(*WSP %x3B *WSP sts-field) [%x3B]`.
fn parse_one_txt(record: &[u8]) -> Result<String, TxtError> {
    let text = std::str::from_utf8(record).map_err(|_| TxtError::Syntax("not ASCII".into()))?;
    let mut rest = &text["v=STSv1".len()..];
    let mut id = None;
    let mut fields = 0;
    loop {
        rest = rest.trim_start_matches([' ', '\t']);
        if rest.is_empty() {
            break;
        }
        let Some(after) = rest.strip_prefix(';') else {
            return Err(TxtError::Syntax(format!("expected ';' at {rest:?}")));
        };
        let after = after.trim_start_matches([' ', '\t']);
        if after.is_empty() {
            // The optional final `;`.
            break;
        }
        let end = after
            .find(|c: char| c == ';' || is_wsp(c as u8))
            .unwrap_or(after.len());
        let field = &after[..end];
        rest = &after[end..];
        let (name, value) = field
            .split_once('=')
            .ok_or_else(|| TxtError::Syntax(format!("field without '=': {field:?}")))?;
        fields += 1;
        if name == "id" {
            let ok =
                (1..=32).contains(&value.len()) && value.bytes().all(|b| b.is_ascii_alphanumeric());
            if !ok {
                return Err(TxtError::Syntax(format!("bad id {value:?}")));
            }
            if id.is_some() {
                return Err(TxtError::Syntax("two id= fields".into()));
            }
            id = Some(value.to_string());
        } else {
            let name_ok = !name.is_empty()
                && name.len() <= 32
                && name.as_bytes()[0].is_ascii_alphanumeric()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b));
            let value_ok = !value.is_empty()
                && value
                    .bytes()
                    .all(|b| (0x21..=0x7e).contains(&b) && b != b';' && b != b'=');
            if !name_ok || !value_ok {
                return Err(TxtError::Syntax(format!("bad extension field {field:?}")));
            }
        }
    }
    if fields == 0 {
        return Err(TxtError::Syntax("no fields after v=STSv1".into()));
    }
    id.ok_or(TxtError::NoId)
}

/// What is wrong with a policy file.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum PolicyError {
    /// Not UTF-8 text.
    NotText,
    /// A line is not `key: value`.
    BadLine(String),
    /// `version` is missing or not `STSv1`.
    Version,
    /// `mode` is missing or not `enforce`, `testing` or `none`.
    Mode,
    /// `max_age` is missing, not a number, or above [`MAX_AGE_LIMIT`].
    MaxAge,
    /// `mode` is `enforce` or `testing` and no `mx` is given, or an `mx` is not a host name
    /// pattern.
    Mx(String),
    /// A field other than `mx` is given twice.
    Repeated(String),
}

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PolicyError::NotText => f.write_str("the policy is not UTF-8 text"),
            PolicyError::BadLine(l) => write!(f, "the policy line {l:?} is not `key: value`"),
            PolicyError::Version => f.write_str("the policy's version is missing or not STSv1"),
            PolicyError::Mode => {
                f.write_str("the policy's mode is missing or not enforce, testing or none")
            }
            PolicyError::MaxAge => write!(
                f,
                "the policy's max_age is missing, not a number or above {MAX_AGE_LIMIT}"
            ),
            PolicyError::Mx(why) => write!(f, "the policy's mx: {why}"),
            PolicyError::Repeated(k) => write!(f, "the policy gives {k} twice"),
        }
    }
}

impl std::error::Error for PolicyError {}

/// A parsed policy file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    pub mode: StsMode,
    /// The `mx` patterns, lower-cased, without trailing dots.
    pub mx: Vec<String>,
    /// Seconds.
    pub max_age: u64,
    /// The policy's lines as published (the TLS-RPT `policy-string`), without line ends.
    pub lines: Vec<String>,
}

impl Policy {
    /// Parse a policy file (RFC 8461 section 3.2): `key: value` lines ending in CRLF or LF;
    /// unknown keys are ignored.
    pub fn parse(body: &[u8]) -> Result<Policy, PolicyError> {
        let text = std::str::from_utf8(body).map_err(|_| PolicyError::NotText)?;
        let (mut version, mut mode, mut max_age) = (None, None, None);
        let mut mx = Vec::new();
        let mut lines = Vec::new();
        for raw in text.split('\n') {
            let line = raw.strip_suffix('\r').unwrap_or(raw);
            if line.trim().is_empty() {
                continue;
            }
            lines.push(line.to_string());
            let (key, value) = line
                .split_once(':')
                .ok_or_else(|| PolicyError::BadLine(line.to_string()))?;
            let value = value.trim_matches([' ', '\t']);
            match key {
                "version" => {
                    once(version.is_some(), key)?;
                    version = Some(value == "STSv1");
                }
                "mode" => {
                    once(mode.is_some(), key)?;
                    mode = Some(match value {
                        "enforce" => StsMode::Enforce,
                        "testing" => StsMode::Testing,
                        "none" => StsMode::None,
                        _ => return Err(PolicyError::Mode),
                    });
                }
                "max_age" => {
                    once(max_age.is_some(), key)?;
                    let ok = !value.is_empty()
                        && value.len() <= 10
                        && value.bytes().all(|b| b.is_ascii_digit());
                    let n: u64 = if ok {
                        value.parse().map_err(|_| PolicyError::MaxAge)?
                    } else {
                        return Err(PolicyError::MaxAge);
                    };
                    if n > MAX_AGE_LIMIT {
                        return Err(PolicyError::MaxAge);
                    }
                    max_age = Some(n);
                }
                "mx" => {
                    let pattern = normalise(value);
                    if !valid_pattern(&pattern) {
                        return Err(PolicyError::Mx(format!(
                            "{value:?} is not a host name pattern"
                        )));
                    }
                    mx.push(pattern);
                }
                _ => {}
            }
        }
        if version != Some(true) {
            return Err(PolicyError::Version);
        }
        let mode = mode.ok_or(PolicyError::Mode)?;
        let max_age = max_age.ok_or(PolicyError::MaxAge)?;
        if mx.is_empty() && mode != StsMode::None {
            return Err(PolicyError::Mx("none given".into()));
        }
        Ok(Policy {
            mode,
            mx,
            max_age,
            lines,
        })
    }

    /// Whether an MX host name matches one of the policy's patterns.
    pub fn mx_matches(&self, host: &str) -> bool {
        self.mx.iter().any(|p| mx_matches(p, host))
    }
}

fn once(seen: bool, key: &str) -> Result<(), PolicyError> {
    match seen {
        true => Err(PolicyError::Repeated(key.to_string())),
        false => Ok(()),
    }
}

fn valid_pattern(p: &str) -> bool {
    let name = p.strip_prefix("*.").unwrap_or(p);
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

/// RFC 8461 section 4.1: a pattern matches the host name case-insensitively; `*.example.com`
/// matches exactly one label in place of the `*` (`mx.example.com`, not `a.b.example.com` nor
/// `example.com`). Trailing dots are ignored.
pub fn mx_matches(pattern: &str, host: &str) -> bool {
    let pattern = normalise(pattern);
    let host = normalise(host);
    match pattern.strip_prefix("*.") {
        Some(suffix) => match host.split_once('.') {
            Some((first, rest)) => !first.is_empty() && rest == suffix,
            None => false,
        },
        None => pattern == host,
    }
}

/// A policy in the cache: what was fetched, under which TXT id, when.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cached {
    pub id: String,
    pub policy: Policy,
    /// When it was fetched (seconds since the epoch).
    pub fetched_at: u64,
}

impl Cached {
    /// When it stops being usable: `fetched_at + max_age`.
    pub fn expires_at(&self) -> u64 {
        self.fetched_at.saturating_add(self.policy.max_age)
    }

    /// Still within its `max_age`.
    pub fn is_fresh(&self, now: u64) -> bool {
        now < self.expires_at()
    }
}

/// What the TXT look-up of a delivery gave.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TxtSeen<'a> {
    /// One valid record, with this id.
    Id(&'a str),
    /// No `v=STSv1` record (NXDOMAIN, no TXT, or none starting so).
    Absent,
    /// The look-up failed, or the records are invalid.
    Unusable,
}

/// What to do for a delivery (RFC 8461 section 5.1, 5.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Plan {
    /// The cached policy is current: use it.
    UseCached,
    /// Fetch the policy (a new id, or no fresh cached policy); on failure fall back with
    /// [`after_fetch_failure`].
    Fetch,
    /// No policy applies.
    NoPolicy,
}

/// The cache rule: a fresh cached policy whose id the TXT record still names is used; a new id
/// or an expired policy is fetched (unless a fetch failed less than [`FETCH_RETRY_SECS`] ago);
/// with no usable TXT record a fresh cached policy is kept until it expires.
pub fn plan(
    cached: Option<&Cached>,
    txt: TxtSeen<'_>,
    last_failure: Option<u64>,
    now: u64,
) -> Plan {
    let fresh = cached.filter(|c| c.is_fresh(now));
    let backing_off = last_failure.is_some_and(|t| now < t.saturating_add(FETCH_RETRY_SECS));
    match txt {
        TxtSeen::Id(id) => match fresh {
            Some(c) if c.id == id => Plan::UseCached,
            Some(_) if backing_off => Plan::UseCached,
            None if backing_off => Plan::NoPolicy,
            _ => Plan::Fetch,
        },
        TxtSeen::Absent | TxtSeen::Unusable => match fresh {
            Some(_) => Plan::UseCached,
            None => Plan::NoPolicy,
        },
    }
}

/// After a failed fetch: the cached policy still fresh is kept (RFC 8461 section 5.1), or none.
pub fn after_fetch_failure(cached: Option<&Cached>, now: u64) -> Option<&Cached> {
    cached.filter(|c| c.is_fresh(now))
}

#[cfg(test)]
#[path = "sts_tests.rs"]
mod tests;
