/* kernels: tensors, the diffusers UNet2DModel forward on OpenBLAS, samplers, Philox noise,
 * safetensors and PNG I/O. The only header other folders include from kernels/ (the others in
 * kernels/ are its internal headers). Knows nothing of the network. Its place in the farm and
 * the determinism it keeps (same bits for any thread count): docs/design.md, sections 2 and 7.
 *
 * Sections: set-up and threads; safetensors; Philox noise; images and PNG; UNet2DModel;
 * schedulers and samplers; benchmarks (strata bench). */
#ifndef STRATA_KERNELS_H
#define STRATA_KERNELS_H

#include <stddef.h>
#include <stdint.h>

#include "common/common.h"

/* ---------------------------------------------------------------- set-up and threads */

/* Call first in main(): re-executes the program once with the OpenBLAS settings that its
 * library reads only when it loads (a user's own values are left alone):
 * - OPENBLAS_NUM_THREADS=1: strata splits GEMMs over its own threads (kernels/gemm.c, op_gemm), and
 * a thread pool OpenBLAS starts at load spins on a core for its first fraction of a second, which
 * made the first 2-thread convolution of `strata bench` 6x slow;
 * - OPENBLAS_CORETYPE on a CPU that Debian's OpenBLAS (0.3.21) does not know and runs its
 *   generic Prescott kernels on, 2x slower: SkylakeX with AVX-512, Haswell with AVX2.
 * Every process of one host makes the same choice, so results stay bitwise the same across
 * them. */
void kernels_setup_blas(char **argv);
/* The OpenBLAS kernels in use, e.g. "SkylakeX". */
const char *kernels_blas_core(void);

/* Use n threads for OpenBLAS and for the element-wise loops (n >= 1). */
void kernels_set_threads(int n);

/* ---------------------------------------------------------------- safetensors */

typedef enum st_dtype {
    ST_DTYPE_F32,
    ST_DTYPE_F16,
    ST_DTYPE_BF16,
    ST_DTYPE_F64,
    ST_DTYPE_I64,
    ST_DTYPE_I32,
    ST_DTYPE_OTHER,
} st_dtype;

#define ST_MAX_DIMS 8

/* One tensor of an open safetensors file; data points into the mapping. */
typedef struct st_tensor {
    const char *name;
    st_dtype dtype;
    int ndim;
    int64_t shape[ST_MAX_DIMS];
    const void *data;
    size_t nbytes;
} st_tensor;

typedef struct st_file st_file_t;

/* Map a safetensors file and parse its header. Errors name the file. */
int st_open(const char *path, st_file_t **out, strata_err *e);
/* Unmap f; every st_tensor of it becomes invalid. NULL is a no-op. */
void st_close(st_file_t *f);
/* The number of tensors in f, and the i-th of them (0 <= i < st_count(f)), in name order. */
int st_count(const st_file_t *f);
const st_tensor *st_at(const st_file_t *f, int i);
/* The tensor called name, or NULL. */
const st_tensor *st_find(const st_file_t *f, const char *name);
/* Number of elements of t. */
int64_t st_numel(const st_tensor *t);

/* A model directory's identity, for checking that every worker of a level runs the same model:
 * SHA-256 (libsodium) over its config.json, diffusion_pytorch_model.safetensors and the
 * scheduler_config.json found as worker_model_scheduler finds it (when there is one), each as
 * its role's name, a NUL, its size (8 bytes, little-endian) and its bytes. 64 hex digits.
 * ERR_INPUT naming a file that cannot be read. */
#define MODEL_HASH_HEX 64
int model_hash_dir(const char *dir, char out[MODEL_HASH_HEX + 1], strata_err *e);
/* Convert t (F32/F16/BF16/F64/I64/I32) to float32 into dst (st_numel(t) floats). */
void st_to_f32(const st_tensor *t, float *dst);
/* Copy tensor name into dst as float32, checking it has exactly the given shape.
 * Errors: "FILE: tensor 'NAME': missing" / "...: expected shape [a, b], got [c]". */
int st_read_f32(const st_file_t *f, const char *name, int ndim, const int64_t *shape, float *dst,
                strata_err *e);

/* A float32 tensor to write. */
typedef struct st_out {
    const char *name;
    const float *data;
    int ndim;
    int64_t shape[ST_MAX_DIMS];
} st_out;

/* Write tensors as a float32 safetensors file, atomically (tmp + rename). */
int st_write_f32(const char *path, const st_out *tensors, int count, strata_err *e);

/* ---------------------------------------------------------------- Philox noise */

/* Noise streams of one (image, level): the initial noise, one per sampler step, and the
 * noise-conditioning augmentation of the level's input. */
enum noise_stream {
    NOISE_STREAM_INIT = 0xFFFFFFFFu,
    NOISE_STREAM_AUG = 0xFFFFFFFEu,
    /* values below are step indices */
};

/* Identifies one noise field: every value is a pure function of this key and (c, y, x). */
typedef struct noise_key {
    uint64_t seed;
    uint32_t image;
    uint32_t level;
    uint32_t stream; /* step index or a noise_stream value */
} noise_key;

/* Fill a (channels, h, w) block whose top-left corner is global pixel (y0, x0). */
void noise_fill(const noise_key *k, float *dst, int channels, int h, int w, int y0, int x0);

/* ---------------------------------------------------------------- images and PNG */

/* Float CHW image in [-1, 1] (3 channels) to interleaved RGB8, rounding as diffusers does:
 * round(clamp(x / 2 + 0.5, 0, 1) * 255). */
void image_from_tensor(const float *chw, int h, int w, uint8_t *rgb);
/* Interleaved RGB8 to float CHW in [-1, 1]. */
void image_to_tensor(const uint8_t *rgb, int h, int w, float *chw);

/* A PNG text chunk (tEXt). */
typedef struct png_text_kv {
    const char *key;
    const char *value;
} png_text_kv;

/* Write an 8-bit RGB PNG atomically (tmp + rename), with optional text chunks. */
int png_write_rgb(const char *path, const uint8_t *rgb, int w, int h, const png_text_kv *text,
                  int ntext, strata_err *e);
/* png_write_rgb without the fsyncs: still replaced atomically, but a power failure may lose it
 * until the caller syncs the filesystem (the coordinator does once per job, before the
 * manifest that records the job as written). */
int png_write_rgb_nosync(const char *path, const uint8_t *rgb, int w, int h,
                         const png_text_kv *text, int ntext, strata_err *e);
/* Read a PNG as 8-bit RGB (palette, grey and alpha are converted; alpha is dropped).
 * *rgb is malloc'd; the caller frees it. */
int png_read_rgb(const char *path, uint8_t **rgb, int *w, int *h, strata_err *e);

/* ---------------------------------------------------------------- UNet2DModel */

typedef struct unet unet_t;

/* What callers need to know about a loaded model. */
typedef struct unet_info {
    int in_channels;
    int out_channels;
    int sample_size;
    int num_class_embeds;   /* 0 when there is no class-label lookup table */
    int needs_class_labels; /* 1 when the model has a class embedding of any type */
    int class_label_dim;    /* floats per image in class_labels: 1, or the embedding width
                               for class_embed_type "identity" */
    int downsample_factor;  /* input sides must be multiples of this */
    int64_t num_params;
} unet_info;

/* Load a diffusers UNet2DModel directory (config.json + diffusion_pytorch_model.safetensors).
 * Errors name the file and the field or tensor. */
int unet_load(const char *dir, unet_t **out, strata_err *e);
/* Free m and its weights; NULL is a no-op. */
void unet_free(unet_t *m);
/* What m takes and gives; valid while m lives. */
const unet_info *unet_get_info(const unet_t *m);

/* One forward pass: x is (n, in_channels, h, w), out is (n, out_channels, h, w);
 * timesteps has n values, class_labels n * class_label_dim values or NULL. Scratch memory comes
 * from the model's arena, which keeps its peak size, so repeated calls do not allocate. */
int unet_forward(unet_t *m, const float *x, int n, int h, int w, const float *timesteps,
                 const float *class_labels, float *out, strata_err *e);

/* ---------------------------------------------------------------- schedulers and samplers */

typedef enum sched_kind {
    SCHED_DDPM,
    SCHED_DDIM,
    SCHED_DPMPP_2M,
} sched_kind;

typedef enum sched_beta {
    SCHED_BETA_LINEAR,
    SCHED_BETA_SCALED_LINEAR,
    SCHED_BETA_COSINE, /* squaredcos_cap_v2 */
} sched_beta;

typedef enum sched_pred {
    SCHED_PRED_EPSILON,
    SCHED_PRED_V,
    SCHED_PRED_SAMPLE,
} sched_pred;

typedef enum sched_spacing {
    SCHED_SPACING_LEADING,
    SCHED_SPACING_TRAILING,
    SCHED_SPACING_LINSPACE,
} sched_spacing;

typedef enum sched_variance {
    SCHED_VARIANCE_FIXED_SMALL,
    SCHED_VARIANCE_FIXED_LARGE,
} sched_variance;

/* A diffusers scheduler_config.json, with diffusers' defaults for absent fields. */
typedef struct sched_config {
    sched_kind kind;
    int num_train_timesteps;
    double beta_start; /* double: diffusers takes its square root in float64 (scaled_linear) */
    double beta_end;
    sched_beta beta_schedule;
    sched_pred prediction_type;
    sched_spacing timestep_spacing;
    int steps_offset;
    int clip_sample;
    float clip_sample_range;
    int thresholding;
    float dynamic_thresholding_ratio;
    float sample_max_value;
    sched_variance variance_type; /* DDPM */
    int set_alpha_to_one;         /* DDIM */
    float eta;                    /* DDIM: not a config field, a call argument in diffusers */
    int solver_order;             /* DPM-Solver++ */
    int lower_order_final;        /* DPM-Solver++ */
    int euler_at_final;           /* DPM-Solver++ */
    int final_sigmas_zero;        /* DPM-Solver++: final_sigmas_type "zero" (1) or "sigma_min" */
    int rescale_betas_zero_snr;
} sched_config;

/* diffusers' defaults for the given scheduler class. */
void sched_config_default(sched_kind kind, sched_config *c);
/* Parse a scheduler_config.json; "_class_name" picks the kind. Errors name file and field. */
int sched_config_load(const char *path, sched_config *c, strata_err *e);
/* Parse a sampler name: "ddpm", "ddim", "dpm++2m". Returns 0 or ERR_INPUT. */
int sched_kind_parse(const char *name, sched_kind *kind);

typedef struct sampler sampler_t;

/* A sampler for num_steps inference steps over tensors of `numel` floats made of `images`
 * images of equal size (thresholding works per image). */
int sampler_new(const sched_config *c, int num_steps, size_t numel, int images, sampler_t **out,
                strata_err *e);
/* NULL is a no-op. */
void sampler_free(sampler_t *s);
/* The num_steps it was made with. */
int sampler_num_steps(const sampler_t *s);
/* The model timestep of step i (0 <= i < num_steps). */
float sampler_timestep(const sampler_t *s, int i);
/* Scale applied to the initial N(0, 1) noise (diffusers' init_noise_sigma). */
float sampler_init_sigma(const sampler_t *s);
/* 1 when step i draws fresh noise (DDPM variance, DDIM with eta > 0). */
int sampler_step_needs_noise(const sampler_t *s, int i);
/* Step i: sample <- scheduler.step(model_out, t_i, sample). noise (numel floats) is used when
 * sampler_step_needs_noise() says so and may be NULL otherwise. */
int sampler_step(sampler_t *s, int i, const float *model_out, float *sample, const float *noise,
                 strata_err *e);
/* Forward diffusion q(x_t | x_0) at training timestep t: out = sqrt(abar) x0 + sqrt(1-abar) n. */
void sched_add_noise(const sched_config *c, int t, const float *x0, const float *noise, float *out,
                     size_t numel);

/* ---------------------------------------------------------------- benchmarks (strata bench) */

/* GFLOP/s of one 3x3 (k=3, padding 1) or 1x1 convolution of batch images of cin x h x w as
 * the UNet runs it (shifted GEMMs or im2col + GEMM, see kernels/conv.c), on `threads` threads. */
int kernels_bench_conv(int cin, int cout, int k, int h, int w, int batch, int threads, int iters,
                       double *gflops);
/* The same for any stride (padding k/2 on every side, as diffusers' Downsample2D with padding 1):
 * GFLOP/s counted on the output's h x w. */
int kernels_bench_conv_strided(int cin, int cout, int k, int stride, int h, int w, int batch,
                               int threads, int iters, double *gflops);
/* GFLOP/s of one plain OpenBLAS sgemm (m x k times k x n) on `threads` OpenBLAS threads. */
int kernels_bench_sgemm(int m, int n, int k, int threads, int iters, double *gflops);
/* One GEMM the engine asked for: row-major (m x k) times (k x n), operands transposed or not;
 * winograd: one of the 36 of a Winograd F(4x4, 3x3) band, whose multiply-adds stand for
 * KERNELS_WINOGRAD_WORK times as many of the direct convolution (the work PyTorch does for the
 * same layer: 9 x 16 products a 4x4 tile, against Winograd's 36). */
#define KERNELS_WINOGRAD_WORK 4.0
typedef struct kernels_gemm {
    int m, n, k, trans_a, trans_b, winograd;
} kernels_gemm;
/* Records the GEMMs of the engine from now on into log (at most cap; NULL stops). Returns how
 * many there were since the last start, even past cap. Not for use while a forward runs. */
int kernels_trace_gemms(kernels_gemm *log, int cap);
/* Milliseconds to run these GEMMs one after another as plain OpenBLAS sgemm calls on
 * `threads` threads (the better of OpenBLAS's threading and strata's split), nothing else:
 * what they cost without im2col or any other op. The fastest of iters passes after a warm-up,
 * as bench unet's min_ms. */
int kernels_bench_gemms(const kernels_gemm *g, int count, int threads, int iters, double *ms);

#endif
