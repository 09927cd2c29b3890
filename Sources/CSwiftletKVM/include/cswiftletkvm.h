/* CSwiftletKVM: the thin C layer under SwiftletKVM.
 *
 * Swift cannot import <linux/kvm.h>'s _IO/_IOW/_IOR request numbers (they are function-like
 * macros), drops flexible array members, and cannot install an async-signal-safe handler that
 * touches a thread-local kvm_run pointer. This header re-exports the request numbers, wraps
 * ioctl without varargs (returning -errno on failure), sizes flexible-array structs, and owns
 * the vCPU kick signal handler (the signal's number comes from CSwiftletHost). Nothing else lives
 * here. */
#pragma once
#include <linux/kvm.h>
#include <stddef.h>
#include <stdint.h>


/* ioctl request numbers (imported into Swift as UInt). */
static const unsigned long CKVM_GET_API_VERSION = KVM_GET_API_VERSION;
static const unsigned long CKVM_CREATE_VM = KVM_CREATE_VM;
static const unsigned long CKVM_CHECK_EXTENSION = KVM_CHECK_EXTENSION;
static const unsigned long CKVM_GET_VCPU_MMAP_SIZE = KVM_GET_VCPU_MMAP_SIZE;
static const unsigned long CKVM_GET_SUPPORTED_CPUID = KVM_GET_SUPPORTED_CPUID;
static const unsigned long CKVM_SET_TSS_ADDR = KVM_SET_TSS_ADDR;
static const unsigned long CKVM_SET_IDENTITY_MAP_ADDR = KVM_SET_IDENTITY_MAP_ADDR;
static const unsigned long CKVM_CREATE_IRQCHIP = KVM_CREATE_IRQCHIP;
static const unsigned long CKVM_CREATE_PIT2 = KVM_CREATE_PIT2;
static const unsigned long CKVM_SET_USER_MEMORY_REGION = KVM_SET_USER_MEMORY_REGION;
static const unsigned long CKVM_CREATE_VCPU = KVM_CREATE_VCPU;
static const unsigned long CKVM_IRQ_LINE = KVM_IRQ_LINE;
static const unsigned long CKVM_IRQFD = KVM_IRQFD;
static const unsigned long CKVM_IOEVENTFD = KVM_IOEVENTFD;
static const unsigned long CKVM_ENABLE_CAP = KVM_ENABLE_CAP;
static const unsigned long CKVM_RUN = KVM_RUN;
static const unsigned long CKVM_GET_REGS = KVM_GET_REGS;
static const unsigned long CKVM_SET_REGS = KVM_SET_REGS;
static const unsigned long CKVM_GET_SREGS = KVM_GET_SREGS;
static const unsigned long CKVM_SET_SREGS = KVM_SET_SREGS;
static const unsigned long CKVM_SET_CPUID2 = KVM_SET_CPUID2;
static const unsigned long CKVM_SET_MSRS = KVM_SET_MSRS;
static const unsigned long CKVM_SET_FPU = KVM_SET_FPU;
static const unsigned long CKVM_GET_LAPIC = KVM_GET_LAPIC;

/* KVM_IOEVENTFD flags (Swift cannot import their enum-based macros). */
static const uint32_t CKVM_IOEVENTFD_FLAG_DATAMATCH = KVM_IOEVENTFD_FLAG_DATAMATCH;
static const uint32_t CKVM_IOEVENTFD_FLAG_PIO = KVM_IOEVENTFD_FLAG_PIO;
static const unsigned long CKVM_SET_LAPIC = KVM_SET_LAPIC;

/* ioctl without varargs; returns the result, or -errno on failure. */
int ckvm_ioctl(int fd, unsigned long request, unsigned long argument);
int ckvm_ioctl_ptr(int fd, unsigned long request, void *_Nullable argument);

/* struct kvm_cpuid2 with room for `count` entries (zeroed); free with free(). */
struct kvm_cpuid2 *_Nullable ckvm_cpuid2_alloc(uint32_t count);
struct kvm_cpuid_entry2 *_Nonnull ckvm_cpuid2_entries(struct kvm_cpuid2 *_Nonnull cpuid);

/* struct kvm_msrs with room for `count` entries (zeroed); free with free(). */
struct kvm_msrs *_Nullable ckvm_msrs_alloc(uint32_t count);
struct kvm_msr_entry *_Nonnull ckvm_msrs_entries(struct kvm_msrs *_Nonnull msrs);

/* The vCPU kick: a real-time signal whose handler sets immediate_exit on the calling thread's
 * kvm_run, so KVM_RUN returns EINTR at once even if the signal lands just before entry. */
int ckvm_kick_signal(void);
/* Installs the handler and unblocks the kick signal in the calling thread; 0 or -errno. */
int ckvm_install_kick_handler(void);
void ckvm_set_thread_run(struct kvm_run *_Nullable run);
void ckvm_set_immediate_exit(struct kvm_run *_Nonnull run, uint8_t value);
