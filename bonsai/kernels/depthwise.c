/*
 * Weight gradient of a depthwise convolution at stride 1, for float32 tensors
 * laid out channels-last, on one thread.
 *
 * For a kernel of size k and dilation d, the gradient of channel c at tap (i, j) is
 *
 *     dW[i][j][c] = sum over n, h, w of g[n][h][w][c] * xp[n][h + d*i][w + d*j][c]
 *
 * where g, the output gradient, is (N, H, W, C) and xp, the input with its
 * padding already added, is (N, H + d*(k-1), W + d*(k-1), C). With the padding
 * in xp, every tap reads inside the array and the loops need no bounds tests.
 *
 * The channels of a pixel are contiguous, so 8 (or 4) of them form one vector
 * (GCC's vector extension, which the compiler maps onto the machine's vector
 * registers). For one row of g and one kernel row i, the k taps of that row
 * are k independent accumulators: their sums do not wait for each other, and
 * each g vector is loaded once for all k. Every block of channels is done row
 * image by image, so that an image of g and xp is read from memory once for
 * all blocks and from the cache for the others.
 * The kernel sizes 3 and 5 are compiled with k known, which lets the compiler
 * keep the accumulators in registers.
 */

#include <string.h>

#define MAX_KERNEL 7

typedef float vec8 __attribute__((vector_size(32), aligned(4)));
typedef float vec4 __attribute__((vector_size(16), aligned(4)));

/*
 * Add one image's products to the sums in `out` (k, k, C), for the channels
 * first .. first + lanes - 1. K is k when known at compile time, else 0.
 */
#define IMAGE(NAME, VEC, K)                                                              \
    static void NAME(const float *xp, const float *g, float *out, long height,           \
                     long width, long channels, long k_runtime, long d, long first)        \
    {                                                                                      \
        const long k = K ? K : k_runtime;                                                  \
        const long padded_w = width + d * (k - 1);                                         \
        VEC total[MAX_KERNEL][MAX_KERNEL];                                                 \
        for (long i = 0; i < k; i++)                                                       \
            for (long j = 0; j < k; j++)                                                   \
                total[i][j] = *(VEC *)(out + (i * k + j) * channels + first);              \
        for (long h = 0; h < height; h++) {                                                \
            const float *grow = g + h * width * channels + first;                          \
            for (long i = 0; i < k; i++) {                                                 \
                const float *xrow = xp + (h + d * i) * padded_w * channels + first;        \
                VEC acc[MAX_KERNEL];                                                       \
                for (long j = 0; j < k; j++) acc[j] = total[i][j];                         \
                for (long w = 0; w < width; w++) {                                         \
                    const VEC gv = *(const VEC *)(grow + w * channels);                    \
                    const float *xw = xrow + w * channels;                                 \
                    for (long j = 0; j < k; j++)                                           \
                        acc[j] += gv * *(const VEC *)(xw + d * j * channels);              \
                }                                                                          \
                for (long j = 0; j < k; j++) total[i][j] = acc[j];                         \
            }                                                                              \
        }                                                                                  \
        for (long i = 0; i < k; i++)                                                       \
            for (long j = 0; j < k; j++)                                                   \
                *(VEC *)(out + (i * k + j) * channels + first) = total[i][j];              \
    }

IMAGE(image8, vec8, 0)
IMAGE(image8_k3, vec8, 3)
IMAGE(image8_k5, vec8, 5)
IMAGE(image4, vec4, 0)
IMAGE(image4_k3, vec4, 3)
IMAGE(image4_k5, vec4, 5)

static void image1(const float *xp, const float *g, float *out, long height, long width,
                   long channels, long k, long d, long c)
{
    const long padded_w = width + d * (k - 1);
    for (long i = 0; i < k; i++) {
        for (long j = 0; j < k; j++) {
            float sum = out[(i * k + j) * channels + c];
            for (long h = 0; h < height; h++)
                for (long w = 0; w < width; w++)
                    sum += g[(h * width + w) * channels + c] *
                           xp[((h + d * i) * padded_w + w + d * j) * channels + c];
            out[(i * k + j) * channels + c] = sum;
        }
    }
}

typedef void (*image_fn)(const float *, const float *, float *, long, long, long, long, long,
                         long);

/* out: (k, k, C), overwritten. Returns 0, or -1 when k is not in 1 .. MAX_KERNEL. */
int depthwise_weight_grad(const float *xp, const float *g, float *out, long images,
                          long height, long width, long channels, long k, long d)
{
    if (k < 1 || k > MAX_KERNEL) return -1;
    image_fn wide = image8, narrow = image4;
    if (k == 3) {
        wide = image8_k3;
        narrow = image4_k3;
    } else if (k == 5) {
        wide = image8_k5;
        narrow = image4_k5;
    }
    const long padded_size = (height + d * (k - 1)) * (width + d * (k - 1)) * channels;
    const long size = height * width * channels;
    memset(out, 0, sizeof(float) * k * k * channels);
    for (long n = 0; n < images; n++) {
        const float *xn = xp + n * padded_size, *gn = g + n * size;
        long c = 0;
        for (; c + 8 <= channels; c += 8) wide(xn, gn, out, height, width, channels, k, d, c);
        for (; c + 4 <= channels; c += 4) narrow(xn, gn, out, height, width, channels, k, d, c);
        for (; c < channels; c++) image1(xn, gn, out, height, width, channels, k, d, c);
    }
    return 0;
}
