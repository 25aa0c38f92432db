//! certgen
