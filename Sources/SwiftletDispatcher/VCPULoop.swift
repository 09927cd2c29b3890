import SwiftletCore
import Synchronization

/// The machine-wide run state shared by every vCPU thread and the controlling thread.
///
/// The first stop wins: its reason is the machine's. Stopping kicks every vCPU out of the guest.
public final class RunControl: Sendable {
    private let stopping = Atomic<Bool>(false)
    private let state = Mutex<(reason: StopReason?, vcpus: [any VirtualCPU])>((nil, []))

    /// Creates a running machine's control block.
    public init() {}

    /// Registers the vCPUs to kick on stop.
    public func attach(_ vcpus: [any VirtualCPU]) {
        state.withLock { $0.vcpus = vcpus }
    }

    /// Whether a stop has been requested.
    public var isStopping: Bool { stopping.load(ordering: .acquiring) }

    /// The reason the machine stopped, once it has.
    public var reason: StopReason? { state.withLock { $0.reason } }

    /// Stops the machine for `reason` (ignored if it is already stopping) and kicks every vCPU.
    public func stop(_ reason: StopReason) {
        let vcpus = state.withLock { state -> [any VirtualCPU] in
            if state.reason == nil { state.reason = reason }
            return state.vcpus
        }
        stopping.store(true, ordering: .releasing)
        for vcpu in vcpus { vcpu.kick() }
    }
}

/// Counts of handled exits, for diagnostics and benchmarks.
public struct ExitCounts: Equatable, Sendable {
    /// Port-I/O, MMIO and interrupted (kicked) exits.
    public var pio = 0, mmio = 0, interrupted = 0
    /// Zero counts.
    public init() {}
}

/// The dispatcher's loop for one vCPU: enter the guest, route the exit, repeat until stopped.
///
/// Runs synchronously on whatever thread calls ``run()`` (a dedicated OS thread in production).
public struct VCPULoop: Sendable {
    private let vcpu: any VirtualCPU
    private let router: ExitRouter
    private let control: RunControl

    /// Creates a loop for `vcpu`.
    public init(vcpu: any VirtualCPU, router: ExitRouter, control: RunControl) {
        self.vcpu = vcpu
        self.router = router
        self.control = control
    }

    /// Runs until the machine stops; returns the exits handled.
    @discardableResult
    public func run() -> ExitCounts {
        var counts = ExitCounts()
        while !control.isStopping {
            let exit: VCPUExit
            do {
                exit = try vcpu.run()
            } catch {
                control.stop(.hostError(error.message))
                break
            }
            switch exit {
            case .pioIn, .pioOut, .pioStringIn, .pioStringOut: counts.pio += 1
            case .mmioRead, .mmioWrite, .mmioOddPiece: counts.mmio += 1
            case .interrupted: counts.interrupted += 1
            default: break
            }
            switch router.route(exit, of: vcpu) {
            case .resume:
                continue
            case let .completeRead(value):
                vcpu.completeRead(value)
            case let .stop(reason):
                control.stop(reason)
            }
        }
        return counts
    }
}
