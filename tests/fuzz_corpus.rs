//! The fuzz targets on the stable toolchain: every target in `greenarrow_proxy_proto::fuzzing::TARGETS`
//! runs over its checked-in seed corpus (`fuzz/seeds/<target>/`), every prefix of each seed and
//! a fixed set of mutations of it — the same code cargo-fuzz runs (`fuzz/fuzz_targets/`), so a
//! property broken by a change shows up in the normal `cargo test`. Longer, coverage-guided
//! runs: `cd fuzz && cargo +nightly fuzz run <target> seeds/<target> -- -max_total_time=60`.

use greenarrow_proxy_proto::fuzzing::TARGETS;
use std::path::{Path, PathBuf};

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz")
}

/// The seed files of `target`, sorted, with their contents.
fn seeds(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = fuzz_dir().join("seeds").join(target);
    let mut out: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| {
            let p = e.unwrap().path();
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&p).unwrap())
        })
        .collect();
    out.sort();
    out
}

/// A small deterministic generator (xorshift64*), so every run tries the same mutations.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// `seed` changed a little: bytes flipped, replaced, inserted, removed or repeated.
fn mutate(seed: &[u8], rng: &mut Rng) -> Vec<u8> {
    let mut v = seed.to_vec();
    for _ in 0..1 + rng.below(4) {
        let i = rng.below(v.len() + 1);
        match rng.below(5) {
            0 if i < v.len() => v[i] ^= 1 << rng.below(8),
            1 if i < v.len() => v[i] = [b'\r', b'\n', b' ', b'.', 0, 0xff][rng.below(6)],
            2 => v.insert(i, rng.next() as u8),
            3 if i < v.len() => {
                v.remove(i);
            }
            _ => {
                let end = (i + rng.below(16)).min(v.len());
                let chunk = v[i.min(end)..end].to_vec();
                v.splice(i..i, chunk);
            }
        }
    }
    v
}

/// Run `f` on `input`; a failure names the target and the input.
fn run(name: &str, what: &str, f: fn(&[u8]), input: &[u8]) {
    if std::panic::catch_unwind(|| f(input)).is_err() {
        panic!(
            "fuzz target {name} failed on {what}: \"{}\"",
            input.escape_ascii()
        );
    }
}

#[test]
fn every_target_passes_its_seed_corpus_and_mutations_of_it() {
    for &(name, f) in TARGETS {
        let seeds = seeds(name);
        assert!(
            seeds.len() >= 3,
            "{name}: at least 3 seeds, found {}",
            seeds.len()
        );
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ name.len() as u64);
        for (file, seed) in &seeds {
            run(name, file, f, seed);
            for cut in 0..seed.len().min(512) {
                run(name, &format!("{file} cut at {cut}"), f, &seed[..cut]);
            }
            for i in 0..1000 {
                let m = mutate(seed, &mut rng);
                run(name, &format!("{file} mutation {i}"), f, &m);
            }
        }
    }
}

/// Every target has its cargo-fuzz binary, and every cargo-fuzz binary is a target here.
#[test]
fn every_cargo_fuzz_binary_is_a_target_and_the_other_way_round() {
    let manifest = std::fs::read_to_string(fuzz_dir().join("Cargo.toml")).unwrap();
    let mut binaries: Vec<String> = std::fs::read_dir(fuzz_dir().join("fuzz_targets"))
        .unwrap()
        .map(|e| {
            let p = e.unwrap().path();
            p.file_stem().unwrap().to_string_lossy().into_owned()
        })
        .collect();
    binaries.sort();
    let mut targets: Vec<String> = TARGETS.iter().map(|(n, _)| n.to_string()).collect();
    targets.sort();
    assert_eq!(binaries, targets);
    for t in &targets {
        assert!(
            manifest.contains(&format!("name = \"{t}\"\npath = \"fuzz_targets/{t}.rs\"")),
            "fuzz/Cargo.toml lacks the [[bin]] of {t}"
        );
        let source =
            std::fs::read_to_string(fuzz_dir().join(format!("fuzz_targets/{t}.rs"))).unwrap();
        assert!(
            source.contains(&format!("greenarrow_proxy_proto::fuzzing::{t}(data)")),
            "fuzz_targets/{t}.rs does not call the shared function"
        );
    }
}

/// The seeds reach the properties the targets check, not only the early exits.
#[test]
fn the_seeds_reach_the_checked_properties() {
    use greenarrow_proxy_proto::protocol::{parse_request, ConnectReady, Request};
    let connects = seeds("request")
        .iter()
        .filter(|(_, s)| matches!(parse_request(s), Ok(Request::Connect(_))))
        .count();
    assert!(connects >= 3, "{connects} CONNECT seeds");
    let ready = seeds("connect_ready")
        .iter()
        .filter(|(_, s)| {
            let lines: Vec<&[u8]> = s[1..].split(|&b| b == b'\n').collect();
            ConnectReady::parse(&lines).is_ok()
        })
        .count();
    assert!(ready >= 2, "{ready} ready seeds");
    let replies = seeds("smtp_reply")
        .iter()
        .filter(|(_, s)| {
            let limits = greenarrow_proxy_proto::smtp::ReplyLimits {
                max_line: 4 + usize::from(s[0]),
                max_lines: 1 + usize::from(s[1] % 16),
            };
            matches!(
                greenarrow_proxy_proto::smtp::parse_reply(&s[2..], &limits),
                Ok(Some(_))
            )
        })
        .count();
    assert!(replies >= 3, "{replies} complete reply seeds");
}
