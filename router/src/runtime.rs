//! The tokio runtime the router runs on, sized by a thread count.
//!
//! Exactly one thread gets tokio's current-thread scheduler: every task
//! then runs on the thread that calls `block_on`, with no work-stealing
//! bookkeeping and no atomic cross-thread wake-ups, which spared ~6% of the
//! router's CPU per chat message against a one-worker multi-threaded
//! runtime (`bench/README.md`, "One thread is a current-thread runtime, for
//! the router").

use tokio::runtime::{Builder, Runtime};

/// A runtime with `threads` worker threads: 0 is one per core (tokio's
/// default), 1 the current-thread scheduler.
pub fn build(threads: usize) -> std::io::Result<Runtime> {
    let mut builder = match threads {
        1 => Builder::new_current_thread(),
        0 => Builder::new_multi_thread(),
        threads => {
            let mut builder = Builder::new_multi_thread();
            builder.worker_threads(threads);
            builder
        }
    };
    builder.enable_all().build()
}

#[cfg(test)]
mod tests {
    use super::build;

    #[test]
    fn one_thread_is_a_current_thread_runtime() {
        use tokio::runtime::RuntimeFlavor;
        let flavor = |threads| build(threads).unwrap().handle().runtime_flavor();
        assert_eq!(flavor(1), RuntimeFlavor::CurrentThread);
        assert_eq!(flavor(2), RuntimeFlavor::MultiThread);
        assert_eq!(flavor(0), RuntimeFlavor::MultiThread);
        let workers = build(3).unwrap().metrics().num_workers();
        assert_eq!(workers, 3);
    }
}
