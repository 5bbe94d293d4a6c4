/* Internal to kernels/: the thread count the kernels run on (threads.c). Not included outside
 * kernels/. */
#ifndef STRATA_KERNELS_THREADS_H
#define STRATA_KERNELS_THREADS_H

/* The count of the last kernels_set_threads, or OpenMP's default before any. */
int kernels_get_threads(void);

#endif
