#if canImport(Glibc)
import Glibc
#endif
import CSwiftletHost
import SystemPackage

/// A dedicated OS thread (never a Swift concurrency task: `KVM_RUN` blocks).
public final class OSThread: @unchecked Sendable {
    private let handle: pthread_t

    private final class Box {
        let name: String
        let body: () -> Void
        init(name: String, body: @escaping () -> Void) {
            self.name = name
            self.body = body
        }
    }

    /// Starts `body` on a new thread named `name` (at most 15 bytes are kept, as Linux allows).
    public init(name: String, _ body: @escaping @Sendable () -> Void) throws(HostError) {
        let box = unsafe Unmanaged.passRetained(Box(name: name, body: body)).toOpaque()
        var thread = pthread_t()
        // SAFETY: `box` is retained until the trampoline takes it back exactly once.
        let result = unsafe pthread_create(&thread, nil, { raw in
            let box = unsafe Unmanaged<Box>.fromOpaque(raw!).takeRetainedValue()
            _ = unsafe chost_set_thread_name(box.name)
            box.body()
            return nil
        }, box)
        guard result == 0 else {
            unsafe Unmanaged<Box>.fromOpaque(box).release()
            throw HostError("starting thread \(name)", Errno(rawValue: result))
        }
        handle = thread
    }

    /// Waits for the thread to finish.
    public func join() {
        _ = pthread_join(handle, nil)
    }

    /// Starts `body` on a detached thread (nobody joins it; its resources go when it ends): for
    /// service threads that live as long as their work, such as the console writer.
    public static func detached(name: String, _ body: @escaping @Sendable () -> Void) throws(HostError) {
        let thread = try OSThread(name: name, body)
        _ = pthread_detach(thread.handle)
    }
}
