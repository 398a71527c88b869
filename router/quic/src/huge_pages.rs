//! Transparent huge pages for the heap.
//!
//! Every chat message and keep-alive visits a connection's state at random
//! in a heap of hundreds of megabytes: on 4 KiB pages nearly each visit also
//! misses the TLB. glibc's malloc asks the kernel for transparent huge pages
//! on the memory it maps (`madvise`) when the `glibc.malloc.hugetlb=1`
//! tunable is set. It pays where the thread that calls `block_on` does the
//! allocating (the router's current-thread runtime, as `switchboard-bench`
//! runs it): then the main arena holds nearly the whole heap, on huge pages,
//! and a message costs less CPU (bench/README.md has the measurements).
//! With a multi-threaded runtime most of the heap is in per-thread arenas
//! that stay on 4 KiB pages, and the gain is lost in the noise.
//!
//! A program whose threads all allocate (the load generator's
//! multi-threaded runtime) can ask for [`Arenas::One`]: with
//! `glibc.malloc.arena_max=1` every thread allocates from the main arena,
//! on huge pages, at the price of sharing its lock, which with many
//! sessions is well worth it.
//!
//! glibc reads tunables only when a process starts, so
//! [`use_huge_page_heap`] starts the program image once more (same PID,
//! same arguments) with the tunables added to `GLIBC_TUNABLES`. Any value
//! already set for them is left alone: `glibc.malloc.hugetlb=0` keeps
//! 4 KiB pages.

use std::ffi::OsString;

/// The glibc tunable that backs malloc's memory with transparent huge pages.
const HUGETLB_TUNABLE: &str = "glibc.malloc.hugetlb";

/// The glibc tunable that caps malloc's arenas.
const ARENA_MAX_TUNABLE: &str = "glibc.malloc.arena_max";

/// Which arenas the threads of a program allocate from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arenas {
    /// glibc's choice: threads other than the main one get arenas of their
    /// own, which stay on 4 KiB pages.
    PerThread,
    /// All threads share the main arena (`glibc.malloc.arena_max=1`), on
    /// huge pages.
    One,
}

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

/// Restarts the process with the huge-page tunable when it is not set yet,
/// adding the arena cap for [`Arenas::One`] (it does not return then);
/// otherwise reports how the heap is paged. Where `GLIBC_TUNABLES` already
/// sets the huge-page tunable, nothing is added: `arenas` is then up to
/// whoever set it. Call it first thing in `main`, before any thread starts.
pub fn use_huge_page_heap(arenas: Arenas) -> HeapPages {
    let tunables = std::env::var_os("GLIBC_TUNABLES").unwrap_or_default();
    match tunable_value(&tunables.to_string_lossy(), HUGETLB_TUNABLE) {
        Some("0") => return HeapPages::Regular(format!("GLIBC_TUNABLES sets {HUGETLB_TUNABLE}=0")),
        Some(_) => return HeapPages::Huge,
        None => {}
    }
    if std::env::var_os(RESTARTED_MARKER).is_some() {
        return HeapPages::Regular("GLIBC_TUNABLES was dropped at restart".into());
    }
    restart_with(with_tunables(tunables, arenas))
}

/// The value `GLIBC_TUNABLES` (colon-separated `name=value` pairs) gives
/// `tunable`, if any.
fn tunable_value<'a>(tunables: &'a str, tunable: &str) -> Option<&'a str> {
    tunables
        .split(':')
        .filter_map(|pair| pair.split_once('='))
        .find(|(name, _)| *name == tunable)
        .map(|(_, value)| value)
}

/// `GLIBC_TUNABLES` with the huge-page tunable appended, and for
/// [`Arenas::One`] the arena cap unless one is set already.
fn with_tunables(tunables: OsString, arenas: Arenas) -> OsString {
    let capped = tunable_value(&tunables.to_string_lossy(), ARENA_MAX_TUNABLE).is_some();
    let mut value = tunables;
    let mut append = |pair: String| {
        if !value.is_empty() {
            value.push(":");
        }
        value.push(pair);
    };
    append(format!("{HUGETLB_TUNABLE}=1"));
    if arenas == Arenas::One && !capped {
        append(format!("{ARENA_MAX_TUNABLE}=1"));
    }
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
    fn the_tunables_are_appended_to_those_already_set() {
        let with = |tunables: &str, arenas| with_tunables(tunables.into(), arenas);
        assert_eq!(with("", Arenas::PerThread), "glibc.malloc.hugetlb=1");
        assert_eq!(
            with("glibc.malloc.arena_max=2", Arenas::PerThread),
            "glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1"
        );
        // One arena caps the arenas, unless a cap is set.
        assert_eq!(
            with("", Arenas::One),
            "glibc.malloc.hugetlb=1:glibc.malloc.arena_max=1"
        );
        assert_eq!(
            with("glibc.malloc.arena_max=4", Arenas::One),
            "glibc.malloc.arena_max=4:glibc.malloc.hugetlb=1"
        );
    }

    #[test]
    fn a_value_already_set_is_found_among_other_tunables() {
        let huge = |tunables| tunable_value(tunables, HUGETLB_TUNABLE);
        assert_eq!(huge(""), None);
        assert_eq!(huge("glibc.malloc.arena_max=2"), None);
        assert_eq!(huge("glibc.malloc.hugetlb=0"), Some("0"));
        assert_eq!(
            huge("glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1"),
            Some("1")
        );
        assert_eq!(huge("glibc.malloc.hugetlbx=1"), None);
    }
}
