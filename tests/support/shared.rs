//! One docker-registry and one moto per test binary, for the tests that can share them
//! (each uses repository, bucket and cluster names no other test uses), instead of a
//! server per test. Started at the first `shared()` call and stopped when the test
//! process exits: an `atexit` handler kills them and removes their temporary
//! directories, and `PR_SET_PDEATHSIG` kills them should the process die without
//! running it (a signal, an abort), so no server outlives the tests.
//!
//! Tests that stop their server, inject faults into it (other than through their own
//! proxy in front) or check server-wide state keep starting their own.

use super::servers::{TestMoto, TestRegistry};
use std::ops::Deref;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::Command;
use std::sync::{Mutex, OnceLock};

/// A server shared by the tests of this binary. Used like the server a test starts
/// itself (`&registry`, `registry.host()`), without stopping it when dropped.
#[derive(Clone, Copy)]
pub struct Shared<T: 'static>(&'static T);

impl<T> Deref for Shared<T> {
    type Target = T;
    fn deref(&self) -> &T {
        self.0
    }
}

impl TestRegistry {
    /// The registry every test of this binary may share.
    pub fn shared() -> Shared<TestRegistry> {
        static SHARED: OnceLock<TestRegistry> = OnceLock::new();
        Shared(SHARED.get_or_init(|| {
            let registry = on_lasting_thread(|| TestRegistry::start_with(die_with_this_process));
            stop_at_exit(registry.pid(), registry.dir.path().to_path_buf());
            registry
        }))
    }
}

impl TestMoto {
    /// The moto every test of this binary may share.
    pub fn shared() -> Shared<TestMoto> {
        static SHARED: OnceLock<TestMoto> = OnceLock::new();
        Shared(SHARED.get_or_init(|| {
            let moto = on_lasting_thread(|| TestMoto::start_with(die_with_this_process));
            let (pid, dir) = moto.pid_and_dir();
            stop_at_exit(pid, dir.to_path_buf());
            moto
        }))
    }
}

/// Runs `start` on a thread that lives as long as the process. The kernel sends the
/// parent-death signal when the *thread* that forked the child ends, and the test
/// harness ends each test's thread when the test returns: a server forked there would
/// die with the first test that started it.
fn on_lasting_thread<T: Send + 'static>(start: fn() -> T) -> T {
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("shared-servers".into())
        .spawn(move || {
            let _ = sender.send(std::panic::catch_unwind(start));
            loop {
                std::thread::park();
            }
        })
        .expect("spawn the shared servers' thread");
    match receiver.recv().expect("the shared server's start") {
        Ok(server) => server,
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

/// Has the server get SIGKILL when the thread that starts it (a lasting one) ends.
fn die_with_this_process(command: &mut Command) {
    let parent = std::process::id() as libc::pid_t;
    // SAFETY: prctl, getppid and _exit are async-signal-safe, as code between fork
    // and exec must be; nothing is allocated.
    unsafe {
        command.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The process may have exited between fork and prctl.
            if libc::getppid() != parent {
                libc::_exit(1);
            }
            Ok(())
        });
    }
}

/// Servers (pid, temporary directory) to stop when the process exits.
static AT_EXIT: Mutex<Vec<(u32, PathBuf)>> = Mutex::new(Vec::new());

fn stop_at_exit(pid: u32, dir: PathBuf) {
    let mut servers = AT_EXIT.lock().unwrap_or_else(|e| e.into_inner());
    if servers.is_empty() {
        // SAFETY: registers a plain function that takes no arguments.
        unsafe { libc::atexit(stop_shared_servers) };
    }
    servers.push((pid, dir));
}

extern "C" fn stop_shared_servers() {
    let servers = AT_EXIT.lock().unwrap_or_else(|e| e.into_inner());
    for (pid, dir) in servers.iter() {
        // SAFETY: the pid is a child of this process that nothing else waits for.
        unsafe {
            libc::kill(*pid as libc::pid_t, libc::SIGKILL);
            libc::waitpid(*pid as libc::pid_t, std::ptr::null_mut(), 0);
        }
        let _ = std::fs::remove_dir_all(dir);
    }
}
