//! Transparent huge pages for the heap.
//!
//! An idle session is ~20 KiB of connection state spread over a heap of
//! gigabytes, and every keep-alive visits one at random: on 4 KiB pages
//! nearly each visit also misses the TLB. glibc's malloc asks the kernel
//! for transparent huge pages on the memory it maps (`madvise`) when the
//! `glibc.malloc.hugetlb=1` tunable is set, which cut the router's idle CPU
//! at 100k sessions by about a tenth without growing its RSS (see
//! `bench/README.md`). glibc reads tunables only when a process starts, so
//! [`use_huge_page_heap`] starts the program image once more (same PID,
//! same arguments) with the tunable added to `GLIBC_TUNABLES`.

use std::ffi::OsString;

/// The glibc tunable that backs malloc's memory with transparent huge pages.
pub const GLIBC_TUNABLE: &str = "glibc.malloc.hugetlb";

/// Set in the environment of the restarted image, so a restart happens at
/// most once even where the loader drops `GLIBC_TUNABLES`.
const RESTARTED_MARKER: &str = "SWITCHBOARD_HUGE_PAGE_HEAP";

/// Where the heap's pages stand after [`use_huge_page_heap`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeapPages {
    /// The tunable is set: glibc asks for huge pages.
    Huge,
    /// Regular pages, and why.
    Regular(String),
}

/// Restarts the process with the huge-page tunable when it is not set yet
/// (it does not return then); otherwise reports how the heap is paged. Call
/// it first thing in `main`, before any thread starts.
pub fn use_huge_page_heap() -> HeapPages {
    let tunables = std::env::var_os("GLIBC_TUNABLES").unwrap_or_default();
    if tunables.to_string_lossy().contains(GLIBC_TUNABLE) {
        return HeapPages::Huge;
    }
    if std::env::var_os(RESTARTED_MARKER).is_some() {
        return HeapPages::Regular("GLIBC_TUNABLES was dropped at restart".into());
    }
    restart_with(with_tunable(tunables))
}

/// `GLIBC_TUNABLES` with the huge-page tunable appended.
fn with_tunable(tunables: OsString) -> OsString {
    let mut value = tunables;
    if !value.is_empty() {
        value.push(":");
    }
    value.push(format!("{GLIBC_TUNABLE}=1"));
    value
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn restart_with(tunables: OsString) -> HeapPages {
    use std::os::unix::process::CommandExt;

    let mode =
        std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled").unwrap_or_default();
    if mode.contains("[never]") {
        return HeapPages::Regular("transparent huge pages are off in this kernel".into());
    }
    let exe = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(error) => return HeapPages::Regular(format!("no path to this program: {error}")),
    };
    let mut args = std::env::args_os();
    let mut command = std::process::Command::new(exe);
    if let Some(arg0) = args.next() {
        command.arg0(arg0);
    }
    let error = command
        .args(args)
        .env("GLIBC_TUNABLES", tunables)
        .env(RESTARTED_MARKER, "1")
        .exec();
    HeapPages::Regular(format!("restarting with huge pages failed: {error}"))
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn restart_with(_tunables: OsString) -> HeapPages {
    HeapPages::Regular("huge-page heap needs Linux with glibc".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tunable_is_appended_to_those_already_set() {
        assert_eq!(with_tunable(OsString::new()), "glibc.malloc.hugetlb=1");
        assert_eq!(
            with_tunable("glibc.malloc.arena_max=2".into()),
            "glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1"
        );
    }
}
