/* kernels-internal file helpers shared by the safetensors and PNG writers. Not part of the
 * module's interface: only files in kernels/ include this. */
#ifndef STRATA_KERNELS_KFILE_H
#define STRATA_KERNELS_KFILE_H

#include "kernels/kernels.h"

#include <sys/uio.h>

/* Write the n pieces, in order, to path atomically: PATH.tmp.PID, rename, so a reader sees the
 * old file or the whole new one. With sync, the file and then its directory are fsync'd too,
 * so it also survives a power failure. Errors name the path. */
int kfile_write_atomic(const char *path, const struct iovec *parts, int n, int sync, kerr *e);

#endif
