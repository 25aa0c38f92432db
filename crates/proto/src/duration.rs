//! Durations as the configuration and the native protocol write them (one parser for both):
//! humantime's forms (`30s`, `500ms`, `5m`, `1h 30m`); `0` where zero is accepted; a bare
//! number of seconds (`30`) where [`Bounds::bare_seconds`] allows it (the protocol's `wait=`,
//! which took only that form at first; the configuration wants the unit written). Pure: text
//! in, `Duration` or a typed error out.

use std::fmt;
use std::time::Duration;

/// What is accepted besides the syntax.
#[derive(Clone, Copy, Debug)]
pub struct Bounds {
    /// Whether zero is accepted (`0`, `0s`).
    pub zero_ok: bool,
    /// Whether a number without a unit is accepted, as seconds.
    pub bare_seconds: bool,
    /// The longest duration accepted.
    pub max: Duration,
}

/// Why a duration was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DurationError {
    /// Not a duration; humantime's reason.
    Syntax(String),
    /// Zero where it must be positive.
    Zero,
    /// Longer than [`Bounds::max`].
    TooLong(Duration),
}

impl fmt::Display for DurationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DurationError::Syntax(why) => write!(f, "{why} (examples: 30s, 500ms, 5m, 1h 30m)"),
            DurationError::Zero => f.write_str("is zero; it must be positive"),
            DurationError::TooLong(max) => {
                write!(f, "is longer than the maximum of {}", format(*max))
            }
        }
    }
}

impl std::error::Error for DurationError {}

/// `d` written as [`parse`] reads it back: `30s`, `1h 30m`, `500ms`, `0s`.
pub fn format(d: Duration) -> impl fmt::Display {
    humantime::format_duration(d)
}

/// Parse `text` within `bounds`.
pub fn parse(text: &str, bounds: Bounds) -> Result<Duration, DurationError> {
    let t = text.trim();
    let bare = !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit());
    let d = if bare && (bounds.bare_seconds || (bounds.zero_ok && t.bytes().all(|b| b == b'0'))) {
        t.parse::<u64>()
            .map(Duration::from_secs)
            .map_err(|e| DurationError::Syntax(e.to_string()))?
    } else if bare {
        return Err(DurationError::Syntax(format!(
            "{t} has no unit: write {t}s for seconds"
        )));
    } else {
        humantime::parse_duration(t).map_err(|e| DurationError::Syntax(e.to_string()))?
    };
    if d.is_zero() && !bounds.zero_ok {
        return Err(DurationError::Zero);
    }
    if d > bounds.max {
        return Err(DurationError::TooLong(bounds.max));
    }
    Ok(d)
}

/// A `Duration` written as seconds (a JSON number with a fraction), for
/// `#[serde(with = "crate::duration::seconds")]`: how the status view writes durations.
pub mod seconds {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let v = f64::deserialize(d)?;
        Duration::try_from_secs_f64(v).map_err(serde::de::Error::custom)
    }

    /// The same for an `Option<Duration>` (None: null).
    pub mod option {
        use serde::{Deserialize, Deserializer, Serializer};
        use std::time::Duration;

        pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
            match d {
                Some(d) => s.serialize_some(&d.as_secs_f64()),
                None => s.serialize_none(),
            }
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
            Option::<f64>::deserialize(d)?
                .map(|v| Duration::try_from_secs_f64(v).map_err(serde::de::Error::custom))
                .transpose()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: Bounds = Bounds {
        zero_ok: true,
        bare_seconds: true,
        max: Duration::from_secs(3600),
    };

    #[test]
    fn the_configuration_forms_and_bare_seconds() {
        let ok = |t: &str| parse(t, HOUR).unwrap();
        assert_eq!(ok("30"), Duration::from_secs(30));
        assert_eq!(ok("30s"), Duration::from_secs(30));
        assert_eq!(ok("500ms"), Duration::from_millis(500));
        assert_eq!(ok("2m"), Duration::from_secs(120));
        assert_eq!(ok("1m 30s"), Duration::from_secs(90));
        assert_eq!(ok("0"), Duration::ZERO);
        assert_eq!(ok("0s"), Duration::ZERO);
        assert_eq!(ok("1h"), Duration::from_secs(3600));
        // Without bare seconds (the configuration): a unit is needed, except for zero.
        let config = Bounds {
            bare_seconds: false,
            ..HOUR
        };
        assert_eq!(parse("0", config), Ok(Duration::ZERO));
        assert_eq!(parse("30s", config), Ok(Duration::from_secs(30)));
        let e = parse("300", config).unwrap_err();
        assert!(e.to_string().contains("write 300s for seconds"), "{e}");
    }

    #[test]
    fn refusals_say_why() {
        let positive = Bounds {
            zero_ok: false,
            ..HOUR
        };
        assert_eq!(parse("0s", positive), Err(DurationError::Zero));
        assert_eq!(
            parse("3601", HOUR),
            Err(DurationError::TooLong(Duration::from_secs(3600)))
        );
        assert!(parse("61m", HOUR).is_err());
        for bad in ["", "-1", "soon", "5 parsecs", "99999999999999999999999"] {
            let e = parse(bad, HOUR).unwrap_err();
            assert!(matches!(e, DurationError::Syntax(_)), "{bad:?}: {e:?}");
            assert!(e.to_string().contains("examples: 30s"), "{e}");
        }
        assert_eq!(
            DurationError::TooLong(Duration::from_secs(3600)).to_string(),
            "is longer than the maximum of 1h"
        );
    }
}
