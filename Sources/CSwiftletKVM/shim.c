#define _GNU_SOURCE
#include "cswiftletkvm.h"
#include "cswiftlethost.h"
#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>
#include <sys/ioctl.h>

int ckvm_ioctl(int fd, unsigned long request, unsigned long argument) {
    int result = ioctl(fd, request, argument);
    return result < 0 ? -errno : result;
}

int ckvm_ioctl_ptr(int fd, unsigned long request, void *argument) {
    int result = ioctl(fd, request, argument);
    return result < 0 ? -errno : result;
}

struct kvm_cpuid2 *ckvm_cpuid2_alloc(uint32_t count) {
    struct kvm_cpuid2 *cpuid = calloc(1, sizeof(*cpuid) + (size_t)count * sizeof(struct kvm_cpuid_entry2));
    if (cpuid) cpuid->nent = count;
    return cpuid;
}

struct kvm_cpuid_entry2 *ckvm_cpuid2_entries(struct kvm_cpuid2 *cpuid) { return cpuid->entries; }

struct kvm_msrs *ckvm_msrs_alloc(uint32_t count) {
    struct kvm_msrs *msrs = calloc(1, sizeof(*msrs) + (size_t)count * sizeof(struct kvm_msr_entry));
    if (msrs) msrs->nmsrs = count;
    return msrs;
}

struct kvm_msr_entry *ckvm_msrs_entries(struct kvm_msrs *msrs) { return msrs->entries; }

static __thread struct kvm_run *thread_run;

static void kick_handler(int signo) {
    (void)signo;
    struct kvm_run *run = thread_run;
    if (run) __atomic_store_n(&run->immediate_exit, 1, __ATOMIC_SEQ_CST);
}

int ckvm_kick_signal(void) { return chost_kick_signal(); }

int ckvm_install_kick_handler(void) {
    struct sigaction action;
    memset(&action, 0, sizeof(action));
    action.sa_handler = kick_handler;   /* no SA_RESTART: KVM_RUN must return EINTR */
    sigemptyset(&action.sa_mask);
    if (sigaction(ckvm_kick_signal(), &action, NULL) != 0) return -errno;
    /* The calling thread may have inherited a mask that blocks it (e.g. from a libdispatch worker). */
    sigset_t kick;
    sigemptyset(&kick);
    sigaddset(&kick, ckvm_kick_signal());
    return -pthread_sigmask(SIG_UNBLOCK, &kick, NULL);
}

void ckvm_set_thread_run(struct kvm_run *run) { thread_run = run; }

void ckvm_set_immediate_exit(struct kvm_run *run, uint8_t value) {
    __atomic_store_n(&run->immediate_exit, value, __ATOMIC_SEQ_CST);
}
