/* The coordinator's HTTP pages (--http) with real processes: a coordinator on loopback, workers
 * of the tiny cascade, jobs from `strata submit`. /metrics is scraped over a plain socket while a
 * job runs and after it, checked by `promtool check metrics` (when installed), and its counters
 * must add up to the job's images per level, while a client holding half a request open does not
 * hold up the farm; the status page is loaded in headless Chromium
 * (when installed), which must show the jobs and their levels, and its screenshot is kept. */
#include "kernels/kernels.h"
#include "tests/test.h"

#include <arpa/inet.h>
#include <limits.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#define HTTP_PIPELINE "configs/pipelines/test-tiny.yaml"
enum { HTTP_IMAGES = 8, HTTP_WAIT_MS = 30000, HTTP_BODY_MAX = 1 << 20 };

typedef struct http_farm {
    char dir[600], wep[256], cep[256], http[256];
    pid_t coord, workers[2]; /* l16, l32 */
} http_farm;

/* "strata coordinator: workers=EP clients=EP http=ADDR:PORT" on fd within 20 s. */
static int read_ready(int fd, http_farm *f)
{
    char line[1024];
    if (test_read_line(fd, line, sizeof line, 20000)) return -1;
    return sscanf(line, "strata coordinator: workers=%255s clients=%255s http=%255s", f->wep,
                  f->cep, f->http) == 3
               ? 0
               : -1;
}

/* The coordinator on loopback with its HTTP server on a free port, from flags or (config) from
 * a --config file saying the same. */
static int start_coordinator(http_farm *f, int config)
{
    char log[700], yaml[700], root[PATH_MAX];
    int fds[2];
    snprintf(log, sizeof log, "%s/coordinator.log", f->dir);
    snprintf(yaml, sizeof yaml, "%s/coordinator.yaml", f->dir);
    FILE *y = fopen(yaml, "w");
    if (!y || !getcwd(root, sizeof root) || pipe(fds)) {
        if (y) fclose(y);
        return -1;
    }
    fprintf(y,
            "pipeline: %s/%s\nworkers: tcp://127.0.0.1:*\nclients: tcp://127.0.0.1:*\n"
            "http: 127.0.0.1:0\nout_root: %s\n",
            root, HTTP_PIPELINE, f->dir);
    fclose(y);
    char *flags[] = {(char *)test_strata_bin(),
                     "coordinator",
                     "--pipeline",
                     HTTP_PIPELINE,
                     "--workers",
                     "tcp://127.0.0.1:*",
                     "--clients",
                     "tcp://127.0.0.1:*",
                     "--http",
                     "127.0.0.1:0",
                     "--out-root",
                     f->dir,
                     NULL};
    char *from_file[] = {(char *)test_strata_bin(), "coordinator", "--config", yaml, NULL};
    char **argv = config ? from_file : flags;
    f->coord = test_spawn(argv, fds[1], log);
    close(fds[1]);
    int rc = read_ready(fds[0], f);
    close(fds[0]);
    return rc;
}

static void start_worker(http_farm *f, int i)
{
    char log[700];
    snprintf(log, sizeof log, "%s/worker%d.log", f->dir, i);
    char *argv[] = {(char *)test_strata_bin(),
                    "worker",
                    "--level",
                    i ? "l32" : "l16",
                    "--connect",
                    f->wep,
                    "--pipeline",
                    HTTP_PIPELINE,
                    NULL};
    f->workers[i] = test_spawn(argv, -1, log);
}

/* SIGTERM and reap *pid: its exit status (-1 when it died of a signal or was not running). */
static int stop_pid(pid_t *pid)
{
    int st = 0;
    if (*pid <= 0) return -1;
    kill(*pid, SIGTERM);
    waitpid(*pid, &st, 0);
    *pid = 0;
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* Stop the farm: 0 when the coordinator exited cleanly (under ASan: no leak, no error). */
static int farm_stop(http_farm *f)
{
    int rc = stop_pid(&f->coord);
    stop_pid(&f->workers[0]);
    stop_pid(&f->workers[1]);
    return rc;
}

/* strata submit of job NAME (HTTP_IMAGES images, out DIR/out) without waiting. */
static int submit(const http_farm *f, const char *name)
{
    char path[700];
    snprintf(path, sizeof path, "%s/%s.yaml", f->dir, name);
    FILE *j = fopen(path, "w");
    if (!j) return -1;
    fprintf(j, "pipeline: %s\nname: %s\ncount: %d\nseed: 7\nresolution: 32\nout: %s/out\n",
            HTTP_PIPELINE, name, HTTP_IMAGES, f->dir);
    fclose(j);
    const char *args[] = {"submit", path, "--coordinator", f->cep, NULL};
    return test_run_strata(args, NULL, 0, NULL, 0);
}

/* A TCP connection to ADDR:PORT (IPv4): its fd, or -1. */
static int http_connect(const char *addr)
{
    char host[64];
    unsigned port;
    if (sscanf(addr, "%63[^:]:%u", host, &port) != 2) return -1;
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || inet_pton(AF_INET, host, &sa.sin_addr) != 1 ||
        connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
        if (fd >= 0) close(fd);
        return -1;
    }
    return fd;
}

/* GET path from ADDR:PORT (IPv4) over a plain socket: the status code (-1: no answer) and the
 * body, malloc'd and NUL-terminated, in *body. HTTP/1.0: the server closes after the answer. */
static int http_get(const char *addr, const char *path, char **body, size_t *len)
{
    *body = NULL;
    int fd = http_connect(addr);
    if (fd < 0) return -1;
    char req[512];
    int n = snprintf(req, sizeof req, "GET %s HTTP/1.0\r\nHost: %s\r\n\r\n", path, addr);
    char *buf = malloc(HTTP_BODY_MAX + 1);
    size_t used = 0;
    if (write(fd, req, (size_t)n) != n) used = HTTP_BODY_MAX;
    struct pollfd p = {fd, POLLIN, 0};
    while (used < HTTP_BODY_MAX && poll(&p, 1, 10000) > 0) {
        ssize_t r = read(fd, buf + used, HTTP_BODY_MAX - used);
        if (r <= 0) break;
        used += (size_t)r;
    }
    close(fd);
    buf[used] = 0;
    int status = -1;
    char *sep = strstr(buf, "\r\n\r\n");
    if (!sep || sscanf(buf, "HTTP/1.%*d %d", &status) != 1) {
        free(buf);
        return -1;
    }
    *len = used - (size_t)(sep + 4 - buf);
    memmove(buf, sep + 4, *len + 1);
    *body = buf;
    return status;
}

/* The value of the sample SERIES ("name{labels}") in an exposition, or -1 when absent. */
static double metric(const char *text, const char *series)
{
    size_t n = strlen(series);
    for (const char *p = text; p && *p; p = strchr(p, '\n'), p = p ? p + 1 : NULL)
        if (!strncmp(p, series, n) && p[n] == ' ') return strtod(p + n + 1, NULL);
    return -1;
}

/* Scrape /metrics until SERIES has value want (HTTP_WAIT_MS at most); the last scrape in *text. */
static int wait_metric(const http_farm *f, const char *series, double want, char **text)
{
    size_t len;
    long long end = clock_now_ms() + HTTP_WAIT_MS;
    for (int i = 0; i < 3000; i++) {
        if (http_get(f->http, "/metrics", text, &len) == 200 && metric(*text, series) == want)
            return 0;
        free(*text);
        *text = NULL;
        if (clock_now_ms() > end) break;
        poll(NULL, 0, 20); /* a scrape interval, not a stand-in for a condition */
    }
    return -1;
}

/* wait_metric without the scrape. */
static int wait_for(const http_farm *f, const char *series, double want)
{
    char *text = NULL;
    int rc = wait_metric(f, series, want, &text);
    free(text);
    return rc;
}

/* `promtool check metrics` on text: 0 when it passes or is not installed (said once), else -1
 * with its complaint in why. */
static int promtool_check(const char *dir, const char *text, const char *name, char *why,
                          size_t len)
{
    char path[700], cmd[1600];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    if (!f) return -1;
    fputs(text, f);
    fclose(f);
    const char *probe[] = {"/bin/sh", "-c", "command -v promtool", NULL};
    if (test_run_program(probe, NULL, 0, NULL, 0) != 0) {
        fprintf(stderr, "  skipped promtool: not installed (tools/deps.sh installs prometheus)\n");
        return 0;
    }
    snprintf(cmd, sizeof cmd, "promtool check metrics < '%s'", path);
    const char *argv[] = {"/bin/sh", "-c", cmd, NULL};
    char out[2048] = "", err[2048] = "";
    if (test_run_program(argv, err, sizeof err, out, sizeof out) == 0) return 0;
    snprintf(why, len, "promtool on %s: %s%s", path, out, err);
    return -1;
}

/* The checks of the scrape after job "m" is done: per level, done tasks = images, the
 * histogram counted each; every image written; both workers seen. */
static int check_done(const char *text, char *why, size_t len)
{
    static const char *const series[] = {"strata_tasks_done_total{level=\"l16\",job=\"m\"}",
                                         "strata_tasks_done_total{level=\"l32\",job=\"m\"}",
                                         "strata_task_seconds_bucket{level=\"l16\",le=\"+Inf\"}",
                                         "strata_task_seconds_count{level=\"l32\"}",
                                         "strata_job_images_written_total{job=\"m\"}",
                                         "strata_job_images{job=\"m\"}"};
    for (size_t i = 0; i < sizeof series / sizeof series[0]; i++)
        if (metric(text, series[i]) != HTTP_IMAGES)
            return snprintf(why, len, "%s is %g, expected %d", series[i], metric(text, series[i]),
                            HTTP_IMAGES),
                   -1;
    if (metric(text, "strata_workers{level=\"l16\"}") != 1 ||
        metric(text, "strata_tasks_failed_total{level=\"l32\",job=\"m\"}") != 0 ||
        metric(text, "strata_output_write_errors_total") != 0)
        return snprintf(why, len, "workers, failures or write errors are off"), -1;
    return 0;
}

/* /jobs/NAME/latest.png serves the job's own last image and nothing else. */
static int check_latest(const http_farm *f, char *why, size_t len)
{
    static const char *const bad[] = {"/jobs/../../etc/passwd/latest.png",
                                      "/jobs/m%2F..%2F..%2Fcoordinator.log/latest.png",
                                      "/jobs/nope/latest.png", "/jobs//latest.png", "/jobs/m"};
    char *body;
    size_t n;
    int st = http_get(f->http, "/jobs/m/latest.png", &body, &n);
    int png = st == 200 && n > 8 && !memcmp(body, "\x89PNG", 4);
    free(body);
    if (!png) return snprintf(why, len, "/jobs/m/latest.png: status %d, not a PNG", st), -1;
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        st = http_get(f->http, bad[i], &body, &n);
        free(body);
        if (st != 404) return snprintf(why, len, "%s: status %d, expected 404", bad[i], st), -1;
    }
    return 0;
}

TEST_TIMEOUT(http_metrics_during_and_after_a_job, 60)
{
    http_farm f = {0};
    char why[4096] = "", *text = NULL;
    snprintf(f.dir, sizeof f.dir, "%s", test_tmpdir());
    CHECK(start_coordinator(&f, 0) == 0);
    /* no workers yet: the job stays running while it is scraped */
    int rc = submit(&f, "m");
    if (!rc) rc = wait_metric(&f, "strata_job_running{job=\"m\"}", 1, &text);
    if (!rc) rc = metric(text, "strata_tasks_done_total{level=\"l16\",job=\"m\"}") == 0 ? 0 : -1;
    if (!rc) rc = promtool_check(f.dir, text, "during.prom", why, sizeof why);
    free(text);
    text = NULL;
    /* a client that sends half a request and waits must not hold up the coordinator */
    int idle = !rc ? http_connect(f.http) : -1;
    if (!rc && (idle < 0 || write(idle, "GET /metr", 9) != 9)) rc = -1;
    if (!rc) {
        start_worker(&f, 0);
        start_worker(&f, 1);
        rc = wait_metric(&f, "strata_job_running{job=\"m\"}", 0, &text);
    }
    if (idle >= 0) close(idle);
    if (!rc) rc = promtool_check(f.dir, text, "after.prom", why, sizeof why);
    if (!rc) rc = check_done(text, why, sizeof why);
    if (!rc) rc = check_latest(&f, why, sizeof why);
    free(text);
    if (farm_stop(&f) != 0 && !rc) {
        snprintf(why, sizeof why, "the coordinator did not exit cleanly");
        rc = -1;
    }
    CHECKF(rc == 0, "%s (scrapes and logs in %s)", *why ? why : "the job did not run", f.dir);
}

TEST(http_refuses_bad_addresses)
{
    static const char *const cases[][2] = {
        {"0.0.0.0:0", "http: 0.0.0.0:0 is not loopback"},
        {"127.0.0.1", "http: expected ADDR:PORT"},
        {"127.0.0.1:70000", "http: expected ADDR:PORT"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const char *args[] = {"coordinator",       "--pipeline", HTTP_PIPELINE,       "--workers",
                              "tcp://127.0.0.1:*", "--clients",  "tcp://127.0.0.1:*", "--http",
                              cases[i][0],         NULL};
        char err[2048] = "";
        int rc = test_run_strata(args, err, sizeof err, NULL, 0);
        CHECKF(rc == 2 && strstr(err, cases[i][1]), "--http %s: exit %d, stderr: %s", cases[i][0],
               rc, err);
    }
}

/* The path of headless Chromium into path, or -1 when none is installed. */
static int find_chromium(char *path, size_t len)
{
    const char *probe[] = {"/bin/sh", "-c", "command -v chromium || command -v chromium-browser",
                           NULL};
    if (test_run_program(probe, NULL, 0, path, len) != 0) return -1;
    path[strcspn(path, "\n")] = 0;
    return *path ? 0 : -1;
}

/* Chromium on the status page: its DOM (after loading) on stdout into out, a screenshot in
 * shot. Bounded by timeout(1): Chromium can be slow to start on a busy machine. */
static int chromium(const char *bin, const http_farm *f, const char *shot, char *out, size_t len)
{
    char url[300], profile[700], flag[760];
    snprintf(url, sizeof url, "http://%s/", f->http);
    snprintf(profile, sizeof profile, "--user-data-dir=%s/chromium", f->dir);
    snprintf(flag, sizeof flag, "--screenshot=%s", shot);
    const char *argv[] = {"/usr/bin/timeout",
                          "-k",
                          "5",
                          "45",
                          bin,
                          "--headless",
                          "--no-sandbox",
                          "--disable-gpu",
                          "--hide-scrollbars",
                          "--window-size=1000,640",
                          profile,
                          "--dump-dom",
                          flag,
                          url,
                          NULL};
    char err[4096] = "";
    return test_run_program(argv, err, sizeof err, out, len);
}

/* The section of job name in the DOM dump ("" when absent), NUL-terminated in sec. */
static void job_section(const char *dom, const char *name, char *sec, size_t len)
{
    char key[64];
    snprintf(key, sizeof key, "data-job=\"%s\"", name);
    const char *s = strstr(dom, key), *e = s ? strstr(s, "</section>") : NULL;
    size_t n = e ? (size_t)(e - s) : 0;
    if (n >= len) n = len - 1;
    memcpy(sec, s ? s : "", n);
    sec[n] = 0;
}

/* Job "first" written, job "second" halfway (its l16 done, l32 without a worker): what the page
 * shows of each. */
static int check_dom(const char *dom, char *why, size_t len)
{
    char first[8192], second[8192];
    job_section(dom, "first", first, sizeof first);
    job_section(dom, "second", second, sizeof second);
    if (!*first || !*second) return snprintf(why, len, "a job is missing from the page"), -1;
    if (!strstr(first, "data-level=\"l16\"") || !strstr(first, "data-level=\"l32\"") ||
        !strstr(first, ">done<") || !strstr(first, "class=\"latest\""))
        return snprintf(why, len, "job first: levels, state or image missing: %s", first), -1;
    if (!strstr(second, ">running<") || !strstr(second, "max=\"8\" value=\"8\"") ||
        !strstr(second, "max=\"8\" value=\"0\"") || !strstr(second, "no image yet"))
        return snprintf(why, len, "job second: not halfway: %s", second), -1;
    return 0;
}

/* The screenshot's path: next to build/strata (an artefact of the run). */
static void shot_path(char *path, size_t len)
{
    const char *sb = test_strata_bin(), *slash = strrchr(sb, '/');
    snprintf(path, len, "%.*sstatus-page.png", slash ? (int)(slash - sb + 1) : 0, sb);
}

/* The screenshot is a 1000x640 PNG. */
static int check_shot(const char *path, char *why, size_t len)
{
    uint8_t *rgb = NULL;
    int w = 0, h = 0;
    strata_err e = {0};
    if (png_read_rgb(path, &rgb, &w, &h, &e) < 0 || w != 1000 || h != 640)
        snprintf(why, len, "screenshot %s: %dx%d %s", path, w, h, e.msg);
    free(rgb);
    return *why ? -1 : 0;
}

TEST_TIMEOUT(http_status_page_in_chromium, 120)
{
    char bin[512] = "", why[16384] = "";
    if (find_chromium(bin, sizeof bin) < 0) {
        fprintf(stderr, "  skipped: no chromium (tools/deps.sh installs it)\n");
        return;
    }
    http_farm f = {0};
    snprintf(f.dir, sizeof f.dir, "%s", test_tmpdir());
    CHECK(start_coordinator(&f, 1) == 0); /* the config file's http key */
    start_worker(&f, 0);
    start_worker(&f, 1);
    int rc = submit(&f, "first");
    if (!rc) rc = wait_for(&f, "strata_job_running{job=\"first\"}", 0);
    if (!rc) { /* without an l32 worker the second job stops halfway */
        stop_pid(&f.workers[1]);
        rc = wait_for(&f, "strata_workers{level=\"l32\"}", 0);
    }
    if (!rc) rc = submit(&f, "second");
    if (!rc) rc = wait_for(&f, "strata_tasks_done_total{level=\"l16\",job=\"second\"}", 8);
    static char dom[1 << 16];
    char shot[700];
    shot_path(shot, sizeof shot);
    unlink(shot);
    if (!rc && (rc = chromium(bin, &f, shot, dom, sizeof dom)) != 0)
        snprintf(why, sizeof why, "chromium: exit %d", rc);
    if (!rc) rc = check_dom(dom, why, sizeof why);
    if (!rc) rc = check_shot(shot, why, sizeof why);
    if (farm_stop(&f) != 0 && !rc) {
        snprintf(why, sizeof why, "the coordinator did not exit cleanly");
        rc = -1;
    }
    CHECKF(rc == 0, "%s (logs in %s)", *why ? why : "the jobs did not run", f.dir);
}

TEST_TIMEOUT(http_render_says_its_status_page, 60)
{
    char out[700], err[8192] = "";
    snprintf(out, sizeof out, "%s/out", test_tmpdir());
    const char *args[] = {"render", "--pipeline",   HTTP_PIPELINE, "--count",
                          "2",      "--resolution", "32",          "--out",
                          out,      "--http",       "127.0.0.1:0", NULL};
    int rc = test_run_strata(args, err, sizeof err, NULL, 0);
    CHECKF(rc == 0 && strstr(err, "strata render: status page at http://127.0.0.1:"),
           "exit %d, stderr: %s", rc, err);
}
