//! The man pages document what the programs accept (issue 14, item 6): every subcommand of
//! `gaproxy` has its section in gaproxy(1), every long option that `--help` shows is an item
//! of that section (of OPTIONS in greenarrow_proxy(8)), with the default `--help` shows, and
//! every page has a full date in `.TH`. A failure names what is missing where.

use std::process::Command;

/// An option as `--help` shows it: its long names (with aliases) and its default.
#[derive(Debug)]
struct HelpOption {
    names: Vec<String>,
    default: Option<String>,
}

/// The options of a `--help` text (clap's format, short or long help).
fn help_options(help: &str) -> Vec<HelpOption> {
    let mut out: Vec<HelpOption> = Vec::new();
    let mut in_options = false;
    let mut text = String::new();
    let flush = |text: &mut String, out: &mut Vec<HelpOption>| {
        if let Some(last) = out.last_mut() {
            if last.default.is_none() {
                last.default = bracketed(text, "[default: ");
            }
            for alias in bracketed(text, "[alias: ")
                .into_iter()
                .chain(bracketed(text, "[aliases: "))
            {
                last.names
                    .extend(alias.split(", ").map(|a| a.trim().to_string()));
            }
        }
        text.clear();
    };
    for line in help.lines() {
        if line.ends_with("Options:") && !line.starts_with(' ') {
            in_options = true;
            continue;
        }
        if !in_options {
            continue;
        }
        let t = line.trim_start();
        if t.starts_with('-') && line.starts_with(' ') && line.len() - t.len() <= 6 {
            flush(&mut text, &mut out);
            let names: Vec<String> = t
                .split([' ', ','])
                .take_while(|w| w.is_empty() || w.starts_with('-'))
                .filter(|w| w.starts_with("--"))
                .map(str::to_string)
                .collect();
            out.push(HelpOption {
                names,
                default: None,
            });
        }
        text.push_str(t);
        text.push(' ');
    }
    flush(&mut text, &mut out);
    out.retain(|o| !o.names.is_empty());
    out
}

/// The text of `[prefix...]` in `text`.
fn bracketed(text: &str, prefix: &str) -> Option<String> {
    let start = text.find(prefix)? + prefix.len();
    let end = text[start..].find(']')? + start;
    Some(text[start..end].to_string())
}

/// The subcommands a `--help` lists under `Commands:` (without `help`).
fn help_commands(help: &str) -> Vec<String> {
    help.lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|c| *c != "help")
        .map(str::to_string)
        .collect()
}

/// A man page as plain text per section: roff requests and font escapes removed.
struct Page {
    name: &'static str,
    source: String,
}

impl Page {
    fn read(name: &'static str) -> Page {
        let path = format!("{}/man/{name}", env!("CARGO_MANIFEST_DIR"));
        let source = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        Page { name, source }
    }

    /// The `.TH` line's date (third field).
    fn date(&self) -> Option<String> {
        let th = self.source.lines().find(|l| l.starts_with(".TH "))?;
        th.split('"').nth(1).map(str::to_string)
    }

    /// The raw lines of section `title` (`.SH TITLE` to the next `.SH`).
    fn section(&self, title: &str) -> Option<Vec<&str>> {
        let mut lines = self.source.lines();
        lines.find(|l| plain(l.strip_prefix(".SH ").unwrap_or("")) == title)?;
        Some(lines.take_while(|l| !l.starts_with(".SH ")).collect())
    }

    /// The items (`.TP`, heading line, text) of a section: (heading, text), both plain.
    fn items(&self, title: &str) -> Option<Vec<(String, String)>> {
        let lines = self.section(title)?;
        let mut items: Vec<(String, String)> = Vec::new();
        let mut i = 0;
        while i < lines.len() {
            if lines[i].starts_with(".TP") {
                let head = lines.get(i + 1).map_or(String::new(), |l| plain(l));
                let mut text = String::new();
                i += 2;
                while i < lines.len() && !lines[i].starts_with(".TP") {
                    text.push_str(&plain(lines[i]));
                    text.push(' ');
                    i += 1;
                }
                items.push((head, text));
            } else {
                i += 1;
            }
        }
        Some(items)
    }
}

/// A roff line as plain text: requests (`.B`, `.BR` ...) dropped, alternating-font words
/// joined, escapes (`\-`, `\fB`, `\e`) resolved, spaces before punctuation removed.
fn plain(line: &str) -> String {
    let (request, rest) = match line.strip_prefix('.') {
        Some(r) => r.split_once(' ').unwrap_or((r, "")),
        None => ("", line),
    };
    let alternating = matches!(request, "BR" | "RB" | "BI" | "IB" | "IR" | "RI");
    let mut words: Vec<String> = Vec::new();
    let mut word = String::new();
    let mut quoted = false;
    for c in rest.chars() {
        match c {
            '"' => quoted = !quoted,
            ' ' if !quoted => {
                if !word.is_empty() {
                    words.push(std::mem::take(&mut word));
                }
            }
            c => word.push(c),
        }
    }
    if !word.is_empty() {
        words.push(word);
    }
    let joined = if alternating {
        words.concat()
    } else {
        words.join(" ")
    };
    joined
        .replace("\\-", "-")
        .replace("\\fB", "")
        .replace("\\fI", "")
        .replace("\\fR", "")
        .replace("\\fP", "")
        .replace("\\e", "\\")
        .replace("\\(em", "—")
}

/// Whether an item text says the default `value`: `Default: value` (any case).
fn says_default(text: &str, value: &str) -> bool {
    let t = text.split_whitespace().collect::<Vec<_>>().join(" ");
    t.contains(&format!("Default: {value}")) || t.contains(&format!("default: {value}"))
}

fn help_of(bin: impl AsRef<std::ffi::OsStr>, args: &[&str]) -> String {
    let out = Command::new(bin.as_ref()).args(args).output().unwrap();
    assert!(out.status.success(), "{:?} {args:?}", bin.as_ref());
    String::from_utf8(out.stdout).unwrap()
}

/// The problems of one `--help` against one section of a page.
fn compare(page: &Page, section: &str, what: &str, help: &str, problems: &mut Vec<String>) {
    let Some(items) = page.items(section) else {
        problems.push(format!(
            "man/{}: no section {section} (for `{what}`)",
            page.name
        ));
        return;
    };
    for opt in help_options(help) {
        if matches!(opt.names[0].as_str(), "--help" | "--version") && section != "OPTIONS" {
            continue; // said once in DESCRIPTION
        }
        for name in &opt.names {
            let item = items
                .iter()
                .find(|(head, _)| head.split([' ', ',']).any(|w| w == name.as_str()));
            match item {
                None => problems.push(format!(
                    "man/{}, section {section}: {name} of `{what} --help` is not documented",
                    page.name
                )),
                Some((_, text)) => {
                    if let (Some(d), true) = (&opt.default, name == &opt.names[0]) {
                        if !says_default(text, d) {
                            problems.push(format!(
                                "man/{}, section {section}: {name}: `{what} --help` says \
                                 [default: {d}], the man page does not say \"Default: {d}\"",
                                page.name
                            ));
                        }
                    }
                }
            }
        }
    }
}

fn check_date(page: &Page, problems: &mut Vec<String>) {
    let date = page.date().unwrap_or_default();
    let full = date.len() == 10
        && date.chars().enumerate().all(|(i, c)| {
            if i == 4 || i == 7 {
                c == '-'
            } else {
                c.is_ascii_digit()
            }
        });
    if !full {
        problems.push(format!(
            "man/{}: .TH date {date:?} is not a full date (YYYY-MM-DD)",
            page.name
        ));
    }
}

#[test]
fn gaproxy_1_documents_every_subcommand_and_option_of_help() {
    let bin = greenarrow_proxy_testkit::bin_path::workspace_bin("gaproxy");
    let page = Page::read("gaproxy.1");
    let mut problems = Vec::new();
    check_date(&page, &mut problems);
    let top = help_of(&bin, &["--help"]);
    let commands = help_commands(&top);
    assert!(commands.contains(&"send".to_string()), "{top}");
    let synopsis = page.section("SYNOPSIS").unwrap_or_default().join("\n");
    for sub in &commands {
        // Each subcommand starts a synopsis line of its own (`.SY gaproxy`, `.B sub`, ...,
        // `.YS`); without its `.YS`/`.SY` pair it would run on after the previous one.
        if !synopsis.contains(&format!(".SY gaproxy\n.B {sub}\n")) {
            problems.push(format!(
                "man/gaproxy.1, section SYNOPSIS: subcommand {sub} does not start a line of \
                 its own (.SY gaproxy, .B {sub}, ..., .YS)"
            ));
        }
        let help = help_of(&bin, &[sub, "--help"]);
        compare(
            &page,
            &sub.to_uppercase(),
            &format!("gaproxy {sub}"),
            &help,
            &mut problems,
        );
    }
    assert!(problems.is_empty(), "\n{}\n", problems.join("\n"));
}

#[test]
fn greenarrow_proxy_8_documents_every_option_of_help() {
    let bin = env!("CARGO_BIN_EXE_greenarrow_proxy");
    let mut problems = Vec::new();
    let page = Page::read("greenarrow_proxy.8");
    check_date(&page, &mut problems);
    check_date(&Page::read("greenarrow_proxy.yaml.5"), &mut problems);
    let help = help_of(bin, &["--help"]);
    compare(&page, "OPTIONS", "greenarrow_proxy", &help, &mut problems);
    // FILES names every document the packages install (README.md and docs/*.md, Cargo.toml's
    // [package.metadata.deb] assets and the RPM spec).
    let files = page.section("FILES").unwrap_or_default().join("\n");
    let docs = format!("{}/docs", env!("CARGO_MANIFEST_DIR"));
    let mut installed = vec!["README.md".to_string()];
    for entry in std::fs::read_dir(&docs).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        if name.ends_with(".md") {
            installed.push(name);
        }
    }
    for doc in installed {
        if !files.contains(&format!(".I {doc}\n")) {
            problems.push(format!(
                "man/greenarrow_proxy.8, section FILES: the installed {doc} is not listed"
            ));
        }
    }
    assert!(problems.is_empty(), "\n{}\n", problems.join("\n"));
}

#[test]
fn the_help_parser_reads_names_aliases_and_defaults() {
    let help = "Usage: x\n\nOptions:\n  -c, --config-filename <PATH>  File [default: /etc/x.yaml] [alias: --config]\n      --proxy <PROXY>\n          The proxy\n          \n          [default: 127.0.0.1:807]\n\n      --reuse  Reuse\n  -h, --help  Print help\n";
    let opts = help_options(help);
    let names: Vec<&Vec<String>> = opts.iter().map(|o| &o.names).collect();
    assert_eq!(
        names,
        [
            &vec!["--config-filename".to_string(), "--config".to_string()],
            &vec!["--proxy".to_string()],
            &vec!["--reuse".to_string()],
            &vec!["--help".to_string()],
        ]
    );
    assert_eq!(opts[0].default.as_deref(), Some("/etc/x.yaml"));
    assert_eq!(opts[1].default.as_deref(), Some("127.0.0.1:807"));
    assert_eq!(opts[2].default, None);
    assert_eq!(
        plain(".BR \\-c \", \" \\-\\-config\\-filename \" \" \\fIPATH\\fR"),
        "-c, --config-filename PATH"
    );
    assert_eq!(plain(".BI \\-\\-proxy \" IP:PORT\""), "--proxy IP:PORT");
}

/// The arguments of a roff request line, as roff splits them: by spaces, `"..."` quoting one
/// argument (`""` inside a quoted argument is a literal quote). A `\"` comment ends the line.
fn request_args(rest: &str) -> Vec<String> {
    let rest = rest.split("\\\"").next().unwrap_or("");
    let mut args = Vec::new();
    let mut chars = rest.chars().peekable();
    loop {
        while chars.peek() == Some(&' ') {
            chars.next();
        }
        let Some(&first) = chars.peek() else { break };
        let mut arg = String::new();
        if first == '"' {
            chars.next();
            while let Some(c) = chars.next() {
                if c == '"' {
                    if chars.peek() == Some(&'"') {
                        chars.next();
                        arg.push('"');
                        continue;
                    }
                    break;
                }
                arg.push(c);
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c == ' ' {
                    break;
                }
                arg.push(c);
                chars.next();
            }
        }
        args.push(arg);
    }
    args
}

/// Markup mistakes groff does not warn about but that print wrong text: in an
/// alternating-font request (`.BR`, `.RB`, `.IR`, ...) two arguments that are both words are
/// printed with no space between them ("a connection" written as two arguments prints
/// "aconnection"); a font escape that lost its backslash (`fItag`) prints the letters, and
/// one that became a control character (`\f` in a string: a form feed) prints garbage
/// (`ItagP`). Each problem names the page and the line.
fn markup_problems(name: &str, source: &str) -> Vec<String> {
    let mut problems = Vec::new();
    // A special character (`\(dq`) or a font change at the end is not a word's end.
    let word_end = |s: &str| {
        let mut s = s;
        while let Some(i) = s.rfind("\\f").filter(|&i| s.len() - i == 3) {
            s = &s[..i];
        }
        let special =
            s.len() >= 4 && s.is_char_boundary(s.len() - 4) && s[s.len() - 4..].starts_with("\\(");
        !special && s.chars().last().is_some_and(|c| c.is_alphanumeric())
    };
    let word_start = |s: &str| s.chars().next().is_some_and(|c| c.is_alphanumeric());
    for (i, line) in source.lines().enumerate() {
        let at = format!("man/{name}, line {}", i + 1);
        if line.starts_with(".\\\"") {
            continue;
        }
        if let Some(rest) = line
            .strip_prefix('.')
            .and_then(|r| r.split_once(' '))
            .filter(|(req, _)| matches!(*req, "BR" | "RB" | "IR" | "RI" | "BI" | "IB"))
            .map(|(_, rest)| rest)
        {
            let args = request_args(rest);
            for pair in args.windows(2) {
                if word_end(&pair[0]) && word_start(&pair[1]) {
                    problems.push(format!(
                        "{at}: `{}` and `{}` print as one word \"{}{}\" (an alternating-font \
                         request joins its arguments): quote them together or split the line",
                        pair[0], pair[1], pair[0], pair[1]
                    ));
                }
            }
        }
        let text = line.replace("\\\\", "");
        let bytes = text.as_bytes();
        for (j, w) in bytes.windows(2).enumerate() {
            let lost = w[0] == b'f'
                && matches!(w[1], b'B' | b'I' | b'R' | b'P')
                && (j == 0 || !bytes[j - 1].is_ascii_alphanumeric() && bytes[j - 1] != b'\\')
                && bytes.get(j + 2).is_some_and(|c| c.is_ascii_lowercase());
            if lost {
                problems.push(format!("{at}: a font escape without its backslash: {line}"));
            }
        }
        if let Some(c) = line.chars().find(|c| c.is_control() && *c != '\t') {
            problems.push(format!(
                "{at}: control character {:?} (a `\\f` escape written through a string that \
                 made it a form feed?): {}",
                c,
                line.escape_debug()
            ));
        }
    }
    problems
}

/// Every page renders with groff's warnings on (`-ww`) without one, and has none of the
/// markup mistakes of [`markup_problems`]. Skipped, with the reason, where groff is missing
/// (Debian: package groff-base).
#[test]
fn every_page_renders_without_warnings_or_markup_mistakes() {
    let mut problems = Vec::new();
    let pages = ["gaproxy.1", "greenarrow_proxy.8", "greenarrow_proxy.yaml.5"];
    for name in pages {
        problems.extend(markup_problems(name, &Page::read(name).source));
    }
    match Command::new("groff").arg("--version").output() {
        Err(e) => eprintln!("SKIP groff -ww: groff is not installed ({e}; Debian: groff-base)"),
        Ok(_) => {
            for name in pages {
                let path = format!("{}/man/{name}", env!("CARGO_MANIFEST_DIR"));
                let out = Command::new("groff")
                    .args(["-man", "-Tutf8", "-ww", "-z", &path])
                    .env("LC_ALL", "C.UTF-8")
                    .output()
                    .unwrap();
                let err = String::from_utf8_lossy(&out.stderr);
                if !out.status.success() || !err.trim().is_empty() {
                    problems.push(format!(
                        "man/{name}: groff -man -ww: {} {}",
                        out.status,
                        err.trim()
                    ));
                }
            }
        }
    }
    assert!(problems.is_empty(), "\n{}\n", problems.join("\n"));
}

#[test]
fn the_markup_check_finds_joined_words_and_lost_escapes() {
    let bad = ".BR log_verbose ), a connection refused by\n\
               .RB \\(dq \"421 x: \" \x0ctag\x0cP \" \" \\(dq;\n\
               .RB ( tag=auth_failed ),\n\
               .B \\fItag\\fP and \\fBbold\\fR, not fItag\n";
    let problems = markup_problems("x.8", bad);
    assert_eq!(problems.len(), 5, "{problems:#?}");
    assert!(problems[0].contains("\"aconnection\""), "{}", problems[0]);
    assert!(
        problems[3].contains("line 2: control character"),
        "{}",
        problems[3]
    );
    assert!(
        problems[4].contains("line 4: a font escape without"),
        "{}",
        problems[4]
    );
}
