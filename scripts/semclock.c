/* A shim for libfaketime 0.9.10 under Python 3.11: sem_clockwait (Python's lock timeouts)
   is not faked, so a deadline computed on the faked CLOCK_MONOTONIC is a month away for
   the kernel. The deadline is moved back onto the real clock. Preload before libfaketime. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <pthread.h>
#include <semaphore.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static struct timespec to_real(clockid_t clock, const struct timespec *deadline) {
    struct timespec fake, real, out;
    clock_gettime(clock, &fake);               /* libfaketime's */
    syscall(SYS_clock_gettime, clock, &real);  /* the kernel's */
    long long ns = (long long)(deadline->tv_sec - fake.tv_sec + real.tv_sec) * 1000000000LL
                   + deadline->tv_nsec - fake.tv_nsec + real.tv_nsec;
    if (ns < 0) ns = 0;
    out.tv_sec = ns / 1000000000LL;
    out.tv_nsec = ns % 1000000000LL;
    return out;
}

int sem_clockwait(sem_t *sem, clockid_t clock, const struct timespec *abstime) {
    static int (*next)(sem_t *, clockid_t, const struct timespec *);
    if (!next) next = dlsym(RTLD_NEXT, "sem_clockwait");
    struct timespec real = to_real(clock, abstime);
    return next(sem, clock, &real);
}

int pthread_cond_clockwait(pthread_cond_t *cond, pthread_mutex_t *mutex, clockid_t clock,
                           const struct timespec *abstime) {
    static int (*next)(pthread_cond_t *, pthread_mutex_t *, clockid_t, const struct timespec *);
    if (!next) next = dlsym(RTLD_NEXT, "pthread_cond_clockwait");
    struct timespec real = to_real(clock, abstime);
    return next(cond, mutex, clock, &real);
}
