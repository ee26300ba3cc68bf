//! A short torture run in `make test`: every kind of fault at least once,
//! 24 worker processes, about 40 s. `make torture` runs the long one.

use std::process::Command;
use std::time::Instant;

#[test]
fn short_torture_run_has_no_violation() {
    let started = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_lock-torture"))
        .args(["--seconds", "20", "--clients", "24", "--gap-ms", "300"])
        .arg("--require-all-faults")
        .output()
        .expect("run lock-torture");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!(
        "{stdout}{stderr}(took {:.0} s)",
        started.elapsed().as_secs_f64()
    );
    assert!(
        out.status.success(),
        "lock-torture exited with {}:\n{stdout}\n{stderr}",
        out.status
    );
    assert!(stdout.contains("result: PASS"), "{stdout}");
}
