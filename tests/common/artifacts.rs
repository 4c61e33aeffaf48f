//! Browser tests (tests/browser/): where their artifacts go, and what they
//! need installed.

use std::path::{Path, PathBuf};

/// Where browser screenshots and timings go (kept after the test).
pub fn artifacts_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
    let dir = target.join("serve-artifacts");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The Python with Playwright (.venv) for tests/browser/, once Chromium is
/// known to be there.
pub fn browser_prerequisites() -> PathBuf {
    let python = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python");
    let has_playwright = std::process::Command::new(&python)
        .args(["-c", "import playwright"])
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        has_playwright,
        "Playwright for Python is not in .venv: run `make venv` (it is pinned in scripts/requirements.txt)"
    );
    assert!(
        Path::new("/usr/bin/chromium").exists(),
        "the browser tests need Debian's Chromium at /usr/bin/chromium: run `sudo apt-get install -y chromium` \
         (`make test` does it when run as root)"
    );
    python
}
