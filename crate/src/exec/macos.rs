//! Isolation for the native sandbox on macOS: `sandbox-exec` (Seatbelt) with a profile that
//! denies by default, reads only the system and the Python installation, writes only the
//! scratch directory, and reaches no network. **Untested here** (the project's machines are
//! Linux); the profile follows the ones Chromium and OpenAI's Codex CLI ship.

use std::path::Path;
use std::process::Command;

use crate::error::{Error, Result};

/// The Seatbelt profile; the parameters `PYTHON_PREFIX` and `SCRATCH` are passed with `-D`.
pub const PROFILE: &str = r#"(version 1)
(deny default)
(allow process-exec (subpath (param "PYTHON_PREFIX")) (subpath "/usr/bin") (subpath "/Library/Developer/CommandLineTools"))
(allow process-fork (with no-report))
(deny process-fork)
(allow signal (target self))
(allow sysctl-read)
(allow file-read-metadata)
(allow file-read* (subpath "/usr") (subpath "/System") (subpath "/Library/Frameworks/Python.framework")
  (subpath "/Library/Developer/CommandLineTools") (subpath "/private/var/db/dyld") (subpath "/opt/homebrew")
  (subpath "/usr/local") (subpath (param "PYTHON_PREFIX")) (subpath (param "SCRATCH"))
  (literal "/dev/null") (literal "/dev/urandom") (literal "/dev/random"))
(allow file-write* (subpath (param "SCRATCH")) (literal "/dev/null"))
(deny network*)
"#;

/// `python` with `args` under `sandbox-exec`, working in `scratch`.
pub(crate) fn command(python: &Path, args: &[&str], scratch: &Path, env: &[(&str, &str)]) -> Result<Command> {
    let out = Command::new(python)
        .args(["-I", "-c", "import sys; print(sys.base_prefix)"])
        .output()
        .map_err(|e| Error::Exec(format!("cannot start {}: {e}", python.display())))?;
    let prefix = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let mut cmd = Command::new("/usr/bin/sandbox-exec");
    cmd.arg("-p").arg(PROFILE).arg("-D").arg(format!("PYTHON_PREFIX={prefix}")).arg("-D").arg(format!("SCRATCH={}", scratch.display()));
    cmd.arg(python).args(args).current_dir(scratch).env_clear();
    for (k, v) in [("PATH", "/usr/bin:/bin"), ("LANG", "C.UTF-8"), ("PYTHONIOENCODING", "utf-8")].iter().chain(env) {
        cmd.env(k, v);
    }
    cmd.env("HOME", scratch).env("TMPDIR", scratch);
    Ok(cmd)
}

/// The advice when `sandbox-exec` cannot run the code.
pub fn unavailable_hint() -> &'static str {
    "genprm runs the model's Python only inside macOS's sandbox (`/usr/bin/sandbox-exec`), which could not be used here. \
     Pass --no-execute to judge without running code, or --allow-unsandboxed-code to run it without isolation (unsafe: \
     the code can read your files)"
}
