/* `strata render --grid FILE`: one PNG of the first images the render wrote, side by side, or
 * with --keep-levels one row per image and one column per level. */
#include "cluster/cluster.h"
#include "cluster/render.h"
#include "kernels/kernels.h"

#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { GRID_MAX_IMAGES = 16, GRID_ROW_MAX = 8 };

/* Copy a side x side RGB image into cell (row, col) of the grid, scaled by nearest neighbour
 * to cell x cell. */
static void grid_put(uint8_t *grid, int grid_w, int cell, int row, int col, const uint8_t *img,
                     int side)
{
    for (int y = 0; y < cell; y++)
        for (int x = 0; x < cell; x++) {
            const uint8_t *src = img + ((size_t)(y * side / cell) * side + x * side / cell) * 3;
            uint8_t *dst = grid + ((size_t)(row * cell + y) * grid_w + col * cell + x) * 3;
            memcpy(dst, src, 3);
        }
}

/* One cell's image: <index>.<level>.png with --keep-levels, else <index>.png. */
static int grid_cell(const render_grid *g, int image, int level, uint8_t **rgb, int *side,
                     strata_err *e)
{
    char path[PATH_MAX + 64];
    int w, h;
    if (g->keep_levels)
        snprintf(path, sizeof path, "%s/%s/%06d.%s.png", g->out, g->job, image,
                 g->pipeline->levels[level].name);
    else
        snprintf(path, sizeof path, "%s/%s/%06d.png", g->out, g->job, image);
    int rc = png_read_rgb(path, rgb, &w, &h, e);
    if (!rc && w != h) rc = err_set(e, ERR_INPUT, "%s: not square", path);
    *side = w;
    return rc;
}

int render_write_grid(const render_grid *g)
{
    int images = g->count < GRID_MAX_IMAGES ? (int)g->count : GRID_MAX_IMAGES;
    int levels = g->keep_levels ? g->end - g->first : 1, cell = (int)g->resolution;
    int cols = g->keep_levels ? levels : (images < GRID_ROW_MAX ? images : GRID_ROW_MAX);
    int rows = g->keep_levels ? images : (images + cols - 1) / cols;
    uint8_t *grid = calloc((size_t)rows * cols * cell * cell, 3);
    strata_err e = {0};
    int rc = grid ? 0 : err_set(&e, ERR_NOMEM, "out of memory for the grid");
    for (int i = 0; i < images && !rc; i++)
        for (int k = 0; k < levels && !rc; k++) {
            uint8_t *img;
            int side;
            if ((rc = grid_cell(g, i, g->first + k, &img, &side, &e))) break;
            grid_put(grid, cols * cell, cell, g->keep_levels ? i : i / cols,
                     g->keep_levels ? k : i % cols, img, side);
            free(img);
        }
    if (!rc) rc = png_write_rgb(g->path, grid, cols * cell, rows * cell, NULL, 0, &e);
    free(grid);
    return rc ? cli_fail("render", rc, e.msg) : 0;
}
