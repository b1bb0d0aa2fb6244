//! The configs README.md shows to users coming from other tools are
//! accepted as they are written there.

use std::process::Command;

use underpass_tests::{binary, keys, Scratch};

/// The first ```ini block under the README heading `heading`.
fn ini_block_under(heading: &str) -> String {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md"))
        .expect("README.md");
    let section = readme
        .split_once(&format!("\n{heading}\n"))
        .unwrap_or_else(|| panic!("README.md has no {heading:?}"))
        .1;
    let block = section
        .split_once("```ini\n")
        .unwrap_or_else(|| panic!("no ini block under {heading:?}"))
        .1;
    block.split_once("```").expect("closed block").0.to_string()
}

#[test]
fn the_onetun_example_runs_with_onetuns_environment_variables() {
    let scratch = Scratch::new("readme-onetun");
    let config = scratch.write("onetun.conf", &ini_block_under("## Coming from onetun"));
    let (me, endpoint) = (keys(), keys());
    let out = Command::new(binary())
        .args(["--config", config.to_str().unwrap(), "--check"])
        .env("ONETUN_PRIVATE_KEY", &me.private)
        .env("ONETUN_SOURCE_PEER_IP", "192.168.4.3")
        .env("ONETUN_ENDPOINT_PUBLIC_KEY", &endpoint.public)
        .env("ONETUN_ENDPOINT_ADDR", "140.30.3.182:51820")
        .env("ONETUN_KEEP_ALIVE", "10")
        .output()
        .unwrap();
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("config OK"),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
