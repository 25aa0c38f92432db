//! Parsing of the command lines the test MX understands (pure functions).

/// A command line split into its upper-cased verb and the argument text.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct CommandLine<'a> {
    pub verb: String,
    pub arg: &'a str,
}

/// Split `line` (without CRLF) into verb and argument.
pub(crate) fn split(line: &str) -> CommandLine<'_> {
    let line = line.trim_start();
    let (verb, arg) = match line.find(' ') {
        Some(i) => (line.get(..i).unwrap_or(""), line.get(i + 1..).unwrap_or("")),
        None => (line, ""),
    };
    CommandLine {
        verb: verb.to_ascii_uppercase(),
        arg: arg.trim(),
    }
}

fn strip_prefix_ci<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    if head.eq_ignore_ascii_case(prefix) {
        s.get(prefix.len()..)
    } else {
        None
    }
}

/// A `MAIL FROM:` / `RCPT TO:` argument: the address (without brackets) and the parameters.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct PathArg<'a> {
    pub address: String,
    pub params: &'a str,
}

/// Parse `FROM:<addr> params` (with `prefix` = `"FROM:"`) or `TO:<addr> params`.
/// A bare address without brackets is tolerated; `<>` gives an empty address.
pub(crate) fn path_arg<'a>(arg: &'a str, prefix: &str) -> Option<PathArg<'a>> {
    let rest = strip_prefix_ci(arg, prefix)?.trim_start();
    if let Some(inner) = rest.strip_prefix('<') {
        let close = inner.find('>')?;
        Some(PathArg {
            address: inner.get(..close)?.to_string(),
            params: inner.get(close + 1..)?.trim(),
        })
    } else {
        let end = rest.find(' ').unwrap_or(rest.len());
        if end == 0 {
            return None;
        }
        Some(PathArg {
            address: rest.get(..end)?.to_string(),
            params: rest.get(end..)?.trim(),
        })
    }
}

/// The value of a `SIZE=` parameter, if present and numeric.
pub(crate) fn size_param(params: &str) -> Option<u64> {
    params
        .split_ascii_whitespace()
        .find_map(|p| strip_prefix_ci(p, "SIZE="))
        .and_then(|v| v.parse().ok())
}

/// `BDAT <size> [LAST]`: the chunk size and whether it is the last chunk.
pub(crate) fn bdat_arg(arg: &str) -> Option<(u64, bool)> {
    let mut words = arg.split_ascii_whitespace();
    let size_word = words.next()?;
    if !size_word.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let size = size_word.parse().ok()?;
    let last = match words.next() {
        None => false,
        Some(w) if w.eq_ignore_ascii_case("LAST") => true,
        Some(_) => return None,
    };
    if words.next().is_some() {
        return None;
    }
    Some((size, last))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_verbs() {
        assert_eq!(
            split("mail FROM:<a@b>"),
            CommandLine {
                verb: "MAIL".into(),
                arg: "FROM:<a@b>"
            }
        );
        assert_eq!(split("QUIT").verb, "QUIT");
        assert_eq!(split("").verb, "");
        assert_eq!(split("é\u{0}x y").arg, "y");
    }

    #[test]
    fn parses_paths() {
        let p = path_arg("FROM:<a@b> SIZE=10 BODY=8BITMIME", "FROM:").unwrap();
        assert_eq!(p.address, "a@b");
        assert_eq!(size_param(p.params), Some(10));
        assert_eq!(path_arg("from: <>", "FROM:").unwrap().address, "");
        assert_eq!(path_arg("TO:c@d", "TO:").unwrap().address, "c@d");
        assert!(path_arg("TO:<c@d", "TO:").is_none());
        assert!(path_arg("FROM:<a>", "TO:").is_none());
        assert!(path_arg("TO:", "TO:").is_none());
        assert!(path_arg("T", "TO:").is_none());
        assert_eq!(size_param("BODY=7BIT"), None);
    }

    #[test]
    fn parses_bdat() {
        assert_eq!(bdat_arg("10"), Some((10, false)));
        assert_eq!(bdat_arg("0 last"), Some((0, true)));
        assert_eq!(bdat_arg("+1"), None);
        assert_eq!(bdat_arg("1 LAST x"), None);
        assert_eq!(bdat_arg("1 FIRST"), None);
        assert_eq!(bdat_arg("99999999999999999999999"), None);
        assert_eq!(bdat_arg(""), None);
    }
}
