/* The products of cpu_cells.c (included by it, built with it; cpu_build hashes both files): the BLAS
 * PyTorch runs on (sgemm_ / dgemm_ and MKL's packed GEMM, pointers set by cpu_build at load), and a
 * register-blocked loop for a step's few rows. */
#ifndef XF_CPU_MM_H
#define XF_CPU_MM_H
#include <stdlib.h>
#include <string.h>

typedef void (*sgemm_t)(const char *, const char *, const int *, const int *, const int *, const float *,
                        const float *, const int *, const float *, const int *, const float *, float *, const int *);
typedef void (*dgemm_t)(const char *, const char *, const int *, const int *, const int *, const double *,
                        const double *, const int *, const double *, const int *, const double *, double *,
                        const int *);
static sgemm_t sgemm_p;
static dgemm_t dgemm_p;

typedef size_t (*pack_size_t)(int, int, int, int);
typedef void (*spack_t)(int, int, int, int, int, int, float, const float *, int, float *);
typedef void (*dpack_t)(int, int, int, int, int, int, double, const double *, int, double *);
typedef void (*scompute_t)(int, int, int, int, int, int, const float *, int, const float *, int, float, float *, int);
typedef void (*dcompute_t)(int, int, int, int, int, int, const double *, int, const double *, int, double, double *,
                           int);
static pack_size_t spack_size_p, dpack_size_p;
static spack_t spack_p;
static dpack_t dpack_p;
static scompute_t scompute_p;
static dcompute_t dcompute_p;

/* MKL's packed GEMM (cblas_?gemm_pack_get_size, _pack, _compute), or NULLs where the BLAS lacks it. */
void xf_set_packed(void *ssize, void *spack, void *scompute, void *dsize, void *dpack, void *dcompute) {
    spack_size_p = (pack_size_t)ssize;
    spack_p = (spack_t)spack;
    scompute_p = (scompute_t)scompute;
    dpack_size_p = (pack_size_t)dsize;
    dpack_p = (dpack_t)dpack;
    dcompute_p = (dcompute_t)dcompute;
}

void xf_set_blas(void *s, void *d) {
    sgemm_p = (sgemm_t)s;
    dgemm_p = (dgemm_t)d;
}

/* Row-major out[rows, n] (leading dim ldo) = beta * out + a[rows, k] (lda) @ m[k, n] (ldm), beta 0 or 1.
 * Up to SMALL_ROWS rows (the batch of one step) a register-blocked loop here: 4 rows by 4 vectors of
 * accumulators, one pass over m; it is about 1.6x faster than MKL's sgemm_ at 4 x 64 x 256 (its
 * call overhead dominates there). More rows go to the BLAS. */
#define SMALL_ROWS 8
#define DEFINE_MM(T, S, LANES, GEMM, PACK_SIZE, PACK, COMPUTE)                                                       \
    typedef T v_##S __attribute__((vector_size(64), aligned(sizeof(T)), may_alias));                                 \
    /* NB (1-4, a constant at each call: the accumulators stay in registers) rows of the product. */                 \
    static inline __attribute__((always_inline)) void rows_##S(const int NB, int k, int n, const T *a, int lda,      \
                                                                const T *m, int ldm, T beta, T *out, int ldo) {      \
        int j = 0;                                                                                                   \
        for (; j + 4 * LANES <= n; j += 4 * LANES) {                                                                 \
            v_##S acc[4][4] = {{{0}}}, mv[4];                                                                        \
            if (beta != 0)                                                                                           \
                for (int r = 0; r < NB; r++)                                                                         \
                    for (int q = 0; q < 4; q++) acc[r][q] = *(const v_##S *)(out + r * ldo + j + LANES * q);         \
            for (int kk = 0; kk < k; kk++) {                                                                         \
                for (int q = 0; q < 4; q++) mv[q] = *(const v_##S *)(m + (long)kk * ldm + j + LANES * q);            \
                for (int r = 0; r < NB; r++) {                                                                       \
                    T s = a[r * lda + kk];                                                                           \
                    for (int q = 0; q < 4; q++) acc[r][q] += s * mv[q];                                              \
                }                                                                                                    \
            }                                                                                                        \
            for (int r = 0; r < NB; r++)                                                                             \
                for (int q = 0; q < 4; q++) *(v_##S *)(out + r * ldo + j + LANES * q) = acc[r][q];                   \
        }                                                                                                            \
        for (; j + LANES <= n; j += LANES) {                                                                         \
            v_##S acc[4] = {{0}}, mv;                                                                                \
            if (beta != 0)                                                                                           \
                for (int r = 0; r < NB; r++) acc[r] = *(const v_##S *)(out + r * ldo + j);                           \
            for (int kk = 0; kk < k; kk++) {                                                                         \
                mv = *(const v_##S *)(m + (long)kk * ldm + j);                                                       \
                for (int r = 0; r < NB; r++) acc[r] += a[r * lda + kk] * mv;                                         \
            }                                                                                                        \
            for (int r = 0; r < NB; r++) *(v_##S *)(out + r * ldo + j) = acc[r];                                     \
        }                                                                                                            \
        for (; j < n; j++)                                                                                           \
            for (int r = 0; r < NB; r++) {                                                                           \
                T acc = beta != 0 ? out[r * ldo + j] : 0;                                                            \
                for (int kk = 0; kk < k; kk++) acc += a[r * lda + kk] * m[(long)kk * ldm + j];                       \
                out[r * ldo + j] = acc;                                                                              \
            }                                                                                                        \
    }                                                                                                                \
    static void small_##S(int rows, int k, int n, const T *a, int lda, const T *m, int ldm, T beta, T *out,          \
                          int ldo) {                                                                                 \
        int b = 0;                                                                                                   \
        for (; b + 4 <= rows; b += 4) rows_##S(4, k, n, a + b * lda, lda, m, ldm, beta, out + b * ldo, ldo);         \
        switch (rows - b) {                                                                                          \
        case 3: rows_##S(3, k, n, a + b * lda, lda, m, ldm, beta, out + b * ldo, ldo); break;                        \
        case 2: rows_##S(2, k, n, a + b * lda, lda, m, ldm, beta, out + b * ldo, ldo); break;                        \
        case 1: rows_##S(1, k, n, a + b * lda, lda, m, ldm, beta, out + b * ldo, ldo); break;                        \
        default: break;                                                                                              \
        }                                                                                                            \
    }                                                                                                                \
    static void mm_##S(int rows, int k, int n, const T *a, int lda, const T *m, int ldm, T beta, T *out,             \
                       int ldo) {                                                                                    \
        if (rows <= SMALL_ROWS) {                                                                                    \
            small_##S(rows, k, n, a, lda, m, ldm, beta, out, ldo);                                                   \
            return;                                                                                                  \
        }                                                                                                            \
        const T one = 1;                                                                                             \
        GEMM("N", "N", &n, &rows, &k, &one, m, &ldm, a, &lda, &beta, out, &ldo);                                     \
    }                                                                                                                \
    /* A recurrent matrix m [k, n] (ldm) of one call: packed once for the BLAS (MKL's cblas_?gemm_pack, where        \
       libtorch_cpu has it) when its products have more rows than SMALL_ROWS; a product with the rows it was         \
       packed for computes from the packed form, any other row count from m. */                                      \
    typedef struct {                                                                                                 \
        const T *m;                                                                                                  \
        T *packed;                                                                                                   \
        int rows, k, n, ldm;                                                                                         \
    } rec_##S;                                                                                                       \
    static rec_##S rec_open_##S(int rows, int k, int n, const T *m, int ldm) {                                       \
        rec_##S r = {m, NULL, rows, k, n, ldm};                                                                      \
        if (rows > SMALL_ROWS && PACK_SIZE && PACK && COMPUTE) {                                                     \
            r.packed = (T *)malloc(PACK_SIZE(162, rows, n, k)); /* CblasBMatrix */                                   \
            if (r.packed) PACK(101, 162, 111, rows, n, k, 1, m, ldm, r.packed); /* CblasRowMajor, CblasNoTrans */    \
        }                                                                                                            \
        return r;                                                                                                    \
    }                                                                                                                \
    static void rec_close_##S(rec_##S *r) { free(r->packed); }                                                       \
    /* out[rows, n] = beta * out + a[rows, k] @ m */                                                                 \
    static void rec_mm_##S(const rec_##S *r, int rows, const T *a, int lda, T beta, T *out, int ldo) {               \
        if (r->packed && rows == r->rows) {                                                                          \
            COMPUTE(101, 111, 151, rows, r->n, r->k, a, lda, r->packed, r->ldm, beta, out, ldo); /* CblasPacked */   \
            return;                                                                                                  \
        }                                                                                                            \
        mm_##S(rows, r->k, r->n, a, lda, r->m, r->ldm, beta, out, ldo);                                              \
    }

DEFINE_MM(float, f, 16, sgemm_p, spack_size_p, spack_p, scompute_p)
DEFINE_MM(double, d, 8, dgemm_p, dpack_size_p, dpack_p, dcompute_p)

#endif
