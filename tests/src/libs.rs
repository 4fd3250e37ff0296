//! The session libraries people use (issue 13), driven unchanged from inside a namespace host:
//! where their runtimes and pinned packages are, and running one of their scripts there to
//! completion, bounded in time.
//!
//! The scripts live in `tests/libs/` (flows) and `examples/` (the web app); .ci/run installs
//! what they need: Debian `nodejs`, `php-cli`, `php-redis`, `npm ci` in `tests/libs/node`, and
//! a Python venv at `<target>/libs-venv` from `tests/libs/python/requirements.txt`
//! (`TANDEM_LIBS_PYTHON` names another interpreter). A missing runtime skips the test with the
//! reason, except under `CI=true`, where it fails.

use std::fs::File;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::{ci, run_bounded_for, target_dir, wait_for, workspace_root};

/// A language runtime with the session libraries installed for it.
#[derive(Clone, Copy, Debug)]
pub enum Runtime {
    /// `node` with `tests/libs/node/node_modules` (express-session, connect-redis, ...).
    Node,
    /// The venv's `python` with Flask, Flask-Session, Django, django-redis, Flask-Limiter.
    Python,
    /// `php` with the `redis` extension (Debian `php-redis`).
    Php,
}

impl Runtime {
    /// The interpreter to run, or why it cannot run the library scripts here.
    pub fn program(self) -> Result<PathBuf, String> {
        match self {
            Runtime::Node => {
                let modules = libs_dir().join("node/node_modules/express-session");
                if !modules.exists() {
                    return Err(format!(
                        "{} missing: run `npm ci --prefix tests/libs/node`",
                        modules.display()
                    ));
                }
                probe("node", &["-e", "require('node:http')"]).map(|()| "node".into())
            }
            Runtime::Python => {
                let py = std::env::var_os("TANDEM_LIBS_PYTHON")
                    .map(PathBuf::from)
                    .unwrap_or_else(|| target_dir().join("libs-venv/bin/python"));
                let check = "import flask, flask_session, django, django_redis, flask_limiter";
                probe(&py.to_string_lossy(), &["-c", check])
                    .map_err(|e| {
                        format!(
                            "{e}: create it with `python3 -m venv {v} && {v}/bin/pip install -r tests/libs/python/requirements.txt`",
                            v = target_dir().join("libs-venv").display()
                        )
                    })
                    .map(|()| py)
            }
            Runtime::Php => probe("php", &["-r", "exit(extension_loaded('redis') ? 0 : 1);"])
                .map_err(|e| format!("{e}: install Debian php-cli and php-redis"))
                .map(|()| "php".into()),
        }
    }

    /// [`Runtime::program`], or `None` after printing why the test skips; panics under
    /// `CI=true`, where every runtime must be installed.
    pub fn require(self) -> Option<PathBuf> {
        match self.program() {
            Ok(p) => Some(p),
            Err(why) => {
                assert!(!ci(), "CI=true but {self:?} cannot run: {why}");
                eprintln!("SKIP: {self:?} session libraries not installed ({why})");
                None
            }
        }
    }
}

/// `tests/libs/` in the workspace.
pub fn libs_dir() -> PathBuf {
    workspace_root().join("tests/libs")
}

/// `examples/` in the workspace.
pub fn examples_dir() -> PathBuf {
    workspace_root().join("examples")
}

/// Runs `program args` inside namespace `ns` with `env` added, to completion or `limit`
/// (then killed): exit code, stdout, stderr.
pub fn run_in(
    ns: &str,
    program: &PathBuf,
    args: &[String],
    env: &[(&str, String)],
    limit: Duration,
) -> (Option<i32>, String, String) {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", ns])
        .arg(program)
        .args(args)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())));
    run_bounded_for(&mut cmd, limit)
}

/// Whether `program args` runs and exits 0 (bounded: 30 s, then killed); why not if not.
fn probe(program: &str, args: &[&str]) -> Result<(), String> {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("`{program}`: {e}"))?;
    let status = wait_for(Duration::from_secs(30), Duration::from_millis(20), || {
        child.try_wait().ok().flatten()
    });
    if status.is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    match status {
        Some(st) if st.success() => Ok(()),
        st => Err(format!("`{program} {}` failed: {st:?}", args.join(" "))),
    }
}

/// A process started in a namespace host (a web app), killed with SIGKILL when dropped; its
/// stdout and stderr go to a log file, shown if the test panics.
pub struct Spawned {
    pub child: Child,
    pub log: PathBuf,
}

impl Spawned {
    /// Starts `program args` inside `ns`, logging to `log`.
    pub fn start(ns: &str, program: &PathBuf, args: &[String], log: PathBuf) -> Spawned {
        let out = File::create(&log).unwrap_or_else(|e| panic!("{}: {e}", log.display()));
        let err = out
            .try_clone()
            .unwrap_or_else(|e| panic!("{}: {e}", log.display()));
        let child = Command::new("ip")
            .args(["netns", "exec", ns])
            .arg(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", program.display()));
        Spawned { child, log }
    }

    /// kill -9, and reaps it.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Its output so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        self.kill9();
        if std::thread::panicking() {
            eprintln!("--- {} ---\n{}", self.log.display(), self.log());
        }
        let _ = std::fs::remove_file(&self.log);
    }
}
