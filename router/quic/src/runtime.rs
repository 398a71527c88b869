//! The tokio runtimes the router and the load generator run on, sized by a
//! thread count.
//!
//! For the router, exactly one thread gets tokio's current-thread
//! scheduler ([`build`]): every task then runs on the thread that calls
//! `block_on`, with no work-stealing bookkeeping and no atomic cross-thread
//! wake-ups, which makes a message cheaper than on a one-worker
//! multi-threaded runtime (bench/README.md has the measurements). The load
//! generator always
//! takes the multi-threaded scheduler ([`multi_thread`]), so its scenario
//! task keeps the `block_on` thread to itself.

use tokio::runtime::{Builder, Runtime};

/// The router's runtime with `threads` worker threads: 0 is one per core,
/// 1 the current-thread scheduler.
pub fn build(threads: usize) -> std::io::Result<Runtime> {
    match threads {
        1 => Builder::new_current_thread().enable_all().build(),
        threads => multi_thread(threads),
    }
}

/// A multi-threaded runtime with `threads` workers, one per core when 0.
pub fn multi_thread(threads: usize) -> std::io::Result<Runtime> {
    let mut builder = Builder::new_multi_thread();
    if threads > 0 {
        builder.worker_threads(threads);
    }
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
        let one_worker = super::multi_thread(1).unwrap();
        assert_eq!(
            one_worker.handle().runtime_flavor(),
            RuntimeFlavor::MultiThread
        );
        assert_eq!(one_worker.metrics().num_workers(), 1);
    }
}
