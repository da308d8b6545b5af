/* One window of the Stack RNN core (model.py's equations, spec §3) on the CPU, forward and backward,
 * for the case that dominates Table 2: no recurrent matrix (R = 0), one-hot inputs.
 *
 * Why C: at the paper's sizes (40 hidden units, 10 stacks of 200 cells) a step is a few thousand
 * multiply-adds, so the PyTorch loop spends almost all its time dispatching ~45 small operators per step.
 * Here each row of the batch runs its whole window with its stacks in L1 cache, and the backward pass
 * touches only the stack cells that can carry gradient: an error entering the top `depth` cells moves one
 * cell deeper per step back in time, so within a window of T steps it reaches depth + T - 1 cells at most
 * (exactly zero beyond), and only those cells of each step's stacks are kept for the backward pass.
 *
 * Layouts (row-major, contiguous): U [V,H]; P [S*K,H]; W [H,O] with O = V + S*A + S (logits | action
 * scores per stack | push pre-activations); inputs [B,T] int64; resets [B,T] and hard [B] as uint8 (may be
 * NULL); stacks [B,S,D] updated in place to the final state. The history arrays (NULL when no gradient is
 * needed) hold, per row and step: the previous stacks' top R cells after any reset (R = depth + T + 1, or D
 * when the final stacks receive a gradient), the hidden pre-activation and value, the push pre-activation
 * and value. Both functions are compiled for double and float from the one body below.
 */
#include <math.h>
#include <stdint.h>
#include <string.h>

#define EMPTY (-1)
#define PRE_CLIP 50

/* Where the second of two ping-pong buffers of n elements starts, from 64-byte aligned `first`: half a page
 * off the first one modulo 4 KiB. The update of a stack reads one buffer at i-1 and i+1 while writing the
 * other at i; at distances near a multiple of 4 KiB the CPU takes those loads for reads of the stores just
 * made ("4K aliasing") and the step runs several times slower, depending on where the buffers happen to lie. */
static char *align64(void *p) { return (char *)(((uintptr_t)p + 63) & ~(uintptr_t)63); }
static char *second_buffer(char *first, size_t bytes) { return first + (bytes + 4095) / 4096 * 4096 + 2048; }

#define DEFINE_STACK_KERNELS(real, suffix)                                                                    \
                                                                                                              \
static real sigmoid_##suffix(real x) { return (real)1 / ((real)1 + (real)exp(-(double)x)); }                 \
static real clip_##suffix(real x) { return x < -PRE_CLIP ? -PRE_CLIP : (x > PRE_CLIP ? PRE_CLIP : x); }       \
                                                                                                              \
void stack_forward_##suffix(int64_t B, int64_t T, int64_t V, int64_t H, int64_t S, int64_t K, int64_t A,    \
                            int64_t D, int64_t R, const int64_t *inputs, const uint8_t *resets,             \
                            const uint8_t *hard, const real *U, const real *P, const real *W, real *stacks,   \
                            real *hidden_out, real *logits, real *actions, real *scratch, real *hist_stacks,  \
                            real *hist_pre, real *hist_hidden, real *hist_push_pre, real *hist_push) {        \
    const int64_t O = V + S * A + S;                                                                         \
    /* Each row's window runs on two stack buffers of its own in the scratch space (2 S*D). */            \
    real *hidden = scratch, *out = scratch + H, *buffers = (real *)align64(scratch + H + O);                 \
    real *buffers2 = (real *)second_buffer((char *)buffers, S * D * sizeof(real));                           \
    for (int64_t b = 0; b < B; b++) {                                                                        \
        real *stk = buffers, *nxt = buffers2;                                                                \
        memcpy(stk, stacks + b * S * D, S * D * sizeof(real));                                              \
        for (int64_t t = 0; t < T; t++) {                                                                    \
            const int64_t bt = b * T + t;                                                                    \
            if (resets && resets[bt])                                                                        \
                for (int64_t i = 0; i < S * D; i++) stk[i] = EMPTY;                                          \
            if (hist_stacks)                                                                                 \
                for (int64_t s = 0; s < S; s++)                                                              \
                    memcpy(hist_stacks + (bt * S + s) * R, stk + s * D, R * sizeof(real));                  \
            /* h = sigmoid(clip(U x + sum_s P_s s[0:K])) */                                                  \
            const real *u = U + inputs[bt] * H;                                                              \
            for (int64_t h = 0; h < H; h++) hidden[h] = u[h];                                                \
            for (int64_t s = 0; s < S; s++)                                                                  \
                for (int64_t j = 0; j < K; j++) {                                                            \
                    const real cell = stk[s * D + j], *p = P + (s * K + j) * H;                              \
                    for (int64_t h = 0; h < H; h++) hidden[h] += cell * p[h];                                \
                }                                                                                            \
            if (hist_pre) memcpy(hist_pre + bt * H, hidden, H * sizeof(real));                               \
            for (int64_t h = 0; h < H; h++) hidden[h] = sigmoid_##suffix(clip_##suffix(hidden[h]));          \
            if (hist_hidden) memcpy(hist_hidden + bt * H, hidden, H * sizeof(real));                         \
            /* out = h W: logits, action scores, push pre-activations */                                     \
            for (int64_t o = 0; o < O; o++) out[o] = 0;                                                      \
            for (int64_t h = 0; h < H; h++) {                                                                \
                const real hv = hidden[h], *w = W + h * O;                                                   \
                for (int64_t o = 0; o < O; o++) out[o] += hv * w[o];                                         \
            }                                                                                                \
            memcpy(logits + bt * V, out, V * sizeof(real));                                                  \
            real *act = actions + bt * S * A;                                                                \
            for (int64_t s = 0; s < S; s++) {                                                                \
                const real *score = out + V + s * A;                                                         \
                real *a = act + s * A;                                                                       \
                int64_t best = 0;                                                                            \
                for (int64_t k = 1; k < A; k++)                                                              \
                    if (score[k] > score[best]) best = k;                                                    \
                if (hard && hard[b]) {                                                                       \
                    for (int64_t k = 0; k < A; k++) a[k] = k == best;                                        \
                } else {                                                                                     \
                    real total = 0;                                                                          \
                    for (int64_t k = 0; k < A; k++) total += a[k] = (real)exp((double)(score[k] - score[best])); \
                    for (int64_t k = 0; k < A; k++) a[k] /= total;                                           \
                }                                                                                            \
                const real push_pre = out[V + S * A + s], push = sigmoid_##suffix(clip_##suffix(push_pre));  \
                if (hist_push) {                                                                             \
                    hist_push_pre[bt * S + s] = push_pre;                                                    \
                    hist_push[bt * S + s] = push;                                                            \
                }                                                                                            \
                /* PUSH: cell i takes i-1 (the top takes the push value); POP: cell i takes i+1 (the bottom  \
                 * takes the empty value); NO-OP: cell i stays. */                                           \
                const real *old = stk + s * D;                                                               \
                real *new = nxt + s * D;                                                                     \
                const real p0 = a[0], p1 = a[1];                                                             \
                new[0] = p0 * push + p1 * (D > 1 ? old[1] : EMPTY);                                          \
                for (int64_t i = 1; i < D - 1; i++) new[i] = p0 * old[i - 1] + p1 * old[i + 1];             \
                if (D > 1) new[D - 1] = p0 * old[D - 2] + p1 * EMPTY;                                        \
                if (A == 3)                                                                                  \
                    for (int64_t i = 0; i < D; i++) new[i] += a[2] * old[i];                                 \
            }                                                                                                \
            real *swap = stk;                                                                                \
            stk = nxt;                                                                                       \
            nxt = swap;                                                                                      \
        }                                                                                                    \
        memcpy(stacks + b * S * D, stk, S * D * sizeof(real));                                              \
        memcpy(hidden_out + b * H, hidden, H * sizeof(real));                                                \
    }                                                                                                        \
}                                                                                                            \
                                                                                                              \
/* Gradients of a scalar loss given d loss / d logits (and, when R == D, d loss / d final stacks). Adds into  \
 * dU, dP, dW (zeroed by the caller) and writes d loss / d initial stacks when d_stacks is not NULL. */        \
void stack_backward_##suffix(int64_t B, int64_t T, int64_t V, int64_t H, int64_t S, int64_t K, int64_t A,   \
                             int64_t D, int64_t R, const int64_t *inputs, const uint8_t *resets,            \
                             const uint8_t *hard, const real *P, const real *W, const real *actions,          \
                             const real *hist_stacks, const real *hist_pre, const real *hist_hidden,          \
                             const real *hist_push_pre, const real *hist_push, const real *d_logits,          \
                             const real *d_final, real *dU, real *dP, real *dW, real *d_stacks,              \
                             real *scratch) {                                                                \
    const int64_t O = V + S * A + S;                                                                         \
    real *d_out = scratch, *d_hidden = scratch + O, *g = (real *)align64(scratch + O + H);                   \
    real *g_prev = (real *)second_buffer((char *)g, S * R * sizeof(real)), *g_first = g, *g_second = g_prev;   \
    for (int64_t b = 0; b < B; b++) {                                                                        \
        /* g: d loss / d stacks after the current step, non-zero only in cells [0, reach) */                 \
        int64_t reach = 0;                                                                                   \
        if (d_final) {                                                                                       \
            for (int64_t s = 0; s < S; s++) memcpy(g + s * R, d_final + (b * S + s) * D, R * sizeof(real)); \
            reach = R;                                                                                       \
        }                                                                                                    \
        for (int64_t t = T - 1; t >= 0; t--) {                                                               \
            const int64_t bt = b * T + t;                                                                    \
            const real *prev = hist_stacks + bt * S * R, *act = actions + bt * S * A;                        \
            const int soft = !(hard && hard[b]);                                                             \
            const int64_t prev_reach = reach ? (reach + 1 < R ? reach + 1 : R) : 0;                          \
            const int64_t new_reach = prev_reach > K ? prev_reach : (K < R ? K : R);                         \
            memcpy(d_out, d_logits + bt * V, V * sizeof(real));                                              \
            for (int64_t s = 0; s < S; s++) {                                                                \
                const real *old = prev + s * R, *gs = g + s * R, *a = act + s * A;                           \
                real *gp = g_prev + s * R;                                                                   \
                const real push = hist_push[bt * S + s];                                                     \
                real d_act[3] = {0, 0, 0};                                                                   \
                _Pragma("omp simd reduction(+ : d_act[:3])")                                                 \
                for (int64_t i = 0; i < reach; i++) {                                                        \
                    d_act[0] += gs[i] * (i == 0 ? push : old[i - 1]);                                        \
                    d_act[1] += gs[i] * (i + 1 < D ? old[i + 1] : EMPTY);                                    \
                    if (A == 3) d_act[2] += gs[i] * old[i];                                                  \
                }                                                                                            \
                for (int64_t j = 0; j < new_reach; j++) {                                                    \
                    real v = 0;                                                                              \
                    if (j + 1 < reach) v += a[0] * gs[j + 1];                                                \
                    if (j >= 1 && j - 1 < reach) v += a[1] * gs[j - 1];                                      \
                    if (A == 3 && j < reach) v += a[2] * gs[j];                                              \
                    gp[j] = v;                                                                               \
                }                                                                                            \
                real *d_score = d_out + V + s * A;                                                           \
                if (soft) { /* softmax: dz_k = a_k (da_k - sum_m a_m da_m) */                                \
                    real dot = 0;                                                                            \
                    for (int64_t k = 0; k < A; k++) dot += a[k] * d_act[k];                                  \
                    for (int64_t k = 0; k < A; k++) d_score[k] = a[k] * (d_act[k] - dot);                    \
                } else { /* rounded actions are constants */                                                 \
                    for (int64_t k = 0; k < A; k++) d_score[k] = 0;                                          \
                }                                                                                            \
                const real push_pre = hist_push_pre[bt * S + s];                                             \
                const real d_push = reach ? gs[0] * a[0] : 0;                                                \
                d_out[V + S * A + s] =                                                                       \
                    push_pre >= -PRE_CLIP && push_pre <= PRE_CLIP ? d_push * push * (1 - push) : 0;          \
            }                                                                                                \
            /* out = h W */                                                                                  \
            const real *hidden = hist_hidden + bt * H, *pre = hist_pre + bt * H;                             \
            for (int64_t h = 0; h < H; h++) {                                                                \
                const real *w = W + h * O;                                                                   \
                real *dw = dW + h * O, hv = hidden[h], dh = 0;                                               \
                _Pragma("omp simd reduction(+ : dh)")                                                        \
                for (int64_t o = 0; o < O; o++) {                                                            \
                    dw[o] += hv * d_out[o];                                                                  \
                    dh += w[o] * d_out[o];                                                                   \
                }                                                                                            \
                d_hidden[h] = pre[h] >= -PRE_CLIP && pre[h] <= PRE_CLIP ? dh * hv * (1 - hv) : 0;            \
            }                                                                                                \
            /* pre = U x + sum_s P_s s[0:K] */                                                               \
            real *du = dU + inputs[bt] * H;                                                                  \
            for (int64_t h = 0; h < H; h++) du[h] += d_hidden[h];                                            \
            for (int64_t s = 0; s < S; s++)                                                                  \
                for (int64_t j = 0; j < K && j < R; j++) {                                                   \
                    const real *p = P + (s * K + j) * H, cell = prev[s * R + j];                             \
                    real *dp = dP + (s * K + j) * H, v = 0;                                                  \
                    _Pragma("omp simd reduction(+ : v)")                                                     \
                    for (int64_t h = 0; h < H; h++) {                                                        \
                        dp[h] += cell * d_hidden[h];                                                         \
                        v += p[h] * d_hidden[h];                                                             \
                    }                                                                                        \
                    g_prev[s * R + j] += v;                                                                  \
                }                                                                                            \
            reach = new_reach;                                                                               \
            if (resets && resets[bt]) reach = 0; /* the stacks were set to the empty constant */             \
            real *swap = g;                                                                                  \
            g = g_prev;                                                                                      \
            g_prev = swap;                                                                                   \
        }                                                                                                    \
        if (d_stacks) {                                                                                      \
            real *ds = d_stacks + b * S * D;                                                                 \
            for (int64_t i = 0; i < S * D; i++) ds[i] = 0;                                                   \
            for (int64_t s = 0; s < S; s++)                                                                  \
                for (int64_t j = 0; j < reach; j++) ds[s * D + j] = g[s * R + j];                            \
        }                                                                                                    \
        g = g_first; /* g and g_prev may have swapped */                                                     \
        g_prev = g_second;                                                                                   \
    }                                                                                                        \
}

DEFINE_STACK_KERNELS(double, f64)
DEFINE_STACK_KERNELS(float, f32)
