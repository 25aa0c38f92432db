//! How values are written in the effective configuration: as the file writes them, so that
//! the dump loads back to the same `Config`. The typed configuration serialises itself (its
//! field names are the keys); these are the few value forms serde does not pick by itself.

use serde::{Serialize, Serializer};
use std::time::Duration;

/// What an inline secret is shown as.
pub(crate) const REDACTED: &str = "<redacted>";

/// A duration as the parser reads it back (`30s`, `1h 30m`, `0s`): [`greenarrow_proxy_proto::duration`].
pub(crate) fn duration<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(&greenarrow_proxy_proto::duration::format(*d))
}

/// `none`, the file's word for "off", for an unset value; else the value.
pub(crate) fn or_none<T: Serialize, S: Serializer>(
    value: &Option<T>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match value {
        Some(v) => v.serialize(s),
        None => s.serialize_str("none"),
    }
}

/// `count` inline secrets, each [`REDACTED`].
pub(crate) fn redacted<S: Serializer>(count: &usize, s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq((0..*count).map(|_| REDACTED))
}

/// For `skip_serializing_if`: no inline secrets.
pub(crate) fn is_zero(n: &usize) -> bool {
    *n == 0
}
