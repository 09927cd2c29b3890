#if canImport(Glibc)
import Glibc
#endif
import CSwiftletKVM
import SwiftletArch
import SwiftletCore
import Synchronization
import SystemPackage

/// One KVM vCPU: its fd, its `kvm_run` mapping, register access and the run loop entry.
///
/// Threading: ``run()``, ``completeRead(_:)``, ``completeRead(index:value:)`` and ``value(at:)``
/// are called only by the vCPU's own thread (the one that called ``bindToCurrentThread()``);
/// set-up calls happen before that thread starts; ``kick()`` may be called from any thread.
@safe public final class KVMVirtualCPU: VirtualCPU, @unchecked Sendable {
    let fd: OwnedFD
    /// The vCPU's index; 0 is the boot processor.
    public let index: Int
    private let runArea: UnsafeMutableRawPointer
    private let mapSize: Int
    private var runStruct: UnsafeMutablePointer<kvm_run> { unsafe runArea.assumingMemoryBound(to: kvm_run.self) }
    /// The pthread running this vCPU, once bound.
    private let thread = Mutex<pthread_t?>(nil)
    /// The data area of the current port I/O exit, whose elements the dispatcher fetches or stores:
    /// where it lies in the run area (checked against the mapping), the element size and count, and
    /// whether the exit is an `in`. `nil` for any other exit, and for a one-element `out` (whose
    /// value is in the exit).
    private var portData: (offset: Int, size: Int, count: Int, isIn: Bool)?

    init(fd: OwnedFD, index: Int, mapSize: Int) throws(KVMError) {
        self.fd = fd
        self.index = index
        self.mapSize = mapSize
        // SAFETY: maps the vCPU's shared kvm_run area of the size KVM reported; unmapped in deinit.
        let area = unsafe mmap(nil, mapSize, PROT_READ | PROT_WRITE, MAP_SHARED, fd.raw, 0)
        guard let area = unsafe area, unsafe area != MAP_FAILED else { throw .mapRun(Errno(rawValue: errno)) }
        unsafe runArea = area
    }

    deinit {
        // SAFETY: the mapping made in init, unmapped once; no thread runs this vCPU any more.
        _ = unsafe munmap(runArea, mapSize)
    }

    // MARK: Set-up

    /// Installs the CPUID table (`KVM_SET_CPUID2`).
    public func setCPUID(_ entries: [CPUIDEntry]) throws(KVMError) {
        // SAFETY: calloc'd header + entries.count entries; written within bounds, freed below.
        guard let buffer = unsafe ckvm_cpuid2_alloc(UInt32(entries.count)) else {
            throw .host("allocating CPUID buffer", .noMemory)
        }
        defer { unsafe free(buffer) }
        let slots = unsafe ckvm_cpuid2_entries(buffer)
        for (i, entry) in entries.enumerated() {
            unsafe slots[i] = kvm_cpuid_entry2(function: entry.function, index: entry.index, flags: entry.flags,
                                               eax: entry.eax, ebx: entry.ebx, ecx: entry.ecx, edx: entry.edx,
                                               padding: (0, 0, 0))
        }
        _ = try unsafe kvmIoctl(fd.raw, CKVM_SET_CPUID2, pointer: UnsafeMutableRawPointer(buffer),
                                name: "KVM_SET_CPUID2", detail: "vCPU \(index)")
    }

    /// Writes MSRs (`KVM_SET_MSRS`). Returns how many KVM accepted (it stops at the first it refuses).
    @discardableResult
    public func setMSRs(_ values: [MSRValue]) throws(KVMError) -> Int {
        // SAFETY: calloc'd header + values.count entries; written within bounds, freed below.
        guard let buffer = unsafe ckvm_msrs_alloc(UInt32(values.count)) else {
            throw .host("allocating MSR buffer", .noMemory)
        }
        defer { unsafe free(buffer) }
        let slots = unsafe ckvm_msrs_entries(buffer)
        for (i, msr) in values.enumerated() {
            unsafe slots[i].index = msr.index
            unsafe slots[i].data = msr.value
        }
        return Int(try unsafe kvmIoctl(fd.raw, CKVM_SET_MSRS, pointer: UnsafeMutableRawPointer(buffer),
                                       name: "KVM_SET_MSRS", detail: "vCPU \(index)"))
    }

    /// Reads the general-purpose registers (`KVM_GET_REGS`).
    public func registers() throws(KVMError) -> X86Registers {
        var raw = kvm_regs()
        _ = try kvmIoctl(fd.raw, CKVM_GET_REGS, value: &raw, name: "KVM_GET_REGS")
        var r = X86Registers()
        r.rax = raw.rax; r.rbx = raw.rbx; r.rcx = raw.rcx; r.rdx = raw.rdx
        r.rsi = raw.rsi; r.rdi = raw.rdi; r.rsp = raw.rsp; r.rbp = raw.rbp
        r.r8 = raw.r8; r.r9 = raw.r9; r.r10 = raw.r10; r.r11 = raw.r11
        r.r12 = raw.r12; r.r13 = raw.r13; r.r14 = raw.r14; r.r15 = raw.r15
        r.rip = raw.rip; r.rflags = raw.rflags
        return r
    }

    /// Writes the general-purpose registers (`KVM_SET_REGS`).
    public func setRegisters(_ r: X86Registers) throws(KVMError) {
        var raw = kvm_regs(rax: r.rax, rbx: r.rbx, rcx: r.rcx, rdx: r.rdx, rsi: r.rsi, rdi: r.rdi, rsp: r.rsp,
                           rbp: r.rbp, r8: r.r8, r9: r.r9, r10: r.r10, r11: r.r11, r12: r.r12, r13: r.r13,
                           r14: r.r14, r15: r.r15, rip: r.rip, rflags: r.rflags)
        _ = try kvmIoctl(fd.raw, CKVM_SET_REGS, value: &raw, name: "KVM_SET_REGS")
    }

    /// Writes segment, descriptor-table and control registers (`KVM_GET_SREGS` then `KVM_SET_SREGS`,
    /// keeping KVM's APIC base and pending-interrupt bitmap).
    public func setSpecialRegisters(_ s: X86SpecialRegisters) throws(KVMError) {
        var raw = kvm_sregs()
        _ = try kvmIoctl(fd.raw, CKVM_GET_SREGS, value: &raw, name: "KVM_GET_SREGS")
        raw.cs = Self.kvmSegment(s.cs); raw.ds = Self.kvmSegment(s.ds); raw.es = Self.kvmSegment(s.es)
        raw.fs = Self.kvmSegment(s.fs); raw.gs = Self.kvmSegment(s.gs); raw.ss = Self.kvmSegment(s.ss)
        raw.tr = Self.kvmSegment(s.tr); raw.ldt = Self.kvmSegment(s.ldt)
        raw.gdt = kvm_dtable(base: s.gdt.base, limit: s.gdt.limit, padding: (0, 0, 0))
        raw.idt = kvm_dtable(base: s.idt.base, limit: s.idt.limit, padding: (0, 0, 0))
        raw.cr0 = s.cr0; raw.cr2 = s.cr2; raw.cr3 = s.cr3; raw.cr4 = s.cr4; raw.efer = s.efer
        _ = try kvmIoctl(fd.raw, CKVM_SET_SREGS, value: &raw, name: "KVM_SET_SREGS")
    }

    private static func kvmSegment(_ s: X86Segment) -> kvm_segment {
        kvm_segment(base: s.base, limit: s.limit, selector: s.selector, type: s.type, present: s.present ? 1 : 0,
                    dpl: s.dpl, db: s.db ? 1 : 0, s: s.s ? 1 : 0, l: s.l ? 1 : 0, g: s.g ? 1 : 0,
                    avl: s.avl ? 1 : 0, unusable: s.present ? 0 : 1, padding: 0)
    }

    /// Sets the x87 control word and MXCSR to their reset values (`KVM_SET_FPU`).
    public func resetFPU() throws(KVMError) {
        var fpu = kvm_fpu()
        fpu.fcw = 0x37f
        fpu.mxcsr = 0x1f80
        _ = try kvmIoctl(fd.raw, CKVM_SET_FPU, value: &fpu, name: "KVM_SET_FPU")
    }

    /// Programs the local APIC's LINT0 as ExtINT and LINT1 as NMI, as PC firmware does
    /// (`KVM_GET_LAPIC` / `KVM_SET_LAPIC`).
    public func configureLocalInterrupts() throws(KVMError) {
        var lapic = kvm_lapic_state()
        _ = try kvmIoctl(fd.raw, CKVM_GET_LAPIC, value: &lapic, name: "KVM_GET_LAPIC")
        // SAFETY: `regs` is a 1024-byte array inside `lapic`; offsets 0x350 and 0x360 (+4) are within it.
        unsafe withUnsafeMutableBytes(of: &lapic.regs) { bytes in
            for (offset, mode) in [(0x350, UInt32(7)), (0x360, UInt32(4))] {      // LVT LINT0 ExtINT, LINT1 NMI
                let old = unsafe bytes.loadUnaligned(fromByteOffset: offset, as: UInt32.self)
                unsafe bytes.storeBytes(of: (old & ~0x700) | (mode << 8), toByteOffset: offset, as: UInt32.self)
            }
        }
        _ = try kvmIoctl(fd.raw, CKVM_SET_LAPIC, value: &lapic, name: "KVM_SET_LAPIC")
    }

    // MARK: Running

    /// Makes the calling thread this vCPU's runner: kicks will target it. Call once, first thing.
    public func bindToCurrentThread() throws(KVMError) {
        let result = ckvm_install_kick_handler()
        guard result == 0 else { throw .host("installing the vCPU kick signal handler", Errno(rawValue: -result)) }
        unsafe ckvm_set_thread_run(runStruct)
        let me = pthread_self()
        thread.withLock { $0 = me }
    }

    /// Forces the vCPU out of `KVM_RUN` soon: sets `immediate_exit` and signals its thread.
    /// The next ``run()`` returns ``VCPUExit/interrupted``. Safe from any thread.
    public func kick() {
        unsafe ckvm_set_immediate_exit(runStruct, 1)
        thread.withLock { tid in
            if let tid { _ = pthread_kill(tid, ckvm_kick_signal()) }
        }
    }

    public func run() throws(VCPUError) -> VCPUExit {
        portData = nil
        let result = ckvm_ioctl(fd.raw, CKVM_RUN, 0)
        if result < 0 {
            if result == -EINTR || result == -EAGAIN {
                unsafe ckvm_set_immediate_exit(runStruct, 0)
                return .interrupted
            }
            throw VCPUError("KVM_RUN on vCPU \(index) failed: \(Errno(rawValue: -result))")
        }
        let reason = unsafe runStruct.pointee.exit_reason
        switch Int32(reason) {
        case KVM_EXIT_IO:
            let io = unsafe runStruct.pointee.io
            let size = Int(io.size)
            let count = Int(io.count)
            guard let width = AccessWidth(bytes: size), width != .qword else {
                return .unhandled(UnhandledExit(reason: reason, name: "KVM_EXIT_IO",
                                                detail: "malformed, the port I/O size is not 1, 2 or 4 bytes"))
            }
            guard count > 0 else {
                return .unhandled(UnhandledExit(reason: reason, name: "KVM_EXIT_IO", detail: "malformed, a count of 0"))
            }
            guard Int(io.data_offset) + size * count <= mapSize else {
                return .unhandled(UnhandledExit(reason: reason, name: "KVM_EXIT_IO",
                                                detail: "malformed, the data lies outside the kvm_run mapping"))
            }
            let isIn = io.direction != UInt8(KVM_EXIT_IO_OUT)
            if !isIn && count == 1 {
                return .pioOut(port: io.port, width: width, value: loadValue(at: Int(io.data_offset), size: size))
            }
            portData = (Int(io.data_offset), size, count, isIn)
            if count == 1 { return .pioIn(port: io.port, width: width) }
            return isIn ? .pioStringIn(port: io.port, width: width, count: count)
                        : .pioStringOut(port: io.port, width: width, count: count)
        case KVM_EXIT_MMIO:
            let mmio = unsafe runStruct.pointee.mmio
            let length = Int(mmio.len)
            guard let width = AccessWidth(bytes: length) else {
                // KVM splits an access that crosses a page boundary and reports each MMIO part
                // on its own, so a part can be 3, 5, 6 or 7 bytes long.
                guard let odd = OddAccessLength(bytes: length) else {
                    return .unhandled(UnhandledExit(reason: reason, name: "KVM_EXIT_MMIO",
                                                    detail: "malformed, a length of 0 or more than 8 bytes"))
                }
                return .mmioOddPiece(address: mmio.phys_addr, length: odd, isWrite: mmio.is_write != 0)
            }
            if mmio.is_write != 0 {
                var value: UInt64 = 0
                unsafe withUnsafeBytes(of: mmio.data) { bytes in
                    for i in 0..<length { value |= UInt64(unsafe bytes[i]) << (8 * UInt64(i)) }
                }
                return .mmioWrite(address: mmio.phys_addr, width: width, value: value)
            }
            return .mmioRead(address: mmio.phys_addr, width: width)
        case KVM_EXIT_HLT:
            return .halt
        case KVM_EXIT_SHUTDOWN:
            return .shutdown
        case KVM_EXIT_INTR:
            return .interrupted
        case KVM_EXIT_FAIL_ENTRY:
            return .failedEntry(hardwareReason: unsafe runStruct.pointee.fail_entry.hardware_entry_failure_reason)
        case KVM_EXIT_INTERNAL_ERROR:
            return .internalError(suberror: unsafe runStruct.pointee.internal.suberror)
        case KVM_EXIT_SYSTEM_EVENT:
            switch unsafe runStruct.pointee.system_event.type {
            case UInt32(KVM_SYSTEM_EVENT_SHUTDOWN): return .systemEvent(.shutdown)
            case UInt32(KVM_SYSTEM_EVENT_RESET): return .systemEvent(.reset)
            case UInt32(KVM_SYSTEM_EVENT_CRASH): return .systemEvent(.crash)
            case let other:
                return .unhandled(UnhandledExit(reason: reason, name: "KVM_EXIT_SYSTEM_EVENT",
                                                detail: KVMExitNames.systemEvent(other)))
            }
        default:
            return .unhandled(UnhandledExit(reason: reason, name: KVMExitNames.exitReason(reason)))
        }
    }

    public func completeRead(_ value: UInt64) {
        if let data = portData {
            if data.isIn { storeValue(value, at: data.offset, size: data.size) }
        } else if Int32(unsafe runStruct.pointee.exit_reason) == KVM_EXIT_MMIO {
            // Exactly the length KVM reported (1 to 8 bytes, as `run()` checked), odd ones included.
            let length = min(Int(unsafe runStruct.pointee.mmio.len), 8)
            unsafe withUnsafeMutableBytes(of: &runStruct.pointee.mmio.data) { bytes in
                for i in 0..<length { unsafe bytes[i] = UInt8(truncatingIfNeeded: value >> (8 * UInt64(i))) }
            }
        }
    }

    public func completeRead(index: Int, value: UInt64) {
        // The bounds keep the store inside the data area that `run()` checked against the mapping.
        guard let data = portData, data.isIn, index >= 0, index < data.count else {
            preconditionFailure("completeRead(index: \(index)) outside a string in's elements")
        }
        storeValue(value, at: data.offset + index * data.size, size: data.size)
    }

    public func value(at index: Int) -> UInt64 {
        // The bounds keep the load inside the data area that `run()` checked against the mapping.
        guard let data = portData, !data.isIn, index >= 0, index < data.count else {
            preconditionFailure("value(at: \(index)) outside a string out's elements")
        }
        return loadValue(at: data.offset + index * data.size, size: data.size)
    }

    /// Loads a little-endian value of `size` bytes from the run area (bounds checked by the caller).
    private func loadValue(at offset: Int, size: Int) -> UInt64 {
        var value: UInt64 = 0
        for i in 0..<size {
            // SAFETY: `offset + size <= mapSize` was checked against the mapping.
            value |= UInt64(unsafe runArea.load(fromByteOffset: offset + i, as: UInt8.self)) << (8 * UInt64(i))
        }
        return value
    }

    private func storeValue(_ value: UInt64, at offset: Int, size: Int) {
        for i in 0..<size {
            // SAFETY: `offset + size <= mapSize` was checked when the exit was decoded.
            unsafe runArea.storeBytes(of: UInt8(truncatingIfNeeded: value >> (8 * UInt64(i))),
                                      toByteOffset: offset + i, as: UInt8.self)
        }
    }

    public func stateSummary() -> String {
        guard let regs = try? registers() else { return "vCPU \(index): registers unavailable" }
        var sregs = kvm_sregs()
        let mode: String
        if (try? kvmIoctl(fd.raw, CKVM_GET_SREGS, value: &sregs, name: "KVM_GET_SREGS")) != nil {
            if sregs.efer & X86Bits.eferLongModeActive != 0 {
                mode = "long mode"
            } else if sregs.cr0 & X86Bits.cr0ProtectionEnable != 0 {
                mode = "protected mode"
            } else {
                mode = "real mode"
            }
        } else {
            mode = "unknown mode"
        }
        return "vCPU \(index) in \(mode) at RIP 0x\(String(regs.rip, radix: 16)), RSP 0x\(String(regs.rsp, radix: 16))"
    }
}
