/*
 * Batch norm in training mode, forward and backward, for float32 tensors laid
 * out channels-last, on one thread.
 *
 * A channels-last (N, C, H, W) tensor is an (M, C) matrix with M = N*H*W rows,
 * one per pixel. Per channel c, with the batch mean and biased variance of x,
 *
 *     xhat = (x - mean) * invstd,    invstd = 1 / sqrt(var + eps)
 *     y    = s * (gamma * xhat + beta)
 *
 * where s is a scalar scale (a pruner's gate; 1 for a plain batch norm). The
 * backward pass of y with output gradient g, with sums over the M rows, is
 *
 *     dbeta  = s * sum(g)
 *     dgamma = s * sum(g * xhat)
 *     ds     = sum over c of (gamma * sum(g * xhat) + beta * sum(g))
 *     dx     = s * gamma * invstd * (g - sum(g) / M - xhat * sum(g * xhat) / M)
 *
 * Sums are accumulated in double precision. Rows are read with the channels
 * innermost, so each loop over a row's channels is a short vector loop.
 */

#include <math.h>
#include <stdlib.h>

/*
 * Rows are summed 4 at a time into float partial sums, which are added to the
 * double totals every BLOCK_ROWS rows. The 4 rows' terms are independent, so
 * their additions overlap instead of waiting on one running sum. No float sum
 * grows over more than BLOCK_ROWS terms.
 */
#define BLOCK_ROWS 256

/*
 * totals[k] += sum over rows r of f(x[r][k], y[r][k]) for the M rows of (M, C)
 * matrices x and y, where f is TERM (a function of a, b and k). `partial` has room for C floats.
 */
#define ROW_SUMS(TERM)                                                                   \
    for (long start = 0; start < m; start += BLOCK_ROWS) {                               \
        const long end = start + BLOCK_ROWS < m ? start + BLOCK_ROWS : m;                \
        for (long k = 0; k < c; k++) partial[k] = 0.0f;                                  \
        long r = start;                                                                  \
        for (; r + 4 <= end; r += 4) {                                                   \
            const float *x0 = x + r * c, *x1 = x0 + c, *x2 = x1 + c, *x3 = x2 + c;       \
            const float *y0 = y + r * c, *y1 = y0 + c, *y2 = y1 + c, *y3 = y2 + c;       \
            for (long k = 0; k < c; k++) {                                               \
                float a, b;                                                              \
                a = x0[k], b = y0[k];                                                    \
                const float t0 = (TERM);                                                 \
                a = x1[k], b = y1[k];                                                    \
                const float t1 = (TERM);                                                 \
                a = x2[k], b = y2[k];                                                    \
                const float t2 = (TERM);                                                 \
                a = x3[k], b = y3[k];                                                    \
                const float t3 = (TERM);                                                 \
                partial[k] += (t0 + t1) + (t2 + t3);                                     \
            }                                                                            \
        }                                                                                \
        for (; r < end; r++)                                                             \
            for (long k = 0; k < c; k++) {                                               \
                const float a = x[r * c + k], b = y[r * c + k];                          \
                partial[k] += (TERM);                                                    \
            }                                                                            \
        for (long k = 0; k < c; k++) totals[k] += partial[k];                            \
    }

/* Per-channel sums of x and of (x - mean)^2 over the rows of x (M, C). */
static void sum_rows(const float *x, long m, long c, float *partial, double *totals)
{
    const float *y = x;
    ROW_SUMS(((void)b, a))
}

static void sum_squared_deviations(const float *x, long m, long c, const float *mean,
                                   float *partial, double *totals)
{
    const float *y = x;
    ROW_SUMS(((void)b, (a - mean[k]) * (a - mean[k])))
}

/* Per-channel sums of g and of g * (x - mean). */
static void sum_gradients(const float *g, const float *x_in, long m, long c,
                          const float *mean, float *partial, double *sum_g, double *sum_gd)
{
    {
        const float *x = g, *y = g;
        double *totals = sum_g;
        ROW_SUMS(((void)b, a))
    }
    {
        const float *x = g, *y = x_in;
        double *totals = sum_gd;
        ROW_SUMS(a * (b - mean[k]))
    }
}

/* Per-channel mean and invstd of x (M, C); returns the biased variance in `variance`. */
static int statistics(const float *x, long m, long c, float eps, float *mean, float *invstd,
                      double *variance)
{
    double *sums = calloc((size_t)c, sizeof(double));
    float *partial = malloc(sizeof(float) * (size_t)c);
    if (sums == NULL || partial == NULL) {
        free(sums);
        free(partial);
        return -1;
    }
    sum_rows(x, m, c, partial, sums);
    for (long k = 0; k < c; k++) {
        mean[k] = (float)(sums[k] / (double)m);
        sums[k] = 0.0;
    }
    /* A second pass over the deviations keeps the variance exact when |mean| >> std. */
    sum_squared_deviations(x, m, c, mean, partial, sums);
    for (long k = 0; k < c; k++) {
        variance[k] = sums[k] / (double)m;
        invstd[k] = (float)(1.0 / sqrt(variance[k] + (double)eps));
    }
    free(sums);
    free(partial);
    return 0;
}

/*
 * y = s * (gamma * xhat + beta); writes mean and invstd for the backward pass and
 * updates the running statistics as torch does: running = (1 - momentum) * running
 * + momentum * batch value, with the unbiased variance. Returns 0, or -1 when out
 * of memory.
 */
int batch_norm_forward(const float *x, float *y, long m, long c, const float *gamma,
                       const float *beta, float scale, float eps, float momentum,
                       float *running_mean, float *running_var, float *mean, float *invstd)
{
    double *variance = malloc(sizeof(double) * (size_t)c);
    float *a = malloc(sizeof(float) * (size_t)c);
    float *b = malloc(sizeof(float) * (size_t)c);
    int status = -1;
    if (variance == NULL || a == NULL || b == NULL) goto done;
    if (statistics(x, m, c, eps, mean, invstd, variance) != 0) goto done;
    const double unbiased = m > 1 ? (double)m / (double)(m - 1) : 1.0;
    for (long k = 0; k < c; k++) {
        a[k] = scale * gamma[k] * invstd[k];
        b[k] = scale * beta[k] - a[k] * mean[k];
        running_mean[k] = (1.0f - momentum) * running_mean[k] + momentum * mean[k];
        running_var[k] =
            (float)((1.0 - momentum) * running_var[k] + momentum * variance[k] * unbiased);
    }
    for (long r = 0; r < m; r++)
        for (long k = 0; k < c; k++) y[r * c + k] = a[k] * x[r * c + k] + b[k];
    status = 0;
done:
    free(variance);
    free(a);
    free(b);
    return status;
}

/* dx, dgamma, dbeta and ds (one float) as above. Returns 0, or -1 when out of memory. */
int batch_norm_backward(const float *g, const float *x, float *dx, long m, long c,
                        const float *mean, const float *invstd, const float *gamma,
                        const float *beta, float scale, float *dgamma, float *dbeta, float *ds)
{
    double *sum_g = calloc((size_t)c, sizeof(double));
    double *sum_gd = calloc((size_t)c, sizeof(double)); /* sum of g * (x - mean) */
    float *partial = malloc(sizeof(float) * (size_t)c);
    float *k1 = malloc(sizeof(float) * (size_t)c);
    float *k2 = malloc(sizeof(float) * (size_t)c);
    float *k3 = malloc(sizeof(float) * (size_t)c);
    int status = -1;
    if (sum_g == NULL || sum_gd == NULL || partial == NULL || k1 == NULL || k2 == NULL ||
        k3 == NULL)
        goto done;
    sum_gradients(g, x, m, c, mean, partial, sum_g, sum_gd);
    double scale_grad = 0.0;
    for (long k = 0; k < c; k++) {
        const double sum_gxhat = sum_gd[k] * invstd[k];
        dgamma[k] = (float)(scale * sum_gxhat);
        dbeta[k] = (float)(scale * sum_g[k]);
        scale_grad += gamma[k] * sum_gxhat + beta[k] * sum_g[k];
        /* dx = k1 * g + k2 * (x - mean) + k3, the formula above multiplied out. */
        const double factor = (double)scale * gamma[k] * invstd[k];
        k1[k] = (float)factor;
        k2[k] = (float)(-factor * invstd[k] * sum_gxhat / (double)m);
        k3[k] = (float)(-factor * sum_g[k] / (double)m);
    }
    *ds = (float)scale_grad;
    for (long r = 0; r < m; r++)
        for (long k = 0; k < c; k++)
            dx[r * c + k] = k1[k] * g[r * c + k] + k2[k] * (x[r * c + k] - mean[k]) + k3[k];
    status = 0;
done:
    free(sum_g);
    free(sum_gd);
    free(partial);
    free(k1);
    free(k2);
    free(k3);
    return status;
}
