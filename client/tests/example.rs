//! The `basic` example prints what bsm/redis-lock's example prints and leaves
//! no key behind.

use std::path::{Path, PathBuf};
use std::process::Command;

use redis::Commands;
use testkit::Server;

/// The example's binary, next to this test's. `cargo test` builds the
/// examples; when it did not (this test run alone) or the source is newer,
/// build it here.
fn example_binary() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().unwrap().parent().unwrap();
    let path = profile_dir.join("examples").join("basic");
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/basic.rs");
    let modified = |p: &Path| p.metadata().and_then(|m| m.modified()).ok();
    if modified(&path) < modified(&source) {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut build = Command::new(cargo);
        build.args([
            "build",
            "-q",
            "-p",
            "redis-fenced-lock",
            "--example",
            "basic",
        ]);
        if profile_dir.ends_with("release") {
            build.arg("--release");
        }
        let status = build.status().expect("cargo build --example basic");
        assert!(status.success());
    }
    path
}

#[test]
fn basic_example_prints_the_go_examples_output() {
    let server = Server::start();
    let out = Command::new(example_binary())
        .env("REDIS_URL", server.url())
        .output()
        .expect("run the example");
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "I have a lock!\nMy lock has expired!\nI have renewed my lock!\n"
    );
    let mut conn = server.conn();
    let keys: Vec<String> = conn.keys("*").unwrap();
    assert!(keys.is_empty(), "left behind: {keys:?}");
}
