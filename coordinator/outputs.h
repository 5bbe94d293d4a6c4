/* coordinator internal: what the coordinator writes and reads on disk (output PNG requests,
 * start_level init images, manifests, job directories). Functions of their arguments only. */
#ifndef STRATA_COORD_OUTPUTS_H
#define STRATA_COORD_OUTPUTS_H

#include "coordinator/coordinator.h"
#include "coordinator/job_table.h"
#include "coordinator/queue.h"
#include "coordinator/writer.h"

#include <stdint.h>

/* The request for OUT/<job>/<index>.png (final: 1, for slot s) or <index>.<level>.png (a
 * keep_levels copy) of slot sl's image, with the strata:* text chunks; rgb (side x side x 3) is
 * copied. NULL when out of memory. */
coord_write *coord_png_request(const pipeline_spec *p, const coord_slot *sl, uint32_t s, int final,
                               const uint8_t *rgb, int side);
/* Read init_images/<index>.png for a start_level job; *rgb is malloc'd, side x side. 0, or a
 * negative code with e. */
int coord_read_init(const pipeline_spec *p, const coord_job *j, uint32_t image, uint8_t **rgb,
                    int *side, strata_err *e);
/* Write OUT/<job>/manifest.jsonl atomically (sorting j's failures by image). 0, or a negative
 * code with e and errno at the cause. */
int coord_write_manifest(const pipeline_spec *p, coord_job *j, strata_err *e);
/* Image's task at level was done in elapsed_ms (wall) and cpu_us (the worker's CPU time; 0:
 * not reported, elapsed_ms counts) (timings.c). Out of memory loses the timings only. */
void coord_job_task_timed(coord_job *j, int level, uint32_t image, uint64_t elapsed_ms,
                          uint64_t cpu_us);
/* Write OUT/<job>/timings.jsonl: one line per image (the first 2^20 of a larger job), its CPU
 * and wall seconds per level (no file when nothing was timed). 0, or a negative code with e. */
int coord_write_timings(const pipeline_spec *p, coord_job *j, strata_err *e);
/* mkdir -p path. 0, or a negative code with e. */
int coord_mkdirs(const char *path, strata_err *e);

#endif
