//! The host library's own tests (`js/test`: Node's test runner, a real PGlite
//! from npm, a gateway stand-in and the share page in Chromium), run as part
//! of `cargo test`.

mod support;

use std::process::Command;

#[test]
fn the_host_library_passes_its_own_tests() {
    let output = Command::new("npm")
        .args(["test", "--silent"])
        .current_dir(support::hosts::js_dir())
        .output()
        .expect("npm must be installed (see the README)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "the host library's tests failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("# fail 0"), "{stdout}");
}
