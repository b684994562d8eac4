//! Running child processes: with a clear error when a tool is missing or fails.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

/// The workspace root (the xtask lives in `<root>/xtask`).
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask is inside the workspace")
        .to_path_buf()
}

/// The printable form of a command, for messages.
pub fn describe(command: &Command) -> String {
    let mut text = command.get_program().to_string_lossy().into_owned();
    for arg in command.get_args() {
        text.push(' ');
        text.push_str(&arg.to_string_lossy());
    }
    text
}

/// Runs `command` with inherited output; an error unless it exits 0.
pub fn run_visible(command: &mut Command) -> Result<(), String> {
    let text = describe(command);
    let status = command.status().map_err(|e| format!("cannot start `{text}`: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("`{text}` failed ({status})"))
    }
}

/// Runs `command` and captures its output; `None` if it cannot be started at all.
pub fn capture(command: &mut Command) -> Option<Output> {
    command.stdin(Stdio::null()).output().ok()
}

/// Stdout of `command` if it ran and exited 0.
pub fn stdout_of(command: &mut Command) -> Option<String> {
    capture(command)
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
}

/// A `cargo` command for this workspace, free of the variables the outer `cargo run` set, so
/// that a nested build picks its own toolchain and target.
pub fn cargo() -> Command {
    let mut command = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    command.current_dir(root());
    clear_build_environment(&mut command);
    command
}

/// Removes what an outer `cargo run` put in the environment that would steer a nested build
/// (compiler, flags, target directory).
pub fn clear_build_environment(command: &mut Command) {
    for var in [
        "RUSTC",
        "RUSTDOC",
        "RUSTC_WRAPPER",
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "CARGO_TARGET_DIR",
    ] {
        command.env_remove(var);
    }
}

/// Whether `program` is on the PATH.
pub fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|dir| dir.join(program).is_file()))
        .unwrap_or(false)
}

/// Runs `command` to its end, or kills it after `timeout` (a student's endless loop in a host
/// test must not stall a whole class's grading).
pub fn output_within(
    command: &mut Command,
    timeout: Duration,
) -> std::io::Result<std::process::Output> {
    use std::io::Read;
    use std::process::Stdio;
    let mut child = command.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn()?;
    let (mut out, mut err) = (child.stdout.take(), child.stderr.take());
    let reader = std::thread::spawn(move || {
        let mut text = Vec::new();
        if let Some(out) = out.as_mut() {
            let _ = out.read_to_end(&mut text);
        }
        text
    });
    let error_reader = std::thread::spawn(move || {
        let mut text = Vec::new();
        if let Some(err) = err.as_mut() {
            let _ = err.read_to_end(&mut text);
        }
        text
    });
    let start = std::time::Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if start.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            return Err(std::io::Error::other(format!(
                "did not finish in {} s",
                timeout.as_secs()
            )));
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let stdout = reader.join().unwrap_or_default();
    let stderr = error_reader.join().unwrap_or_default();
    Ok(std::process::Output { status, stdout, stderr })
}
