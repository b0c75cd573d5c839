#include "nodes/sampling/torch_rng.h"

#include <math.h>
#include <string.h>

/* The Box-Muller transform below must round exactly like torch's compiled vector code. torch builds that
 * code with FMA enabled and GCC's default contraction, so a multiply whose only use is an add became a
 * fused multiply-add, taking the first such multiply in program order. The fmaf() calls below are those
 * fusions, written out; every other operation is a separately rounded float operation, and the compiler
 * must not fuse anything on its own: CMakeLists.txt builds this file with -ffp-contract=off. Checked bit for bit
 * against torch 2.11's output in tests/unit/test_torch_rng.c. */


/* ---- mt19937 (32-bit Mersenne Twister), as torch seeds and tempers it ---- */

void fr_torch_gen_seed(struct fr_torch_gen *g, uint64_t seed) {
  g->state[0] = (uint32_t)(seed & 0xffffffffu);
  for (uint32_t j = 1; j < 624; j++)
    g->state[j] = 1812433253u * (g->state[j - 1] ^ (g->state[j - 1] >> 30)) + j;
  g->next = 624; /* twist on first use */
  g->has_normal = false;
  g->normal = 0;
}

static void fr__twist(struct fr_torch_gen *g) {
  for (int i = 0; i < 624; i++) {
    uint32_t y = (g->state[i] & 0x80000000u) | (g->state[(i + 1) % 624] & 0x7fffffffu);
    uint32_t v = g->state[(i + 397) % 624] ^ (y >> 1);
    if (y & 1)
      v ^= 0x9908b0dfu;
    g->state[i] = v;
  }
  g->next = 0;
}

uint32_t fr_torch_gen_u32(struct fr_torch_gen *g) {
  if (g->next >= 624)
    fr__twist(g);
  uint32_t y = g->state[g->next++];
  y ^= y >> 11;
  y ^= (y << 7) & 0x9d2c5680u;
  y ^= (y << 15) & 0xefc60000u;
  y ^= y >> 18;
  return y;
}

uint64_t fr_torch_gen_u64(struct fr_torch_gen *g) {
  uint64_t hi = fr_torch_gen_u32(g);
  uint64_t lo = fr_torch_gen_u32(g);
  return (hi << 32) | lo;
}

/* Uniform [0, 1) floats from the low 24 bits, doubles from the low 53 bits. */
static float fr__uniform_f(struct fr_torch_gen *g) {
  return (float)(fr_torch_gen_u32(g) & 0xffffffu) * (1.0f / 16777216.0f);
}
static double fr__uniform_d(struct fr_torch_gen *g) {
  return (double)(fr_torch_gen_u64(g) & ((UINT64_C(1) << 53) - 1)) * (1.0 / 9007199254740992.0);
}

/* ---- scalar emulation of the vector log and sincos (Cephes polynomials) ---- */

static uint32_t fr__bits(float f) {
  uint32_t u;
  memcpy(&u, &f, 4);
  return u;
}
static float fr__float(uint32_t u) {
  float f;
  memcpy(&f, &u, 4);
  return f;
}

/* Natural log for x in (0, 1], NaN for x <= 0. Range reduction to a mantissa in [0.5, 1), one step to
 * [sqrt(1/2), sqrt(2)), then a degree-9 polynomial (Horner, fused) in the vector code's order. */
static float fr__log_vec(float x) {
  static const float sqrthf = 0.707106781186547524, p0 = 7.0376836292E-2, p1 = -1.1514610310E-1,
                     p2 = 1.1676998740E-1, p3 = -1.2420140846E-1, p4 = 1.4249322787E-1,
                     p5 = -1.6668057665E-1, p6 = 2.0000714765E-1, p7 = -2.4999993993E-1,
                     p8 = 3.3333331174E-1, q1 = -2.12194440e-4, q2 = 0.693359375;
  bool invalid = x <= 0.0f;
  float min_norm = fr__float(0x00800000u);
  if (!(x > min_norm)) /* max(x, min_norm) as the vector instruction does it (second operand on NaN) */
    x = min_norm;
  int32_t expo = (int32_t)(fr__bits(x) >> 23);
  x = fr__float((fr__bits(x) & ~0x7f800000u) | fr__bits(0.5f));
  expo -= 0x7f;
  float e = (float)expo;
  e = e + 1.0f;
  bool small = x < sqrthf;
  float tmp = small ? x : 0.0f;
  x = x - 1.0f;
  e = e - (small ? 1.0f : 0.0f);
  x = x + tmp;
  float z = x * x;
  float y = p0;
  y = fmaf(y, x, p1);
  y = fmaf(y, x, p2);
  y = fmaf(y, x, p3);
  y = fmaf(y, x, p4);
  y = fmaf(y, x, p5);
  y = fmaf(y, x, p6);
  y = fmaf(y, x, p7);
  y = fmaf(y, x, p8);
  y = y * x;
  y = fmaf(y, z, e * q1);
  y = fmaf(-z, 0.5f, y);
  x = x + y;
  x = fmaf(e, q2, x);
  return invalid ? fr__float(0xffffffffu) : x;
}

/* sin and cos together: reduction by multiples of pi/4 in three parts (extended precision), then the
 * sine or cosine polynomial per octant, with the sign flips of the Cephes algorithm. */
static void fr__sincos_vec(float x, float *s, float *c) {
  static const float dp1 = -0.78515625, dp2 = -2.4187564849853515625e-4, dp3 = -3.77489497744594108e-8,
                     sp0 = -1.9515295891E-4, sp1 = 8.3321608736E-3, sp2 = -1.6666654611E-1,
                     cp0 = 2.443315711809948E-005, cp1 = -1.388731625493765E-003,
                     cp2 = 4.166664568298827E-002, fopi = 1.27323954473516;
  uint32_t sign_sin = fr__bits(x) & 0x80000000u;
  x = fr__float(fr__bits(x) & 0x7fffffffu);
  float y = x * fopi;
  int32_t j = (int32_t)y; /* truncation, as cvttps */
  j = (j + 1) & ~1;
  y = (float)j;
  uint32_t swap_sin = ((uint32_t)j & 4u) << 29;
  bool poly_sin = (j & 2) == 0;
  x = fmaf(y, dp1, x);
  x = fmaf(y, dp2, x);
  x = fmaf(y, dp3, x);
  uint32_t sign_cos = (~(uint32_t)(j - 2) & 4u) << 29;
  sign_sin ^= swap_sin;
  float z = x * x;
  float yc = cp0;
  yc = fmaf(yc, z, cp1);
  yc = fmaf(yc, z, cp2);
  yc = yc * z;
  yc = fmaf(yc, z, -(z * 0.5f));
  yc = yc + 1.0f;
  float ys = sp0;
  ys = fmaf(ys, z, sp1);
  ys = fmaf(ys, z, sp2);
  ys = ys * z;
  ys = fmaf(ys, x, x);
  float sin2 = poly_sin ? ys : 0.0f, sin1 = poly_sin ? 0.0f : yc;
  ys = ys - sin2;
  yc = yc - sin1;
  *s = fr__float(fr__bits(sin1 + sin2) ^ sign_sin);
  *c = fr__float(fr__bits(yc + ys) ^ sign_cos);
}

/* Box-Muller over 16 uniforms in place: data[0..8) become radius*cos, data[8..16) radius*sin. */
static void fr__normal16(float *d) {
  const float two_pi = (float)(2.0f * 3.14159265358979323846);
  for (int j = 0; j < 8; j++) {
    float u1 = 1.0f - d[j], u2 = d[j + 8];
    float radius = sqrtf(-2.0f * fr__log_vec(u1));
    float theta = two_pi * u2;
    float s, c;
    fr__sincos_vec(theta, &s, &c);
    d[j] = fmaf(radius * c, 1.0f, 0.0f);
    d[j + 8] = fmaf(radius * s, 1.0f, 0.0f);
  }
}

/* One double-precision normal sample, using and refilling the generator's cached second sample. */
static double fr__normal_d(struct fr_torch_gen *g) {
  if (g->has_normal) {
    g->has_normal = false;
    return g->normal;
  }
  double u1 = fr__uniform_d(g), u2 = fr__uniform_d(g);
  double r = sqrt(-2.0 * log1p(-u2));
  double theta = 2.0 * 3.14159265358979323846 * u1;
  g->normal = r * sin(theta);
  g->has_normal = true;
  return r * cos(theta);
}

void fr_torch_randn(struct fr_torch_gen *g, float *out, int64_t n) {
  if (n < 16) {
    for (int64_t i = 0; i < n; i++)
      out[i] = (float)fr__normal_d(g);
    return;
  }
  for (int64_t i = 0; i < n; i++)
    out[i] = fr__uniform_f(g);
  for (int64_t i = 0; i + 16 <= n; i += 16)
    fr__normal16(out + i);
  if (n % 16) {
    float *tail = out + n - 16;
    for (int i = 0; i < 16; i++)
      tail[i] = fr__uniform_f(g);
    fr__normal16(tail);
  }
}
