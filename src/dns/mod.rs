//! DNS: a blocking facade over hickory-resolver.
