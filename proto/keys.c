/* CURVE key files: NAME.pub holds the public key, NAME.key the secret key, each 40 characters
 * of Z85 (ZeroMQ's text form of 32 bytes) and a newline. The secret file is made mode 0600
 * and never overwritten. */
#include "proto/proto.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <zmq.h>

/* 1 when text (NUL-terminated) is one Z85 key. */
static int key_ok(const char *text)
{
    uint8_t bin[32];
    return strlen(text) == PROTO_KEY_LEN && zmq_z85_decode(bin, text) != NULL;
}

int proto_key_read(const char *path, char out[PROTO_KEY_LEN + 1], strata_err *e)
{
    FILE *f = fopen(path, "r");
    if (!f) return err_set(e, ERR_INPUT, "%s: %s", path, strerror(errno));
    char line[128] = "";
    char *got = fgets(line, sizeof line, f);
    fclose(f);
    size_t n = got ? strcspn(line, "\r\n") : 0;
    line[n] = 0;
    if (!key_ok(line))
        return err_set(e, ERR_INPUT, "%s: expected a CURVE key (40 characters of Z85)", path);
    memcpy(out, line, PROTO_KEY_LEN + 1);
    return 0;
}

int proto_key_public(const char *secret, char out[PROTO_KEY_LEN + 1], strata_err *e)
{
    if (!key_ok(secret) || zmq_curve_public(out, secret) != 0)
        return err_set(e, ERR_INPUT, "not a CURVE secret key");
    return 0;
}

/* Write text and a newline to a new file path (mode; O_EXCL: an existing key is kept). */
static int key_write(const char *path, const char *text, int mode, strata_err *e)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL, mode);
    if (fd < 0) return err_set(e, ERR_INPUT, "%s: %s", path, strerror(errno));
    char buf[PROTO_KEY_LEN + 2];
    snprintf(buf, sizeof buf, "%s\n", text);
    ssize_t n = write(fd, buf, strlen(buf));
    int rc = n == (ssize_t)strlen(buf) && fsync(fd) == 0 ? 0 : -1;
    close(fd);
    if (rc) {
        unlink(path);
        return err_set(e, ERR_RUNTIME, "%s: cannot write", path);
    }
    return 0;
}

int proto_keygen(const char *name, strata_err *e)
{
    char pub[PROTO_KEY_LEN + 1], sec[PROTO_KEY_LEN + 1], pp[4096], sp[4096];
    if (zmq_curve_keypair(pub, sec) != 0)
        return err_set(e, ERR_RUNTIME, "keygen: %s", zmq_strerror(zmq_errno()));
    if ((size_t)snprintf(pp, sizeof pp, "%s.pub", name) >= sizeof pp ||
        (size_t)snprintf(sp, sizeof sp, "%s.key", name) >= sizeof sp)
        return err_set(e, ERR_INPUT, "keygen: name too long");
    int rc = key_write(sp, sec, 0600, e);
    if (!rc && (rc = key_write(pp, pub, 0644, e))) unlink(sp);
    return rc;
}
