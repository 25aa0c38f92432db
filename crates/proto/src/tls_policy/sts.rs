//! MTA-STS (RFC 8461) as data: the `_mta-sts.<domain>` TXT record (`v=STSv1; id=…`), the policy
//! file (`version`, `mode`, `mx`, `max_age`) and MX pattern matching. Fetching and caching are
//! the daemon's.
