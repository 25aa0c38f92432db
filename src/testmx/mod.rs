//! A threaded test MX that records what it receives.
