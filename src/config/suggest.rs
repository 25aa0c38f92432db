//! The nearest valid key for a misspelt one (sans-I/O): `listne` → `listen`.

/// Edit distance with adjacent transpositions (optimal string alignment), in characters.
pub(crate) fn distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    // rows[i][j]: distance between a[..i] and b[..j]
    let mut rows = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in rows.iter_mut().enumerate() {
        if let Some(first) = row.first_mut() {
            *first = i;
        }
    }
    if let Some(first) = rows.first_mut() {
        for (j, v) in first.iter_mut().enumerate() {
            *v = j;
        }
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut d = (rows[i - 1][j] + 1)
                .min(rows[i][j - 1] + 1)
                .min(rows[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                d = d.min(rows[i - 2][j - 2] + 1);
            }
            rows[i][j] = d;
        }
    }
    rows[a.len()][b.len()]
}

/// The candidate nearest to `word`, if it is near enough to be a likely misspelling (at most
/// a third of the word's length in edits, at least one); ties go to the first candidate.
pub(crate) fn nearest<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    let limit = (word.chars().count() / 3).max(1);
    candidates
        .into_iter()
        .map(|c| (distance(&word.to_ascii_lowercase(), c), c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// The keys of serde's "expected one of `a`, `b`" (or "expected `a` or `b`") tail.
pub(crate) fn expected_keys(tail: &str) -> Vec<&str> {
    tail.split('`').skip(1).step_by(2).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distances() {
        assert_eq!(distance("listne", "listen"), 1);
        assert_eq!(distance("mx_comand", "mx_command"), 1);
        assert_eq!(distance("", "abc"), 3);
        assert_eq!(distance("kitten", "sitting"), 3);
    }

    #[test]
    fn the_nearest_key_if_near_enough() {
        let keys = ["listen", "allow_from", "log_verbose", "tls_certificate"];
        assert_eq!(nearest("listne", keys), Some("listen"));
        assert_eq!(nearest("Listen", keys), Some("listen"));
        assert_eq!(nearest("log_verbos", keys), Some("log_verbose"));
        assert_eq!(nearest("tls_certficate", keys), Some("tls_certificate"));
        assert_eq!(nearest("bogus", keys), None);
        assert_eq!(nearest("x", keys), None);
    }

    #[test]
    fn keys_of_serde_s_message() {
        assert_eq!(
            expected_keys("expected one of `listen`, `allow_from`"),
            ["listen", "allow_from"]
        );
        assert_eq!(expected_keys("expected `a` or `b`"), ["a", "b"]);
        assert!(expected_keys("there are no fields").is_empty());
    }
}
