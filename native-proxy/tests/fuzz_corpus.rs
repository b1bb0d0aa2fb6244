//! Replays every input the fuzzers kept (`fuzz/corpus/`) and every input
//! that once crashed one (`fuzz/regressions/`) through the same entry
//! points, on stable, so CI re-checks them all.

use std::path::Path;

fn replay(target: &str, entry: fn(&[u8])) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
    let mut count = 0;
    for dir in ["corpus", "regressions"] {
        let Ok(files) = std::fs::read_dir(root.join(dir).join(target)) else {
            continue;
        };
        for file in files {
            let path = file.unwrap().path();
            let data = std::fs::read(&path).unwrap();
            let outcome = std::panic::catch_unwind(|| entry(&data));
            assert!(outcome.is_ok(), "{} panicked", path.display());
            count += 1;
        }
    }
    assert!(count > 0, "no corpus for {target} under {}", root.display());
    println!("{target}: {count} inputs replayed");
}

#[test]
fn wire_corpus() {
    replay("wire", underpass::fuzz::wire);
}

#[test]
fn socks_corpus() {
    replay("socks", underpass::fuzz::socks);
}

#[test]
fn http_request_corpus() {
    replay("http_request", underpass::fuzz::http_request);
}

#[test]
fn config_corpus() {
    replay("config", underpass::fuzz::config);
}

#[test]
fn tls_hello_corpus() {
    replay("tls_hello", underpass::fuzz::tls_hello);
}
