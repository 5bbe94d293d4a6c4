/* Atomic whole-file writes (tmp + fsync + rename) for files other processes may read: outputs,
 * manifests, safetensors and PNGs. */
#include "common/common.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

/* Write all of buf to fd, retrying short writes and EINTR. Returns 0 or -1 (errno set). */
static int write_all(int fd, const void *buf, size_t len)
{
    const char *p = buf;
    while (len > 0) {
        ssize_t n = write(fd, p, len);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) return -1;
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

/* fsync the directory holding path so the rename itself survives a crash; best effort,
 * since some filesystems refuse fsync on directories. */
static void sync_parent_dir(const char *path)
{
    char dir[4096];
    const char *slash = strrchr(path, '/');
    if (!slash) {
        snprintf(dir, sizeof dir, ".");
    } else if (slash == path) {
        snprintf(dir, sizeof dir, "/");
    } else {
        snprintf(dir, sizeof dir, "%.*s", (int)(slash - path), path);
    }
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return;
    (void)fsync(fd);
    close(fd);
}

/* Write every piece to fd. Returns 0 or -1 (errno set). */
static int write_parts(int fd, const struct iovec *parts, int n)
{
    for (int i = 0; i < n; i++)
        if (write_all(fd, parts[i].iov_base, parts[i].iov_len) != 0) return -1;
    return 0;
}

int file_write_atomic(const char *path, const struct iovec *parts, int n, int sync, strata_err *e)
{
    /* DIR/.NAME.tmp.PID: hidden, so a crash mid-write leaves nothing that looks like an output */
    char tmp[4096];
    const char *slash = strrchr(path, '/'), *name = slash ? slash + 1 : path;
    if (snprintf(tmp, sizeof tmp, "%.*s.%s.tmp.%ld", (int)(name - path), path, name,
                 (long)getpid()) >= (int)sizeof tmp)
        return err_set(e, ERR_INPUT, "%s: path too long", path);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        int err = errno;
        err_set(e, ERR_RUNTIME, "%s: cannot create: %s", tmp, strerror(err));
        errno = err;
        return ERR_RUNTIME;
    }
    if (write_parts(fd, parts, n) != 0 || (sync && fsync(fd) != 0)) {
        int err = errno;
        close(fd);
        unlink(tmp);
        err_set(e, ERR_RUNTIME, "%s: cannot write: %s", tmp, strerror(err));
        errno = err;
        return ERR_RUNTIME;
    }
    if (close(fd) != 0 || rename(tmp, path) != 0) {
        int err = errno;
        unlink(tmp);
        err_set(e, ERR_RUNTIME, "%s: cannot write: %s", path, strerror(err));
        errno = err;
        return ERR_RUNTIME;
    }
    if (sync) sync_parent_dir(path);
    return ERR_OK;
}
