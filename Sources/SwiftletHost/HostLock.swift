#if canImport(Glibc)
import Glibc
#endif

/// A value behind a `pthread_mutex_t`, for state that host I/O threads share with vCPU threads.
///
/// Like `Synchronization.Mutex`, but built on the primitive that ThreadSanitizer models: TSan
/// reported the console buffer's and the event loop's `Mutex`-guarded accesses from two threads
/// as races, while it sees through `pthread_mutex_lock` exactly. Use it for host state that
/// threads share.
@safe final class HostLock<Value>: @unchecked Sendable {
    private let mutex: UnsafeMutablePointer<pthread_mutex_t>
    private var value: Value

    init(_ value: Value) {
        self.value = value
        unsafe mutex = .allocate(capacity: 1)
        unsafe mutex.initialize(to: pthread_mutex_t())
        _ = unsafe pthread_mutex_init(mutex, nil)
    }

    deinit {
        _ = unsafe pthread_mutex_destroy(mutex)
        unsafe mutex.deallocate()
    }

    /// Runs `body` with the value, the lock held.
    func withLock<Result>(_ body: (inout Value) throws -> Result) rethrows -> Result {
        _ = unsafe pthread_mutex_lock(mutex)
        defer { _ = unsafe pthread_mutex_unlock(mutex) }
        return try body(&value)
    }
}
