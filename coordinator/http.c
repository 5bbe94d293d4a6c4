/* The coordinator's HTTP server (libmicrohttpd, options.http): /metrics in the Prometheus text
 * format, the status page at / and each job's latest image at /jobs/NAME/latest.png. Read-only.
 * MHD runs without threads of its own, on its epoll fd, which the event loop polls beside the
 * ZeroMQ sockets: requests are answered between two messages, from the coordinator's own thread,
 * so they read its state without locks. Like the ZeroMQ endpoints it binds loopback only unless
 * CURVE keys are set or the operator says insecure (the pages themselves ask for no key). */
#include "coordinator/coord_internal.h"
#include "coordinator/textbuf.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <microhttpd.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

enum {
    HTTP_MAX_CONNECTIONS = 32, /* a scraper and a few browsers */
    HTTP_TIMEOUT_S = 10,       /* an idle or slow connection is closed after this */
};

struct coord_http {
    struct MHD_Daemon *d;
    int fd; /* MHD's epoll fd: readable when a connection or the listener wants service */
};

/* The response r (NULL: out of memory) with status and content type, sent and released. */
static enum MHD_Result send_response(struct MHD_Connection *conn, struct MHD_Response *r,
                                     unsigned status, const char *type)
{
    if (!r) return MHD_NO;
    MHD_add_response_header(r, "Content-Type", type);
    MHD_add_response_header(r, "Cache-Control", "no-store");
    MHD_add_response_header(r, "X-Content-Type-Options", "nosniff");
    /* the page loads nothing from elsewhere and runs no script */
    MHD_add_response_header(r, "Content-Security-Policy",
                            "default-src 'none'; img-src 'self'; style-src 'unsafe-inline'");
    enum MHD_Result rc = MHD_queue_response(conn, status, r);
    MHD_destroy_response(r);
    return rc;
}

static enum MHD_Result send_text(struct MHD_Connection *conn, unsigned status, const char *text)
{
    struct MHD_Response *r =
        MHD_create_response_from_buffer(strlen(text), (void *)text, MHD_RESPMEM_PERSISTENT);
    return send_response(conn, r, status, "text/plain; charset=utf-8");
}

/* A page built into t, sent with type (500 when it ran out of memory). */
static enum MHD_Result send_page(struct MHD_Connection *conn, coord_text *t, const char *type)
{
    size_t len;
    char *body = coord_text_take(t, &len);
    if (!body) return send_text(conn, 500, "out of memory\n");
    struct MHD_Response *r = MHD_create_response_from_buffer(len, body, MHD_RESPMEM_MUST_FREE);
    if (!r) free(body);
    return send_response(conn, r, 200, type);
}

/* /jobs/ID/latest.png: the last image the coordinator wrote for job ID. The URL only picks a
 * job of the table; the file is the job's own output, named by the coordinator. */
static enum MHD_Result send_latest(coord_t *c, struct MHD_Connection *conn, const char *url)
{
    static const char suffix[] = "/latest.png";
    char id[COORD_ID_MAX];
    const char *start = url + strlen("/jobs/");
    size_t n = strlen(start), sl = sizeof suffix - 1;
    if (n <= sl || n - sl >= sizeof id || strcmp(start + n - sl, suffix))
        return send_text(conn, 404, "not found\n");
    memcpy(id, start, n - sl);
    id[n - sl] = 0;
    const coord_job *j = strchr(id, '/') ? NULL : coord_jobs_find(c->jobs, id);
    if (!j || !j->latest) return send_text(conn, 404, "no image yet\n");
    char path[sizeof j->dir + 32];
    snprintf(path, sizeof path, "%s/%06u.png", j->dir, j->latest - 1);
    int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
        if (fd >= 0) close(fd);
        return send_text(conn, 404, "image gone\n");
    }
    struct MHD_Response *r = MHD_create_response_from_fd((size_t)st.st_size, fd);
    if (!r) close(fd);
    return send_response(conn, r, 200, "image/png");
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version, const char *upload_data,
                                  size_t *upload_size, void **req_cls)
{
    (void)version, (void)upload_data, (void)req_cls;
    coord_t *c = cls;
    coord_text t = {0};
    if (strcmp(method, "GET") && strcmp(method, "HEAD")) {
        *upload_size = 0;
        return send_text(conn, 405, "only GET\n");
    }
    if (!strcmp(url, "/metrics")) {
        coord_metrics_text(c, &t);
        return send_page(conn, &t, "text/plain; version=0.0.4; charset=utf-8");
    }
    if (!strcmp(url, "/")) {
        coord_status_html(c, &t);
        return send_page(conn, &t, "text/html; charset=utf-8");
    }
    if (!strcmp(url, "/status.json")) {
        coord_status_json(c, &t);
        return send_page(conn, &t, "application/json");
    }
    if (!strncmp(url, "/jobs/", 6)) return send_latest(c, conn, url);
    return send_text(conn, 404, "not found\n");
}

/* "ADDR:PORT" (ADDR a name, an IPv4 address or [IPv6]) into *sa. ERR_INPUT naming http. */
static int parse_address(const char *spec, struct sockaddr_storage *sa, strata_err *e)
{
    char host[256];
    const char *colon = strrchr(spec, ':');
    long port = -1;
    char *end = NULL;
    if (colon) port = strtol(colon + 1, &end, 10);
    if (!colon || colon == spec || colon - spec >= (long)sizeof host || !end || *end ||
        end == colon + 1 || port < 0 || port > 65535)
        return err_set(e, ERR_INPUT, "http: expected ADDR:PORT (port 0: any), got \"%s\"", spec);
    size_t hl = (size_t)(colon - spec);
    memcpy(host, spec, hl);
    host[hl] = 0;
    char *h = host;
    if (h[0] == '[' && hl > 2 && h[hl - 1] == ']') {
        h[hl - 1] = 0;
        h++;
    }
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *ai = NULL;
    int rc = getaddrinfo(h, NULL, &hints, &ai);
    if (rc) return err_set(e, ERR_INPUT, "http: %s: %s", spec, gai_strerror(rc));
    memcpy(sa, ai->ai_addr, ai->ai_addrlen);
    freeaddrinfo(ai);
    if (sa->ss_family == AF_INET)
        ((struct sockaddr_in *)sa)->sin_port = htons((uint16_t)port);
    else
        ((struct sockaddr_in6 *)sa)->sin6_port = htons((uint16_t)port);
    return 0;
}

static int is_loopback(const struct sockaddr_storage *sa)
{
    if (sa->ss_family == AF_INET)
        return ntohl(((const struct sockaddr_in *)sa)->sin_addr.s_addr) >> 24 == 127;
    return IN6_IS_ADDR_LOOPBACK(&((const struct sockaddr_in6 *)sa)->sin6_addr);
}

/* The address MHD bound (port 0 resolved) into c->hep: "ADDR:PORT", "[ADDR]:PORT" for IPv6. */
static void bound_address(coord_t *c, const struct sockaddr_storage *sa)
{
    char host[INET6_ADDRSTRLEN] = "?";
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(c->http->d, MHD_DAEMON_INFO_BIND_PORT);
    unsigned port = info ? info->port : 0;
    if (sa->ss_family == AF_INET) {
        inet_ntop(AF_INET, &((const struct sockaddr_in *)sa)->sin_addr, host, sizeof host);
        snprintf(c->hep, sizeof c->hep, "%s:%u", host, port);
    } else {
        inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)sa)->sin6_addr, host, sizeof host);
        snprintf(c->hep, sizeof c->hep, "[%s]:%u", host, port);
    }
}

int coord_http_start(coord_t *c, strata_err *e)
{
    if (!c->o.http || !*c->o.http) return 0;
    struct sockaddr_storage sa = {0};
    int rc = parse_address(c->o.http, &sa, e);
    if (rc < 0) return rc;
    if (!is_loopback(&sa) && !c->o.curve_secret && !c->o.insecure)
        return err_set(e, ERR_INPUT,
                       "http: %s is not loopback and no curve keys are set: set curve (strata "
                       "keygen) or insecure: true to serve the metrics there",
                       c->o.http);
    c->http = calloc(1, sizeof *c->http);
    if (!c->http) return err_set(e, ERR_NOMEM, "out of memory");
    unsigned flags = MHD_USE_EPOLL | (sa.ss_family == AF_INET6 ? MHD_USE_IPv6 : 0);
    c->http->d = MHD_start_daemon(flags, 0, NULL, NULL, on_request, c, MHD_OPTION_SOCK_ADDR,
                                  (struct sockaddr *)&sa, MHD_OPTION_CONNECTION_LIMIT,
                                  (unsigned)HTTP_MAX_CONNECTIONS, MHD_OPTION_CONNECTION_TIMEOUT,
                                  (unsigned)HTTP_TIMEOUT_S, MHD_OPTION_END);
    const union MHD_DaemonInfo *info =
        c->http->d ? MHD_get_daemon_info(c->http->d, MHD_DAEMON_INFO_EPOLL_FD) : NULL;
    if (!info) {
        coord_http_stop(c);
        return err_set(e, ERR_RUNTIME, "http: cannot listen on %s", c->o.http);
    }
    c->http->fd = info->epoll_fd;
    bound_address(c, &sa);
    if (!is_loopback(&sa))
        coord_log(c, 1, "http %s: metrics and status page readable by anyone reaching it", c->hep);
    return 0;
}

void coord_http_stop(coord_t *c)
{
    if (!c->http) return;
    if (c->http->d) MHD_stop_daemon(c->http->d);
    free(c->http);
    c->http = NULL;
}

int coord_http_fd(coord_t *c, int *wait)
{
    if (!c->http) return -1;
    MHD_UNSIGNED_LONG_LONG to;
    if (MHD_get_timeout(c->http->d, &to) == MHD_YES && to < (MHD_UNSIGNED_LONG_LONG)*wait)
        *wait = (int)to;
    return c->http->fd;
}

void coord_http_serve(coord_t *c)
{
    if (c->http) MHD_run(c->http->d);
}

const char *coord_http_endpoint(const coord_t *c)
{
    return c->http ? c->hep : NULL;
}
