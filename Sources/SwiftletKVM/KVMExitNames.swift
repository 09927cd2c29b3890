/// KVM's names for its exit reasons and system event types, from `<linux/kvm.h>`, so that a stop
/// message names what KVM reported. Static text: looking a name up allocates nothing.
enum KVMExitNames {
    /// The `KVM_EXIT_*` name of exit reason `reason`.
    static func exitReason(_ reason: UInt32) -> StaticString {
        switch reason {
        case 0: return "KVM_EXIT_UNKNOWN"
        case 1: return "KVM_EXIT_EXCEPTION"
        case 2: return "KVM_EXIT_IO"
        case 3: return "KVM_EXIT_HYPERCALL"
        case 4: return "KVM_EXIT_DEBUG"
        case 5: return "KVM_EXIT_HLT"
        case 6: return "KVM_EXIT_MMIO"
        case 7: return "KVM_EXIT_IRQ_WINDOW_OPEN"
        case 8: return "KVM_EXIT_SHUTDOWN"
        case 9: return "KVM_EXIT_FAIL_ENTRY"
        case 10: return "KVM_EXIT_INTR"
        case 11: return "KVM_EXIT_SET_TPR"
        case 12: return "KVM_EXIT_TPR_ACCESS"
        case 13: return "KVM_EXIT_S390_SIEIC"
        case 14: return "KVM_EXIT_S390_RESET"
        case 15: return "KVM_EXIT_DCR"
        case 16: return "KVM_EXIT_NMI"
        case 17: return "KVM_EXIT_INTERNAL_ERROR"
        case 18: return "KVM_EXIT_OSI"
        case 19: return "KVM_EXIT_PAPR_HCALL"
        case 20: return "KVM_EXIT_S390_UCONTROL"
        case 21: return "KVM_EXIT_WATCHDOG"
        case 22: return "KVM_EXIT_S390_TSCH"
        case 23: return "KVM_EXIT_EPR"
        case 24: return "KVM_EXIT_SYSTEM_EVENT"
        case 25: return "KVM_EXIT_S390_STSI"
        case 26: return "KVM_EXIT_IOAPIC_EOI"
        case 27: return "KVM_EXIT_HYPERV"
        case 28: return "KVM_EXIT_ARM_NISV"
        case 29: return "KVM_EXIT_X86_RDMSR"
        case 30: return "KVM_EXIT_X86_WRMSR"
        case 31: return "KVM_EXIT_DIRTY_RING_FULL"
        case 32: return "KVM_EXIT_AP_RESET_HOLD"
        case 33: return "KVM_EXIT_X86_BUS_LOCK"
        case 34: return "KVM_EXIT_XEN"
        case 35: return "KVM_EXIT_RISCV_SBI"
        case 36: return "KVM_EXIT_RISCV_CSR"
        case 37: return "KVM_EXIT_NOTIFY"
        case 38: return "KVM_EXIT_LOONGARCH_IOCSR"
        case 39: return "KVM_EXIT_MEMORY_FAULT"
        case 40: return "KVM_EXIT_TDX"
        default: return "an exit reason newer than Swiftlet knows"
        }
    }

    /// The `KVM_SYSTEM_EVENT_*` name of system event type `type`.
    static func systemEvent(_ type: UInt32) -> StaticString {
        switch type {
        case 1: return "KVM_SYSTEM_EVENT_SHUTDOWN"
        case 2: return "KVM_SYSTEM_EVENT_RESET"
        case 3: return "KVM_SYSTEM_EVENT_CRASH"
        case 4: return "KVM_SYSTEM_EVENT_WAKEUP"
        case 5: return "KVM_SYSTEM_EVENT_SUSPEND"
        case 6: return "KVM_SYSTEM_EVENT_SEV_TERM"
        case 7: return "KVM_SYSTEM_EVENT_TDX_FATAL"
        default: return "a system event type newer than Swiftlet knows"
        }
    }
}
