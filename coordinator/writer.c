/* A small pool of threads that encode and write output PNGs, so that neither zlib (a 4096^2
 * image takes about a second) nor the fsync of each atomic write stalls the event loop. The loop
 * submits requests that carry everything needed (path, pixels, text chunks); finished ones come
 * back on a list and an eventfd wakes the loop's poll. The pool never touches coordinator state. */
#include "coordinator/writer.h"
#include "kernels/kernels.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

enum { WRITER_MAX_THREADS = 64 };

struct coord_writer {
    pthread_mutex_t lock;
    pthread_cond_t wake;
    coord_write *todo_head, *todo_tail; /* FIFO */
    coord_write *done;                  /* LIFO; the loop sorts nothing by it */
    coord_write *held_head, *held_tail; /* FIFO; the loop's thread only */
    int stopping, nthreads, efd;
    pthread_t threads[WRITER_MAX_THREADS];
};

void coord_write_free(coord_write *w)
{
    if (!w) return;
    free(w->rgb);
    free(w);
}

/* Write one request; the outcome goes into w->ok / w->err. */
static void writer_do(coord_write *w)
{
    const png_text_kv text[] = {{"strata:job", w->job_id},        {"strata:index", w->index},
                                {"strata:seed", w->seed},         {"strata:levels", w->levels},
                                {"strata:pipeline", w->pipeline}, {"strata:plan", w->plan}};
    strata_err e = {0};
    errno = 0;
    /* no fsync per image: the job's images are synced at once before its manifest; a job
     * without a budget or its own steps has no strata:plan (its PNGs stay as they were) */
    int ntext = w->plan[0] ? 6 : 5;
    w->ok = png_write_rgb_nosync(w->path, w->rgb, w->side, w->side, text, ntext, &e) == 0;
    w->err_no = w->ok ? 0 : errno;
    if (!w->ok) {
        snprintf(w->err, sizeof w->err, "writing %s: %s", w->path, e.msg);
        return; /* the pixels stay: the loop may keep the request to try again */
    }
    free(w->rgb); /* the pixels are not needed any more; the loop may hold the request a while */
    w->rgb = NULL;
}

static void *writer_main(void *arg)
{
    coord_writer_t *p = arg;
    pthread_mutex_lock(&p->lock);
    for (;;) {
        while (!p->todo_head && !p->stopping)
            pthread_cond_wait(&p->wake, &p->lock);
        coord_write *w = p->todo_head;
        if (!w) break; /* stopping and nothing left: queued writes are finished first */
        p->todo_head = w->next;
        if (!p->todo_head) p->todo_tail = NULL;
        pthread_mutex_unlock(&p->lock);
        writer_do(w);
        pthread_mutex_lock(&p->lock);
        w->next = p->done;
        p->done = w;
        uint64_t one = 1;
        ssize_t r = write(p->efd, &one, sizeof one); /* only fails when the counter is full */
        (void)r;
    }
    pthread_mutex_unlock(&p->lock);
    return NULL;
}

int coord_writer_new(int threads, coord_writer_t **out)
{
    *out = NULL;
    coord_writer_t *p = calloc(1, sizeof *p);
    if (!p) return -1;
    p->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (p->efd < 0) {
        free(p);
        return -1;
    }
    pthread_mutex_init(&p->lock, NULL);
    pthread_cond_init(&p->wake, NULL);
    if (threads < 1) threads = 1;
    if (threads > WRITER_MAX_THREADS) threads = WRITER_MAX_THREADS;
    for (; p->nthreads < threads; p->nthreads++)
        if (pthread_create(&p->threads[p->nthreads], NULL, writer_main, p) != 0) break;
    if (p->nthreads == 0) {
        coord_writer_destroy(&p);
        return -1;
    }
    *out = p;
    return 0;
}

void coord_writer_destroy(coord_writer_t **pp)
{
    coord_writer_t *p = pp ? *pp : NULL;
    if (!p) return;
    pthread_mutex_lock(&p->lock);
    p->stopping = 1;
    pthread_cond_broadcast(&p->wake);
    pthread_mutex_unlock(&p->lock);
    for (int i = 0; i < p->nthreads; i++)
        pthread_join(p->threads[i], NULL);
    for (coord_write *w = p->done, *next; w; w = next) {
        next = w->next;
        coord_write_free(w);
    }
    for (coord_write *w = p->held_head, *next; w; w = next) {
        next = w->next;
        coord_write_free(w);
    }
    pthread_cond_destroy(&p->wake);
    pthread_mutex_destroy(&p->lock);
    close(p->efd);
    free(p);
    *pp = NULL;
}

int coord_writer_fd(const coord_writer_t *p)
{
    return p->efd;
}

void coord_writer_submit(coord_writer_t *p, coord_write *w)
{
    w->next = NULL;
    pthread_mutex_lock(&p->lock);
    if (p->todo_tail)
        p->todo_tail->next = w;
    else
        p->todo_head = w;
    p->todo_tail = w;
    pthread_cond_signal(&p->wake);
    pthread_mutex_unlock(&p->lock);
}

coord_write *coord_writer_take_done(coord_writer_t *p)
{
    uint64_t n;
    ssize_t r = read(p->efd, &n, sizeof n); /* reset the wake-up; EAGAIN when already 0 */
    (void)r;
    pthread_mutex_lock(&p->lock);
    coord_write *w = p->done;
    p->done = NULL;
    pthread_mutex_unlock(&p->lock);
    return w;
}

void coord_writer_hold(coord_writer_t *p, coord_write *w)
{
    w->next = NULL;
    if (p->held_tail)
        p->held_tail->next = w;
    else
        p->held_head = w;
    p->held_tail = w;
}

coord_write *coord_writer_unhold(coord_writer_t *p, const struct coord_job *job, int all)
{
    coord_write *out = NULL, **tail = &out, *prev = NULL;
    for (coord_write *w = p->held_head, *next; w; w = next) {
        next = w->next;
        if (w->job != job || (!all && out)) {
            prev = w;
            continue;
        }
        if (prev)
            prev->next = next;
        else
            p->held_head = next;
        if (p->held_tail == w) p->held_tail = prev;
        w->next = NULL;
        *tail = w;
        tail = &w->next;
    }
    return out;
}

uint32_t coord_writer_held(const coord_writer_t *p, const struct coord_job *job, uint32_t *finals)
{
    uint32_t n = 0, f = 0;
    for (const coord_write *w = p ? p->held_head : NULL; w; w = w->next)
        if (!job || w->job == job) {
            n++;
            f += w->final != 0;
        }
    if (finals) *finals = f;
    return n;
}

const coord_write *coord_writer_held_list(const coord_writer_t *p)
{
    return p ? p->held_head : NULL;
}
