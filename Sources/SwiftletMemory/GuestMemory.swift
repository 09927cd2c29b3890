#if canImport(Glibc)
import Glibc
#endif
import CSwiftletMemory
import SystemPackage

/// What went wrong with a guest-memory operation.
public enum GuestMemoryError: Error, Equatable, Sendable, CustomStringConvertible {
    /// The access does not lie entirely inside one RAM region.
    case outOfRange(address: GuestAddress, count: UInt64)
    /// An ordered (atomic) access at an address that is not a multiple of its width.
    case misaligned(address: GuestAddress, alignment: UInt64)
    /// The host refused to map guest RAM.
    case mapFailed(size: UInt64, errno: Errno)
    /// The requested layout is unusable (empty, overlapping or unaligned regions).
    case invalidLayout(String)
    /// Reading a file into guest memory failed.
    case readFailed(Errno)
    /// A file ended before the requested number of bytes were read.
    case shortRead(expected: UInt64, got: UInt64)
    /// Writing guest memory to a file failed.
    case writeFailed(Errno)

    public var description: String {
        switch self {
        case let .outOfRange(address, count):
            return "guest memory access of \(count) bytes at \(address) is outside guest RAM"
        case let .misaligned(address, alignment):
            return "ordered guest memory access at \(address) is not \(alignment)-byte aligned"
        case let .mapFailed(size, errno):
            return "cannot map \(formatByteCount(size)) of guest RAM: \(errno) (lower --memory or raise the host's limits)"
        case let .invalidLayout(why):
            return "invalid guest memory layout: \(why)"
        case let .readFailed(errno):
            return "reading a file into guest memory failed: \(errno)"
        case let .shortRead(expected, got):
            return "file ended early: expected \(expected) bytes, read \(got)"
        case let .writeFailed(errno):
            return "writing guest memory to a file failed: \(errno)"
        }
    }
}

/// Guest RAM: one anonymous host mapping per region, with bounds-checked typed access.
///
/// Every access is checked to lie inside a single region; nothing here ever touches host memory
/// outside the mappings, whatever address or length the guest (or a disk image) supplies.
/// Raw host pointers never leave this module except as the `package` ``Region/hostAddress``
/// needed to register memory slots with the hypervisor.
///
/// Thread safety: the mappings are fixed for the object's lifetime, and byte copies are plain
/// memory operations, as on real hardware; callers that share guest RAM with running vCPUs
/// order their accesses as the guest's protocols require.
public final class GuestMemory: @unchecked Sendable {
    /// One contiguous block of guest RAM backed by one host mapping.
    public struct Region: Sendable {
        /// The guest-physical addresses this region covers.
        public let range: GuestRange
        /// The host virtual address of the region's first byte (for memory-slot registration only).
        package let hostAddress: UInt
    }

    /// The RAM regions, sorted by guest address and never overlapping.
    public let regions: [Region]

    /// Maps anonymous host memory for each range. Ranges must be page-aligned and must not overlap.
    ///
    /// - Throws: ``GuestMemoryError/invalidLayout(_:)`` or ``GuestMemoryError/mapFailed(size:errno:)``.
    public init(ranges: [GuestRange]) throws(GuestMemoryError) {
        let sorted = ranges.sorted { $0.start < $1.start }
        guard !sorted.isEmpty else { throw .invalidLayout("no RAM regions") }
        for (index, range) in sorted.enumerated() {
            guard range.start.rawValue % 4096 == 0, range.size % 4096 == 0 else {
                throw .invalidLayout("region \(range) is not 4 KiB aligned")
            }
            if index > 0, sorted[index - 1].overlaps(range) {
                throw .invalidLayout("regions \(sorted[index - 1]) and \(range) overlap")
            }
        }
        var mapped: [Region] = []
        for range in sorted {
            guard range.size <= UInt64(Int.max) - Self.hugePageSize else {
                Self.unmap(mapped)
                throw .mapFailed(size: range.size, errno: .noMemory)
            }
            do {
                mapped.append(Region(range: range, hostAddress: try Self.mapAligned(size: Int(range.size))))
            } catch {
                Self.unmap(mapped)
                throw .mapFailed(size: range.size, errno: error)
            }
        }
        regions = mapped
    }

    deinit { Self.unmap(regions) }

    /// The transparent-huge-page size guest RAM is aligned to.
    static let hugePageSize: UInt64 = 2 << 20

    /// Maps `size` bytes of private anonymous memory aligned to 2 MiB and asks for transparent huge
    /// pages, as QEMU does: with two-dimensional paging every 4 KiB fault is a nested exit, and huge
    /// pages cut their number by 512 (lab-and-peers.md §8.3 notes QEMU's RAM is THP-backed).
    private static func mapAligned(size: Int) throws(Errno) -> UInt {
        let slack = Int(hugePageSize)
        // SAFETY: a fresh private anonymous mapping; nothing else refers to it.
        let pointer = unsafe mmap(nil, size + slack, PROT_READ | PROT_WRITE,
                                  MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0)
        guard let pointer = unsafe pointer, unsafe pointer != MAP_FAILED else { throw Errno(rawValue: errno) }
        let start = UInt(bitPattern: pointer)
        let aligned = (start + UInt(slack) - 1) & ~(UInt(slack) - 1)
        // SAFETY: the head [start, aligned) and tail [aligned + size, start + size + slack) lie inside
        // the mapping just made and are not used; unmapping them leaves exactly [aligned, aligned + size).
        if aligned > start { _ = unsafe munmap(UnsafeMutableRawPointer(bitPattern: start), Int(aligned - start)) }
        let tail = start + UInt(size + slack) - (aligned + UInt(size))
        if tail > 0 { _ = unsafe munmap(UnsafeMutableRawPointer(bitPattern: aligned + UInt(size)), Int(tail)) }
        // SAFETY: advice on the mapping we own; failure (THP disabled) is harmless.
        _ = unsafe madvise(UnsafeMutableRawPointer(bitPattern: aligned), size, MADV_HUGEPAGE)
        return aligned
    }

    private static func unmap(_ regions: [Region]) {
        for region in regions {
            // SAFETY: each region was mapped by `init` with exactly this size and is unmapped once.
            _ = unsafe munmap(UnsafeMutableRawPointer(bitPattern: region.hostAddress), Int(region.range.size))
        }
    }

    /// The total number of bytes of guest RAM.
    public var size: UInt64 { regions.reduce(0) { $0 + $1.range.size } }

    /// Whether `count` bytes at `address` lie inside one RAM region.
    public func contains(_ address: GuestAddress, count: UInt64) -> Bool {
        regions.contains { $0.range.contains(address, count: count) }
    }

    /// The host pointer for `count` bytes at `address`, after checking they lie inside one region.
    private func host(_ address: GuestAddress, _ count: UInt64) throws(GuestMemoryError) -> UnsafeMutableRawPointer {
        for region in regions where region.range.contains(address, count: count) {
            let offset = address.rawValue - region.range.start.rawValue
            // SAFETY: `offset + count` lies inside this region's live mapping (checked just above).
            return unsafe UnsafeMutableRawPointer(bitPattern: region.hostAddress + UInt(offset))!
        }
        throw .outOfRange(address: address, count: count)
    }

    /// Copies `bytes` into guest memory at `address`.
    public func write(_ bytes: some Collection<UInt8>, at address: GuestAddress) throws(GuestMemoryError) {
        let count = bytes.count
        guard count > 0 else { return }
        let destination = try unsafe host(address, UInt64(count))
        let copied: Void? = bytes.withContiguousStorageIfAvailable { source in
            // SAFETY: `destination` has room for `count` bytes (checked by `host`).
            unsafe destination.copyMemory(from: source.baseAddress!, byteCount: count)
        }
        if copied == nil {
            var offset = 0
            for byte in bytes {
                // SAFETY: `offset < count`, inside the checked span.
                unsafe destination.storeBytes(of: byte, toByteOffset: offset, as: UInt8.self)
                offset += 1
            }
        }
    }

    /// Reads `count` bytes of guest memory at `address`.
    public func read(count: Int, at address: GuestAddress) throws(GuestMemoryError) -> [UInt8] {
        guard count > 0 else { return [] }
        let source = try unsafe host(address, UInt64(count))
        return unsafe [UInt8](unsafeUninitializedCapacity: count) { buffer, initialized in
            // SAFETY: `buffer` holds `count` bytes; `source` has `count` readable bytes (checked).
            unsafe buffer.baseAddress!.initialize(from: source.assumingMemoryBound(to: UInt8.self), count: count)
            initialized = count
        }
    }

    /// Sets `count` bytes at `address` to `byte`.
    ///
    /// Zeroing drops whole pages back to the kernel (`MADV_DONTNEED`: they read as zero and use no
    /// host memory until touched again), so clearing a kernel's BSS costs neither time nor RSS.
    public func fill(_ byte: UInt8, count: UInt64, at address: GuestAddress) throws(GuestMemoryError) {
        guard count > 0 else { return }
        let destination = try unsafe host(address, count)
        let start = UInt(bitPattern: destination)
        let page: UInt = 4096
        let firstPage = (start + page - 1) & ~(page - 1)
        let end = start + UInt(count)
        let lastPage = end & ~(page - 1)
        if byte == 0, lastPage > firstPage {
            // SAFETY: [firstPage, lastPage) lies inside the checked span of our private anonymous mapping.
            _ = unsafe memset(destination, 0, Int(firstPage - start))
            _ = unsafe madvise(UnsafeMutableRawPointer(bitPattern: firstPage), Int(lastPage - firstPage), MADV_DONTNEED)
            _ = unsafe memset(destination + Int(lastPage - start), 0, Int(end - lastPage))
        } else {
            // SAFETY: `destination` has room for `count` bytes (checked by `host`).
            _ = unsafe memset(destination, Int32(byte), Int(count))
        }
    }

    /// Reads a little-endian integer at `address` (no alignment needed).
    public func load<T: FixedWidthInteger>(_ type: T.Type = T.self, at address: GuestAddress) throws(GuestMemoryError) -> T {
        let source = try unsafe host(address, UInt64(MemoryLayout<T>.size))
        return T(littleEndian: unsafe source.loadUnaligned(as: T.self))
    }

    /// Writes a little-endian integer at `address` (no alignment needed).
    public func store<T: FixedWidthInteger>(_ value: T, at address: GuestAddress) throws(GuestMemoryError) {
        let destination = try unsafe host(address, UInt64(MemoryLayout<T>.size))
        unsafe destination.storeBytes(of: value.littleEndian, as: T.self)
    }

    /// Reads the little-endian `UInt16` at `address` with acquire ordering: guest memory read after
    /// it (ring entries) is at least as new as the value read (virtio 1.x §2.7.13: the device reads
    /// `avail.idx` before the entries it covers). `address` must be 2-byte aligned.
    public func loadAcquire(_ type: UInt16.Type = UInt16.self, at address: GuestAddress) throws(GuestMemoryError) -> UInt16 {
        guard address.rawValue % 2 == 0 else { throw .misaligned(address: address, alignment: 2) }
        let source = try unsafe host(address, 2)
        // SAFETY: two bytes at `source` lie inside a live mapping (checked by `host`); the host
        // mapping is 4 KiB aligned, so an even guest address is an even host address.
        return UInt16(littleEndian: unsafe cmem_load_acquire_u16(source.assumingMemoryBound(to: UInt16.self)))
    }

    /// Writes `value` little-endian at `address` with release ordering: guest memory written before
    /// it (used ring entries) is visible to the guest no later than the value (virtio 1.x §2.7.14:
    /// the device publishes `used.idx` after the entries). `address` must be 2-byte aligned.
    public func storeRelease(_ value: UInt16, at address: GuestAddress) throws(GuestMemoryError) {
        guard address.rawValue % 2 == 0 else { throw .misaligned(address: address, alignment: 2) }
        let destination = try unsafe host(address, 2)
        // SAFETY: as in `loadAcquire`.
        unsafe cmem_store_release_u16(destination.assumingMemoryBound(to: UInt16.self), value.littleEndian)
    }

    /// A full memory fence: the host's guest-memory stores before it are visible before its loads
    /// after it (a device publishing `used.idx` and then reading the driver's `used_event` or flags).
    public static func fence() {
        cmem_fence()
    }

    /// Reads `count` bytes from `file` at `offset` straight into guest memory at `address`.
    ///
    /// Used to load kernels and initrds without an intermediate copy.
    public func read(from file: FileDescriptor, fileOffset: UInt64, count: UInt64,
                     into address: GuestAddress) throws(GuestMemoryError) {
        guard count > 0 else { return }
        let destination = try unsafe host(address, count)
        guard fileOffset <= UInt64(Int64.max), count <= UInt64(Int64.max) - fileOffset else {
            throw .readFailed(Errno(rawValue: EOVERFLOW))
        }
        var done: UInt64 = 0
        while done < count {
            let chunk = Int(min(count - done, 1 << 30))
            // SAFETY: `done + chunk <= count`, inside the checked span.
            let buffer = unsafe UnsafeMutableRawBufferPointer(start: destination + Int(done), count: chunk)
            let got: Int
            do {
                got = try unsafe file.read(fromAbsoluteOffset: Int64(fileOffset + done), into: buffer)
            } catch let error as Errno {
                throw .readFailed(error)
            } catch {
                throw .readFailed(.ioError)
            }
            guard got > 0 else { throw .shortRead(expected: count, got: done) }
            done += UInt64(got)
        }
    }

    /// The most buffers one `preadv`/`pwritev` call takes (`IOV_MAX` on Linux).
    static let maximumVectorCount = 1024

    /// Reads from `file` at `offset` straight into the guest `ranges`, in order (`preadv`, no bounce
    /// buffer), and returns the number of bytes read.
    ///
    /// Every range is checked to lie inside one RAM region before any I/O. `EINTR` is retried. A
    /// short read (end of file) ends the call and its count is returned: the caller decides whether
    /// that is an error. At most ``maximumVectorCount`` ranges are read per system call.
    /// - Throws: ``GuestMemoryError/outOfRange(address:count:)`` for a range outside RAM (nothing is
    ///   read), ``GuestMemoryError/readFailed(_:)`` with the host's error (`EOVERFLOW` when the
    ///   request passes the largest file offset).
    public func read(from file: FileDescriptor, at offset: UInt64, into ranges: [GuestRange]) throws(GuestMemoryError) -> Int {
        try transfer(file, at: offset, ranges: ranges, write: false, failure: GuestMemoryError.readFailed)
    }

    /// Writes the guest `ranges`, in order, to `file` at `offset` straight from guest RAM
    /// (`pwritev`), and returns the number of bytes written.
    ///
    /// The same rules as ``read(from:at:into:)``: ranges checked first, `EINTR` retried, a short
    /// write returned as its count.
    /// - Throws: ``GuestMemoryError/outOfRange(address:count:)`` or ``GuestMemoryError/writeFailed(_:)``.
    public func write(to file: FileDescriptor, at offset: UInt64, from ranges: [GuestRange]) throws(GuestMemoryError) -> Int {
        try transfer(file, at: offset, ranges: ranges, write: true, failure: GuestMemoryError.writeFailed)
    }

    /// Reads from the stream `socket` (a socket or pipe, usually non-blocking) straight into the
    /// guest `ranges`, in order (`readv`, no bounce buffer), and returns the number of bytes read:
    /// 0 at end of stream, less than asked when the stream had less.
    ///
    /// Every range is checked before any I/O; `EINTR` is retried; one system call per
    /// ``maximumVectorCount`` ranges, stopping at the first short one.
    /// - Throws: ``GuestMemoryError/outOfRange(address:count:)`` or ``GuestMemoryError/readFailed(_:)``
    ///   (`EAGAIN` when a non-blocking stream has nothing yet).
    public func read(fromStream socket: FileDescriptor, into ranges: [GuestRange]) throws(GuestMemoryError) -> Int {
        try transfer(socket, at: nil, ranges: ranges, write: false, failure: GuestMemoryError.readFailed)
    }

    /// Writes the guest `ranges`, in order, to the stream socket `socket` straight from guest RAM
    /// (`sendmsg` with `MSG_NOSIGNAL`: a closed peer is `EPIPE`, never a signal), and returns the
    /// number of bytes the socket took.
    ///
    /// The same rules as ``read(fromStream:into:)``.
    /// - Throws: ``GuestMemoryError/outOfRange(address:count:)`` or ``GuestMemoryError/writeFailed(_:)``
    ///   (`EAGAIN` when a non-blocking socket is full).
    public func write(toStream socket: FileDescriptor, from ranges: [GuestRange]) throws(GuestMemoryError) -> Int {
        try transfer(socket, at: nil, ranges: ranges, write: true, socket: true, failure: GuestMemoryError.writeFailed)
    }

    /// Writes the guest `ranges`, in order, to the stream or device `file` at its current position
    /// (`writev`, straight from guest RAM), and returns the number of bytes written: one packet on a
    /// TAP, possibly fewer bytes than asked on a non-blocking socket.
    ///
    /// The same rules as ``write(to:at:from:)``; `EAGAIN` is thrown as ``GuestMemoryError/writeFailed(_:)``.
    public func write(to file: FileDescriptor, from ranges: [GuestRange]) throws(GuestMemoryError) -> Int {
        try transfer(file, at: nil, ranges: ranges, write: true, failure: GuestMemoryError.writeFailed)
    }

    /// The vectored transfer behind ``read(from:at:into:)``, ``write(to:at:from:)`` and their
    /// stream forms (`offset` nil: `readv`, and `writev` or, for a `socket`, `sendmsg` with
    /// `MSG_NOSIGNAL`): checks every range, then issues one system call per ``maximumVectorCount``
    /// ranges until done or short.
    private func transfer(_ file: FileDescriptor, at offset: UInt64?, ranges: [GuestRange], write: Bool,
                          socket: Bool = false, failure: (Errno) -> GuestMemoryError) throws(GuestMemoryError) -> Int {
        // SAFETY: each iovec points into a guest mapping checked by `host` (live for this object's
        // lifetime); they are only handed to preadv/pwritev below.
        var vectors: [iovec] = unsafe []
        unsafe vectors.reserveCapacity(ranges.count)
        var total: UInt64 = 0
        for range in ranges {
            let base = try unsafe host(range.start, range.size)
            // A range lies inside one mapping, so its size fits an `Int`.
            total += range.size
            guard total <= UInt64(Int.max) else { throw failure(Errno(rawValue: EOVERFLOW)) }
            unsafe vectors.append(iovec(iov_base: base, iov_len: Int(range.size)))
        }
        if let offset, offset > UInt64(Int64.max) || total > UInt64(Int64.max) - offset {
            throw failure(Errno(rawValue: EOVERFLOW))
        }
        var done = 0
        var first = 0
        while unsafe first < vectors.count {
            let count = unsafe min(vectors.count - first, Self.maximumVectorCount)
            let expected = unsafe vectors[first..<first + count].reduce(0) { unsafe $0 + $1.iov_len }
            var moved: Int
            repeat {
                moved = unsafe vectors.withUnsafeMutableBufferPointer { buffer in
                    // SAFETY: `buffer[first ..< first + count]` are iovecs over checked spans of live mappings.
                    let start = unsafe buffer.baseAddress! + first
                    guard let offset else {
                        guard write else { return unsafe readv(file.rawValue, start, Int32(count)) }
                        guard socket else { return unsafe writev(file.rawValue, start, Int32(count)) }
                        var message = unsafe msghdr()
                        unsafe message.msg_iov = start
                        unsafe message.msg_iovlen = count
                        return unsafe sendmsg(file.rawValue, &message, Int32(MSG_NOSIGNAL))
                    }
                    let position = off_t(offset + UInt64(done))
                    return write ? unsafe pwritev(file.rawValue, start, Int32(count), position)
                                 : unsafe preadv(file.rawValue, start, Int32(count), position)
                }
            } while moved < 0 && errno == EINTR
            guard moved >= 0 else { throw failure(Errno(rawValue: errno)) }
            done += moved
            guard moved == expected else { break }
            first += count
        }
        return done
    }
}
