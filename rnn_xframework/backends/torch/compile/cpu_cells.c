/* The recurrences of one LSTM or GRU layer (and, in the block at the end, SimpleRNN) over a whole sequence,
 * forward and backward, for rnn_xframework.backends.torch.compile.cpu (which documents the contract and
 * builds this file).
 *
 * Buffers are time-major and contiguous. ``xp [T, B, G*H]`` is the layer's input projection (the
 * input bias included; LSTM: both biases); ``w [G*H, H]`` is PyTorch's ``weight_hh``, ``u [H, G*H]``
 * its transpose (contiguous); gate blocks in PyTorch's order (LSTM i, f, g, o; GRU r, z, n).
 * Per step: one product by the recurrent kernel (two for GRU reset_after=False) and one
 * elementwise pass. Large products go to the BLAS PyTorch runs on (``sgemm_`` / ``dgemm_``, resolved
 * from libtorch_cpu); a step's small ones to ``cpu_mm.h``'s register-blocked loop. */
/* glibc declares its vector math (libmvec: expf, tanhf, ... on 4/8/16 lanes, within a few ulp) only
 * under __FAST_MATH__; defined here for math.h alone, so the loops vectorize without -ffast-math's
 * changes to NaN and infinity handling. Elsewhere the loops stay scalar, with the same results. */
#if defined(__GLIBC__) || defined(__linux__)
#define __FAST_MATH__ 1
#include <math.h>
#undef __FAST_MATH__
#else
#include <math.h>
#endif
#include "cpu_mm.h"
#include <sched.h>
#ifdef _OPENMP
#include <omp.h>
#endif

/* A step's elementwise pass, row by row, on the OpenMP threads PyTorch's BLAS runs on (built with
 * -fopenmp, this library uses the libgomp libtorch_cpu loaded: one thread pool), where the pass has
 * at least parallel_min elements (enough to pay for the fork: cpu_build.PARALLEL_MIN); built without
 * OpenMP, a plain loop. Rows are independent: the same results either way.
 * Uses the names nb (rows) and g (gate columns) of the functions below. */
static long parallel_min = 0x7fffffffffffffffL; /* one thread until cpu_build sets its PARALLEL_MIN */
void xf_set_parallel_min(long n) { parallel_min = n; }
int xf_openmp(void) {
#ifdef _OPENMP
    return 1;
#else
    return 0;
#endif
}
#define PARALLEL_ROWS _Pragma("omp parallel for if ((long)nb * g >= parallel_min) schedule(static)")

/* The first row of step t in a forward buffer. With ``packed`` (and ``active``): bit 1, xp holds only the
 * real rows, step after step (xp [N, G*H], N = sum(active): step t's rows from off = sum(active[:t]) on,
 * PackedSequence's layout); bit 2, y too (y [N, H]; the held rows are not written: the next layer's input,
 * packed). Without, [T, B, ...]: t * B. */
static inline long row0(int packed, int bit, long off, int t, int batch) {
    return (packed & bit) ? off : (long)t * batch;
}

/* Two layers of one call pipelined on two threads (xf_lstm2_fwd): the upper layer's thread waits, step by
 * step, for the lower layer's output of that step (published with a release store of the steps done). It
 * spins, yielding the core now and then, so a machine with other work keeps going. */
static inline void wait_steps(const int *done, int t) {
    for (int spins = 0; __atomic_load_n(done, __ATOMIC_ACQUIRE) <= t; spins++) {
        if (spins >= 4096) {
            sched_yield();
            spins = 0;
        } else {
#if defined(__x86_64__) || defined(__i386__)
            __builtin_ia32_pause();
#endif
        }
    }
}
/* Runs lower(arg) and upper(arg) at once on two OpenMP threads where threads >= 2 and the runtime gives a team
 * of two, else one after the other; returns the number of threads that ran them. */
static int run_pipelined(void (*lower)(void *), void (*upper)(void *), void *arg, int threads) {
    int ran = 1;
#ifdef _OPENMP
    if (threads >= 2) {
#pragma omp parallel num_threads(2)
        {
            const int team = omp_get_num_threads();
            if (omp_get_thread_num() == 0) {
                ran = team;
                lower(arg);
                if (team < 2) upper(arg);
            } else {
                upper(arg);
            }
        }
        return ran;
    }
#else
    (void)threads;
#endif
    lower(arg);
    upper(arg);
    return ran;
}

#define DEFINE_ALL(T, S, EXP, TANH, ONE)                                                                             \
    static inline T sig_##S(T v) { return ONE / (ONE + EXP(-v)); }                                                   \
                                                                                                                     \
    /* With ``active`` (right-padded batches, rows longest first): at step t the rows from active[t] on              \
       take an identity step: forward, the state is held and the output is the held state (hold_rows);               \
       backward, their dh passes through plus dy (pass_rows) and the gradients of their step are zeros. */           \
    static void hold_rows_##S(int nb, int batch, int width, const T *from, T *to) {                                  \
        if (nb < batch) memcpy(to + (long)nb * width, from + (long)nb * width, sizeof(T) * (batch - nb) * width);    \
    }                                                                                                                \
    static void zero_rows_##S(int nb, int batch, int width, T *buf) {                                                \
        if (nb < batch) memset(buf + (long)nb * width, 0, sizeof(T) * (batch - nb) * width);                         \
    }                                                                                                                \
    static void pass_rows_##S(int nb, int batch, int hid, const T *dy, T *dh) {                                      \
        for (long k = (long)nb * hid; k < (long)batch * hid; k++) dh[k] += dy[k];                                    \
    }                                                                                                                \
    /* With ``lengths`` instead (int32 [B], rows in any order; forward without save only): every row is              \
       computed, then the rows past their length (t >= lengths[b]) take the held state back. */                     \
    static void hold_past_##S(int t, int batch, int width, const int *lengths, const T *from, T *to) {               \
        if (lengths)                                                                                                 \
            for (int b = 0; b < batch; b++)                                                                          \
                if (t >= lengths[b]) memcpy(to + (long)b * width, from + (long)b * width, sizeof(T) * width);        \
    }                                                                                                                \
    /* zero_output_for_mask: y [steps, batch, width] (strides st, sb in elements; rows contiguous) zeroed at         \
       the steps t >= max(from, cut[b]) of each row b. */                                                            \
    void xf_zero_past_##S(int from, int steps, int batch, int width, long st, long sb, const int *cut, T *y) {       \
        for (int b = 0; b < batch; b++)                                                                              \
            for (int t = cut[b] > from ? cut[b] : from; t < steps; t++)                                              \
                memset(y + t * st + b * sb, 0, sizeof(T) * width);                                                   \
    }                                                                                                                \
                                                                                                                     \
    /* One row of an LSTM step: zb [4H] holds the recurrent product, xb [4H] the input projection; zb becomes    \
       the activated gates (i, f, g, o), and the new cell state, tanh of it and the output go to cn, th, yb. */        \
    static inline __attribute__((always_inline)) void lstm_row_##S(int hid, const T *xb, T *zb, const T *cb, T *cn,  \
                                                                   T *th, T *yb) {                                   \
        const int g = 4 * hid;                                                                                       \
        _Pragma("omp simd") for (int j = 0; j < 2 * hid; j++) zb[j] = sig_##S(xb[j] + zb[j]);                        \
        _Pragma("omp simd") for (int j = 2 * hid; j < 3 * hid; j++) zb[j] = TANH(xb[j] + zb[j]);                     \
        _Pragma("omp simd") for (int j = 3 * hid; j < g; j++) zb[j] = sig_##S(xb[j] + zb[j]);                        \
        _Pragma("omp simd") for (int j = 0; j < hid; j++) {                                                          \
            T c_new = zb[hid + j] * cb[j] + zb[j] * zb[2 * hid + j];                                                 \
            cn[j] = c_new;                                                                                           \
            T t_new = TANH(c_new);                                                                                   \
            th[j] = t_new;                                                                                           \
            yb[j] = zb[3 * hid + j] * t_new;                                                                         \
        }                                                                                                            \
    }                                                                                                                \
                                                                                                                     \
    /* LSTM forward: y [T,B,H]; with save (for the backward) cs [T,B,H] cell states, act [T,B,4H] activated          \
       gates, tc [T,B,H] tanh(c); without, scratch: cs [2,B,H] (the last c in cs[(T-1)%2]), act [B,4H], tc [B,H].    \
       active: NULL or [T] (see hold_rows); lengths: NULL or [B] (see hold_past); packed (see row0). */              \
    void xf_lstm_fwd_##S(int steps, int batch, int hid, int save, const T *xp, const T *u, const T *h0, const T *c0, \
                         T *y, T *cs, T *act, T *tc, const int *active, const int *lengths, int packed) {            \
        const int g = 4 * hid;                                                                                       \
        const T *h = h0, *c = c0;                                                                                    \
        long off = 0; /* packed rows before step t */                                                                \
        rec_##S ru = rec_open_##S(batch, hid, g, u, g);                                                              \
        for (int t = 0; t < steps; t++) {                                                                            \
            const int nb = active ? active[t] : batch;                                                               \
            const T *xt = xp + row0(packed, 1, off, t, batch) * g;                                                   \
            T *z = save ? act + (long)t * batch * g : act;                                                           \
            rec_mm_##S(&ru, nb, h, hid, 0, z, g);                                                                    \
            T *yt = y + row0(packed, 2, off, t, batch) * hid, *ct = cs + (long)(save ? t : t & 1) * batch * hid;     \
            T *tt = save ? tc + (long)t * batch * hid : tc;                                                          \
            if (!(packed & 2)) hold_rows_##S(nb, batch, hid, h, yt);                                                 \
            hold_rows_##S(nb, batch, hid, c, ct);                                                                    \
            PARALLEL_ROWS                                                                                            \
            for (int b = 0; b < nb; b++) {                                                                           \
                lstm_row_##S(hid, xt + b * g, z + b * g, c + b * hid, ct + b * hid, tt + b * hid, yt + b * hid);     \
            }                                                                                                        \
            hold_past_##S(t, batch, hid, lengths, h, yt);                                                            \
            hold_past_##S(t, batch, hid, lengths, c, ct);                                                            \
            h = yt;                                                                                                  \
            c = ct;                                                                                                  \
            off += nb;                                                                                               \
        }                                                                                                            \
        rec_close_##S(&ru);                                                                                          \
    }                                                                                                                \
                                                                                                                     \
    /* xt [B, g] = bias (or 0) + x [B, k] @ v [k, g]: a step's input projection (v = W_ih^T). */                    \
    static inline void project_step_##S(const rec_##S *rv, int batch, int g, const T *bias, const T *x, int k,       \
                                        T *xt) {                                                                     \
        for (int b = 0; b < batch; b++)                                                                              \
            if (bias) memcpy(xt + b * g, bias, sizeof(T) * g);                                                       \
            else memset(xt + b * g, 0, sizeof(T) * g);                                                               \
        rec_mm_##S(rv, batch, x, k, 1, xt, g);                                                                       \
    }                                                                                                                \
                                                                                                                     \
    /* Two LSTM layers, forward without save, every row real, batch <= SMALL_ROWS (W1's shapes: there one          \
       layer's step is a few microseconds and a torch call as long), pipelined (run_pipelined): the lower layer   \
       projects its step t, x_t @ v1 + b1 (x [T,B,F] time-major, b1 [4H1] both biases or NULL), and runs it into \
       y1 [T,B,H1]; the upper one projects y1_t (y1_t @ v2 + b2) as soon as y1_t is done, then runs its step     \
       into y2 [T,B,H2]. The matrices come transposed: v1 [F,4H1], v2 [H1,4H2] the weight_ih^T, u1 [H1,4H1],     \
       u2 [H2,4H2] the weight_hh^T. cs1 [2,B,H1] / cs2 [2,B,H2]: the cell states (the                            \
       last in cs[(T-1)%2]); work: B*(9H1 + 9H2) elements of scratch; lengths: NULL or int32 [B] (hold_past, both \
       layers). Returns the number of threads that ran. */                                                          \
    typedef struct {                                                                                                 \
        int steps, batch, f, h1, h2;                                                                                 \
        const T *x, *v1, *b1, *u1, *v2, *b2, *u2, *h01, *c01, *h02, *c02;                                            \
        T *y1, *y2, *cs1, *cs2, *work;                                                                               \
        const int *lengths;                                                                                          \
        int done __attribute__((aligned(64))); /* steps of y1 done: on a cache line of its own */                    \
        char pad[60];                                                                                                \
    } lstm2_##S;                                                                                                     \
    /* One step's gates of a pipelined layer, every row (lstm_row), then the rows past their length held. */        \
    static inline void lstm2_step_##S(int t, int batch, int hid, const T *xt, T *z, const T *h, const T *c, T *ct,   \
                                      T *tt, T *yt, const int *lengths) {                                            \
        const int g = 4 * hid;                                                                                       \
        for (int b = 0; b < batch; b++)                                                                              \
            lstm_row_##S(hid, xt + b * g, z + b * g, c + b * hid, ct + b * hid, tt + b * hid, yt + b * hid);         \
        hold_past_##S(t, batch, hid, lengths, h, yt);                                                                \
        hold_past_##S(t, batch, hid, lengths, c, ct);                                                                \
    }                                                                                                                \
    static void lstm2_lower_##S(void *arg) {                                                                         \
        lstm2_##S *p = (lstm2_##S *)arg;                                                                             \
        const int hid = p->h1, g = 4 * hid, batch = p->batch, f = p->f;                                              \
        T *z = p->work, *xt = z + batch * g, *tt = xt + batch * g;                                                   \
        const T *h = p->h01, *c = p->c01;                                                                            \
        rec_##S ru = rec_open_##S(batch, hid, g, p->u1, g), rv = rec_open_##S(batch, f, g, p->v1, g);                \
        for (int t = 0; t < p->steps; t++) {                                                                         \
            project_step_##S(&rv, batch, g, p->b1, p->x + (long)t * batch * f, f, xt);                               \
            rec_mm_##S(&ru, batch, h, hid, 0, z, g);                                                                 \
            T *yt = p->y1 + (long)t * batch * hid, *ct = p->cs1 + (long)(t & 1) * batch * hid;                       \
            lstm2_step_##S(t, batch, hid, xt, z, h, c, ct, tt, yt, p->lengths);                                      \
            h = yt;                                                                                                  \
            c = ct;                                                                                                  \
            __atomic_store_n(&p->done, t + 1, __ATOMIC_RELEASE);                                                     \
        }                                                                                                            \
        rec_close_##S(&ru);                                                                                          \
        rec_close_##S(&rv);                                                                                          \
    }                                                                                                                \
    static void lstm2_upper_##S(void *arg) {                                                                         \
        lstm2_##S *p = (lstm2_##S *)arg;                                                                             \
        const int hid = p->h2, g = 4 * hid, batch = p->batch, below = p->h1;                                         \
        T *z = p->work + 9L * batch * below, *xt = z + batch * g, *tt = xt + batch * g;                              \
        const T *h = p->h02, *c = p->c02;                                                                            \
        rec_##S ru = rec_open_##S(batch, hid, g, p->u2, g), rv = rec_open_##S(batch, below, g, p->v2, g);            \
        for (int t = 0; t < p->steps; t++) {                                                                         \
            wait_steps(&p->done, t);                                                                                 \
            project_step_##S(&rv, batch, g, p->b2, p->y1 + (long)t * batch * below, below, xt);                      \
            rec_mm_##S(&ru, batch, h, hid, 0, z, g);                                                                 \
            T *yt = p->y2 + (long)t * batch * hid, *ct = p->cs2 + (long)(t & 1) * batch * hid;                       \
            lstm2_step_##S(t, batch, hid, xt, z, h, c, ct, tt, yt, p->lengths);                                      \
            h = yt;                                                                                                  \
            c = ct;                                                                                                  \
        }                                                                                                            \
        rec_close_##S(&ru);                                                                                          \
        rec_close_##S(&rv);                                                                                          \
    }                                                                                                                \
    int xf_lstm2_fwd_##S(int steps, int batch, int f, int h1, int h2, int threads, const T *x, const T *v1,          \
                         const T *b1, const T *u1, const T *v2, const T *b2, const T *u2, const T *h01,              \
                         const T *c01, const T *h02, const T *c02, T *y1, T *y2, T *cs1, T *cs2, T *work,            \
                         const int *lengths) {                                                                       \
        lstm2_##S p = {steps, batch, f,   h1,  h2,  x,   v1,   b1,   u1,      v2, b2, u2, h01,                       \
                       c01,   h02,   c02, y1,  y2,  cs1, cs2,  work, lengths, 0,  {0}};                              \
        return run_pipelined(lstm2_lower_##S, lstm2_upper_##S, &p, threads);                                         \
    }                                                                                                                \
                                                                                                                     \
    /* Two independent LSTM layers (a Bidirectional's directions) at once, each xf_lstm_fwd with its own          \
       arguments (a: the first's, b: the second's, in xf_lstm_fwd's order; forward without save, rows in their     \
       own order), on two threads (run_pipelined: nothing to wait for). Returns the number of threads that ran. */ \
    typedef struct {                                                                                                 \
        int steps, batch, hid;                                                                                       \
        const T *xp, *u, *h0, *c0;                                                                                   \
        T *y, *cs, *act, *tc;                                                                                        \
    } lstm1_##S;                                                                                                     \
    static void lstm1_run_##S(void *arg) {                                                                           \
        const lstm1_##S *p = (const lstm1_##S *)arg;                                                                 \
        xf_lstm_fwd_##S(p->steps, p->batch, p->hid, 0, p->xp, p->u, p->h0, p->c0, p->y, p->cs, p->act, p->tc, NULL,  \
                        NULL, 0);                                                                                    \
    }                                                                                                                \
    static void lstm1_pair_a_##S(void *arg) { lstm1_run_##S((lstm1_##S *)arg); }                                     \
    static void lstm1_pair_b_##S(void *arg) { lstm1_run_##S((lstm1_##S *)arg + 1); }                                 \
    int xf_lstm_fwd_both_##S(int threads, int steps, int batch, int hid_a, int hid_b, const T *xp_a, const T *u_a,   \
                             const T *h0_a, const T *c0_a, T *y_a, T *cs_a, T *act_a, T *tc_a, const T *xp_b,       \
                             const T *u_b, const T *h0_b, const T *c0_b, T *y_b, T *cs_b, T *act_b, T *tc_b) {      \
        lstm1_##S p[2] = {{steps, batch, hid_a, xp_a, u_a, h0_a, c0_a, y_a, cs_a, act_a, tc_a},                      \
                          {steps, batch, hid_b, xp_b, u_b, h0_b, c0_b, y_b, cs_b, act_b, tc_b}};                     \
        return run_pipelined(lstm1_pair_a_##S, lstm1_pair_b_##S, p, threads);                                        \
    }                                                                                                                \
                                                                                                                     \
    /* LSTM backward: dy [T,B,H] grads of y, dh/dc [B,H] in: grads of the final states, out: of h0, c0;              \
       dz [T,B,4H] out: grads of the pre-activations (= of xp). w [4H,H]. */                                         \
    void xf_lstm_bwd_##S(int steps, int batch, int hid, const T *w, const T *c0, const T *cs, const T *act,          \
                         const T *tc, T *dy, T *dh, T *dc, T *dz, const int *active) {                               \
        const int g = 4 * hid;                                                                                       \
        rec_##S rw = rec_open_##S(batch, g, hid, w, hid);                                                            \
        for (int t = steps - 1; t >= 0; t--) {                                                                       \
            const T *a = act + (long)t * batch * g, *tt = tc + (long)t * batch * hid;                                \
            const T *cp = t > 0 ? cs + (long)(t - 1) * batch * hid : c0;                                             \
            T *d = dz + (long)t * batch * g, *dyt = dy + (long)t * batch * hid;                                      \
            const int nb = active ? active[t] : batch;                                                               \
            pass_rows_##S(nb, batch, hid, dyt, dh);                                                                  \
            zero_rows_##S(nb, batch, g, d);                                                                          \
            PARALLEL_ROWS                                                                                            \
            for (int b = 0; b < nb; b++) {                                                                           \
                const T *ab = a + b * g;                                                                             \
                T *db = d + b * g;                                                                                   \
                _Pragma("omp simd") for (int j = 0; j < hid; j++) {                                                  \
                    int k = b * hid + j;                                                                             \
                    T i = ab[j], f = ab[hid + j], gg = ab[2 * hid + j], o = ab[3 * hid + j], th = tt[k];             \
                    T dhv = dyt[k] + dh[k];                                                                          \
                    T dcv = dc[k] + dhv * o * (ONE - th * th);                                                       \
                    db[j] = dcv * gg * i * (ONE - i);                                                                \
                    db[hid + j] = dcv * cp[k] * f * (ONE - f);                                                       \
                    db[2 * hid + j] = dcv * i * (ONE - gg * gg);                                                     \
                    db[3 * hid + j] = dhv * th * o * (ONE - o);                                                      \
                    dc[k] = dcv * f;                                                                                 \
                }                                                                                                    \
            }                                                                                                        \
            rec_mm_##S(&rw, nb, d, g, 0, dh, hid);                                                                   \
        }                                                                                                            \
        rec_close_##S(&rw);                                                                                          \
    }                                                                                                                \
                                                                                                                     \
    /* GRU forward. after=1 (reset_after): hu = h @ u + bhh, n = tanh(xn + r * hu_n), saved hn [T,B,H] =             \
       hu_n. after=0: r, z from h @ u_rz + bhh_rz; n = tanh(xn + (r*h) @ u_n + bhh_n), saved hn = r*h.               \
       act [T,B,3H]: r, z, n activated; hu [B,3H] scratch. Without save, act [B,3H] and hn [B,H] are scratch.        \
       active: NULL or [T] (see hold_rows); lengths: NULL or [B] (see hold_past); packed (see row0). */              \
    void xf_gru_fwd_##S(int steps, int batch, int hid, int after, int save, const T *xp, const T *u, const T *bhh,   \
                        const T *h0, T *y, T *act, T *hn, T *hu, const int *active, const int *lengths, int packed) {\
        const int g = 3 * hid;                                                                                       \
        const T *h = h0;                                                                                             \
        long off = 0;                                                                                                \
        rec_##S ru = rec_open_##S(batch, hid, after ? g : 2 * hid, u, g);                                            \
        rec_##S rn = rec_open_##S(after ? 0 : batch, hid, hid, u + 2 * hid, g); /* reset_after=False's candidate */  \
        for (int t = 0; t < steps; t++) {                                                                            \
            const int nb = active ? active[t] : batch;                                                               \
            const T *x = xp + row0(packed, 1, off, t, batch) * g;                                                    \
            T *a = save ? act + (long)t * batch * g : act, *hnt = save ? hn + (long)t * batch * hid : hn;            \
            T *yt = y + row0(packed, 2, off, t, batch) * hid;                                                        \
            if (!(packed & 2)) hold_rows_##S(nb, batch, hid, h, yt);                                                 \
            if (save) zero_rows_##S(nb, batch, hid, hnt); /* read by the weight gradient (times zeros) */            \
            rec_mm_##S(&ru, nb, h, hid, 0, hu, g);                                                                   \
            PARALLEL_ROWS                                                                                            \
            for (int b = 0; b < nb; b++) {                                                                           \
                const T *xb = x + b * g, *hb = hu + b * g, *hp = h + b * hid;                                        \
                T *ab = a + b * g, *nt = hnt + b * hid, *yb = yt + b * hid;                                          \
                _Pragma("omp simd") for (int j = 0; j < 2 * hid; j++) ab[j] = sig_##S(xb[j] + (hb[j] + bhh[j]));     \
                if (after) {                                                                                         \
                    _Pragma("omp simd") for (int j = 0; j < hid; j++) {                                              \
                        T hv = hb[2 * hid + j] + bhh[2 * hid + j], z = ab[hid + j];                                  \
                        T n = TANH(xb[2 * hid + j] + ab[j] * hv);                                                    \
                        nt[j] = hv;                                                                                  \
                        ab[2 * hid + j] = n;                                                                         \
                        yb[j] = z * hp[j] + (ONE - z) * n;                                                           \
                    }                                                                                                \
                } else {                                                                                             \
                    _Pragma("omp simd") for (int j = 0; j < hid; j++) nt[j] = ab[j] * hp[j];                         \
                }                                                                                                    \
            }                                                                                                        \
            if (!after) {                                                                                            \
                rec_mm_##S(&rn, nb, hnt, hid, 0, hu + 2 * hid, g);                                                   \
                PARALLEL_ROWS                                                                                        \
                for (int b = 0; b < nb; b++) {                                                                       \
                    const T *xb = x + b * g, *hb = hu + b * g, *hp = h + b * hid;                                    \
                    T *ab = a + b * g, *yb = yt + b * hid;                                                           \
                    _Pragma("omp simd") for (int j = 0; j < hid; j++) {                                              \
                        T z = ab[hid + j], n = TANH(xb[2 * hid + j] + (hb[2 * hid + j] + bhh[2 * hid + j]));         \
                        ab[2 * hid + j] = n;                                                                         \
                        yb[j] = z * hp[j] + (ONE - z) * n;                                                           \
                    }                                                                                                \
                }                                                                                                    \
            }                                                                                                        \
            hold_past_##S(t, batch, hid, lengths, h, yt);                                                            \
            h = yt;                                                                                                  \
            off += nb;                                                                                               \
        }                                                                                                            \
        rec_close_##S(&ru);                                                                                          \
        rec_close_##S(&rn);                                                                                          \
    }                                                                                                                \
                                                                                                                     \
    /* GRU backward: dy [T,B,H] grads of y, dh [B,H] in: grad of h_T, out: of h0; dx [T,B,3H] out: grads             \
       of xp; dhu [T,B,3H] out: grads of the recurrent products (+ bhh); drh [B,H] scratch; active as forward. */    \
    void xf_gru_bwd_##S(int steps, int batch, int hid, int after, const T *w, const T *h0, const T *y,               \
                        const T *act, const T *hn, T *dy, T *dh, T *dx, T *dhu, T *drh, const int *active) {         \
        const int g = 3 * hid;                                                                                       \
        rec_##S rw = rec_open_##S(batch, after ? g : 2 * hid, hid, w, hid);                                          \
        rec_##S rn = rec_open_##S(after ? 0 : batch, hid, hid, w + (long)2 * hid * hid, hid);                        \
        for (int t = steps - 1; t >= 0; t--) {                                                                       \
            const T *a = act + (long)t * batch * g, *hnt = hn + (long)t * batch * hid;                               \
            const T *hp = t > 0 ? y + (long)(t - 1) * batch * hid : h0;                                              \
            T *dxt = dx + (long)t * batch * g, *dht = dhu + (long)t * batch * g, *dyt = dy + (long)t * batch * hid;  \
            const int nb = active ? active[t] : batch;                                                               \
            pass_rows_##S(nb, batch, hid, dyt, dh);                                                                  \
            zero_rows_##S(nb, batch, g, dxt);                                                                        \
            zero_rows_##S(nb, batch, g, dht);                                                                        \
            PARALLEL_ROWS                                                                                            \
            for (int b = 0; b < nb; b++) {                                                                           \
                const T *ab = a + b * g;                                                                             \
                T *xb = dxt + b * g, *hb = dht + b * g;                                                              \
                _Pragma("omp simd") for (int j = 0; j < hid; j++) {                                                  \
                    int k = b * hid + j;                                                                             \
                    T r = ab[j], z = ab[hid + j], n = ab[2 * hid + j];                                               \
                    T dhv = dyt[k] + dh[k];                                                                          \
                    T dan = dhv * (ONE - z) * (ONE - n * n);                                                         \
                    xb[hid + j] = hb[hid + j] = dhv * (hp[k] - n) * z * (ONE - z);                                   \
                    xb[2 * hid + j] = dan;                                                                           \
                    /* no store under a condition (reset_after=False overwrites xb[j], hb[j] below): inside the      \
                       OpenMP region one compiled as a read and a masked write, each fresh row faulted twice */      \
                    hb[2 * hid + j] = after ? dan * r : dan;                                                         \
                    xb[j] = hb[j] = dan * hnt[k] * r * (ONE - r);                                                    \
                    dh[k] = dhv * z;                                                                                 \
                }                                                                                                    \
            }                                                                                                        \
            if (!after) {                                                                                            \
                rec_mm_##S(&rn, nb, dht + 2 * hid, g, 0, drh, hid);                                                  \
                PARALLEL_ROWS                                                                                        \
                for (int b = 0; b < nb; b++) {                                                                       \
                    const T *ab = a + b * g;                                                                         \
                    T *xb = dxt + b * g, *hb = dht + b * g;                                                          \
                    _Pragma("omp simd") for (int j = 0; j < hid; j++) {                                              \
                        int k = b * hid + j;                                                                         \
                        T r = ab[j];                                                                                 \
                        xb[j] = hb[j] = drh[k] * hp[k] * r * (ONE - r);                                              \
                        dh[k] += drh[k] * r;                                                                         \
                    }                                                                                                \
                }                                                                                                    \
            }                                                                                                        \
            rec_mm_##S(&rw, nb, dht, g, ONE, dh, hid);                                                               \
        }                                                                                                            \
        rec_close_##S(&rw);                                                                                          \
        rec_close_##S(&rn);                                                                                          \
    }

DEFINE_ALL(float, f, expf, tanhf, 1.0f)
DEFINE_ALL(double, d, exp, tanh, 1.0)

/* SimpleRNN: h_t = act(xp_t + h_{t-1} @ u), act tanh (relu = 0) or relu (relu = 1); ``xp [T,B,H]`` holds
 * both biases, ``u [H,H]`` is weight_hh^T, ``w [H,H]`` weight_hh. ``active``: NULL (every row real at every
 * step) or [T], as the LSTM / GRU functions (hold_rows): only the rows below active[t] are computed at step
 * t (the product's row count); the others take an identity step, the state held (forward: y_t's row is
 * h_{t-1}'s) and, backward, dh passing through plus dy, with a zero dz. ``lengths`` (forward): NULL or [B]
 * (hold_past). */
#define DEFINE_RNN(T, S, TANH, ONE)                                                                                  \
    /* SimpleRNN forward: y [T,B,H] (the outputs, which are the states; the backward reads them); y may be xp    \
       itself (written in place, packed alike or not). packed: see row0. */                                        \
    void xf_rnn_fwd_##S(int steps, int batch, int hid, int relu, const T *xp, const T *u, const T *h0, T *y,        \
                        const int *active, const int *lengths, int packed) {                                        \
        const int g = hid; /* one gate (PARALLEL_ROWS) */                                                           \
        const T *h = h0;                                                                                            \
        long off = 0;                                                                                               \
        rec_##S ru = rec_open_##S(batch, hid, hid, u, hid);                                                         \
        for (int t = 0; t < steps; t++) {                                                                           \
            const int nb = active ? active[t] : batch;                                                              \
            const T *xt = xp + row0(packed, 1, off, t, batch) * hid;                                                \
            T *yt = y + row0(packed, 2, off, t, batch) * hid;                                                       \
            if (yt != xt) memcpy(yt, xt, sizeof(T) * nb * hid);                                                     \
            rec_mm_##S(&ru, nb, h, hid, ONE, yt, hid);                                                              \
            if (!(packed & 2)) hold_rows_##S(nb, batch, hid, h, yt);                                                \
            PARALLEL_ROWS                                                                                           \
            for (int b = 0; b < nb; b++) {                                                                          \
                T *r = yt + (long)b * g;                                                                            \
                if (relu) {                                                                                         \
                    _Pragma("omp simd") for (int j = 0; j < g; j++) r[j] = r[j] < 0 ? 0 : r[j];                     \
                } else {                                                                                            \
                    _Pragma("omp simd") for (int j = 0; j < g; j++) r[j] = TANH(r[j]);                              \
                }                                                                                                   \
            }                                                                                                       \
            hold_past_##S(t, batch, hid, lengths, h, yt);                                                           \
            h = yt;                                                                                                 \
            off += nb;                                                                                              \
        }                                                                                                           \
        rec_close_##S(&ru);                                                                                         \
    }                                                                                                               \
                                                                                                                    \
    /* SimpleRNN backward: y [T,B,H] the forward's outputs, dy [T,B,H] their grads; dh [B,H] in: grad of h_T,     \
       out: of h0; dz [T,B,H] out: grads of the pre-activations (= of xp); dz may be dy itself. */                  \
    void xf_rnn_bwd_##S(int steps, int batch, int hid, int relu, const T *w, const T *y, const T *dy, T *dh,        \
                        T *dz, const int *active) {                                                                 \
        const int g = hid;                                                                                          \
        rec_##S rw = rec_open_##S(batch, hid, hid, w, hid);                                                         \
        for (int t = steps - 1; t >= 0; t--) {                                                                      \
            const int nb = active ? active[t] : batch;                                                              \
            const long off = (long)t * batch * hid;                                                                 \
            const T *yt = y + off, *dyt = dy + off;                                                                 \
            T *d = dz + off;                                                                                        \
            pass_rows_##S(nb, batch, hid, dyt, dh);                                                                 \
            zero_rows_##S(nb, batch, hid, d);                                                                       \
            PARALLEL_ROWS                                                                                           \
            for (int b = 0; b < nb; b++) {                                                                          \
                const long o = (long)b * g;                                                                         \
                if (relu) {                                                                                         \
                    _Pragma("omp simd") for (int j = 0; j < g; j++) d[o + j] =                                      \
                        yt[o + j] > 0 ? dyt[o + j] + dh[o + j] : 0;                                                 \
                } else {                                                                                            \
                    _Pragma("omp simd") for (int j = 0; j < g; j++) d[o + j] =                                      \
                        (dyt[o + j] + dh[o + j]) * (ONE - yt[o + j] * yt[o + j]);                                   \
                }                                                                                                   \
            }                                                                                                       \
            rec_mm_##S(&rw, nb, d, hid, 0, dh, hid);                                                                \
        }                                                                                                           \
        rec_close_##S(&rw);                                                                                         \
    }

DEFINE_RNN(float, f, tanhf, 1.0f)
DEFINE_RNN(double, d, tanh, 1.0)

/* A mask keep [B, T] (bool, contiguous): each row's length (the real steps before the first padding one)
 * into lengths [B]; returns how many rows are shorter than T, or -1 if a row has a real step after
 * padding (not right-padded: lengths then undefined). One pass, where NumPy's five took 5-35 us. */
int xf_right_padded(int batch, int steps, const unsigned char *keep, int *lengths) {
    int padded = 0;
    for (int b = 0; b < batch; b++) {
        const unsigned char *k = keep + (long)b * steps;
        int n = 0;
        while (n < steps && k[n]) n++;
        for (int t = n; t < steps; t++)
            if (k[t]) return -1;
        lengths[b] = n;
        padded += n < steps;
    }
    return padded;
}

/* m^T for m [rows, cols] (contiguous) into cache [2 * rows * cols] = (a copy of m, m^T), kept between calls:
 * rebuilt only where m's bytes differ from the copy (compared in full, so the result is exact whatever wrote
 * m; a cache of zeros is a valid pair). cpu_scratch.transposed keeps one cache per matrix and thread. */
#define DEFINE_TRANSPOSED(T, S)                                                                                     \
    void xf_transposed_##S(int rows, int cols, const T *m, T *cache) {                                              \
        const long n = (long)rows * cols;                                                                           \
        T *copy = cache, *mt = cache + n;                                                                           \
        if (memcmp(copy, m, sizeof(T) * n) == 0) return;                                                            \
        for (int r0 = 0; r0 < rows; r0 += 16)                                                                       \
            for (int c0 = 0; c0 < cols; c0 += 16)                                                                   \
                for (int c = c0; c < c0 + 16 && c < cols; c++)                                                      \
                    for (int r = r0; r < r0 + 16 && r < rows; r++) mt[(long)c * rows + r] = m[(long)r * cols + c];  \
        memcpy(copy, m, sizeof(T) * n);                                                                             \
    }
DEFINE_TRANSPOSED(float, f)
DEFINE_TRANSPOSED(double, d)
